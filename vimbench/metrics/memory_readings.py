"""Memory readings that need no thread: the worker's peak RSS (CPU runs) and torch's CUDA allocator peaks."""

from __future__ import annotations

import resource
import sys

MIB = 2**20


def rss_peak_mib() -> float:
    """Peak resident set size of this process's own memory so far.

    On Linux this is VmHWM of /proc/self/status: the high-water mark of the address space the process has
    had since its exec. `getrusage().ru_maxrss` is not that: the kernel carries the parent's high-water mark
    across fork + exec into it, so every worker of a sweep would report at least the sweep process's peak
    (the same ~800 MiB for Vim-Ti and DeiT-S alike). ru_maxrss is the fallback elsewhere (macOS: bytes).
    """
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def _status_kib(field: str, path: str = "/proc/self/status") -> int | None:
    """A "kB" field of /proc/self/status (Linux), or None where there is none."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_now_mib() -> float:
    """Current resident set size of this process."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / MIB
    except Exception:
        with open("/proc/self/statm") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def reset_torch_peaks(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)


def torch_peaks_mib(device: str) -> tuple[float | None, float | None]:
    """(max allocated, max reserved) by torch's caching allocator; excludes the CUDA context."""
    import torch

    if not device.startswith("cuda"):
        return None, None
    return torch.cuda.max_memory_allocated(device) / MIB, torch.cuda.max_memory_reserved(device) / MIB
