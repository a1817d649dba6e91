"""Loading datasets by name (see :mod:`snnsec.data`)."""

from __future__ import annotations

import os
import sys

import numpy as np

from snnsec.data.datasets import EventDataset, open_folder_dataset
from snnsec.data.events import event_statistics
from snnsec.data.spec import DataSpec

_NAMES = ("ndigits", "nmnist", "dvsgesture", "cifar10dvs", "ncaltech101", "shd")
STATS_MAX_SAMPLES = 2000


def names() -> tuple[str, ...]:
    """Dataset names :func:`load` accepts (``"nmnist-resplit"`` is nmnist with ``resplit=True``)."""
    return _NAMES


class _NDigitsReader:
    def __init__(self, data, index):
        self.data, self.index = data, index

    def __call__(self, i: int) -> np.ndarray:
        return self.data.events(int(self.index[i]))


def load(name: str, split: str = "train", root: str | os.PathLike | None = None, T: int = 16,
         slicing: str = "events", binary: bool = True, **opts) -> tuple[EventDataset, DataSpec]:
    """Dataset ``name``'s ``split`` as frames per ``T``, ``slicing``, ``binary``.

    ``root`` is the dataset folder (required for every dataset but ``ndigits``, for which
    it overrides the cache folder). Options (``opts``):

    * ``resplit=True`` (nmnist only): the balanced re-split, 20 test recordings per digit
      from the pooled folders; the spec is named ``nmnist-resplit``, as is the dataset name
      that selects it directly.
    * ``generation_seed=0`` (ndigits only): which emulator run to use (each seed is cached
      separately); the split never changes. Named apart from training seeds on purpose.
    * ``progress``: show a progress bar while generating ndigits (default: on a terminal).
    """
    unknown = sorted(set(opts) - {"resplit", "generation_seed", "progress"})
    if unknown:
        raise ValueError(f"load({name!r}): unknown option(s) {unknown}; expected resplit, generation_seed, progress")
    resplit = bool(opts.get("resplit", False))
    seed = int(opts.get("generation_seed", 0))
    progress = opts.get("progress")
    if "generation_seed" in opts and name != "ndigits":
        raise ValueError(f"load({name!r}): option 'generation_seed' only applies to ndigits")
    DataSpec(name, (1, 1, 1), T, slicing, binary)  # raises on a bad T or slicing before any file is read
    if name == "nmnist-resplit":
        name, resplit = "nmnist", True
    if name == "ndigits":
        from snnsec.data import ndigits as nd

        if resplit:
            raise ValueError("ndigits: resplit=True is only available for nmnist")
        if split not in ("train", "test"):
            raise ValueError(f"ndigits: split must be one of ('train', 'test'), got {split!r}")
        show = sys.stderr.isatty() if progress is None else progress
        data = nd.load_ndigits(seed, cache=root, progress=show)
        index = data.split(split)
        spec = DataSpec("ndigits", nd.SENSOR_SIZE, T, slicing, binary, nd.CLASSES)
        ds = EventDataset(spec, data.labels[index], _NDigitsReader(data, index),
                          [f"ndigits[{i}] (generation seed {seed})" for i in index], split=split)
        return ds, spec
    if name not in _NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {_NAMES} (or 'nmnist-resplit')")
    ds = open_folder_dataset(name, split, root, T, slicing, binary, resplit=resplit)
    return ds, ds.spec


def statistics(ds: EventDataset, max_samples: int | None = STATS_MAX_SAMPLES) -> dict[str, float]:
    """:func:`event_statistics` over ``ds`` (at most ``max_samples`` evenly spaced samples)."""
    n = len(ds)
    idx = range(n) if max_samples is None or n <= max_samples else np.linspace(0, n - 1, max_samples).astype(int)
    return event_statistics(ds.events(int(i)) for i in idx)


def info(name: str, root: str | os.PathLike | None = None, *, stats: bool = True, **opts) -> dict:
    """Per split: sample count, per-class counts and (with ``stats``) event statistics.

    This is ``snnsec data info``. Statistics cover at most :data:`STATS_MAX_SAMPLES`
    evenly spaced samples per split (all of them for ndigits and the N-MNIST subset).
    """
    out: dict = {"name": name, "splits": {}}
    for split in ("train", "test"):
        ds, spec = load(name, split=split, root=root, **opts)
        counts = np.bincount(ds.targets.numpy(), minlength=spec.num_classes)
        entry = {"samples": len(ds), "per_class": counts.tolist()}
        if stats:
            entry["stats"] = statistics(ds)
        out["splits"][split] = entry
        out.update(sensor_size=spec.sensor_size, classes=spec.classes, note=ds.note)
    return out


def frames_and_labels(ds):
    """Every sample of a dataset at once: frames ``[N, T, P, H, W]`` (float) and labels ``[N]``
    (long), from its cached ``frames_tensor()`` when it has one, else ``ds[i]`` by ``ds[i]``."""
    import torch

    if hasattr(ds, "frames_tensor"):
        x = ds.frames_tensor()
    else:
        x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(len(ds))])
    return x.float(), torch.as_tensor(np.asarray(ds.targets)).long()
