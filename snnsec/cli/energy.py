"""``snnsec energy CKPT``: synaptic operations, MACs, energy and the spike-driven check."""

from __future__ import annotations

from pathlib import Path

from snnsec.cli import add_checkpoint_input, add_device_option, add_output_checks, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "energy", help="what a checkpoint's inference costs: SOPs, MACs, energy, firing rates, spike-driven check",
        description="Count a checkpoint's synaptic operations (spike-driven accumulates) and MACs per layer on a "
        "seeded subset of its data, estimate energy with the 45 nm figures (0.9 pJ per AC, 4.6 pJ per MAC), and list "
        "the layers fed non-spike values. Optionally on the checkpoint's trigger, on adversarial inputs and on sponge "
        "inputs that maximise the spike count, each with its energy ratio against clean input.")
    add_checkpoint_input(p)
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--n-samples", type=positive_int, default=100, help="seeded random subset (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--triggered", action="store_true", help="also on the checkpoint's own trigger (a backdoor run's)")
    p.add_argument("--attack", default=None, help="an attack for adversarial inputs (pgd, fgsm, apgd, ...)")
    p.add_argument("--eps", default="", help="comma-separated radii for --attack, e.g. 8/255,32/255")
    p.add_argument("--sponge", default="", help="comma-separated radii of the sponge attack, e.g. 8/255,32/255")
    p.add_argument("--sponge-steps", type=positive_int, default=20)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--out", required=True, type=Path, help="output folder (metrics.json)")
    p.add_argument("--store", default=None, help="results store (default: $SNNSEC_STORE or reports/results.sqlite)")
    p.add_argument("--no-progress", action="store_true")
    add_output_checks(p, "energy")
    add_device_option(p)
    p.set_defaults(func=run)


def _radii(text: str) -> list[str]:
    return [e.strip() for e in text.split(",") if e.strip()]


def run(args) -> int:
    from snnsec.energy import E_AC_PJ, E_MAC_PJ
    from snnsec.runs.energy import run_energy, save_energy

    result = run_energy(args.checkpoint, data=args.data, root=args.root, split=args.split, n_samples=args.n_samples,
                        seed=args.seed, triggered=args.triggered, attack=args.attack, eps=_radii(args.eps),
                        sponge=_radii(args.sponge), sponge_steps=args.sponge_steps, batch_size=args.batch_size,
                        arch=args.arch, device=args.device, progress=not args.no_progress)
    summary = save_energy(result, args.out, store=args.store)
    clean = result.reports["clean"]
    print(f"per sample, {clean.n} samples; energy = {E_AC_PJ} pJ x SOPs + {E_MAC_PJ} pJ x MACs")
    print(f"{'layer':44s} {'input':12s} {'SOPs':>12s} {'MACs':>12s}")
    for c in clean.layers:
        print(f"{c.layer[-44:]:44s} {c.input_kind:12s} {c.sops / clean.n:12.4g} {c.macs / clean.n:12.4g}")
    print(f"{'input':16s} {'energy (uJ)':>12s} {'ratio':>7s} {'body ratio':>10s} {'SOPs':>11s} {'MACs':>11s} "
          f"{'fire rate':>9s} {'accuracy':>8s}")
    for kind, m in summary["inputs"].items():
        print(f"{kind:16s} {m['energy_pj'] / 1e6:12.4g} {m['energy_ratio']:7.3f} {m['body_energy_ratio']:10.3f} "
              f"{m['sops']:11.4g} {m['macs']:11.4g} {m['mean_firing_rate']:9.4f} {m['accuracy']:8.3f}")
    print("body: every weight layer but the encoding one (an L-inf perturbation makes binary frames real-valued, so "
          "the encoding layer multiplies under any attack)")
    flagged = [c.layer for c in clean.non_spike_layers if c.layer != clean.encoding_layer]
    print("spike-driven: every weight layer sees spikes (the encoding layer aside)" if not flagged else
          f"NOT spike-driven: {len(flagged)} layer(s) fed non-spike values: {', '.join(flagged)}")
    print(f"-> {args.out}")
    return 0
