"""What every result row and checkpoint records about the software that made it."""

from __future__ import annotations

import platform
import sys
from functools import lru_cache
from importlib import metadata

_TRACKED = ("snnsec", "torch", "spikingjelly", "torchattacks", "tonic", "numpy", "snntorch")


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Versions of Python and of the libraries whose behaviour changes our numbers."""
    out = {"python": platform.python_version()}
    for name in _TRACKED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def command_line() -> str:
    return " ".join(sys.argv)
