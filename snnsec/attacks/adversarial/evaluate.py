"""Robustness evaluation: attacks x gradient estimators x eps, per-sample worst case, checklist.

    >>> from snnsec.attacks.adversarial import EvalConfig, evaluate
    >>> ev = evaluate(model, x, y, EvalConfig(attacks=("pgd", "apgd", "square"), eps=(1/255, 8/255)))
    >>> ev.robust_accuracy          # {eps: worst case over every attack and estimator}
    >>> ev.reliable, ev.checks      # the integrity checklist

Robust accuracy counts a sample as robust at eps only if it is classified correctly clean and
under every attack (and every gradient estimator) at that eps. Adversarial inputs are always
re-evaluated with the model; an attack's own success claim is never used. Minimal-norm attacks
(CW, DeepFool, SparseFool, OnePixel) are run once and count at eps only where their
perturbation's L-inf norm is <= eps. Perturbation norms are means over successful adversarials.

The cascade (``cascade=True``, AutoAttack's way): at each eps the attacks run cheapest first,
white-box before black-box, and each attacks only the samples no earlier one broke. A sample's
result does not depend on its batch-mates (:mod:`~snnsec.attacks.adversarial.per_sample`: forwards
in chunks of a fixed size, random starts drawn per sample), so the worst case is the one every
attack on every sample would give, sample by sample, at a fraction of the cost (except through an
estimator with batch statistics, PDSG, whose gradient for a sample depends on its chunk-mates as
the reference's depends on its batch-mates; its adversarial examples are checked by the model like
any other, so its worst case is still an upper bound). What changes is
the meaning of a per-attack number after the first: "robust to this attack and to every attack
before it" (rows say ``cascade``). The leading iterative attack of each gradient estimator runs on
every sample, since the checklist compares it with FGSM.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from snnsec.attacks.adversarial import checks as C
from snnsec.attacks.adversarial.adapter import Attack
from snnsec.attacks.adversarial.adaptive import restart_statistics
from snnsec.attacks.catalog import ALIASES, ATTACKS, EXTRA_ATTACKS
from snnsec.attacks.adversarial.binary import SpikeFlip, flips_to_reach
from snnsec.attacks.adversarial.eot import EOT
from snnsec.attacks.adversarial.gradients import gradient_mode, parse_gradient
from snnsec.attacks.adversarial.per_sample import FixedBatch
from snnsec.harness import device_of, preserve_modes
from snnsec.lean_kernels import lean_kernels

__all__ = ["ALIASES", "AdversarialEvaluation", "EvalConfig", "evaluate", "expand_attacks", "format_eps", "parse_eps"]



def _comma_list(v) -> tuple:
    """``"a, b"`` (a spec's or the command line's form) or a sequence -> a tuple of its items."""
    return tuple(e.strip() for e in v.split(",") if e.strip()) if isinstance(v, str) else tuple(v)


def expand_attacks(spec) -> tuple[str, ...]:
    """``"pgd,apgd"``, a list, or an alias (``autoattack``, ``ensemble``, ``all``) -> attack names."""
    out: list[str] = []
    for item in (i.strip().lower() for i in _comma_list(spec)):
        names = ALIASES.get(item, (item,))
        for n in names:
            if n not in ATTACKS and n not in EXTRA_ATTACKS:
                raise ValueError(f"unknown attack {n!r}; expected some of {sorted(ATTACKS) + list(EXTRA_ATTACKS)} "
                                 f"or an alias {sorted(ALIASES)}")
            if n not in out:
                out.append(n)
    if not out:
        raise ValueError("no attack given")
    return tuple(out)


def parse_eps(v) -> float:
    """``"8/255"``, ``"0.03"`` or a number -> float in [0, 1]."""
    try:
        if isinstance(v, str) and "/" in v:
            a, b = v.split("/", 1)
            e = float(a) / float(b)
        else:
            e = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        raise ValueError(f"eps: expected a number or 'k/255', got {v!r}") from None
    if not (0 <= e <= 1):
        raise ValueError(f"eps: expected a radius in [0, 1] (frames are in [0, 1]), got {v!r}")
    return e


def format_eps(e: float) -> str:
    k = e * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{e:.6g}"


@dataclass
class EvalConfig:
    """What to run. ``gradients``: estimators for white-box attacks (None: the model's own).

    ``fast``: reduced steps/queries for tests (never for reported numbers). ``eot``: draws per
    forward for stochastic encoders (1 = none; a stochastic model then fails the repeat check).
    ``flip_budget``/``flip_step``: spike-flip L0 budget and flips per iteration. ``queries``:
    Square's query budget when not the original 5,000, ``steps`` per-attack iterations when not
    the defaults (PGD 20, APGD/APGD-T/FAB/AutoAttack 100); reports must then say so.
    ``cascade``: attack only the samples still robust (module docstring). ``order``: ``"attack"``
    runs each white-box attack through every estimator before the next attack; ``"estimator"``
    runs every white-box attack through one estimator before the next estimator, so that the
    worst case after an estimator's block (:meth:`AdversarialEvaluation.cumulative`) is what the
    estimators so far find, and each estimator's gain over the ones before it is exact. ``chunk``: the fixed
    batch every forward runs in (per-sample numerics; padded): evaluations with the same chunk
    are comparable sample by sample.
    """

    attacks: tuple[str, ...] = ("pgd", "apgd", "square")
    eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    gradients: tuple[str, ...] | None = None
    fast: bool = False
    seed: int = 0
    eot: int = 1
    batch_size: int = 64
    checks: bool = True
    large_eps: float = 0.5
    steps_check: bool = True
    tol: float = 0.01
    min_grad_fraction: float = C.MIN_GRAD_FRACTION
    flip_budget: int = 2000
    flip_step: int = 20
    queries: int | None = None  # Square (also inside AutoAttack); None: 5,000 (100 with fast)
    steps: dict[str, int] | None = None  # per-attack iterations, e.g. {"autoattack": 25}; None: full strength
    binary_frames: bool | None = None  # None: detect from the clean inputs
    cascade: bool = True
    order: str = "attack"
    # 8 samples: the per-sample cost of a csnn forward and backward on the 2-core test machine is
    # lowest between 4 and 16 (in-cache); a larger chunk wastes more padding on a cascade's tail
    chunk: int = 8
    # the LIF's forwards and backwards and no-grad max pooling through snnsec.lean_kernels (bitwise
    # the same spikes and input gradients); False: spikingjelly's and torch's own
    lean_kernels: bool = True

    def __post_init__(self) -> None:
        self.attacks = expand_attacks(self.attacks)
        self.eps = tuple(sorted({parse_eps(e) for e in _comma_list(self.eps)}))
        if not self.eps:
            raise ValueError("eps: give at least one radius")
        if self.gradients is not None:
            self.gradients = _comma_list(self.gradients)
            for g in self.gradients:
                parse_gradient(g)
        if self.steps is not None:
            self.steps = {str(k): int(v) for k, v in dict(self.steps).items()}
            bad = [k for k, v in self.steps.items() if k not in ATTACKS or v < 1]
            if bad:
                raise ValueError(f"steps: expected attack name -> steps >= 1, got {bad}")
        if int(self.eot) < 1:
            raise ValueError(f"eot must be >= 1, got {self.eot}")
        if int(self.chunk) < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if self.order not in ("attack", "estimator"):
            raise ValueError(f"order: expected 'attack' or 'estimator', got {self.order!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["attacks"] = list(self.attacks)
        d["eps"] = [format_eps(e) for e in self.eps]
        d["gradients"] = None if self.gradients is None else list(self.gradients)
        return d


@dataclass
class _Run:
    attack: str
    gradient: str
    eps: float | None
    correct: torch.Tensor  # robust mask (clean-correct, attacked, and correct on x_adv)
    attacked: torch.Tensor  # the samples the attack ran on
    linf: torch.Tensor
    l2: torch.Tensor
    l0: torch.Tensor
    seconds: float
    counts: dict
    params: dict


@dataclass
class AdversarialEvaluation:
    config: EvalConfig
    n: int
    clean_correct: torch.Tensor
    runs: list[_Run] = field(default_factory=list)
    check_rows: list[dict] = field(default_factory=list)
    flips: dict | None = None
    seconds: float = 0.0

    # -- aggregates ----------------------------------------------------------------------------
    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())

    @property
    def reliable(self) -> bool:
        return C.reliable(self.check_rows)

    def _mask(self, attack: str | None, eps: float, gradient: str | None = None) -> torch.Tensor:
        m = self.clean_correct.clone()
        for r in self.runs:
            if (attack is None or r.attack == attack) and (gradient is None or r.gradient == gradient) \
                    and self._counts_at(r, eps):
                m &= _correct_at(r, eps)
        return m

    @staticmethod
    def _counts_at(r: _Run, eps: float) -> bool:
        return r.eps is None or math.isclose(r.eps, eps, rel_tol=0, abs_tol=1e-12)

    def attacks(self) -> list[str]:
        return list(dict.fromkeys(r.attack for r in self.runs))

    def robust_mask(self, eps: float, attack: str | None = None, gradient: str | None = None) -> torch.Tensor:
        """Samples robust at ``eps`` to ``attack`` (default: every attack) through ``gradient``
        (default: every estimator): the per-sample worst case over what was run."""
        return self._mask(attack, eps, gradient) if eps > 0 else self.clean_correct.clone()

    @property
    def robust_accuracy(self) -> dict[float, float]:
        # No L-inf attack ran (spikeflip alone has a flip budget, not an eps): no curve, rather
        # than the clean accuracy reported as robust at every eps.
        if not self.runs:
            return {}
        return {e: float(self.robust_mask(e).float().mean()) for e in self.config.eps}

    def per_attack(self) -> dict[str, dict[float, float]]:
        return {a: {e: float(self.robust_mask(e, a).float().mean()) for e in self.config.eps} for a in self.attacks()}

    def per_attack_gradient(self) -> dict[str, dict[float, float]]:
        out: dict[str, dict[float, float]] = {}
        for r in self.runs:
            key = r.attack if r.gradient == "model" else f"{r.attack}@{r.gradient}"
            for e in self.config.eps:
                if self._counts_at(r, e):
                    out.setdefault(key, {})[e] = float((self.clean_correct & _correct_at(r, e)).float().mean())
        return out

    def cumulative(self, eps: float) -> list[dict]:
        """The worst case after each run at ``eps``, in the order they ran: with a cascade the
        samples a run skipped were broken already, so each prefix is exactly the worst case over
        its runs (with ``order="estimator"``, each estimator's gain over those before it)."""
        m, out = self.clean_correct.clone(), []
        for r in self.runs:
            if self._counts_at(r, eps):
                m &= _correct_at(r, eps)
                out.append({"attack": r.attack, "gradient": r.gradient, "robust_accuracy": float(m.float().mean())})
        return out

    def success_rate(self, eps: float, attack: str | None = None) -> float:
        """Fraction of initially correct samples that the attack(s) misclassify at eps."""
        cc = self.clean_correct
        if not bool(cc.any()):
            return float("nan")
        return float((~self.robust_mask(eps, attack)[cc]).float().mean())

    def eps_half(self) -> float | None:
        """Smallest eps on the grid where worst-case robust accuracy is <= half the clean accuracy."""
        half = self.clean_accuracy / 2
        for e, a in sorted(self.robust_accuracy.items()):
            if a <= half:
                return e
        return None

    def norms(self) -> dict[str, dict[str, dict[str, float]]]:
        """Mean L-inf / L2 / L0 of successful adversarials per attack and eps."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for a in self.attacks():
            for e in self.config.eps:
                rs = [r for r in self.runs if r.attack == a and self._counts_at(r, e)]
                succ = [r.attacked & self.clean_correct & ~_correct_at(r, e) for r in rs]
                vals = {k: [getattr(r, k)[s] for r, s in zip(rs, succ)] for k in ("linf", "l2", "l0")}
                out.setdefault(a, {})[format_eps(e)] = {
                    k: (float(torch.cat(v).double().mean()) if sum(t.numel() for t in v) else float("nan"))
                    for k, v in vals.items()}
        return out

    def costs(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for r in self.runs:
            c = out.setdefault(r.attack, {"seconds": 0.0, "forwards": 0, "backwards": 0, "forward_samples": 0,
                                          "backward_samples": 0})
            c["seconds"] += r.seconds
            for k, v in r.counts.items():
                c[k] += v
        return out

    def unreliable_reasons(self) -> list[str]:
        """Why the run is unreliable (empty when it is not): each failed estimator-independent
        check, and, when no gradient estimator passed its own checks, each estimator's failures."""
        if self.reliable:
            return []
        rescued = any(C.estimators(self.check_rows).values())
        return [(f"[{r['estimator']}] " if r.get("estimator") else "")
                + f"{r['check']}: {r['detail']} (value {r['value']:.4g}, threshold {r['threshold']:.4g})"
                for r in self.check_rows if r["passed"] is False and not (rescued and r.get("estimator"))]

    def to_dict(self) -> dict:
        eh = self.eps_half()
        return {
            "n_samples": self.n,
            "clean_accuracy": self.clean_accuracy,
            "eps": [format_eps(e) for e in self.config.eps],
            "robust_accuracy": {format_eps(e): a for e, a in self.robust_accuracy.items()},
            "robust_accuracy_per_attack": {a: {format_eps(e): v for e, v in c.items()} for a, c in self.per_attack().items()},
            "robust_accuracy_per_attack_gradient": {a: {format_eps(e): v for e, v in c.items()}
                                                    for a, c in self.per_attack_gradient().items()},
            "robust_accuracy_cumulative": {format_eps(e): self.cumulative(e) for e in self.config.eps},
            "attack_success_rate": {format_eps(e): self.success_rate(e) for e in self.robust_accuracy},
            "attack_success_rate_per_attack": {a: {format_eps(e): self.success_rate(e, a) for e in self.config.eps}
                                               for a in self.attacks()},
            "eps_half": None if eh is None else format_eps(eh),
            "norms": self.norms(),
            "costs": self.costs(),
            "flips": self.flips,
            "reliable": self.reliable,
            "unreliable_reasons": self.unreliable_reasons(),
            "checks": self.check_rows,
            "seconds": self.seconds,
            "config": self.config.to_dict(),
        }


def _correct_at(r: _Run, eps: float) -> torch.Tensor:
    if r.eps is not None:
        return r.correct
    # minimal-norm attack: an adversarial counts at eps only inside the L-inf ball
    return r.correct | (r.linf > eps + 1e-6)


def _batched_predict(model: nn.Module, x: torch.Tensor, bs: int) -> torch.Tensor:
    dev = device_of(model)
    with torch.no_grad():
        return torch.cat([model(x[i:i + bs].to(dev)).argmax(1).to(x.device) for i in range(0, x.shape[0], bs)])


def _progress(total: int, enabled: bool, desc: str):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not (enabled and sys.stderr.isatty()), leave=False)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: EvalConfig | None = None, *,
             progress: bool = True) -> AdversarialEvaluation:
    """Run ``config`` on ``(x, y)``; returns an :class:`AdversarialEvaluation` (checklist included).

    ``x``: frames ``[N, T, P, H, W]`` in [0, 1] (or static images for rate-coded models), ``y``: labels.
    The model's training flags are the same afterwards as before.
    """
    cfg = config or EvalConfig()
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"evaluate: {x.shape[0]} inputs for {y.shape[0]} labels")
    t_start = time.perf_counter()
    y = y.long()
    with preserve_modes(model), lean_kernels(model, cfg.lean_kernels):
        model.eval()
        attacked = FixedBatch(EOT(model, cfg.eot, seed=cfg.seed) if cfg.eot > 1 else model, cfg.chunk)
        judge = FixedBatch(EOT(model, cfg.eot, seed=cfg.seed + 1_000_003), cfg.chunk) if cfg.eot > 1 else attacked
        clean_correct = _batched_predict(judge, x, cfg.batch_size) == y
        ev = AdversarialEvaluation(config=cfg, n=int(x.shape[0]), clean_correct=clean_correct)
        binary = cfg.binary_frames if cfg.binary_frames is not None else bool(((x == 0) | (x == 1)).all())
        todo = cascade_order(cfg)
        eps_pos = [e for e in cfg.eps if e > 0]
        minimal = [(a, g) for a, g in todo if not ATTACKS[a].uses_eps]
        bounded = [(a, g) for a, g in todo if ATTACKS[a].uses_eps]
        full = set(leading_attacks(todo))
        bar = _progress(len(minimal) + len(bounded) * len(eps_pos) + ("spikeflip" in cfg.attacks), progress,
                        "adversarial")

        def record(run, xa, name, grad):
            ev.runs.append(run)
            if cfg.checks and run.eps is not None:
                ev.check_rows.append(C.check_constraints(x, xa, eps=run.eps,
                                                         norm="l2" if ATTACKS[name].threat == "l2" else "linf",
                                                         attack=f"{name}@{grad}"))
            bar.update(1)

        for name, grad in minimal:
            run, xa, _ = _run_attack(attacked, judge, name, grad, None, x, y, clean_correct, cfg)
            record(run, xa, name, grad)
        for eps in eps_pos:
            robust = clean_correct.clone()
            for r in ev.runs:  # minimal-norm adversarials inside this ball
                robust &= _correct_at(r, eps)
            for name, grad in bounded:
                targets = robust if cfg.cascade and (name, grad) not in full else clean_correct
                run, xa, _ = _run_attack(attacked, judge, name, grad, eps, x, y, targets, cfg)
                robust &= run.correct
                record(run, xa, name, grad)
        if "spikeflip" in cfg.attacks:
            ev.flips = _run_flips(attacked, x, y, clean_correct, cfg, binary, ev)
            bar.update(1)
        bar.close()
        if cfg.checks:
            ev.check_rows.extend(_checklist(attacked, judge, x, y, clean_correct, cfg, ev))
    ev.seconds = time.perf_counter() - t_start
    return ev


def cascade_order(cfg: EvalConfig) -> list[tuple[str, str]]:
    """``(attack, gradient estimator)`` pairs in the order the evaluation runs them: white-box
    before black-box (the Square-vs-white-box check needs every white-box result first), each
    group by cost; an attack through every estimator before the next attack, or (``order =
    "estimator"``) every white-box attack through an estimator before the next estimator."""
    gradients = cfg.gradients or ("model",)
    names = sorted((a for a in cfg.attacks if a in ATTACKS), key=lambda a: (not ATTACKS[a].white_box, ATTACKS[a].cost))
    white = [a for a in names if ATTACKS[a].white_box]
    black = [(a, "model") for a in names if not ATTACKS[a].white_box]
    if cfg.order == "estimator":
        return [(a, g) for g in gradients for a in white] + black
    return [(a, g) for a in white for g in gradients] + black


def leading_attacks(todo: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Per gradient estimator, its first iterative L-inf attack (what the PGD-vs-FGSM check reads);
    it attacks every sample, also in a cascade."""
    first: dict[str, str] = {}
    for a, g in todo:
        if a in _ITERATIVE and g not in first:
            first[g] = a
    return [(a, g) for g, a in first.items()]


# iterative L-inf attacks the PGD-vs-FGSM check may compare with FGSM, in order of preference
_ITERATIVE = ("pgd", "apgd", "bim", "autoattack")


def _run_attack(attacked, judge, name, grad, eps, x, y, targets, cfg, steps=None):
    """One attack at one eps on the samples in ``targets`` (a mask; the others keep their clean
    input and count as not robust: clean-wrong, or broken by an earlier attack of a cascade).
    Returns the run, the adversarial inputs and the model's correctness on them (on ``targets``)."""
    if steps is None and cfg.steps:
        steps = cfg.steps.get(name)
    atk = Attack(attacked, name, eps or 0.0, steps=steps, queries=cfg.queries, seed=cfg.seed, fast=cfg.fast,
                 num_classes=getattr(attacked, "num_classes", None))
    idx = torch.nonzero(targets).flatten()
    xa = x.clone()
    t0 = time.perf_counter()
    with gradient_mode(_inner(attacked), grad):
        for i in range(0, idx.numel(), cfg.batch_size):
            j = idx[i:i + cfg.batch_size]
            xa[j] = atk(x[j], y[j], keys=j)
    seconds = time.perf_counter() - t0
    adv_correct = torch.zeros_like(targets)
    if idx.numel():
        adv_correct[idx] = _batched_predict(judge, xa[idx], cfg.batch_size) == y[idx]
    d = (xa - x).reshape(x.shape[0], -1).double()
    run = _Run(attack=name, gradient=grad, eps=eps, correct=targets & adv_correct, attacked=targets.clone(),
               linf=d.abs().amax(1), l2=d.norm(dim=1), l0=(d != 0).sum(1), seconds=seconds,
               counts=atk.counter.counts(), params={**atk.params(), "gradient": grad, "cascade": bool(cfg.cascade)})
    return run, xa, adv_correct


def _inner(m: nn.Module) -> nn.Module:
    while isinstance(m, (EOT, FixedBatch)):
        m = m.model
    return m


def _run_flips(attacked, x, y, clean_correct, cfg, binary, ev) -> dict:
    if not binary:
        raise ValueError("spikeflip needs binary frames; load the data with binary=True or drop 'spikeflip'")
    gradients = cfg.gradients or ("model",)
    best_flips = None
    best_success = torch.zeros(x.shape[0], dtype=torch.bool)
    counts = {}
    t0 = time.perf_counter()
    for grad in gradients:
        atk = SpikeFlip(attacked, budget=cfg.flip_budget, per_step=cfg.flip_step, gradient=grad)
        res_parts = [atk.run(x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]) for i in range(0, x.shape[0], cfg.batch_size)]
        flips = torch.cat([r.flips for r in res_parts])
        success = torch.cat([r.success for r in res_parts])
        xa = torch.cat([r.x_adv for r in res_parts])
        events = torch.cat([r.events for r in res_parts])
        if cfg.checks:
            ev.check_rows.append(C.check_constraints(x, xa, eps=None, binary=True, attack=f"spikeflip@{grad}"))
        # per-sample best (fewest flips) over estimators
        if best_flips is None:
            best_flips = torch.where(success, flips, torch.full_like(flips, -1))
        else:
            better = success & (~best_success | (flips < best_flips))
            best_flips = torch.where(better, flips, best_flips)
        best_success |= success
        counts = {k: counts.get(k, 0) + v for k, v in atk.counter.counts().items()}
    ok = clean_correct & best_success
    f = best_flips[ok].double()
    ev_count = events.double()
    budget_5 = flips_to_reach(best_flips.clamp(min=0), best_success, clean_correct, 0.05)
    return {
        "budget": cfg.flip_budget, "per_step": cfg.flip_step, "gradients": list(gradients),
        "success_rate": float(ok.sum()) / max(int(clean_correct.sum()), 1),
        "robust_accuracy_at_budget": float((clean_correct & ~best_success).float().mean()),
        "median_flips": float(f.median()) if f.numel() else float("nan"),
        "mean_flips": float(f.mean()) if f.numel() else float("nan"),
        # None: robust accuracy never fell to 5% within the budget (JSON has no infinity)
        "flips_for_5pct": None if math.isinf(budget_5) else budget_5,
        "median_events": float(ev_count.median()),
        "mean_events": float(ev_count.mean()),
        "per_sample_flips": best_flips.tolist(),
        "seconds": time.perf_counter() - t0,
        "counts": counts,
    }


def _checklist(attacked, judge, x, y, clean_correct, cfg, ev) -> list[dict]:
    """The integrity checks. Those that ask whether the gradient an attack followed was any good
    (non-zero, PGD beats FGSM, more steps help, a huge eps breaks everything) run once per gradient
    estimator the evaluation used, on that estimator's gradient, and carry its name: a masked
    model attacked through a working surrogate is judged by the surrogate, not by the gradient the
    attack never used (:func:`~snnsec.attacks.adversarial.checks.reliable`)."""
    rows = []
    n = ev.n
    sub = slice(0, min(n, cfg.batch_size))
    rows.append(C.check_repeat(judge, x[sub]))
    # the PGD pipeline at eps = 0 must give back the clean predictions (every step is a zero step)
    _, _, eps0_correct = _run_attack(attacked, judge, "pgd", "model", 0.0, x, y, torch.ones_like(clean_correct), cfg,
                                     steps=1)
    rows.append(C.check_eps_zero(clean_correct, eps0_correct, "pgd"))
    eps_pos = [e for e in cfg.eps if e > 0]
    # the curves every evaluation has in full, cascade or not: the leading attacks' and the worst case
    curves = {f"{a}@{g}": {e: float(ev.robust_mask(e, a, g).float().mean()) for e in eps_pos}
              for a, g in leading_attacks(cascade_order(cfg))}
    if ev.runs and eps_pos:
        curves["worst case"] = {e: float(ev.robust_mask(e).float().mean()) for e in eps_pos}
    if curves:
        rows.append(C.check_monotone_eps(curves, n, cfg.tol))
    for grad in cfg.gradients or ("model",):
        rows += [{**r, "estimator": grad} for r in _estimator_checks(attacked, judge, grad, x, y, clean_correct, cfg, ev,
                                                                     eps_pos, sub)]
    if "square" in ev.attacks():
        white = [a for a in ev.attacks() if ATTACKS[a].white_box]
        if white:
            sq = {e: ~ev.robust_mask(e, "square") & clean_correct for e in eps_pos}
            wb = {e: ~_and([ev.robust_mask(e, a) for a in white]) & clean_correct for e in eps_pos}
            rows.append(C.check_square(sq, wb, n, cfg.tol))
    return rows


def _estimator_checks(attacked, judge, grad, x, y, clean_correct, cfg, ev, eps_pos, sub) -> list[dict]:
    """The gradient checks of one estimator (see :func:`_checklist`)."""
    n = ev.n
    with gradient_mode(_inner(attacked), grad):
        restart_statistics(attacked)
        rows = [C.check_gradient(attacked, x[sub], y[sub], clean_correct[sub], cfg.min_grad_fraction)]
    # FGSM baseline and a longer/shorter PGD: run here if the user did not ask for them
    if eps_pos:
        fg = {e: float(_run_attack(attacked, judge, "fgsm", grad, e, x, y, clean_correct, cfg)[0].correct.float().mean())
              for e in eps_pos}
        iterative = [a for a, g in leading_attacks(cascade_order(cfg)) if g == grad]
        if iterative:
            a = iterative[0]
            rows.append(C.check_pgd_vs_fgsm({e: float(ev.robust_mask(e, a, grad).float().mean()) for e in eps_pos}, fg,
                                            a, n, cfg.tol))
        else:
            rows.append(C._row("pgd_vs_fgsm", None, float("nan"), 0, "no iterative L-inf attack run"))
        if cfg.steps_check:
            # the eps where PGD is most informative: robust accuracy nearest half the clean accuracy
            target = ev.clean_accuracy / 2
            e_mid = min(eps_pos, key=lambda e: abs(fg[e] - target))
            steps_many = 20 if not cfg.fast else 10
            few, many = max(1, steps_many // 4), steps_many
            accs = [float(_pgd_steps(attacked, judge, grad, e_mid, x, y, clean_correct, cfg, s, ev).float().mean())
                    for s in (few, many)]
            rows.append(C.check_monotone_steps(accs[0], accs[1], (few, many), e_mid, n, cfg.tol))
    large, _, _ = _run_attack(attacked, judge, "pgd", grad, cfg.large_eps, x, y, clean_correct, cfg)
    rows.append(C.check_large_eps(float(large.correct.float().mean()), cfg.large_eps, "pgd"))
    return rows


def _pgd_steps(attacked, judge, grad, eps, x, y, clean_correct, cfg, steps, ev) -> torch.Tensor:
    """Robust mask of PGD with ``steps`` at ``eps``: the evaluation's own run when it is that run
    on every clean-correct sample (per-sample results do not depend on the batch), else a new one."""
    for r in ev.runs:
        if (r.attack == "pgd" and r.gradient == grad and r.eps == eps and r.params.get("steps") == steps
                and torch.equal(r.attacked, clean_correct)):
            return r.correct
    return _run_attack(attacked, judge, "pgd", grad, eps, x, y, clean_correct, cfg, steps=steps)[0].correct


def _and(masks: list[torch.Tensor]) -> torch.Tensor:
    out = masks[0].clone()
    for m in masks[1:]:
        out &= m
    return out
