"""A killed first build of the C++ CPU scan leaves torch's `lock` in the build directory; later builds must
neither hang on it nor wait forever on a live builder (kernels/_build_lock.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vimbench.kernels._build_lock import TORCH_LOCK, BuildLockTimeout, exclusive_build

BUILD = ("from vimbench.kernels.cpu_scan import build_status; s = build_status(); "
         "print('BUILD', s.ok, s.error)")


def _wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.mark.slow
def test_build_after_a_killed_first_build_does_not_hang(tmp_path) -> None:
    """The real thing: kill -9 a first build mid-compile, then build again in a fresh process."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    env.pop("VIMBENCH_CPU_SCAN", None)
    first = subprocess.Popen([sys.executable, "-c", BUILD], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: any((tmp_path / "ext").glob(f"*/{TORCH_LOCK}")), 120)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the sweep and its compiler, mid-build
        first.wait(30)
    assert any((tmp_path / "ext").glob(f"*/{TORCH_LOCK}")), "the killed build left torch's lock behind"
    again = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True,
                           timeout=600)  # without the fix this waits on the dead lock forever
    assert "BUILD True None" in again.stdout, again.stdout + again.stderr[-2000:]


HOLD = """
import sys, time
from pathlib import Path
from vimbench.kernels._build_lock import exclusive_build
with exclusive_build(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_live_builder_is_waited_for_a_bounded_time_and_named(tmp_path) -> None:
    (tmp_path / TORCH_LOCK).write_text("")  # a live builder's torch lock: must not be removed under it
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert not (tmp_path / TORCH_LOCK).exists()  # the holder found it with no live builder: removed
        (tmp_path / TORCH_LOCK).write_text("")  # now the holder's own build
        started = time.monotonic()
        busy = pytest.raises(BuildLockTimeout, match=f"pid {holder.pid}")
        with busy, exclusive_build(tmp_path, timeout_s=1):
            pass
        assert 1 <= time.monotonic() - started < 30
        assert (tmp_path / TORCH_LOCK).exists()
    finally:
        holder.kill()
        holder.wait(30)
    with exclusive_build(tmp_path, timeout_s=5):  # the holder died: its lock is gone, torch's is stale
        assert not (tmp_path / TORCH_LOCK).exists()
    assert Path(tmp_path).is_dir()
