"""Event datasets from local folders, and the one Dataset class every loader returns.

Nothing is ever downloaded. tonic's dataset classes insist on the archive and the full
file count and call ``download()`` otherwise, so the folders are read here directly, with
tonic's own readers or byte-identical ones. Every file list is sorted, so sample i is
the same file on every machine. ``root`` may be the dataset folder itself or the folder
holding tonic's ``<ClassName>/`` directory (e.g. ``root/NMNIST/Train``).

Layouts and splits:

* ``nmnist``: ``Train/<digit>/*.bin`` and ``Test/<digit>/*.bin`` (5-byte events, 34x34x2).
  ``resplit=True`` (or the name ``nmnist-resplit``) pools both folders and holds out a
  fixed, balanced test set of :data:`NMNIST_RESPLIT_TEST_PER_CLASS` = 20 recordings per
  digit (seeded permutation per class, seed 0): the shared 1,100-recording subset becomes
  900 train / 200 test instead of its thin 1,000 / 100 split (2 test eights).
* ``dvsgesture``: tonic's ``ibmGestureTrain/userNN_<lighting>/<label>.npy`` (and
  ``ibmGestureTest``; columns x, y, p, t in ms, 11 classes, 128x128x2); or a flat folder of
  ``N.bs2`` clips in the 5-byte format, label N - 1. A flat folder has no users and
  typically one clip per class, so no honest split exists: both splits return every clip
  (it is a test/demo set for 128x128 pipelines, not training data).
* ``cifar10dvs``: ``<class>/*.aedat4`` for the 10 CIFAR-10 classes (128x128x2). There is no
  official split; as spikingjelly does, the first 90 % of each class's sorted files are
  train and the rest test. Reading needs the ``aedat`` package.
* ``ncaltech101``: ``Caltech101/<class>/*.bin`` (5-byte events; every class folder found,
  sorted, is a class). Recordings differ in size; as in tonic, x and y are shifted to start
  at 0, then events outside a fixed 240 x 180 sensor are cropped (saccade recordings of
  Caltech-101 images, at most 300 x 200 pixels scaled to the ATIS field of view, rarely
  exceed it). No official split: a fixed stratified 20 % per class (seed 0) is test.
* ``shd``: ``shd_train.h5`` / ``shd_test.h5`` with ``spikes/times`` (s), ``spikes/units``,
  ``labels``. Events get x = unit, y = 0, p = 0 on a (700, 1, 1) sensor, t in us (truncated
  like tonic), so frames are ``[T, 1, 1, 700]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from snnsec.data._split import stratified_split
from snnsec.data.events import make_events, read_event_bin, validate_events
from snnsec.data.frames import to_frames
from snnsec.data.spec import DataSpec

SPLITS = ("train", "test")
NMNIST_RESPLIT_TEST_PER_CLASS = 20
NCALTECH_SENSOR = (240, 180, 2)
NCALTECH_TEST_FRACTION = 0.2
CIFAR10DVS_TRAIN_FRACTION = 0.9
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GESTURE_CLASSES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
                   "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise",
                   "arm_roll", "air_drums", "air_guitar", "other_gestures")


class EventDataset(torch.utils.data.Dataset):
    """``ds[i] -> (frames float32 [T, P, H, W], label)``; ``ds.events(i)`` the raw stream.

    ``read(i)`` returns sample i's events; ``sources[i]`` names it in error messages.
    Frames follow ``spec`` (see :func:`snnsec.data.frames.to_frames`).
    """

    def __init__(self, spec: DataSpec, targets: Sequence[int], read: Callable[[int], np.ndarray],
                 sources: Sequence[str], *, split: str, note: str = ""):
        if len(targets) != len(sources):
            raise ValueError(f"{spec.name}: {len(targets)} labels for {len(sources)} samples")
        self.spec = spec
        self.split = split
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        self.sources = list(sources)
        self.note = note
        self._read = read
        self._frames: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def events(self, i: int) -> np.ndarray:
        """Sample i's event stream (a fresh structured array, validated against the sensor).

        An empty recording is an error: its frames would be all zeros, a sample the model
        was never meant to see, and every count-sliced metric on it is undefined."""
        ev = validate_events(self._read(int(i)), self.spec.sensor_size, source=self.sources[int(i)])
        if len(ev) == 0:
            raise ValueError(f"{self.sources[int(i)]}: the recording holds no events; remove the file or "
                             f"replace it with a real recording of {self.spec.name}")
        return ev

    def frames(self, i: int) -> np.ndarray:
        s = self.spec
        return to_frames(self.events(i), s.sensor_size, s.T, s.slicing, s.binary)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._frames is not None:
            return self._frames[i], int(self.targets[i])
        return torch.from_numpy(self.frames(i).astype(np.float32)), int(self.targets[i])

    def frames_tensor(self, progress: bool | None = None) -> torch.Tensor:
        """All frames as one float32 tensor ``[N, T, P, H, W]``, built once and kept.

        The same tensor is returned on every call and backs ``ds[i]`` afterwards: clone it
        before changing it in place.
        """
        if self._frames is None:
            from tqdm.auto import tqdm

            show = sys.stderr.isatty() if progress is None else progress
            out = torch.empty((len(self), *self.spec.frame_shape), dtype=torch.float32)
            for i in tqdm(range(len(self)), desc=f"{self.spec.name} {self.split} frames", disable=not show, leave=False):
                out[i] = torch.from_numpy(self.frames(i))
            self._frames = out
        return self._frames

    def __repr__(self) -> str:
        return f"EventDataset({self.spec.name!r}, split={self.split!r}, n={len(self)}, frames={self.spec.frame_shape})"


class MissingDependencyError(ImportError, ValueError):
    """An optional reader package is not installed. Also a ValueError, so the CLI prints
    the message (with the pip command) instead of a traceback."""


class _PerFile:
    """``read(i) = reader(files[i])``; a class rather than a lambda so datasets pickle
    (DataLoader workers under spawn)."""

    def __init__(self, reader: Callable[[Path], np.ndarray], files: Sequence[Path]):
        self.reader, self.files = reader, list(files)

    def __call__(self, i: int) -> np.ndarray:
        return self.reader(self.files[i])


class _ShdReader:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, i: int) -> np.ndarray:
        return read_shd(self.path, i)


# --------------------------------------------------------------------------- folders


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: split must be one of {SPLITS}, got {split!r}")


def _need_root(name: str, root, layout: str) -> Path:
    if root is None:
        raise ValueError(f"{name}: needs root=<folder> (--root DIR) holding {layout}; nothing is downloaded")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: root folder {root} does not exist; expected {layout}")
    return root


def _find(root: Path, marker: str, *tonic_dirs: str) -> Path | None:
    """``root`` or ``root/<tonic dir>`` (tonic's save_to layout), whichever holds ``marker``."""
    for base in (root, *(root / d for d in tonic_dirs)):
        if (base / marker).exists():
            return base
    return None


def _bin_files(folder: Path, pattern: str = "*.bin") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file())


def nmnist_files(root, split: str, resplit: bool = False) -> tuple[list[Path], list[int]]:
    """Files and labels of one N-MNIST split (see the module docstring for ``resplit``)."""
    layout = "the N-MNIST layout Train/<digit 0-9>/*.bin and Test/<digit 0-9>/*.bin"
    root = _need_root("nmnist", root, layout)
    base = _find(root, "Train", "NMNIST") if resplit or split == "train" else _find(root, "Test", "NMNIST")
    if base is None:
        want = "Train" if split == "train" or resplit else "Test"
        raise FileNotFoundError(f"nmnist: {root / want} not found; expected {layout} under {root}")
    folders = ("Train", "Test") if resplit else ("Train" if split == "train" else "Test",)
    files, labels = [], []
    for folder in folders:
        for digit in range(10):
            d = base / folder / str(digit)
            found = _bin_files(d) if d.is_dir() else []
            if not found:
                raise FileNotFoundError(f"nmnist: no .bin recordings in {d}; expected {layout} under {base}")
            files += found
            labels += [digit] * len(found)
    if resplit:
        train_idx, test_idx = stratified_split(labels, test_per_class=NMNIST_RESPLIT_TEST_PER_CLASS, seed=0)
        keep = train_idx if split == "train" else test_idx
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    return files, labels


def gesture_files(root, split: str) -> tuple[list[Path], list[int], str]:
    """Files, labels and kind (``"npy"`` tonic layout or ``"bs2"`` flat clips)."""
    layout = ("tonic's DVSGesture layout ibmGestureTrain/userNN_<lighting>/<label>.npy (and ibmGestureTest/), "
              "or a flat folder of N.bs2 clips (label N-1)")
    root = _need_root("dvsgesture", root, layout)
    folder = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
    base = _find(root, folder, "DVSGesture")
    if base is not None:
        files = sorted((base / folder).glob("user*/*.npy"))
        if not files:
            raise FileNotFoundError(f"dvsgesture: no userNN_*/<label>.npy files in {base / folder}; expected {layout}")
        return files, [int(p.stem) for p in files], "npy"
    clips = [p for p in root.glob("*.bs2") if p.stem.isdigit()]
    if not clips:
        raise FileNotFoundError(f"dvsgesture: neither {root / folder} nor N.bs2 clips found in {root}; expected {layout}")
    clips.sort(key=lambda p: int(p.stem))
    labels = [int(p.stem) - 1 for p in clips]
    bad = [p.name for p, y in zip(clips, labels) if not 0 <= y < len(GESTURE_CLASSES)]
    if bad:
        raise ValueError(f"dvsgesture: clip file(s) {bad} in {root}: expected names 1.bs2 .. {len(GESTURE_CLASSES)}.bs2")
    return clips, labels, "bs2"


def read_gesture_npy(path: Path) -> np.ndarray:
    """tonic's DVSGesture .npy: [N, 4] columns x, y, p, t (ms), as tonic converts it."""
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{path}: expected an [N, 4] array of (x, y, p, t_ms), got shape {arr.shape}")
    t = (arr[:, 3] * 1000).astype(np.int64)
    return make_events(arr[:, 0], arr[:, 1], t, arr[:, 2])


def cifar10dvs_files(root, split: str) -> tuple[list[Path], list[int]]:
    layout = "CIFAR10-DVS class folders <class>/*.aedat4 for " + ", ".join(CIFAR10_CLASSES)
    root = _need_root("cifar10dvs", root, layout)
    base = _find(root, CIFAR10_CLASSES[0], "CIFAR10DVS")
    if base is None:
        raise FileNotFoundError(f"cifar10dvs: {root / CIFAR10_CLASSES[0]} not found; expected {layout} under {root}")
    files, labels = [], []
    for c, name in enumerate(CIFAR10_CLASSES):
        found = _bin_files(base / name, "*.aedat4") if (base / name).is_dir() else []
        if not found:
            raise FileNotFoundError(f"cifar10dvs: no .aedat4 files in {base / name}; expected {layout} under {base}")
        n_train = int(len(found) * CIFAR10DVS_TRAIN_FRACTION)
        part = found[:n_train] if split == "train" else found[n_train:]
        files += part
        labels += [c] * len(part)
    return files, labels


def _require_aedat(where) -> None:
    try:
        import aedat  # noqa: F401  (tonic.io.read_aedat4 imports it; fail early, with the fix)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{where}: reading CIFAR10-DVS .aedat4 files needs the 'aedat' package: pip install aedat") from exc


def read_aedat4(path: Path) -> np.ndarray:
    _require_aedat(path)
    from tonic.io import read_aedat4 as tonic_read_aedat4

    ev = tonic_read_aedat4(str(path))
    names = ev.dtype.names
    # tonic renames the decoder's fields positionally to (t, x, y, p); do the same.
    return make_events(ev[names[1]], ev[names[2]], ev[names[0]], ev[names[3]])


def ncaltech_files(root, split: str) -> tuple[list[Path], list[int], tuple[str, ...]]:
    layout = "the N-Caltech101 layout Caltech101/<class>/*.bin"
    root = _need_root("ncaltech101", root, layout)
    base = _find(root, "Caltech101", "NCALTECH101")
    if base is None:
        raise FileNotFoundError(f"ncaltech101: {root / 'Caltech101'} not found; expected {layout} under {root}")
    base = base / "Caltech101"
    classes = tuple(sorted(d.name for d in base.iterdir() if d.is_dir()))
    if not classes:
        raise FileNotFoundError(f"ncaltech101: no class folders in {base}; expected {layout}")
    files, labels = [], []
    for c, name in enumerate(classes):
        found = _bin_files(base / name)
        if not found:
            raise FileNotFoundError(f"ncaltech101: class folder {base / name} holds no .bin files; expected {layout}")
        files += found
        labels += [c] * len(found)
    train_idx, test_idx = stratified_split(labels, test_fraction=NCALTECH_TEST_FRACTION, seed=0)
    keep = train_idx if split == "train" else test_idx
    return [files[i] for i in keep], [labels[i] for i in keep], classes


def read_ncaltech(path: Path) -> np.ndarray:
    ev = read_event_bin(path)
    if len(ev):
        ev["x"] -= ev["x"].min()
        ev["y"] -= ev["y"].min()
        W, H, _ = NCALTECH_SENSOR
        ev = ev[(ev["x"] < W) & (ev["y"] < H)]
    return ev


def shd_file(root, split: str) -> Path:
    layout = "the SHD files shd_train.h5 and shd_test.h5 (spikes/times, spikes/units, labels)"
    root = _need_root("shd", root, layout)
    name = f"shd_{split}.h5"
    base = _find(root, name, "SHD")
    if base is None:
        raise FileNotFoundError(f"shd: {root / name} not found; expected {layout} in {root}")
    return base / name


def read_shd(path: Path, index: int) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        times = np.asarray(f["spikes/times"][index], dtype=np.float64)
        units = np.asarray(f["spikes/units"][index])
    # tonic converts seconds to us by truncation; keep it so frames agree with tonic's.
    t = (times * 1e6).astype(np.int64)
    order = np.argsort(t, kind="stable")
    return make_events(units[order], np.zeros(len(t)), t[order], np.zeros(len(t)))


def shd_labels(path: Path) -> tuple[list[int], tuple[str, ...]]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            labels = np.asarray(f["labels"]).astype(np.int64)
            keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["extra/keys"]] if "extra/keys" in f else []
            for field in ("spikes/times", "spikes/units"):
                if field not in f:
                    raise ValueError(f"{path}: missing dataset '{field}'; expected spikes/times, spikes/units, labels")
    except KeyError as exc:
        raise ValueError(f"{path}: missing dataset 'labels'; expected spikes/times, spikes/units, labels") from exc
    n_classes = max(int(labels.max()) + 1 if len(labels) else 0, len(keys), 20)
    classes = tuple(keys) if len(keys) == n_classes else tuple(str(i) for i in range(n_classes))
    return labels.tolist(), classes


def open_folder_dataset(name: str, split: str, root, T: int, slicing: str, binary: bool,
                        resplit: bool = False) -> EventDataset:
    """The loader behind :func:`snnsec.data.load` for every real dataset."""
    _check_split(name, split)
    if name == "nmnist":
        files, labels = nmnist_files(root, split, resplit)
        spec = DataSpec("nmnist-resplit" if resplit else "nmnist", (34, 34, 2), T, slicing, binary,
                        tuple(str(d) for d in range(10)))
        return EventDataset(spec, labels, _PerFile(read_event_bin, files), [str(f) for f in files], split=split)
    if resplit:
        raise ValueError(f"{name}: resplit=True is only available for nmnist")
    if name == "dvsgesture":
        files, labels, kind = gesture_files(root, split)
        spec = DataSpec("dvsgesture", (128, 128, 2), T, slicing, binary, GESTURE_CLASSES)
        read = _PerFile(read_gesture_npy if kind == "npy" else read_event_bin, files)
        note = "" if kind == "npy" else f"flat clip folder: train and test are the same {len(files)} clips"
        return EventDataset(spec, labels, read, [str(f) for f in files], split=split, note=note)
    if name == "cifar10dvs":
        files, labels = cifar10dvs_files(root, split)
        _require_aedat(f"cifar10dvs ({root})")
        spec = DataSpec("cifar10dvs", (128, 128, 2), T, slicing, binary, CIFAR10_CLASSES)
        return EventDataset(spec, labels, _PerFile(read_aedat4, files), [str(f) for f in files], split=split)
    if name == "ncaltech101":
        files, labels, classes = ncaltech_files(root, split)
        spec = DataSpec("ncaltech101", NCALTECH_SENSOR, T, slicing, binary, classes)
        return EventDataset(spec, labels, _PerFile(read_ncaltech, files), [str(f) for f in files], split=split)
    if name == "shd":
        path = shd_file(root, split)
        labels, classes = shd_labels(path)
        spec = DataSpec("shd", (700, 1, 1), T, slicing, binary, classes)
        return EventDataset(spec, labels, _ShdReader(path), [f"{path}[{i}]" for i in range(len(labels))],
                            split=split)
    raise ValueError(f"unknown dataset {name!r}")
