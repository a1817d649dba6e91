"""``ndigits``: an N-MNIST-like event dataset generated from scikit-learn's digits.

Needs no download: the 1,797 8x8 handwritten digits ship inside scikit-learn
(``sklearn.datasets.load_digits``). Each digit is turned into a ~300 ms event stream the
way N-MNIST was recorded (Orchard et al. 2015): the image sits in front of a 34 x 34 DVS
that performs three saccades, and every pixel emits events when its log intensity changes.

Emulator (all values in :data:`PARAMS`):

* Image: the 8x8 digit (values 0..16, scaled to intensity 0..1) is drawn bilinearly
  upsampled to ``digit_px`` = 20 pixels square, centred in the 34 x 34 sensor, on a black
  background. sklearn's digits fill their 8x8 box, while an MNIST digit fills the central
  20 x 20 of its 28 x 28 image, so 20 px gives N-MNIST's stroke size.
* Motion: three saccades along a triangle, the image offset going A -> B -> C -> A with
  A = (-1.5, -1.5), B = (0, +1.5), C = (+1.5, -1.5) pixels (x, y): down-right, up-right,
  left, the order of the centroid motion seen in the real N-MNIST recordings. Each
  saccade lasts ``saccade_ms`` = 102 ms (306 ms in all, N-MNIST's mean duration) with a
  raised-cosine position profile, so motion, and event rate, peaks mid-saccade.
* Sensor: simulated in ``dt_us`` = 1 ms steps. Per pixel, L = log(I + ``log_eps``); when
  |L - ref| >= C the pixel emits k = floor(|L - ref| / C) events (ON if L rose, OFF if it
  fell) and its reference moves by k * C towards L (per-pixel reset). C is
  ``threshold`` = 0.27 with per-pixel mismatch (Gaussian, ``threshold_sigma`` = 3 %), fixed
  per sample as a real sensor's would be. Event times are spread uniformly inside the step.
* Noise: background activity at ``noise_hz`` = 1 event per pixel per second, random
  polarity, uniform in time and space (~350 events per sample).

``threshold`` was tuned (with ``log_eps`` = 0.05 fixed) so that events per sample land near
the real N-MNIST subset (about 4,100 events; the ON/OFF balance comes out even by itself); ``event_statistics`` in
:mod:`snnsec.data.events` computes both tables (``snnsec data info``). Measured, train
splits, generation seed 0:

====================  ===============  ======================
                      ndigits          N-MNIST subset (real)
====================  ===============  ======================
events/sample mean    4,233            4,133
events/sample median  4,236            4,180
min .. max            3,124 .. 5,480   1,112 .. 7,152
ON fraction           0.502            0.498
duration (ms), mean   305.2            306.4
====================  ===============  ======================

The range is narrower because every sklearn digit fills its 8x8 box at the same size,
while MNIST stroke length and digit size vary more.

Determinism: one ``numpy.random.default_rng(seed)`` draws everything in a fixed order, so
a seed gives identical streams on a machine; a different BLAS build may round the float32
image products differently and flip the odd threshold crossing. The result is cached as ``ndigits-<hash>-seed<seed>.npz`` (no pickles) in ``$SNNSEC_CACHE`` or
``~/.cache/snnsec``, written atomically, the hash covering :data:`PARAMS` so a change in
the emulator never serves stale streams. The train/test split is fixed and independent of
the generation seed: round(20 %) of each class (seeded permutation, seed 0) is test, 359
samples; the other 1,438 are train.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from snnsec._io import atomic_write_bytes, cache_dir
from snnsec.data._split import stratified_split
from snnsec.data.events import make_events

SENSOR_SIZE = (34, 34, 2)
CLASSES = tuple(str(d) for d in range(10))
TEST_FRACTION = 0.2
SPLIT_SEED = 0

PARAMS = {
    "digit_px": 20,
    "vertices": [[-1.5, -1.5], [0.0, 1.5], [1.5, -1.5]],
    "saccade_ms": 102,
    "dt_us": 1000,
    "log_eps": 0.05,
    "threshold": 0.27,
    "threshold_sigma": 0.03,
    "noise_hz": 1.0,
}


def _params_hash() -> str:
    return hashlib.sha256(json.dumps(PARAMS, sort_keys=True).encode()).hexdigest()[:10]


def cache_path(seed: int = 0, directory: str | os.PathLike | None = None) -> Path:
    return Path(directory or cache_dir()) / f"ndigits-{_params_hash()}-seed{int(seed)}.npz"


def _interp_matrix(offset: float, size: int, digit_px: int, n_src: int = 8) -> np.ndarray:
    """[size, n_src] bilinear weights: sensor pixel u samples source pixel j of a digit
    drawn ``digit_px`` wide, centred, shifted by ``offset`` pixels (zero outside)."""
    start = (size - digit_px) / 2.0 + offset
    u = np.arange(size) + 0.5
    c = (u - start) * n_src / digit_px - 0.5
    return np.maximum(0.0, 1.0 - np.abs(c[:, None] - np.arange(n_src)[None, :]))


def _trajectory(n_steps: int, dt_us: int) -> np.ndarray:
    """Image offset (x, y) at the end of every step."""
    v = np.asarray(PARAMS["vertices"], dtype=np.float64)
    sacc_us = PARAMS["saccade_ms"] * 1000
    t = (np.arange(n_steps) + 1) * dt_us
    k = np.minimum(t // sacc_us, 2)
    s = np.clip((t - k * sacc_us) / sacc_us, 0.0, 1.0)
    w = (1.0 - np.cos(np.pi * s)) / 2.0
    return v[k] + w[:, None] * (v[(k + 1) % 3] - v[k])


def generate(seed: int = 0, images: np.ndarray | None = None, progress: bool = False) -> dict[str, np.ndarray]:
    """Emulate the recordings. Returns flat arrays ``x, y, t, p`` (all samples, each sorted
    by t) plus ``offsets`` (sample i is ``offsets[i]:offsets[i+1]``). ``images`` defaults to
    all of ``load_digits().images`` ([N, 8, 8], values 0..16)."""
    from tqdm.auto import tqdm

    if images is None:
        from sklearn.datasets import load_digits

        images = load_digits().images
    img = np.asarray(images, dtype=np.float32) / 16.0
    N = len(img)
    W, H, _ = SENSOR_SIZE
    rng = np.random.default_rng(seed)
    dt = int(PARAMS["dt_us"])
    n_steps = 3 * PARAMS["saccade_ms"] * 1000 // dt
    eps = np.float32(PARAMS["log_eps"])
    # State lives in [H, N, W] layout so each step is two large GEMMs with no transposes.
    C = (PARAMS["threshold"] * (1.0 + PARAMS["threshold_sigma"] * rng.standard_normal((H, N, W)))).astype(np.float32)
    C = np.maximum(C, np.float32(0.05))
    inv_c = (1.0 / C).astype(np.float32)
    rows = img.reshape(N * 8, 8)

    def log_frame(ox: float, oy: float) -> np.ndarray:
        ax = _interp_matrix(ox, W, PARAMS["digit_px"]).astype(np.float32)
        ay = _interp_matrix(oy, H, PARAMS["digit_px"]).astype(np.float32)
        cols = (rows @ ax.T).reshape(N, 8, W).transpose(1, 0, 2).reshape(8, N * W)
        out = (ay @ cols).reshape(H, N, W)
        out += eps
        return np.log(out, out=out)

    traj = _trajectory(n_steps, dt)
    ref = log_frame(*PARAMS["vertices"][0])
    parts = []

    def step(i: int) -> None:
        q = log_frame(*traj[i])
        q -= ref
        q *= inv_c
        k = np.trunc(q, out=q)  # signed number of thresholds crossed since the reference
        # flatnonzero + unravel is ~4x faster than 3-D nonzero on these mostly-zero arrays.
        flat = np.flatnonzero(k)
        if len(flat) == 0:
            return
        y_idx, n_idx, x_idx = np.unravel_index(flat, k.shape)
        kk = k.ravel()[flat]
        ref.ravel()[flat] += kk * C.ravel()[flat]
        rep = np.repeat(np.arange(len(kk)), np.abs(kk).astype(np.int64))
        t = i * dt + rng.integers(0, dt, len(rep))
        parts.append((n_idx[rep], x_idx[rep], y_idx[rep], t, (kk[rep] > 0).astype(np.int64)))

    # These GEMMs are small; threaded BLAS only adds overhead (3-10x slower measured here).
    with threadpool_limits(1):
        for i in tqdm(range(n_steps), desc="ndigits", disable=not progress, leave=False):
            step(i)

    duration = n_steps * dt
    n_noise = rng.poisson(PARAMS["noise_hz"] * W * H * duration / 1e6, N)
    m = int(n_noise.sum())
    parts.append((np.repeat(np.arange(N), n_noise), rng.integers(0, W, m), rng.integers(0, H, m),
                  rng.integers(0, duration, m), rng.integers(0, 2, m)))

    n, x, y, t, p = (np.concatenate([part[i] for part in parts]) for i in range(5))
    order = np.lexsort((t, n))
    counts = np.bincount(n, minlength=N)
    return {
        "x": x[order].astype(np.uint8),
        "y": y[order].astype(np.uint8),
        "t": t[order].astype(np.int32),
        "p": p[order].astype(np.uint8),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    }


@dataclass
class NDigits:
    """All 1,797 streams in flat arrays, labels, and the fixed split."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def events(self, i: int) -> np.ndarray:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return make_events(self.x[a:b], self.y[a:b], self.t[a:b], self.p[a:b])

    def split(self, split: str) -> np.ndarray:
        """Indices of the fixed ``"train"`` or ``"test"`` split (see module docstring)."""
        train, test = stratified_split(self.labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
        if split == "train":
            return train
        if split == "test":
            return test
        raise ValueError(f"ndigits: split must be 'train' or 'test', got {split!r}")


_LOADED: dict[Path, NDigits] = {}


def load_ndigits(seed: int = 0, cache: str | os.PathLike | None = None, progress: bool = True) -> NDigits:
    """The streams for ``seed``, generated on first use and cached (see module docstring).

    Also kept in memory per cache file, so loading the train and then the test split
    reads the file once.
    """
    from sklearn.datasets import load_digits

    path = cache_path(seed, cache).resolve()
    if path in _LOADED and path.is_file():
        return _LOADED[path]
    labels = load_digits().target.astype(np.int64)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("x", "y", "t", "p", "offsets")}
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: unreadable ndigits cache ({exc}); delete it to regenerate") from exc
        if len(arrays["offsets"]) != len(labels) + 1:
            raise ValueError(f"{path}: ndigits cache holds {len(arrays['offsets']) - 1} samples, expected "
                             f"{len(labels)}; delete it to regenerate")
    else:
        arrays = generate(seed, progress=progress)
        buf = io.BytesIO()
        # uncompressed: 53 MB instead of 25, but written in 0.1 s instead of 6 (a fresh demo's first
        # minute) and read 9x faster; np.load reads caches written either way
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
    _LOADED[path] = NDigits(labels=labels, **arrays)
    return _LOADED[path]
