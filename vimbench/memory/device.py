"""From the allocator's peak to what NVML shows, and whether it fits a device.

NVML's per-process figure = memory the caching allocator reserved (segments) + a per-device overhead the
allocator never sees: the CUDA context (driver state, the loaded kernel images of torch, cuBLAS, cuDNN and
our Triton/CUDA kernels) and library handles and workspaces. The overhead is a property of the device, driver
and torch build, not of the model, so it is one constant per device: measured where someone measured it
(`scripts/gpu_validate.sh` records it: NVML process memory minus torch's reserved memory after a first
matmul), otherwise DEFAULT_OVERHEAD_MIB, an estimate (CUDA 12 contexts with lazy module loading plus cuBLAS
and cuDNN handles are typically 0.4-0.6 GiB on A100/H100-class GPUs; not measured by vimbench yet).
"""

from __future__ import annotations

import re

MIB = 2**20
GIB = 2**30
DEFAULT_OVERHEAD_MIB = 512.0
# device name (as NVML / torch report it) -> measured overhead in MiB; add a line when a GPU run measures one
MEASURED_OVERHEAD_MIB: dict[str, float] = {}

_UNITS = {"": GIB, "b": 1, "k": 2**10, "kib": 2**10, "kb": 10**3, "m": MIB, "mib": MIB, "mb": 10**6,
          "g": GIB, "gib": GIB, "gb": 10**9, "t": 2**40, "tib": 2**40, "tb": 10**12}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_memory_size(text: str) -> int:
    """ "80GiB", "80GB" (10^9), "81920MiB", "80" (GiB) -> bytes. ValueError with a one-line message."""
    match = _SIZE.match(str(text))
    unit = match[2].lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"malformed memory size {text!r}: use e.g. 80GiB, 80GB, 40960MiB or 80 (GiB)")
    value = float(match[1]) * _UNITS[unit]
    if value <= 0:
        raise ValueError(f"memory size must be positive, got {text!r}")
    return int(value)


def device_overhead_mib(device_name: str | None = None) -> tuple[float, str]:
    """(overhead MiB, where it comes from: "measured on <name>" or "default estimate")."""
    if device_name and device_name in MEASURED_OVERHEAD_MIB:
        return MEASURED_OVERHEAD_MIB[device_name], f"measured on {device_name}"
    return DEFAULT_OVERHEAD_MIB, "default estimate"


def predicted_nvml_mib(reserved_bytes: int, overhead_mib: float) -> float:
    return reserved_bytes / MIB + overhead_mib


def fits(nvml_mib: float, capacity_bytes: int) -> bool:
    return nvml_mib * MIB <= capacity_bytes
