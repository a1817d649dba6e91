"""The full robustness evaluation before and after the cascade (issue 17, goal: >= 3x, same per-sample results).

    python tests/benchmarks/bench_eval_cascade.py [CHECKPOINT [DATA_ROOT]] [--n N] [--eps 4/255,16/255]

Both sides run the same attacks at full strength (PGD-20, APGD-CE-100, Square-5,000 by default)
with the checklist, on the same samples, one after the other in this process:

* before: every attack on every clean-correct sample at every eps (``cascade=False``), forwards in
  batches of 64 (``chunk=64``, the evaluation's batch: how it ran before chunks existed), through
  spikingjelly's and torch's own kernels (``lean_kernels=False``);
* after: the defaults, i.e. the cascade (each attack only on samples no cheaper attack broke),
  forwards in chunks of 8, and no-grad forwards through snnsec's lean LIF and max-pool kernels.

One change is in both: an attack's model forward runs outside the keyed random draws (it was
inside, paying a Python call per operation), so "before" is a little faster than it was.

Printed: wall times and their ratio, attack forwards per sample, whether the per-sample robust
masks are equal at every eps, and whether every check gave the same verdict. The cascade alone
gives the same per-sample results by construction (tests/test_cascade.py); the chunk changes the
summation order of the forward and so could move a sample in principle: this run measures
whether it did. Without a checkpoint it trains a csnn on the N-MNIST subset (3 epochs) first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "nmnist-subset"


def _model_and_data(args):
    from snnsec import checkpoint
    from snnsec.runs.adversarial import random_subset

    ckpt, root = args.checkpoint, args.root
    if ckpt is None:
        if not DATA.exists():
            print(f"skipped: no checkpoint given and the N-MNIST subset is not at {DATA}")
            sys.exit(0)
        from snnsec.train import TrainConfig, run_training

        ckpt = Path(tempfile.mkdtemp()) / "csnn"
        root = DATA
        run_training(data="nmnist", model="csnn", root=root, T=8, out=ckpt, progress=False,
                     config=TrainConfig(epochs=3, batch_size=32, lr=1e-3, seed=0))
    model, meta = checkpoint.load(ckpt)
    ds, spec = checkpoint.matching_dataset(meta, root=root, split="test", source=str(ckpt))
    x, y = random_subset(ds, args.n, 0)
    return model, x, y, f"{meta.get('arch')} ({ckpt}), {spec.name}, n = {x.shape[0]}"


def main(argv=None) -> None:
    from snnsec.attacks.adversarial import EvalConfig, evaluate

    p = argparse.ArgumentParser()
    p.add_argument("checkpoint", nargs="?")
    p.add_argument("root", nargs="?")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--eps", default="4/255,16/255,32/255")
    p.add_argument("--attacks", default="pgd,apgd,square")
    args = p.parse_args(argv)
    model, x, y, what = _model_and_data(args)
    common = dict(attacks=args.attacks, eps=tuple(args.eps.split(",")), seed=0)
    configs = {"before": EvalConfig(cascade=False, chunk=64, lean_kernels=False, **common), "after": EvalConfig(**common)}
    evs, secs = {}, {}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        evs[name] = evaluate(model, x, y, cfg, progress=False)
        secs[name] = time.perf_counter() - t0
    b, a = evs["before"], evs["after"]
    fwd = {k: sum(r.counts["forward_samples"] + r.counts["backward_samples"] for r in ev.runs) / ev.n
           for k, ev in evs.items()}
    same_masks = {e: bool(torch.equal(b.robust_mask(e), a.robust_mask(e))) for e in b.config.eps}
    verdicts = lambda ev: [(r["check"], r.get("estimator"), r["passed"]) for r in ev.check_rows]  # noqa: E731
    print(f"full evaluation on {what}: {args.attacks} at {args.eps}, checklist on, {torch.get_num_threads()} thread(s)")
    for k in ("before", "after"):
        ev = evs[k]
        print(f"  {k:6s}: {secs[k]:8.1f} s, attack forwards+backwards per sample {fwd[k]:9.1f}, "
              f"robust accuracy {', '.join(f'{v:.3f}' for v in ev.robust_accuracy.values())}, reliable {ev.reliable}")
    print(f"  speed-up: {secs['before'] / secs['after']:.2f}x (goal >= 3x); attack passes {fwd['before'] / fwd['after']:.2f}x fewer")
    print(f"  per-sample robust masks equal at every eps: {all(same_masks.values())} "
          f"({', '.join(f'{k:.4g}: {v}' for k, v in same_masks.items())}); "
          f"same check verdicts: {verdicts(a) == verdicts(b)}")


if __name__ == "__main__":
    main()
