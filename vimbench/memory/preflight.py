"""Sweep pre-flight: predict a CUDA point's memory before starting its worker; skip what cannot fit.

A point predicted (NVML figure: allocator reserved + device overhead) to exceed the device's free memory by
more than MARGIN is recorded as `skipped-oom`, with the predicted size in `error`, without starting a worker;
`--no-preflight` measures it anyway.
Every CUDA row gets `predicted_mem_mib` (comparable with `nvml_peak_mib`) and `predicted_alloc_mib`
(comparable with `torch_peak_alloc_mib`), so each run checks the model. CPU points are not predicted: their
headline memory is process RSS (Python, torch, libraries), which the tensor-level model does not cover.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .device import MIB, device_overhead_mib
from .predictor import MemoryQuery, predict

MARGIN = 0.10  # the prediction must exceed free memory by 10% before a point is skipped


def scan_kernel_for(backend: str) -> str:
    """The allocation model of a resolved Vim scan backend on CUDA."""
    if backend == "triton":
        return "triton-fused"
    return backend if backend in ("cpu", "cuda", "mamba_ssm") else "triton-fused"


def query_for_point(point: Any, identity: dict[str, Any]) -> MemoryQuery:
    """The memory query of a sweep point, with the backends its identity row resolved ("-": not used)."""
    attn = str(identity.get("attn_backend") or "auto")
    return MemoryQuery(
        point.model, point.img_size, point.batch_size, point.dtype, point.mode,
        attn_backend="auto" if attn == "-" else attn,
        scan_kernel=scan_kernel_for(str(identity.get("scan_backend") or "auto")), target="cuda",
        timm_kwargs=str(point.options.get("timm_kwargs") or ""),
    )  # fmt: skip


def free_device_mib(device_uuid: str) -> float | None:
    """Free memory of the GPU with this NVML UUID, read through NVML (no CUDA context); None if unknown."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByUUID(device_uuid)
        return pynvml.nvmlDeviceGetMemoryInfo(handle).free / MIB
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


class Preflight:
    """Per-point predictions for a sweep (cached), and the skip decision."""

    def __init__(self, enabled: bool = True, margin: float = MARGIN):
        self.enabled = enabled  # skipping; the columns are filled either way
        self.margin = margin
        self._cache: dict[Any, dict[str, float] | None] = {}

    def columns(self, point: Any, identity: dict[str, Any]) -> dict[str, float]:
        """{"predicted_mem_mib", "predicted_alloc_mib"} for a CUDA point; {} otherwise or on failure."""
        if not str(point.device).startswith("cuda"):
            return {}
        if point not in self._cache:
            self._cache[point] = self._predict(point, identity)
        return dict(self._cache[point] or {})

    def _predict(self, point: Any, identity: dict[str, Any]) -> dict[str, float] | None:
        try:  # a prediction must never break a sweep
            prediction = predict(query_for_point(point, identity))
        except Exception:
            return None
        overhead, _ = device_overhead_mib(identity.get("device_name"))
        return {
            "predicted_mem_mib": round(prediction.reserved_peak_bytes / MIB + overhead, 1),
            "predicted_alloc_mib": round(prediction.allocated_peak_bytes / MIB, 1),
        }

    def too_big(self, point: Any, identity: dict[str, Any]) -> str | None:
        """Why `point` should not run (its predicted size), or None."""
        if not self.enabled:
            return None
        predicted = self.columns(point, identity).get("predicted_mem_mib")
        uuid = identity.get("device_uuid")
        if predicted is None or not uuid:
            return None
        free = free_device_mib(uuid)
        if free is None or predicted <= free * (1.0 + self.margin):
            return None
        return (
            f"not run: predicted {predicted:.0f} MiB (vimbench memory) > {free:.0f} MiB free on "
            f"{identity.get('device_name') or point.device} (+{self.margin:.0%} margin); "
            "--no-preflight runs it"
        )
