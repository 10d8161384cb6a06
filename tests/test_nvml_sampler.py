"""The NVML sampler against a fake pynvml: process readings, the device-delta fallback, UUID/MIG matching."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from vimbench.metrics.nvml_sampler import NvmlSampler, handle_by_uuid, uuid_candidates

MIB = 2**20


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """Scripted pynvml: each memory or process query pops the next value of its script (the last repeats)."""

    def __init__(self, used_mib, procs=None, process_error=False, uuids=("GPU-1234",)):
        self.used_script = list(used_mib)
        self.proc_script = list(procs or [[]])
        self.process_error = process_error
        self.uuids = set(uuids)
        self.queried_uuids: list[str] = []
        self.memory_calls = 0
        self.process_calls = 0

    def _next(self, script):
        return script.pop(0) if len(script) > 1 else script[0]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.queried_uuids.append(uuid)
        if uuid not in self.uuids:
            raise FakeNvmlError("Not Found")
        return ("handle", uuid)

    def nvmlDeviceGetMemoryInfo(self, handle):
        self.memory_calls += 1
        return SimpleNamespace(used=int(self._next(self.used_script) * MIB), total=80 * 1024 * MIB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        self.process_calls += 1
        if self.process_error:
            raise FakeNvmlError("Function Not Found")
        return [
            SimpleNamespace(pid=pid, usedGpuMemory=None if mib is None else int(mib * MIB))
            for pid, mib in self._next(self.proc_script)
        ]


PID = 4242


def _drive(sampler: NvmlSampler, count: int) -> None:
    for _ in range(count):
        sampler.sample()


def test_process_reading_wins_when_nvml_lists_our_pid() -> None:
    nvml = FakeNvml(
        used_mib=[1000, 3000, 9000, 2000], procs=[[(PID, 500), (7, 9999)], [(PID, 4500)], [(PID, 2500)]]
    )
    sampler = NvmlSampler.for_uuid("GPU-1234", PID, interval_ms=5, nvml=nvml)
    assert sampler.baseline_mib == 1000
    _drive(sampler, 2)
    peak = sampler.stop()
    assert peak.source == "nvml-process"
    assert peak.peak_mib == pytest.approx(4500)
    assert peak.device_peak_mib == pytest.approx(9000)
    assert peak.baseline_mib == pytest.approx(1000)
    assert peak.interval_ms == 5


@pytest.mark.parametrize(
    "procs", [[[(1, 100)]], [[]], [[(PID, None)]]], ids=["other-pids", "empty", "no-value"]
)
def test_device_delta_when_our_pid_is_not_listed(procs) -> None:
    """Containers hide host PIDs; WDDM gives no per-process value: fall back to used minus baseline."""
    nvml = FakeNvml(used_mib=[1200, 1500, 6200, 3000], procs=procs)
    sampler = NvmlSampler.for_uuid("GPU-1234", PID, nvml=nvml)
    _drive(sampler, 3)
    peak = sampler.stop()
    assert peak.source == "nvml-device-delta"
    assert peak.peak_mib == pytest.approx(6200 - 1200)
    assert peak.process_peak_mib is None


def test_process_query_failure_falls_back_and_stops_asking() -> None:
    nvml = FakeNvml(used_mib=[100, 700], process_error=True)
    sampler = NvmlSampler.for_uuid("GPU-1234", PID, nvml=nvml)
    _drive(sampler, 3)
    peak = sampler.stop()
    assert (peak.source, peak.peak_mib) == ("nvml-device-delta", pytest.approx(600))
    assert nvml.process_calls == 1


def test_thread_samples_at_the_interval() -> None:
    nvml = FakeNvml(used_mib=[100] * 3 + [900] + [100], procs=[[(os.getpid(), 50)]])
    with NvmlSampler.for_uuid("GPU-1234", os.getpid(), interval_ms=2, nvml=nvml) as sampler:
        time.sleep(0.15)
    peak = sampler.stop()
    assert peak.samples >= 10  # ~75 at 2 ms; generous for a loaded CI machine
    assert peak.device_peak_mib == pytest.approx(900)
    assert peak.source == "nvml-process" and peak.peak_mib == pytest.approx(50)


def test_uuid_spellings() -> None:
    assert uuid_candidates("GPU-abc") == ["GPU-abc", "MIG-abc", "abc"]
    assert uuid_candidates("abc") == ["abc", "GPU-abc", "MIG-abc"]
    nvml = FakeNvml(used_mib=[0], uuids=("MIG-abc",))
    assert handle_by_uuid(nvml, "GPU-abc") == ("handle", "MIG-abc")
    assert nvml.queried_uuids == ["GPU-abc", "MIG-abc"]
    assert NvmlSampler.for_uuid("GPU-abc", PID, nvml=nvml).uuid == "MIG-abc"


def test_unknown_uuid_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="no device with UUID GPU-zzz"):
        NvmlSampler.for_uuid("GPU-zzz", PID, nvml=FakeNvml(used_mib=[0]))


def test_no_nvml_library(monkeypatch) -> None:
    """Without NVML (CPU machines) a sampler fails cleanly; the worker then uses torch's numbers."""
    import vimbench.metrics.nvml_sampler as mod

    monkeypatch.setattr(mod, "load_nvml", lambda: None)
    with pytest.raises(RuntimeError, match="NVML is not available"):
        NvmlSampler.for_uuid("GPU-1234", PID)


def test_worker_memory_columns_take_the_nvml_headline() -> None:
    """The worker's row: NVML's peak and source are the headline; NVML's UUID spelling wins."""
    from vimbench.metrics.peak_memory import PeakMemory as _Memory

    memory = _Memory.__new__(_Memory)  # skip the CUDA setup; feed it a sampler on a fake MIG slice
    memory.device, memory.rss_baseline = "cpu", 100.0
    nvml = FakeNvml(used_mib=[1000, 5000, 1000], procs=[[]], uuids=("MIG-abc",))
    memory.sampler = NvmlSampler.for_uuid("GPU-abc", PID, interval_ms=3, nvml=nvml)
    memory.sampler.sample()
    cols = memory.columns()
    assert (cols["peak_mem_source"], cols["peak_mem_mib"]) == ("nvml-device-delta", pytest.approx(4000))
    assert cols["nvml_peak_mib"] == pytest.approx(4000) and cols["nvml_interval_ms"] == 3
    assert cols["nvml_baseline_mib"] == pytest.approx(1000) and cols["device_uuid"] == "MIG-abc"
    assert cols["rss_peak_mib"] > 0 and cols["rss_baseline_mib"] == 100.0
