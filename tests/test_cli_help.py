"""``snnsec --help`` and every ``COMMAND --help`` answer without importing torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ["", "attack", "attack backdoor", "attack adversarial", "audit", "bench", "data", "demo", "eval", "models",
            "report", "results", "train"]

PROBE = """
import contextlib, io, sys
from snnsec.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main({argv!r})
    except SystemExit as e:
        assert e.code == 0, e.code
assert "usage: snnsec" in out.getvalue(), out.getvalue()
heavy = [m for m in ("torch", "spikingjelly", "torchattacks", "tonic", "pandas", "matplotlib") if m in sys.modules]
print(",".join(heavy))
"""


@pytest.mark.parametrize("command", COMMANDS)
def test_help_imports_no_torch(command):
    argv = [*command.split(), "--help"]
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"snnsec {command} --help imported {out.stdout.strip()}"


def test_lazy_packages_still_export_their_names():
    import snnsec.data as data
    import snnsec.hardening as hardening

    for pkg in (data, hardening):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None, (pkg.__name__, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        data.nope
