"""``snnsec energy CKPT``: what a checkpoint's inference costs on clean, triggered, adversarial and
sponge inputs, with the spike-driven check (:mod:`snnsec.energy`).

Each input kind is measured on the same seeded subset of the checkpoint's data; the triggered
kind needs a checkpoint that records its trigger (a backdoor run's) and uses its non-target
samples; adversarial inputs come from one attack at each eps; sponge inputs maximise the spike
count (:class:`snnsec.attacks.adversarial.sponge.Sponge`). Every kind reports energy, SOPs,
MACs, the mean firing rate, accuracy and the energy ratio against clean input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from snnsec._io import atomic_write_json


@dataclass
class EnergyRun:
    reports: dict[str, Any]  # input kind ("clean", "triggered", "pgd@8/255", "sponge@8/255") -> EnergyReport
    accuracy: dict[str, float]
    meta: dict[str, Any]
    spec: Any
    config: dict[str, Any] = field(default_factory=dict)
    neurons: tuple[str, ...] = ()  # the spiking neuron types of the model

    def metrics(self) -> dict[str, dict[str, float]]:
        clean = self.reports["clean"]

        def ratio(a: float, b: float) -> float:
            return a / b if b else float("nan")

        return {kind: {**r.metrics(), "accuracy": self.accuracy[kind], "energy_ratio": ratio(r.energy_pj, clean.energy_pj),
                       "body_energy_ratio": ratio(r.body_energy_pj, clean.body_energy_pj),
                       "firing_rate_ratio": ratio(r.mean_firing_rate, clean.mean_firing_rate)}
                for kind, r in self.reports.items()}


def _eps(text: str) -> float:
    from snnsec.attacks.adversarial import parse_eps

    return parse_eps(text)


def run_energy(checkpoint, *, data: str | None = None, root=None, split: str = "test", n_samples: int = 100,
               seed: int = 0, triggered: bool = False, attack: str | None = None, eps=(), sponge=(),
               sponge_steps: int = 20, batch_size: int = 32, arch=None, device: str = "cpu",
               progress: bool = True) -> EnergyRun:
    """Measure ``checkpoint`` (loaded onto ``device``) on ``n_samples`` seeded samples of its data."""
    from tqdm.auto import tqdm

    from snnsec import checkpoint as ckpt
    from snnsec import devices, energy, metrics
    from snnsec.harness import spiking_neurons
    from snnsec.runs.adversarial import random_subset

    eps = [(str(e), _eps(str(e))) for e in eps]  # checked before anything is loaded
    sponge = [(str(e), _eps(str(e))) for e in sponge]
    if eps and not attack:
        raise ValueError("energy: --eps needs --attack (the attack that makes the adversarial inputs)")
    model, meta = ckpt.load(checkpoint, arch=arch, device=device)
    planted = meta.get("attack") or {}
    if triggered and not planted.get("trigger"):
        raise ValueError(f"energy --triggered: {checkpoint} records no trigger (field 'attack.trigger' of its "
                         "model.json); only a backdoor run's checkpoint has one")
    ds, spec = ckpt.matching_dataset(meta, data=data, root=root, split=split, source=str(checkpoint))
    x, y = random_subset(ds, n_samples, seed)
    inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {"clean": (x, y)}
    if triggered:
        from snnsec.attacks.backdoor.triggers import trigger_from_spec

        folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
        trigger = trigger_from_spec(planted["trigger"], base_dir=folder)
        keep = y != int(planted.get("target", -1))
        inputs["triggered"] = (trigger(x[keep]), y[keep])
    jobs = [(f"{attack}@{label}", "attack", e) for label, e in eps] + [(f"sponge@{label}", "sponge", e) for label, e in sponge]
    for kind, how, e in tqdm(jobs, desc="inputs", disable=not progress or not jobs, leave=False):
        if how == "attack":
            from snnsec.attacks.adversarial import Attack

            atk = Attack(model, attack, e, seed=seed)
            xa = torch.cat([atk(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        else:
            from snnsec.attacks.adversarial.sponge import Sponge

            atk = Sponge(model, e, steps=sponge_steps)
            xa = torch.cat([atk(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        inputs[kind] = (xa, y)
    reports, accuracy = {}, {}
    for kind, (xs, ys) in inputs.items():
        reports[kind] = energy.measure(model, xs, batch_size=batch_size)
        accuracy[kind] = metrics.clean_accuracy(reports[kind].predictions, ys)
    config = {"kind": "energy", "checkpoint": str(checkpoint), "data": data or spec.name, "split": split,
              "n_samples": len(x), "seed": seed, "triggered": triggered, "attack": attack, "eps": [e for e, _ in eps],
              "sponge": [e for e, _ in sponge], "sponge_steps": sponge_steps, **devices.describe(device)}
    neurons = tuple(sorted({type(m).__name__ for _, m, _ in spiking_neurons(model)}))
    return EnergyRun(reports=reports, accuracy=accuracy, meta=meta, spec=spec, config=config, neurons=neurons)


def energy_rows(run: EnergyRun) -> list[dict]:
    """One row per input kind and metric (``attack`` names the input kind), plus the clean input's
    per-layer costs and firing rates as row groups."""
    from snnsec.bench import rows_for_cell

    cell = {"kind": "energy", "dataset": run.spec.name, "model": str(run.meta.get("arch")), "T": run.spec.T,
            "seed": int(run.config["seed"]), **{k: v for k, v in run.config.items() if k != "kind"}}
    m = run.metrics()
    groups = [{"metrics": v, "attack": None if kind == "clean" else kind, "extra": {"input": kind}}
              for kind, v in m.items() if kind != "clean"]
    groups += [{**g, "extra": {**g["extra"], "input": "clean"}} for g in run.reports["clean"].row_groups()]
    return rows_for_cell(cell, {"metrics": m["clean"], "extra": {"input": "clean"}, "groups": groups})


def save_energy(run: EnergyRun, out, *, store=None) -> dict:
    """``out/metrics.json`` (per input kind, with the clean input's per-layer table) and the rows."""
    from snnsec import results

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clean = run.reports["clean"]
    summary = {"config": run.config, "inputs": run.metrics(),
               "layers": [{"layer": c.layer, "input": c.input_kind, "sops": c.sops / clean.n, "macs": c.macs / clean.n}
                          for c in clean.layers],
               "non_spike_layers": [c.layer for c in clean.non_spike_layers], "encoding_layer": clean.encoding_layer}
    atomic_write_json(out / "metrics.json", summary)
    if store is not None:
        results.Store(store).append(energy_rows(run))
    return summary
