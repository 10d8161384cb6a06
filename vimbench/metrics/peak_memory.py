"""Peak memory of a point: NVML (this process, or the device minus a baseline) on CUDA, torch's allocator
peaks beside it, peak RSS on CPU. The headline `peak_mem_mib` always names its source (`peak_mem_source`).

The peak covers the whole point (model build, warmup and the timed window): the collector starts sampling
when it is built, at the start of the point, and `columns` stops it.
"""

from __future__ import annotations

import os
from typing import Any

from .memory_readings import reset_torch_peaks, rss_now_mib, rss_peak_mib, torch_peaks_mib
from .nvml_sampler import NvmlPeak, NvmlSampler
from .spec import Collector, Column, Metric, MetricContext, TableColumn, Timing

# what each peak_mem_source means, for axis labels and reports
MEMORY_SOURCES = {
    "nvml-process": "NVML, this process",
    "nvml-device-delta": "NVML, device used minus pre-run baseline",
    "torch-reserved": "torch allocator, reserved",
    "rss": "process RSS (CPU run: not GPU memory)",
}


class PeakMemory:
    """Collects the memory readings of one point, whatever way it ends."""

    def __init__(self, context: MetricContext):
        self.device = context.device
        self.sampler: NvmlSampler | None = None
        self.rss_baseline = rss_now_mib()
        if self.device.startswith("cuda"):
            try:
                self.sampler = NvmlSampler.for_uuid(
                    context.device_uuid, os.getpid(), context.nvml_interval_ms
                ).start()
            except Exception:  # no NVML (some containers): the row falls back to torch's reserved peak
                self.sampler = None
            reset_torch_peaks(self.device)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def columns(self, timing: Timing | None = None) -> dict[str, Any]:
        nvml: NvmlPeak | None = self.sampler.stop() if self.sampler is not None else None
        alloc, reserved = torch_peaks_mib(self.device)
        rss = rss_peak_mib()
        cols: dict[str, Any] = {
            "torch_peak_alloc_mib": alloc,
            "torch_peak_reserved_mib": reserved,
            "rss_peak_mib": rss,
            "rss_baseline_mib": self.rss_baseline,
        }
        if nvml is not None:
            if self.sampler is not None and self.sampler.uuid:
                cols["device_uuid"] = self.sampler.uuid  # NVML's spelling: tells a MIG slice from its GPU
            cols.update(
                nvml_peak_mib=nvml.peak_mib,
                nvml_interval_ms=nvml.interval_ms,
                nvml_baseline_mib=nvml.baseline_mib,
                peak_mem_mib=nvml.peak_mib,
                peak_mem_source=nvml.source,
            )
        elif self.device.startswith("cuda"):
            cols.update(peak_mem_mib=reserved, peak_mem_source="torch-reserved")
        else:
            cols.update(peak_mem_mib=rss, peak_mem_source="rss")
        return cols


def _collector(context: MetricContext) -> Collector:
    return PeakMemory(context)


METRIC = Metric(
    name="memory",
    value_column="peak_mem_mib",
    unit="MiB",
    direction="lower",
    label="peak memory (MiB)",
    title="Peak memory vs resolution",
    table=(
        TableColumn("peak MiB", "peak_mem_mib", ".0f"),
        TableColumn("mem source", "peak_mem_source", None),
    ),
    columns=(
        Column("peak_mem_mib", "float", "MiB", "lower", doc="headline memory, from peak_mem_source"),
        Column("peak_mem_source", "text", doc="nvml-process | nvml-device-delta | torch-reserved | rss"),
        Column("torch_peak_alloc_mib", "float", "MiB", "lower"),
        Column("torch_peak_reserved_mib", "float", "MiB", "lower"),
        Column("nvml_peak_mib", "float", "MiB", "lower"),
        Column("nvml_interval_ms", "float", "ms"),
        Column("rss_peak_mib", "float", "MiB", "lower"),
        Column("nvml_baseline_mib", "float", "MiB", core=False),
        Column("rss_baseline_mib", "float", "MiB", core=False),
        # filled by the sweep (CUDA points), not the worker: vimbench.memory's prediction beside the readings
        Column("predicted_mem_mib", "float", "MiB", core=False,
               doc="CUDA: predicted NVML figure (vimbench memory); compare with nvml_peak_mib"),
        Column("predicted_alloc_mib", "float", "MiB", core=False,
               doc="CUDA: predicted torch.cuda.max_memory_allocated; compare with torch_peak_alloc_mib"),
    ),
    gate=True,
    collector=_collector,
)
