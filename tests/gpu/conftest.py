"""The CUDA tests (``make test-gpu``): skipped, all of them, where torch sees no GPU."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    why = pytest.mark.skip(reason=f"no CUDA device (torch {torch.__version__}, built for CUDA "
                                  f"{torch.version.cuda or 'none'}); these tests run where a GPU is")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(why)
