"""Shared fixtures.

The real recordings live outside the repository (``../shared/data`` beside the checkout,
or wherever ``SNNSEC_SHARED_DATA`` points). Tests that need them skip with a message that
says where they looked, so a user's machine without them still runs the rest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from snnsec.allocator import keep_freed_memory

REPO = Path(__file__).resolve().parents[1]


def _shared_data_root() -> Path:
    env = os.environ.get("SNNSEC_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = _shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real recordings not found at {root} (set SNNSEC_SHARED_DATA to the folder holding nmnist-subset/)")
    return root


@pytest.fixture(scope="session")
def nmnist_root(shared_data: Path) -> Path:
    root = shared_data / "nmnist-subset"
    if not root.is_dir():
        pytest.skip(f"N-MNIST subset not found at {root}")
    return root


@pytest.fixture(scope="session")
def gesture_root(shared_data: Path) -> Path:
    root = shared_data / "dvsgesture-clips"
    if not root.is_dir():
        pytest.skip(f"DVS128 Gesture clips not found at {root}")
    return root


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The test models are tiny, so intra-op threads only add synchronisation; on a shared
    # 2-core machine OpenMP spin-waiting made the same tests up to 50x slower with 2 threads.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    # as the CLI does: freed activations stay in the heap instead of being faulted in afresh
    keep_freed_memory()
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path_factory, monkeypatch):
    # Tests must never append rows to the user's reports/ store.
    monkeypatch.setenv("SNNSEC_STORE", str(tmp_path_factory.mktemp("store") / "results.sqlite"))
    # CLI calls size torch's pool at their entry; in tests it stays at the one thread set above
    monkeypatch.setenv("SNNSEC_THREADS", "1")
    torch.manual_seed(0)
