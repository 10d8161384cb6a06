"""Memory readings that need no thread: the worker's peak RSS (CPU runs) and torch's CUDA allocator peaks."""

from __future__ import annotations

import resource
import sys

MIB = 2**20


def rss_peak_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


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
