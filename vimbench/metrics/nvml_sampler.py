"""Peak GPU memory as NVML sees it, sampled in a thread (NVML readings are instantaneous, not peaks).

Two sources, always labelled:
- `nvml-process`: this PID's entry in nvmlDeviceGetComputeRunningProcesses (what nvidia-smi shows per process,
  CUDA context included). Containers often hide host PIDs, so the list may not contain us;
- `nvml-device-delta`: device memory used minus a baseline read before the model was built (other tenants
  on the GPU would leak into it, which is why the process reading wins when it exists).
The handle is found by UUID (NVML ignores CUDA_VISIBLE_DEVICES, so indices would lie), MIG UUIDs included.
Everything takes an `nvml` module argument so tests can pass a fake pynvml.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

MIB = 2**20


@dataclass
class NvmlPeak:
    peak_mib: float | None  # the headline NVML number from `source`
    source: str  # nvml-process | nvml-device-delta
    interval_ms: float
    samples: int
    baseline_mib: float
    process_peak_mib: float | None  # None: NVML never listed this PID with a memory figure
    device_peak_mib: float  # raw device-wide used memory peak (baseline included)


def load_nvml() -> ModuleType | None:
    """pynvml, initialised; None when the library or the driver is missing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def uuid_candidates(uuid: str) -> list[str]:
    """The spellings NVML may know a torch device UUID by ("GPU-..." for GPUs, "MIG-..." for MIG slices)."""
    uuid = uuid.strip()
    bare = uuid.split("-", 1)[1] if uuid.startswith(("GPU-", "MIG-")) else uuid
    ordered = [uuid, f"GPU-{bare}", f"MIG-{bare}", bare]
    return list(dict.fromkeys(ordered))


def find_handle(nvml: ModuleType, uuid: str) -> tuple[Any, str]:
    """(NVML handle, the UUID as NVML spells it) for this UUID; a MIG slice gets its own handle."""
    last: Exception | None = None
    for candidate in uuid_candidates(uuid):
        try:
            return nvml.nvmlDeviceGetHandleByUUID(candidate), candidate
        except Exception as exc:  # NVMLError_NotFound / InvalidArgument: try the next spelling
            last = exc
    raise LookupError(f"NVML knows no device with UUID {uuid}: {last}")


def handle_by_uuid(nvml: ModuleType, uuid: str) -> Any:
    """The NVML handle of the device with this UUID (see find_handle)."""
    return find_handle(nvml, uuid)[0]


class NvmlSampler:
    """Polls one device every `interval_ms` in a daemon thread; `stop()` returns the peaks."""

    def __init__(self, nvml: ModuleType, handle: Any, pid: int, interval_ms: float = 5.0, uuid: str = ""):
        self.nvml = nvml
        self.handle = handle
        self.uuid = uuid  # as NVML spells it ("MIG-..." for a MIG slice)
        self.pid = pid
        self.interval_ms = float(interval_ms)
        self.baseline_mib = self._device_used()
        self._device_peak = self.baseline_mib
        self._process_peak: float | None = None
        self._process_listing_works = True
        self._samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_uuid(
        cls, uuid: str, pid: int, interval_ms: float = 5.0, nvml: ModuleType | None = None
    ) -> NvmlSampler:
        """A sampler on the device with this UUID (baseline read now). Raises when NVML cannot serve it."""
        nvml = nvml if nvml is not None else load_nvml()
        if nvml is None:
            raise RuntimeError("NVML is not available")
        handle, nvml_uuid = find_handle(nvml, uuid)
        return cls(nvml, handle, pid, interval_ms, uuid=nvml_uuid)

    def _device_used(self) -> float:
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / MIB

    def _process_used(self) -> float | None:
        if not self._process_listing_works:
            return None
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception:  # old driver, no permission (MIG), function missing: use the device reading
            self._process_listing_works = False
            return None
        for proc in procs:
            used = getattr(proc, "usedGpuMemory", None)
            if getattr(proc, "pid", None) == self.pid and used is not None:
                return used / MIB
        return None

    def sample(self) -> None:
        """Take one reading (the thread calls this; tests may call it directly)."""
        with contextlib.suppress(Exception):
            self._device_peak = max(self._device_peak, self._device_used())
        used = self._process_used()
        if used is not None:
            self._process_peak = used if self._process_peak is None else max(self._process_peak, used)
        self._samples += 1

    def _loop(self) -> None:
        period = self.interval_ms / 1000.0
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(period)

    def start(self) -> NvmlSampler:
        self._thread = threading.Thread(target=self._loop, name="vimbench-nvml", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> NvmlPeak:
        """Stop polling, take a last reading, and return the peak with its source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.sample()
        if self._process_peak is not None:
            peak, source = self._process_peak, "nvml-process"
        else:
            peak, source = max(0.0, self._device_peak - self.baseline_mib), "nvml-device-delta"
        return NvmlPeak(
            peak_mib=peak,
            source=source,
            interval_ms=self.interval_ms,
            samples=self._samples,
            baseline_mib=self.baseline_mib,
            process_peak_mib=self._process_peak,
            device_peak_mib=self._device_peak,
        )

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()
