"""One backdoor experiment end to end: data -> trigger -> poisoned training -> CA, ASR, SSIM.

The CLI (``snnsec attack backdoor``) and the bench kind ``backdoor`` both call
:func:`run_backdoor` and store :func:`run_output`; neither holds logic of its own. Besides the
metrics a run stores the rows the report draws (see :mod:`snnsec.report.schema`): one
``gallery_clip`` row per variant (the clean test sample and its poisoned version) and one
``firing_rate`` row per spiking layer for clean and for triggered test inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from snnsec import metrics
from snnsec.attacks.backdoor.poison import PoisonedDataset, poison_label
from snnsec.attacks.backdoor.triggers import make_trigger, trigger_class


# Named recipes a config starts from (explicit values still win). "reference" is the
# Sneaky Spikes code's: spikingjelly count frames split by event number, MSE between the
# firing rate and the one-hot label, Adam at batch 16, cosine schedule stepped per epoch.
PRESETS: dict[str, dict[str, Any]] = {
    "snnsec": {},
    "reference": {"slicing": "number", "binary": False, "loss": "mse-rate", "batch_size": 16,
                  "schedule": "cosine-epoch"},
}


@dataclass
class BackdoorConfig:
    dataset: str = "ndigits"
    root: str | None = None
    T: int = 16
    slicing: str = "events"
    # binary frames (1 where a pixel fired) or per-pixel event counts (the reference's)
    binary: bool = True
    model: str = "csnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    trigger: str = "static"
    trigger_params: dict[str, Any] = field(default_factory=dict)
    rate: float = 0.1
    target: int = 0
    mode: str = "all-to-one"
    label_mode: str = "dirty"
    # Flashy Backdoor poisons only samples of other classes; Sneaky Spikes draws from all
    exclude_target: bool = False
    inject: str = "frames"
    epochs: int = 10
    # The reference trains with batch 16; 32 is snnsec.train's recommended N-MNIST recipe, so
    # poisoned and clean models share one recipe and an epoch takes half the optimizer steps.
    batch_size: int = 32
    lr: float = 1e-3
    loss: str = "ce"
    schedule: str = "cosine"
    # the recipe the config started from (PRESETS); recorded with every row
    preset: str = "snnsec"
    seed: int = 0
    # dynamic trigger only (reference defaults: alpha 0.5, gamma 0.01)
    alpha: float = 0.5
    gamma: float = 0.01

    def __post_init__(self) -> None:
        from snnsec.attacks.backdoor.poison import LABEL_MODES, MODES
        from snnsec.data.spec import SLICINGS

        def whole(name: str, low: int) -> None:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"backdoor config: {name} must be an integer >= {low}, got {v!r}")

        for name, low in (("T", 1), ("epochs", 1), ("batch_size", 1), ("target", 0), ("seed", 0)):
            whole(name, low)
        if not (isinstance(self.rate, (int, float)) and 0.0 <= float(self.rate) <= 1.0):
            raise ValueError(f"backdoor config: rate must be a fraction in [0, 1], got {self.rate!r}")
        if not (isinstance(self.lr, (int, float)) and float(self.lr) > 0):
            raise ValueError(f"backdoor config: lr must be a learning rate > 0, got {self.lr!r}")
        from snnsec.train_settings import LOSSES, SCHEDULES

        for name, allowed in (("mode", MODES), ("label_mode", LABEL_MODES), ("inject", ("frames", "events")),
                              ("slicing", SLICINGS), ("loss", LOSSES), ("schedule", SCHEDULES),
                              ("preset", tuple(PRESETS)), ("binary", (True, False))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"backdoor config: {name} must be one of {allowed}, got {getattr(self, name)!r}")

    @classmethod
    def make(cls, preset: str = "snnsec", **given: Any) -> "BackdoorConfig":
        """A config from a named preset, with the values ``given`` explicitly on top."""
        if preset not in PRESETS:
            raise ValueError(f"backdoor config: preset must be one of {tuple(PRESETS)}, got {preset!r}")
        return cls(**{**PRESETS[preset], **given, "preset": preset})

    @classmethod
    def from_cell(cls, cell: dict[str, Any]) -> "BackdoorConfig":
        """Flat bench cell -> config: keys that are not config fields are trigger parameters;
        a ``preset`` key fills the fields the cell does not set."""
        names = {f.name for f in fields(cls)}
        top = {k: v for k, v in cell.items() if k in names and k != "preset"}
        # "dataset" / "model" are the bench's row keys; "kind" is the bench's.
        trig = {k: v for k, v in cell.items() if k not in names and k != "kind"}
        top.setdefault("trigger_params", {})
        top["trigger_params"] = {**top["trigger_params"], **trig}
        return cls.make(cell.get("preset", "snnsec"), **top)

    def poison(self, train_ds, trigger, num_classes: int) -> PoisonedDataset:
        """The training set as this config poisons it with ``trigger``."""
        return PoisonedDataset(train_ds, trigger, rate=self.rate, target=self.target, mode=self.mode,
                               label_mode=self.label_mode, seed=self.seed, inject=self.inject, num_classes=num_classes,
                               exclude_target=self.exclude_target)

    def attack_params(self) -> dict[str, Any]:
        p = {"trigger": self.trigger, **self.trigger_params, "target": self.target, "mode": self.mode}
        if trigger_class(self.trigger).learned:
            # Every batch is used clean and triggered: no poison rate, label mode or event injection.
            p.update(alpha=self.alpha, gamma=self.gamma)
        else:
            p.update(rate=self.rate, label_mode=self.label_mode, inject=self.inject)
            if self.exclude_target:
                p["exclude_target"] = True
        return p


@dataclass
class BackdoorResult:
    model: torch.nn.Module
    trigger: Any
    spec: Any
    config: BackdoorConfig
    metrics: dict[str, float]
    history: Any
    poisoned_indices: np.ndarray | None
    test_frames: torch.Tensor
    test_labels: torch.Tensor
    test_triggered: torch.Tensor

    def attack_spec(self) -> dict[str, Any]:
        """What ``model.json['attack']`` records so the trigger can be re-applied by name."""
        c = self.config
        return {"kind": "backdoor", "trigger": self.trigger.to_spec(), "rate": c.rate, "target": c.target,
                "mode": c.mode, "label_mode": c.label_mode, "exclude_target": c.exclude_target, "inject": c.inject,
                "poisoned_indices": None if self.poisoned_indices is None else self.poisoned_indices.tolist(),
                **({"alpha": c.alpha, "gamma": c.gamma} if self.trigger.learned else {})}


def build_trigger(config: BackdoorConfig, train_frames: torch.Tensor | None = None):
    """The trigger a config names; one that ``needs_fit`` (smart) is fitted on the clean training frames."""
    params = dict(config.trigger_params)
    params.setdefault("seed", config.seed)
    trig = make_trigger(config.trigger, **params)
    if trig.needs_fit and not trig.fitted:
        if train_frames is None:
            raise ValueError(f"{config.trigger} trigger: needs the clean training frames to be fitted on")
        trig = trig.fit(train_frames)
    return trig


def apply_to_test(trigger, test_ds, x_test: torch.Tensor, inject: str) -> torch.Tensor:
    """Trigger every test sample, in frames or (``inject="events"``) in events before framing."""
    if inject == "frames" or not trigger.injects_events:
        return trigger(x_test)
    from snnsec.data.frames import to_frames

    spec = test_ds.spec
    out = [to_frames(trigger.events(test_ds.events(i), spec.sensor_size, spec.T, spec.slicing), spec.sensor_size, spec.T, spec.slicing, spec.binary)
           for i in range(len(test_ds))]
    return torch.as_tensor(np.stack(out), dtype=torch.float32)


def evaluate_backdoor(model, trigger, x_test, y_test, x_trig, *, target: int, mode: str, num_classes: int) -> dict[str, float]:
    from snnsec.train import predict

    pred_clean = predict(model, x_test).argmax(1)
    pred_bd = predict(model, x_trig).argmax(1)
    tgt = poison_label(y_test, target, mode, num_classes)
    out = {
        "clean_accuracy": metrics.clean_accuracy(pred_clean, y_test),
        "attack_success_rate": metrics.attack_success_rate(pred_bd, y_test, tgt),
        "attack_success_rate_all": metrics.attack_success_rate_all(pred_bd, y_test, tgt),
        "backdoor_robust_accuracy": metrics.backdoor_robust_accuracy(pred_bd, y_test, tgt),
        "ssim": metrics.ssim_time_averaged(x_test, x_trig),
        "ssim_accumulated": metrics.ssim_accumulated(x_test, x_trig),
        "linf": float(metrics.linf_norm(x_test, x_trig).mean()),
        "l0": float(metrics.l0_norm(x_test, x_trig).double().mean()),
    }
    if mode == "all-to-all":
        for c, v in metrics.per_class_asr(pred_bd, y_test, tgt, num_classes).items():
            out[f"asr_class_{c}"] = v
    return out


def run_backdoor(config: BackdoorConfig, *, progress: bool = True, device: str = "cpu") -> BackdoorResult:
    """Poison, train (the model on ``device``) and measure clean accuracy, ASR and SSIM."""
    from snnsec.data import frames_and_labels
    from snnsec.train import TrainConfig, prepare, seed_everything, train

    learned = trigger_class(config.trigger).learned  # an unknown name fails here, before any data is read
    if not learned:
        make_trigger(config.trigger, **config.trigger_params)  # so do bad trigger options
    seed_everything(config.seed)
    setup = prepare(config.dataset, config.model, root=config.root, model_kwargs=config.model_kwargs, T=config.T,
                    slicing=config.slicing, binary=config.binary, device=device)
    train_ds, test_ds, spec, model = setup.train_ds, setup.test_ds, setup.spec, setup.model
    K = spec.num_classes
    if config.target >= K:
        raise ValueError(f"backdoor target {config.target}: expected a class index in [0, {K}) for {spec.name} "
                         f"({K} classes)")
    x_train, _ = frames_and_labels(train_ds)
    x_test, y_test = frames_and_labels(test_ds)

    poisoned = None
    if learned:
        from snnsec.attacks.backdoor.dynamic import DynamicConfig, train_dynamic

        dcfg = DynamicConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, alpha=config.alpha,
                             gamma=config.gamma, clamp=config.binary, target=config.target, mode=config.mode, seed=config.seed,
                             **{k: v for k, v in config.trigger_params.items() if k in ("generator_lr", "virtual_lr")})
        trigger, history = train_dynamic(model, train_ds, dcfg, num_classes=K, progress=progress)
    else:
        trigger = build_trigger(config, x_train)
        pds = config.poison(train_ds, trigger, K)
        poisoned = pds.poisoned_indices
        tcfg = TrainConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed, loss=config.loss,
                           schedule=config.schedule)
        history = train(model, train_ds, None, tcfg, progress=progress, batch_transform=pds.batch_transform)
    model.eval()
    x_trig = apply_to_test(trigger, test_ds, x_test, config.inject)
    m = evaluate_backdoor(model, trigger, x_test, y_test, x_trig, target=config.target, mode=config.mode, num_classes=K)
    if config.inject == "events" and trigger.injects_events:
        changes = [metrics.event_changes(test_ds.events(i), trigger.events(test_ds.events(i), spec.sensor_size, spec.T, spec.slicing), spec.sensor_size)
                   for i in range(min(len(test_ds), 50))]
        for k in ("events_added", "events_removed", "l0", "l1"):
            m[f"event_{k}"] = float(np.mean([c[k] for c in changes]))
    return BackdoorResult(model=model, trigger=trigger, spec=spec, config=config, metrics=m, history=history,
                          poisoned_indices=poisoned, test_frames=x_test, test_labels=y_test, test_triggered=x_trig)


# Firing rates are measured on at most this many non-target test samples (a seeded subset):
# two extra forwards over them, whatever the size of the test split.
FIRING_SAMPLES = 512
# Non-integer frame values (the dynamic trigger's perturbation) are stored to 3 decimals: the
# gallery scales each frame by its peak (>= 1 for event frames) into 8-bit colour, whose step
# 1/255 is larger than the rounding error.
FRAME_DECIMALS = 3


def pick_example(labels: torch.Tensor, target: int) -> int:
    """First test sample that is not of the target class (the ones ASR is measured on)."""
    idx = torch.nonzero(labels != target).flatten()
    return int(idx[0]) if len(idx) else 0


def compact_frames(frames: torch.Tensor) -> list:
    """Frames ``[T, P, H, W]`` as nested lists for a row's ``extra``: integers when every value
    is one (binary and count frames), else rounded to :data:`FRAME_DECIMALS`."""
    f = frames.detach().cpu().double()
    if torch.equal(f, f.round()):
        return f.long().tolist()
    return f.round(decimals=FRAME_DECIMALS).tolist()


def row_groups(result: BackdoorResult) -> list[dict[str, Any]]:
    """The run's rows besides its metrics, as :mod:`snnsec.bench` row groups: the gallery clip
    (clean and poisoned) of one non-target test sample, and the firing rate of every spiking
    layer on non-target test samples, clean and triggered."""
    from snnsec.activity import firing_rates

    c = result.config
    y = result.test_labels
    i = pick_example(y, c.target)
    groups: list[dict[str, Any]] = [
        {"metrics": {"gallery_clip": float(x.shape[1])}, "extra": {"variant": variant, "sample": i, "frames": compact_frames(x[i])}}
        for variant, x in (("clean", result.test_frames), ("poisoned", result.test_triggered))]
    nontarget = torch.nonzero(y != poison_label(y, c.target, c.mode, result.spec.num_classes)).flatten()
    g = torch.Generator().manual_seed(c.seed)
    idx = nontarget[torch.randperm(len(nontarget), generator=g)[:FIRING_SAMPLES]].sort().values
    if len(idx) == 0:
        return groups
    for triggered, x in ((False, result.test_frames), (True, result.test_triggered)):
        for li, r in enumerate(firing_rates(result.model, x[idx])):
            groups.append({"metrics": {"firing_rate": r.rate},
                           "extra": {"layer": r.label, "module": r.module, "layer_index": li, "triggered": triggered,
                                     "n_samples": len(idx)}})
    return groups


def run_output(result: BackdoorResult) -> dict[str, Any]:
    """What the run stores, in the form of a bench cell's output (:func:`snnsec.bench.rows_for_cell`)."""
    c = result.config
    return {"metrics": result.metrics, "attack": f"backdoor:{c.trigger}", "attack_params": c.attack_params(),
            "groups": row_groups(result)}

