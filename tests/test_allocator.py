"""The keep-freed-memory policy: applied on glibc, left alone where the user tuned malloc,
and it stops the page faults of a block allocated and freed again and again."""

import os
import subprocess
import sys
import textwrap

import pytest

from snnsec.allocator import _USER_SETTINGS, is_glibc, keep_freed_memory

glibc = pytest.mark.skipif(not is_glibc(), reason="the policy sets glibc's malloc; this C library is not glibc")

_PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np
    if sys.argv[1] == "keep":
        from snnsec.allocator import keep_freed_memory
        assert keep_freed_memory() == "applied"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        block = np.ones(12 * 1024 * 1024, dtype=np.float32)  # 48 MiB: above glibc's largest dynamic threshold
        del block
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k not in _USER_SETTINGS}  # glibc's defaults in the child
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1])


@glibc
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    default, kept = _faults("default"), _faults("keep")
    assert kept * 5 < default, (default, kept)


@pytest.mark.parametrize("var", ["MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"])
def test_a_users_own_malloc_settings_are_left_alone(var):
    assert keep_freed_memory({var: "x"}) == f"left to {var}"


@glibc
def test_applies_on_glibc():
    assert keep_freed_memory({}) == "applied"
