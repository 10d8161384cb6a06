"""Everything about the machine and software that a number depends on (recorded in every run.json).

Works without a GPU, without NVML and without triton: missing pieces are reported as such, never raised.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import sys
from typing import Any

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features a CPU number depends on: torch's kernels and our C++ scan vectorise for these.
SIMD_FLAGS = ("avx2", "fma", "avx512f", "neon", "sve")


def cpu_capability() -> str:
    """The SIMD level torch's CPU kernels (and the cpu scan build) run at: DEFAULT, AVX2, AVX512, ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:
        return "unknown"


def cpu_simd_flags() -> dict[str, bool]:
    """Which of SIMD_FLAGS this CPU has (/proc/cpuinfo on Linux; arm64 elsewhere implies NEON)."""
    found: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    found.update(value.split())
    except OSError:
        pass
    if "asimd" in found or platform.machine().lower() in ("arm64", "aarch64"):
        found.add("neon")
    return {flag: flag in found for flag in SIMD_FLAGS}


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except Exception:
        return None


def _decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def nvml_devices() -> tuple[list[dict[str, Any]], str | None]:
    """(one dict per GPU from NVML, driver version); ([], None) when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return [], None
    try:
        driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                mig_current, _ = pynvml.nvmlDeviceGetMigMode(handle)
                mig = bool(mig_current)
            except Exception:
                mig = None
            gpus.append(
                {
                    "nvml_index": i,
                    "name": _decode(pynvml.nvmlDeviceGetName(handle)),
                    "uuid": _decode(pynvml.nvmlDeviceGetUUID(handle)),
                    "memory_total_mib": round(mem.total / 2**20),
                    "mig_enabled": mig,
                }
            )
        return gpus, driver
    except Exception:
        return [], None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def torch_cuda_devices() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        devices.append(
            {
                "torch_index": i,
                "name": props.name,
                "uuid": _torch_uuid(props),
                "capability": f"{props.major}.{props.minor}",
                "memory_total_mib": round(props.total_memory / 2**20),
                "multiprocessors": props.multi_processor_count,
            }
        )
    return devices


def _torch_uuid(props: Any) -> str | None:
    """torch's device UUID in NVML's spelling ("GPU-..."; MIG slices keep their "MIG-" prefix)."""
    uuid = getattr(props, "uuid", None)
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def describe_device(device: str) -> dict[str, Any]:
    """Name and UUID of a resolved device ("cpu" or "cuda:N") as every results row records them."""
    if device == "cpu":
        return {"device": "cpu", "name": _cpu_model(), "uuid": ""}
    props = torch.cuda.get_device_properties(torch.device(device))
    return {"device": device, "name": props.name, "uuid": _torch_uuid(props) or ""}


def precision_flags() -> dict[str, Any]:
    """TF32, cudnn and matmul precision flags: unreported ones are why published FPS do not reproduce."""
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_enabled": torch.backends.cudnn.enabled,
    }


def collect_environment() -> dict[str, Any]:
    """A JSON-able description of this machine and its software."""
    gpus, driver = nvml_devices()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": cudnn,
        "cuda_available": torch.cuda.is_available(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "nvidia_driver": driver,
        "nvml_available": driver is not None,
        "gpus_nvml": gpus,
        "gpus_torch": torch_cuda_devices(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": cpu_capability(),
        "cpu_simd_flags": cpu_simd_flags(),
        "torch_threads": torch.get_num_threads(),
        "precision": precision_flags(),
    }
