"""Training and evaluation: one loop, with the loss and the batch transform as plug-ins.

    from snnsec.train import TrainConfig, train, evaluate
    history = train(model, train_ds, test_ds, TrainConfig(epochs=10))
    acc = evaluate(model, test_ds)

The loop is Adam with a cosine learning-rate schedule (stepped per batch, down to 0 at the
end), an evaluation on ``test_ds`` after every epoch, fixed seeds and a tqdm bar. Two hooks
let other parts of snnsec reuse it instead of copying it:

- ``loss_fn(model, x, y)`` returns the loss (or ``(loss, logits)``, which also gives the
  running training accuracy). Built in: :class:`CrossEntropy` on the time-averaged logits
  (the default, ``loss="ce"``) and :class:`MSERate`, Sneaky Spikes' mean squared error
  between the output firing rate and the one-hot label (``loss="mse-rate"``). TCL, STCL and
  adversarial training are loss objects of :mod:`snnsec.hardening`. A loss that is an
  ``nn.Module`` with parameters (a projection head) is optimised with the model.
- ``batch_transform(x, y, idx) -> (x, y)`` sees each training batch with the dataset
  indices of its rows, before augmentation: poisoning triggers its rows here
  (:meth:`snnsec.attacks.backdoor.poison.PoisonedDataset.batch_transform`).

A *recipe* is an object with ``build(model) -> loss_fn`` and ``to_dict()`` (what checkpoints
record): :class:`LossRecipe` for the built-in losses, :class:`snnsec.hardening.Recipe` for
hardened training. :func:`run_training` (what ``snnsec train`` calls) takes either.

Speed: a dataset with ``frames_tensor()`` (all frames materialised once) is batched by
indexing that tensor, with no per-sample DataLoader; any other map-style dataset works too,
one ``ds[i]`` at a time.

Augmentation (``TrainConfig(augment=True)``, CLI ``--augment``) applies, on frames and per
sample, the tonic-style transforms of :class:`snnsec.data.augment.EventAugment`: spatial
jitter (tonic SpatialJitter / RandomCrop with padding) by up to 2 px, event drop (tonic
DropEvent) with p = 0.1 and time jitter (tonic TimeJitter) with p = 0.1. Polarity flips are
off (unlike tonic's RandomFlipPolarity) because polarity carries the direction of motion.
Pass a dict of EventAugment fields to choose others.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snnsec.harness import device_of, predict, preserve_modes, torch_rng_restored  # noqa: F401  (predict: snnsec.train.predict is public)
from snnsec.lean_kernels import lean_kernels
from snnsec.train_settings import LOSSES, SCHEDULES, TRAIN_AUGMENT


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def seeded(seed: int):
    """The global generators seeded for the block, and the caller's states back after it: a run
    is reproducible from its seed without changing what the caller draws next."""
    states = random.getstate(), np.random.get_state()
    with torch_rng_restored():
        seed_everything(seed)
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])


@dataclass
class TrainConfig:
    """Settings of :func:`train`. ``to_dict()`` is what checkpoints and result rows record."""

    epochs: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    loss: str = "ce"
    augment: bool | dict = False
    schedule: str = "cosine"
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if int(self.epochs) < 0:
            raise ValueError(f"TrainConfig.epochs: expected >= 0, got {self.epochs!r}")
        if int(self.batch_size) < 1 or int(self.eval_batch_size) < 1:
            raise ValueError(f"TrainConfig.batch_size: expected >= 1, got {self.batch_size!r}/{self.eval_batch_size!r}")
        if not float(self.lr) > 0:
            raise ValueError(f"TrainConfig.lr: expected a learning rate > 0, got {self.lr!r}")
        if float(self.weight_decay) < 0:
            raise ValueError(f"TrainConfig.weight_decay: expected >= 0, got {self.weight_decay!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.loss: expected one of {LOSSES}, got {self.loss!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        make_augment(self.augment)  # validates

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        aug = make_augment(self.augment)
        d["augment"] = aug.to_dict() if aug is not None else False
        d["optimizer"] = "adam"
        return d


def make_augment(augment: bool | dict | None):
    """``None`` (no augmentation) or the EventAugment that ``augment`` describes."""
    if not augment:
        return None
    from snnsec.data.augment import EventAugment

    if augment is True:
        return EventAugment(**TRAIN_AUGMENT)
    if isinstance(augment, dict):
        unknown = sorted(set(augment) - set(TRAIN_AUGMENT))
        if unknown:
            raise ValueError(f"TrainConfig.augment: unknown field(s) {unknown}; expected some of {sorted(TRAIN_AUGMENT)}")
        return EventAugment(**{**TRAIN_AUGMENT, **augment})
    raise ValueError(f"TrainConfig.augment: expected a bool or a dict of {sorted(TRAIN_AUGMENT)}, got {augment!r}")


# ----------------------------------------------------------------------------------- losses
class CrossEntropy:
    """Cross-entropy on the model's logits (the time-averaged readout)."""

    name = "ce"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return F.cross_entropy(logits, y), logits


class MSERate:
    """Sneaky Spikes' loss: ``mean((rate - one_hot(y))**2)`` over batch and classes.

    ``rate`` is the model's readout, which is the output layer's firing rate when that layer
    spikes (spikingjelly nets ending in a LIF layer, as Sneaky Spikes' are); for a readout of
    non-spiking logits it is the same regression of the time-averaged logits onto one-hot.
    """

    name = "mse-rate"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        rate = model(x)
        target = F.one_hot(y, rate.shape[1]).to(rate.dtype)
        return F.mse_loss(rate, target), rate


def make_loss(name: str):
    if name == "ce":
        return CrossEntropy()
    if name == "mse-rate":
        return MSERate()
    raise ValueError(f"loss: expected one of {LOSSES}, got {name!r}")


@dataclass
class LossRecipe:
    """The plain recipe: one of the built-in losses (``ce`` or ``mse-rate``)."""

    loss: str = "ce"

    def __post_init__(self) -> None:
        make_loss(self.loss)

    @property
    def name(self) -> str:
        return self.loss

    def build(self, model: nn.Module):
        return make_loss(self.loss)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "loss": self.loss}


# ------------------------------------------------------------------------------------- data
class _Batches:
    """Rows of a dataset by index: slices of ``frames_tensor()`` when it has one, else ``ds[i]``."""

    def __init__(self, ds):
        self.ds = ds
        self.n = len(ds)
        if isinstance(ds, torch.utils.data.TensorDataset):
            self.x, self.y = ds.tensors[0], ds.tensors[1]
        elif hasattr(ds, "frames_tensor"):
            self.x, self.y = ds.frames_tensor(), torch.as_tensor(_targets(ds))
        else:
            self.x, self.y = None, None
        if self.x is not None and len(self.x) != self.n:
            raise ValueError(f"{type(ds).__name__}: frames_tensor() has {len(self.x)} rows for {self.n} samples")

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is not None:
            return self.x[idx].float(), self.y[idx].long()
        items = [self.ds[int(i)] for i in idx]
        x = torch.stack([torch.as_tensor(it[0]) for it in items]).float()
        y = torch.as_tensor([int(it[1]) for it in items], dtype=torch.long)
        return x, y


def _targets(ds) -> list[int] | torch.Tensor:
    t = getattr(ds, "targets", None)
    if t is None:
        raise ValueError(f"{type(ds).__name__}: has frames_tensor() but no targets")
    return t


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, disable=not (enabled and sys.stderr.isatty()))


# ---------------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate(model: nn.Module, data, *, batch_size: int = 256, progress: bool = False) -> float:
    """Accuracy of ``model`` (eval mode, modes restored) on a dataset, a DataLoader or ``(x, y)`` tensors."""
    device = device_of(model)
    correct = total = 0
    with preserve_modes(model):
        model.eval()
        if isinstance(data, tuple):
            logits = predict(model, data[0], batch_size=batch_size)
            return float((logits.argmax(1) == torch.as_tensor(data[1])).double().mean())
        if isinstance(data, torch.utils.data.DataLoader):
            for x, y in data:
                pred = model(x.to(device).float()).argmax(1).cpu()
                correct += int((pred == y).sum())
                total += len(y)
        else:
            batches = _Batches(data)
            order = torch.arange(batches.n)
            with _progress(batches.n, progress, "eval") as bar:
                for idx in order.split(int(batch_size)):
                    x, y = batches(idx)
                    pred = model(x.to(device)).argmax(1).cpu()
                    correct += int((pred == y).sum())
                    total += len(y)
                    bar.update(len(idx))
    if total == 0:
        raise ValueError("evaluate: the dataset is empty")
    return correct / total


# ------------------------------------------------------------------------------------- train
def train(model: nn.Module, train_ds, test_ds, config: TrainConfig, *, progress: bool = True,
          loss_fn: Callable | None = None, batch_transform: Callable | None = None) -> dict[str, list]:
    """Train ``model`` in place; returns the history (one entry per epoch).

    ``test_ds`` may be ``None`` (no per-epoch evaluation). ``loss_fn`` overrides
    ``config.loss``; see the module doc for both hooks. History keys: ``epoch``, ``loss``
    (mean over batches), ``train_accuracy`` (on the transformed batches, NaN when the loss
    gives no logits), ``test_accuracy`` (NaN without ``test_ds``), ``lr`` (at the epoch's
    end), ``seconds`` (training) and ``eval_seconds`` (the evaluation after it).

    Shuffling, augmentation and dropout draw from the global generators seeded with
    ``config.seed`` (:func:`seeded`); the caller's generator states are restored afterwards.
    """
    with seeded(config.seed), lean_kernels(model):
        return _train(model, train_ds, test_ds, config, progress=progress, loss_fn=loss_fn, batch_transform=batch_transform)


def _train(model: nn.Module, train_ds, test_ds, config: TrainConfig, *, progress: bool,
           loss_fn: Callable | None, batch_transform: Callable | None) -> dict[str, list]:
    batches = _Batches(train_ds)
    if batches.n == 0:
        raise ValueError("train: the training set is empty")
    loss_fn = loss_fn if loss_fn is not None else make_loss(config.loss)
    params = list(model.parameters())
    if isinstance(loss_fn, nn.Module):
        params += [p for p in loss_fn.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(batches.n / config.batch_size)
    total_steps = max(1, int(config.epochs) * steps_per_epoch)
    per_epoch = config.schedule == "cosine-epoch"
    if config.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(config.epochs) if per_epoch else total_steps)
    augment = make_augment(config.augment)
    gen = torch.Generator().manual_seed(int(config.seed))
    device = device_of(model)
    history: dict[str, list] = {k: [] for k in ("epoch", "loss", "train_accuracy", "test_accuracy", "lr", "seconds",
                                                           "eval_seconds")}

    with _progress(total_steps, progress, "train") as bar:
        for epoch in range(1, int(config.epochs) + 1):
            t0 = time.perf_counter()
            model.train()
            if isinstance(loss_fn, nn.Module):
                loss_fn.train()
            loss_sum = 0.0
            correct = seen = 0
            has_logits = False
            for idx in torch.randperm(batches.n, generator=gen).split(int(config.batch_size)):
                x, y = batches(idx)
                if batch_transform is not None:
                    x, y = batch_transform(x, y, idx)
                if augment is not None:  # on the CPU, with the CPU generator `gen`
                    x = augment(x, gen)
                x, y = x.to(device), y.to(device)
                out = loss_fn(model, x, y)
                loss, logits = out if isinstance(out, tuple) else (out, None)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"train: loss became {float(loss)} at epoch {epoch}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if not per_epoch:
                    sched.step()
                loss_sum += float(loss.detach()) * len(y)
                if logits is not None:
                    has_logits = True
                    correct += int((logits.detach().argmax(1) == y).sum())
                seen += len(y)
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.4f}")
            if per_epoch:
                sched.step()
            seconds = time.perf_counter() - t0
            test_acc = evaluate(model, test_ds, batch_size=config.eval_batch_size) if test_ds is not None else float("nan")
            history["epoch"].append(epoch)
            history["loss"].append(loss_sum / seen)
            history["train_accuracy"].append(correct / seen if has_logits else float("nan"))
            history["test_accuracy"].append(test_acc)
            history["lr"].append(opt.param_groups[0]["lr"])
            history["seconds"].append(seconds)
            history["eval_seconds"].append(time.perf_counter() - t0 - seconds)
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum / seen:.4f}", test_acc=f"{test_acc:.3f}")
    return history


# ------------------------------------------------------------------------- whole training runs
@dataclass
class Setup:
    """What every run starts from: both splits of a dataset and a model built for their frames."""

    train_ds: Any
    test_ds: Any
    spec: Any
    model: nn.Module


def prepare(data: str, model: str, *, root=None, model_kwargs: dict | None = None, device: str = "cpu",
            **data_opts) -> Setup:
    """Load the train and test splits of ``data`` (``data_opts``: T, slicing, binary, ... as
    :func:`snnsec.data.load`), check that they agree, and build ``model`` for their frames on
    ``device`` (the data stay on the CPU; batches move to the model)."""
    from snnsec import models
    from snnsec.data import load

    train_ds, spec = load(data, split="train", root=root, **data_opts)
    test_ds, test_spec = load(data, split="test", root=root, **data_opts)
    if test_spec.frame_shape != spec.frame_shape or test_spec.num_classes != spec.num_classes:
        raise ValueError(f"{data}: train and test splits differ: {spec} vs {test_spec}")
    T, P, H, W = spec.frame_shape
    net = models.build(model, in_channels=P, num_classes=spec.num_classes, sensor_hw=(H, W), T=T, **(model_kwargs or {}))
    return Setup(train_ds, test_ds, spec, net.to(device))


@dataclass
class TrainResult:
    model: nn.Module
    spec: Any
    metrics: dict[str, float]
    history: dict[str, list]
    run_id: str
    out: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)


def run_training(*, data: str, model: str, config: TrainConfig, out: str | os.PathLike | None = None,
                 root: str | os.PathLike | None = None, T: int | None = None, slicing: str | None = None,
                 model_kwargs: dict | None = None, data_opts: dict | None = None, recipe=None,
                 store: str | os.PathLike | None = None, progress: bool = True, device: str = "cpu",
                 compression: dict | None = None) -> TrainResult:
    """Load ``data``, build ``model`` on ``device``, train, measure test accuracy, save and record it.

    ``compression`` (``"binary"``, ``"quantize:bits=4"`` or a dict, :func:`snnsec.compress.method_spec`)
    trains the model compressed from the start and saves its baked weights.

    This is ``snnsec train``. ``recipe`` is an object with ``build(model)`` and ``to_dict()``
    (default: :class:`LossRecipe` of ``config.loss``). With ``out``, writes the checkpoint
    (:func:`snnsec.checkpoint.save`) and ``out/metrics.json``; result rows go to ``store`` when
    one is given.
    """
    from snnsec import checkpoint, devices, results
    from snnsec._io import atomic_write_json

    seed_everything(config.seed)
    kw = dict(data_opts or {})
    if T is not None:
        kw["T"] = int(T)
    if slicing is not None:
        kw["slicing"] = slicing
    if compression is not None:
        from snnsec import compress

        compression = compress.method_spec(compression)  # checked before any data is read
    setup = prepare(data, model, root=root, model_kwargs=model_kwargs, device=device, **kw)
    train_ds, test_ds, spec, net = setup.train_ds, setup.test_ds, setup.spec, setup.model
    if compression is not None:
        compress.compress(net, **compression)
    Tn = spec.frame_shape[0]
    recipe = recipe if recipe is not None else LossRecipe(config.loss)
    loss_fn = recipe.build(net)
    t0 = time.perf_counter()
    history = train(net, train_ds, test_ds, config, progress=progress, loss_fn=loss_fn)
    seconds = time.perf_counter() - t0
    if compression is not None:
        compression = dict(net.compression)
        compress.bake(net)
    acc = history["test_accuracy"][-1] if config.epochs else evaluate(net, test_ds, batch_size=config.eval_batch_size)
    metrics = {"clean_accuracy": float(acc), "train_seconds": round(seconds, 3)}
    if config.epochs:
        metrics["final_train_loss"] = float(history["loss"][-1])
    train_cfg = config.to_dict()
    recipe_dict = {**recipe.to_dict(), "train": train_cfg, **({"compression": compression} if compression else {})}
    if not isinstance(recipe, LossRecipe):
        train_cfg.pop("loss")  # the recipe's loss is the one used
    run_cfg = {"kind": "train", "data": data, "root": None if root is None else str(root), "T": Tn,
               "slicing": spec.slicing, "binary": spec.binary, "data_opts": data_opts or {}, "model": model,
               "model_kwargs": model_kwargs or {}, "recipe": recipe_dict, **devices.describe(device)}
    run_id = results.new_run_id()
    out_path = None
    if out is not None:
        out_path = checkpoint.save(out, net, arch=model, arch_kwargs=model_kwargs or {}, spec=spec, recipe=recipe_dict,
                                   metrics=metrics, seed=config.seed)
        atomic_write_json(Path(out) / "metrics.json", {**metrics, "split": "test", "n_test": len(test_ds),
                                                       "n_train": len(train_ds), "run_id": run_id})
    rows = results.make_rows(run_id=run_id, dataset=spec.name, model=model, T=Tn, seed=config.seed, metrics=metrics,
                             defense=None if isinstance(recipe, LossRecipe) else f"hardening:{recipe.name}",
                             defense_params=None if isinstance(recipe, LossRecipe) else {"recipe": recipe.name, **recipe.to_dict()},
                             config=run_cfg, extra={"out": None if out_path is None else str(out_path),
                                                    "history": history, "n_train": len(train_ds), "n_test": len(test_ds)})
    if store is not None:
        results.Store(store).append(rows)
    return TrainResult(model=net, spec=spec, metrics=metrics, history=history, run_id=run_id, out=out_path, config=run_cfg)


def evaluate_checkpoint(path: str | os.PathLike, *, data: str | None = None, root: str | os.PathLike | None = None,
                        T: int | None = None, split: str = "test", data_opts: dict | None = None, batch_size: int = 256,
                        store: str | os.PathLike | None = None, progress: bool = True, arch=None,
                        device: str = "cpu") -> dict[str, Any]:
    """Recompute the accuracy of a checkpoint on a split (``snnsec eval``); ``arch`` allows its
    ``module:function`` factory (:func:`snnsec.checkpoint.load`).

    ``data``, ``T``, slicing and binarisation default to the checkpoint's DataSpec. Appends a
    ``clean_accuracy`` row to the store. Returns ``{"clean_accuracy", "n", "split", "T",
    "data", "recorded"}`` where ``recorded`` is the accuracy stored in the checkpoint.
    """
    from snnsec import checkpoint, devices, results

    model, meta = checkpoint.load(path, arch=arch, device=device)
    ds, spec = checkpoint.matching_dataset(meta, data=data, root=root, split=split, T=T, data_opts=data_opts,
                                           source=str(path))
    name, Tn = data or meta["spec"]["name"], spec.T
    acc = evaluate(model, ds, batch_size=batch_size, progress=progress)
    out = {"clean_accuracy": acc, "n": len(ds), "split": split, "T": Tn, "data": name,
           "recorded": (meta.get("metrics") or {}).get("clean_accuracy")}
    cfg = {"kind": "eval", "checkpoint": str(path), "data": name, "root": None if root is None else str(root),
           "T": Tn, "split": split, "data_opts": data_opts or {}, **devices.describe(device)}
    rows = results.make_rows(run_id=results.new_run_id(), dataset=spec.name, model=meta["arch"], T=Tn,
                             seed=meta.get("seed"), metrics={"clean_accuracy": acc}, config=cfg,
                             extra={"n": len(ds), "split": split, "recipe": meta.get("recipe", {}).get("name")})
    if store is not None:
        results.Store(store).append(rows)
    return out
