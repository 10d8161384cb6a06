"""Peak RSS on CPU is the worker's own: a worker started by a big sweep process must not report the sweep's
peak (ru_maxrss carries the parent's high-water mark across fork + exec on Linux; VmHWM does not)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vimbench.metrics.memory_readings import _status_kib, rss_peak_mib

PARENT_MIB = 300  # what the parent holds while it starts the child
CHILD = ("import resource, sys\n"
         "from vimbench.metrics.memory_readings import _status_kib, rss_peak_mib\n"
         "hold = b'\\x01' * ({own} * 2**20)\n"
         "ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
         "print(rss_peak_mib(), _status_kib('VmRSS') / 1024, ru_maxrss)\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + exec RSS inheritance is Linux's")
@pytest.mark.parametrize("own_mib", [0, 150])
def test_a_child_reports_its_own_peak_not_its_parents(own_mib) -> None:
    held = b"\x01" * (PARENT_MIB * 2**20)  # touched pages: resident in this (parent) process
    parent_mib = _status_kib("VmRSS") / 1024
    out = subprocess.run([sys.executable, "-c", CHILD.format(own=own_mib)], capture_output=True, text=True,
                         check=True).stdout
    own_peak, own_now, ru_maxrss = (float(v) for v in out.split())
    del held
    # the child only grew (imports, then its own block, still held): its peak is what it holds now
    assert own_now - 1 <= own_peak < own_now + 32 and own_peak >= own_mib
    # what the worker used to report: at least the parent's resident memory, whatever the child did
    assert ru_maxrss >= parent_mib - 1 > own_peak


def test_peak_follows_allocations_in_this_process() -> None:
    before = rss_peak_mib()
    block = b"\x01" * (64 * 2**20)
    assert rss_peak_mib() >= before
    assert rss_peak_mib() * 1024 >= _status_kib("VmRSS") - 1024  # never below what is resident now
    del block


def test_status_field_missing_or_unreadable(tmp_path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmRSS:\t  2048 kB\n")
    assert _status_kib("VmRSS", str(status)) == 2048
    assert _status_kib("VmHWM", str(status)) is None
    assert _status_kib("VmHWM", str(tmp_path / "nope")) is None
