"""The suite's own settings (pyproject.toml): a native crash or hang fails one test, not the run.

A small test file with a test that aborts, one that segfaults and one that deadlocks inside a
C call is run by pytest with this repository's configuration: those three fail, each with
its worker replaced, and every other test still runs and passes, in seconds. (The suite
prints a hung test's stacks at ``faulthandler_timeout``, 120 s; here 2 s, before the 5 s timeout.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BROKEN = textwrap.dedent("""
    import ctypes, os
    import pytest

    def test_before():
        pass

    def test_aborts():
        os.abort()

    def test_segfaults():
        ctypes.string_at(0)

    @pytest.mark.timeout(5)
    def test_deadlocks_in_c():  # as tests/fault_runner.py's block-in-c, without importing torch
        libc = ctypes.CDLL(None)
        mutex = ctypes.create_string_buffer(64)
        libc.pthread_mutex_lock(mutex)
        libc.pthread_mutex_lock(mutex)

    def test_after():
        pass
""")


@pytest.mark.timeout(180)
def test_a_crash_or_a_native_hang_fails_only_its_own_test(tmp_path):
    (tmp_path / "test_broken.py").write_text(BROKEN)
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
                          "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q", "-o", "faulthandler_timeout=2",
                          str(tmp_path / "test_broken.py")], capture_output=True, text=True, timeout=150, cwd=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out[-3000:]
    assert "3 failed, 2 passed" in out, out[-3000:]
    for name in ("test_aborts", "test_segfaults", "test_deadlocks_in_c"):
        assert f"crashed while running 'test_broken.py::{name}'" in out, out[-3000:]
    # the hung test's stack, printed by faulthandler before the timeout ended it
    assert "line 19 in test_deadlocks_in_c" in out
    assert time.time() - t0 < 120
