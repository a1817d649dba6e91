"""One defense protocol in four kinds, a registry by name, and tidy result rows.

Every defense is a small dataclass holding its hyper-parameters, called torchattacks-style, and
subclasses the base of its kind, which fixes the call shape:

- :class:`ModelInspection`   ``det(model, x_clean) -> Detection``   (is there a backdoor, toward which class?)
- :class:`InputInspection`   ``det.fit(model, x_clean)``; ``det(x) -> InputScores``  (is this input triggered?)
- :class:`DatasetInspection` ``det(model, x_train, y_train) -> DatasetScores``    (which samples are poisoned?)
- :class:`RepairDefense`     ``rep(model, x, y) -> Repair``                       (a cleaner copy of the model)

Callers read capability flags, never names: ``needs_clean_data`` (a model inspection that works
data-free says False and is given no samples), ``needs_training_set`` (a repair that works on the
suspect, possibly poisoned training set, as ABL, instead of a small clean set),
``needs_fresh_model`` (a repair that retrains an untrained copy of the architecture) and
``statistic`` (what the model inspection's number is, for reports). Each kind's
``row_groups(result, truth)`` gives the rows a result stores besides its metrics.

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

from snnsec.harness import device_of, inspection_mode

KINDS = ("model", "input", "dataset", "repair")
_REGISTRY: dict[str, type] = {}


def register(cls):
    """Make a defense available by its ``name``; it must subclass the base of one kind."""
    bases = (ModelInspection, InputInspection, DatasetInspection, RepairDefense)
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        raise ValueError(f"defense {getattr(cls, '__name__', cls)!r}: must subclass one of "
                         f"{[b.__name__ for b in bases]} (snnsec.defenses.base)")
    if not cls.name:
        raise ValueError(f"defense {cls.__name__}: set the class attribute 'name'")
    _REGISTRY[cls.name] = cls
    return cls


def names(kind: str | None = None) -> list[str]:
    return sorted(n for n, c in _REGISTRY.items() if kind is None or c.kind == kind)


def get(name: str) -> type:
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


class ModelInspection(Defense):
    """``det(model, x_clean=None) -> Detection``: is the model backdoored, toward which class?"""

    kind = "model"
    # False: the method works data-free and is given no samples where none are needed
    needs_clean_data: ClassVar[bool] = True
    # what Detection.statistic is, as reports name it
    statistic: ClassVar[str] = "statistic"

    def __call__(self, model, x_clean=None) -> "Detection":
        raise NotImplementedError

    def row_groups(self, result: "Detection", truth=None) -> list[dict[str, Any]]:
        return result.row_groups()


class InputInspection(Defense):
    """``det.fit(model, x_clean, x_holdout=None)``, then ``det(x) -> InputScores``: is an input triggered?"""

    kind = "input"

    def fit(self, model, x_clean, x_holdout=None) -> "InputInspection":
        raise NotImplementedError

    def __call__(self, x) -> "InputScores":
        raise NotImplementedError

    def row_groups(self, result: "InputScores", truth) -> list[dict[str, Any]]:
        return []


class DatasetInspection(Defense):
    """``det(model, x_train, y_train) -> DatasetScores``: which training samples are poisoned?"""

    kind = "dataset"

    def __call__(self, model, x_train, y_train) -> "InputScores":
        raise NotImplementedError

    def row_groups(self, result: "InputScores", truth) -> list[dict[str, Any]]:
        return []


class RepairDefense(Defense):
    """``rep(model, x, y) -> Repair``: a cleaner copy of the model (the caller's is never changed).

    ``x, y`` are the defender's small clean set, or with ``needs_training_set`` the suspect
    training set itself; with ``needs_fresh_model`` the model given is an untrained one of the
    same architecture, which the repair trains."""

    kind = "repair"
    needs_training_set: ClassVar[bool] = False
    needs_fresh_model: ClassVar[bool] = False

    def __call__(self, model, x, y) -> "Repair":
        raise NotImplementedError

    def row_groups(self, result: "Repair", truth=None) -> list[dict[str, Any]]:
        return []


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
    """The named taps of ``x``, batch by batch on the model's device, returned on the CPU."""
    out: dict[str, list] = {n: [] for n in names_}
    dev = device_of(model)
    with inspection_mode(model):
        for s in batched(len(x), batch_size):
            t = model.taps(x[s].to(dev))
            for n in names_:
                if n not in t:
                    raise ValueError(f"model.taps: no tap {n!r}; the model offers {sorted(t)}")
                out[n].append(t[n].detach().float().cpu())
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
