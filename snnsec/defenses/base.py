"""One defense protocol in four kinds, a registry by name, and tidy result rows.

Every defense is a small dataclass holding its hyper-parameters, called torchattacks-style:

- model inspection  ``det(model, x_clean) -> Detection``      (is there a backdoor, toward which class?)
- input inspection  ``det.fit(model, x_clean)``; ``det(x) -> InputScores``  (is this input triggered?)
- dataset inspection ``det(model, x_train, y_train) -> DatasetScores``       (which samples are poisoned?)
- repair            ``rep(model, x, y, ...) -> Repair``                      (a cleaner copy of the model)

Inputs are frames ``[N, T, P, H, W]`` in [0, 1]. The model is a ``SpikingClassifier`` (or any
module with the same ``forward`` and ``taps``); defenses never change the caller's model:
inspection restores every module's mode, repair works on a deep copy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

from snnsec.harness import inspection_mode

KINDS = ("model", "input", "dataset", "repair")
_REGISTRY: dict[str, type] = {}


def register(cls):
    """Class decorator: make a defense available by its ``name`` (and validate its ``kind``)."""
    if getattr(cls, "kind", None) not in KINDS:
        raise ValueError(f"defense {cls.__name__}: kind must be one of {KINDS}, got {getattr(cls, 'kind', None)!r}")
    _REGISTRY[cls.name] = cls
    return cls


def names(kind: str | None = None) -> list[str]:
    _load_all()
    return sorted(n for n, c in _REGISTRY.items() if kind is None or c.kind == kind)


def get(name: str) -> type:
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"defense: unknown name {name!r}; expected one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def make(name: str, **params):
    cls = get(name)
    known = {f.name for f in fields(cls)}
    bad = sorted(set(params) - known)
    if bad:
        raise ValueError(f"defense {name!r}: unknown parameter(s) {bad}; expected some of {sorted(known)}")
    return cls(**params)


def _load_all() -> None:
    # Importing the modules runs their @register decorators.
    from snnsec.defenses import (abl, activation_clustering, fine_pruning, membrane_margin,  # noqa: F401
                                 nc_unlearning, neural_cleanse, spectral, strip)


@dataclass(frozen=True)
class Limit:
    """The range a numeric parameter must lie in (checked when a defense is made)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return f"{kind} {' and '.join(parts)}".strip()

    def admits(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.integer and not isinstance(v, int)):
            return False
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or v <= self.high


COUNT = Limit(1, integer=True)  # epochs, steps, restarts, batch sizes: at least one
NONNEGATIVE_COUNT = Limit(0, integer=True)
POSITIVE = Limit(0, low_open=True)  # learning rates, costs, thresholds on scores
NONNEGATIVE = Limit(0)
FRACTION = Limit(0, 1)  # rates and ratios
OPEN_FRACTION = Limit(0, 1, low_open=True)  # a fraction that must select something

_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "dict": (dict,)}


class Defense:
    name: str = ""
    kind: str = ""
    # Parameter ranges, checked when the defense is made (before any work): a wrong one is an
    # error naming the parameter, never a silent "no backdoor found".
    limits: ClassVar[dict[str, Limit]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            kinds = _TYPES.get(str(f.type).replace(" | None", ""))
            optional = "None" in str(f.type)
            if kinds and not (v is None and optional) and (not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds)):
                raise ValueError(f"defense {self.name!r}: parameter '{f.name}' must be {str(f.type)}, got {v!r}")
            limit = self.limits.get(f.name)
            if limit is not None and not (v is None and optional) and not limit.admits(v):
                raise ValueError(f"defense {self.name!r}: parameter '{f.name}' must be {limit.describe()}, got {v!r}")

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


# --------------------------------------------------------------------------- results


@dataclass
class Detection:
    """Model inspection verdict. ``scores`` is the per-class statistic the method thresholds
    (NC: anomaly index, margin: the max-margin per class); ``evidence`` is JSON-able."""

    method: str
    backdoored: bool
    target: int | None
    statistic: float  # the number the verdict thresholds (anomaly index, p-value)
    scores: list[float]
    candidate: int | None = None  # the most suspicious class, flagged or not
    evidence: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)  # tensors for figures, not serialised

    def metrics(self, true_target: int | None = None) -> dict[str, float]:
        m = {"flagged": float(self.backdoored), "statistic": float(self.statistic)}
        if true_target is not None:
            m["target_correct"] = float(self.backdoored and self.target == int(true_target))
        return m

    def row_groups(self) -> list[dict[str, Any]]:
        """Row groups (:mod:`snnsec.bench`) besides :meth:`metrics`: the per-class scores a
        decision can be re-made from (NC's anomaly index, the margin test's margins)."""
        ev = self.evidence
        if "margins" in ev:  # the membrane-margin test: reachable margin (and the clean data's) per class
            m = {f"margin_class_{k}": float(v) for k, v in enumerate(ev["margins"])}
            m.update({f"clean_margin_class_{k}": float(v) for k, v in enumerate(ev.get("clean_margins", [])) if v is not None})
            return [{"metrics": m}]
        if "anomaly_threshold" not in ev or "classes" not in ev:
            return []
        return [{"metrics": {f"anomaly_index_class_{int(k)}": float(v) for k, v in zip(ev["classes"], self.scores)},
                 "extra": {"flagged": [int(c) for c in ev.get("flagged", [])]}}]

    def to_json(self) -> dict[str, Any]:
        return {"backdoored": bool(self.backdoored), "target": None if self.target is None else int(self.target),
                "candidate": None if self.candidate is None else int(self.candidate), "statistic": float(self.statistic), "scores": [float(s) for s in self.scores], **self.evidence}


@dataclass
class InputScores:
    """Input or dataset inspection: one score per sample (higher = more suspicious) and the
    thresholded decision."""

    scores: np.ndarray
    flagged: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics(self, is_poisoned) -> dict[str, float]:
        from snnsec import metrics

        y = np.asarray(is_poisoned).astype(bool)
        tpr, fpr = metrics.tpr_fpr(self.flagged, y)
        return {"tpr": tpr, "fpr": fpr, "auroc": metrics.auroc(self.scores, y)}


DatasetScores = InputScores


@dataclass
class Repair:
    model: torch.nn.Module
    extra: dict[str, Any] = field(default_factory=dict)


def to_rows(defense: Defense, metrics: dict[str, float], *, dataset: str, model: str, T: int | None, seed: int,
            config: dict, attack: str | None = None, attack_params: dict | None = None, run_id: str | None = None) -> list[dict]:
    """Tidy result rows (one per metric) for the results store."""
    from snnsec import results

    return results.make_rows(run_id=run_id or results.new_run_id(), dataset=dataset, model=model, T=T, seed=seed,
                             metrics={k: float(v) for k, v in metrics.items()}, attack=attack, attack_params=attack_params,
                             defense=defense.name, defense_params=defense.params(), config=config)


# --------------------------------------------------------------------------- shared helpers


def batched(n: int, batch_size: int):
    for i in range(0, n, batch_size):
        yield slice(i, min(n, i + batch_size))


@torch.no_grad()
def taps(model, x: torch.Tensor, names_: tuple[str, ...], batch_size: int = 64) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {n: [] for n in names_}
    with inspection_mode(model):
        for s in batched(len(x), batch_size):
            t = model.taps(x[s])
            for n in names_:
                if n not in t:
                    raise ValueError(f"model.taps: no tap {n!r}; the model offers {sorted(t)}")
                out[n].append(t[n].detach().float())
    return {n: torch.cat(v) for n, v in out.items()}


def rng(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def check_frames(x: torch.Tensor, what: str = "x") -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 5:
        raise ValueError(f"{what}: expected frames [N, T, P, H, W], got shape {tuple(x.shape)}")
    return x.float()
