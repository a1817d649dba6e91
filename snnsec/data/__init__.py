"""Event data: one loader for every dataset, frames ``[T, P, H, W]``, and a DataSpec.

>>> ds, spec = load("ndigits", split="train", T=16)        # embedded, no download
>>> x, y = ds[0]                                            # float32 [16, 2, 34, 34], int
>>> ds, spec = load("nmnist", split="test", root="../shared/data/nmnist-subset")

``load(...)`` returns ``(dataset, spec)``: ``ds[i] -> (frames, label)``, ``ds.targets``
(LongTensor), ``ds.events(i)`` (the raw tonic structured array, validated),
``ds.frames_tensor()`` (all frames at once, cached on the dataset), ``ds.spec``. Layouts,
splits and sensors of the folder datasets are described in :mod:`snnsec.data.datasets`,
the embedded ``ndigits`` emulator in :mod:`snnsec.data.ndigits`.
"""

from __future__ import annotations

import importlib

# Names resolve on first use, so that importing snnsec.data.spec (the CLI does, to list the
# slicings in --help) does not pull in numpy, torch and every reader.
_HOMES = {
    "DataSpec": "snnsec.data.spec",
    "EventDataset": "snnsec.data.datasets",
    "event_statistics": "snnsec.data.events",
    "read_event_bin": "snnsec.data.events",
    "validate_events": "snnsec.data.events",
    "to_frames": "snnsec.data.frames",
    "frames_and_labels": "snnsec.data.loading",
    "info": "snnsec.data.loading",
    "load": "snnsec.data.loading",
    "names": "snnsec.data.loading",
    "statistics": "snnsec.data.loading",
    "STATS_MAX_SAMPLES": "snnsec.data.loading",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'snnsec.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
