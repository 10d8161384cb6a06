"""Energy per image over the timed window: joules per image and mean watts, with the source in a column.

- CUDA: NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules since the driver
  loaded, Volta and later) read at the start and the end of the timed window: `nvml-energy`. Where the
  counter is missing or did not advance (older GPUs, some drivers), power readings
  (`nvmlDeviceGetPowerUsage`, milliwatts) sampled in a thread are integrated over the window:
  `nvml-power`.
- CPU: RAPL package counters under /sys/class/powercap (`energy_uj`, wrap-around handled): `rapl`.
- Neither readable (a VM without powercap, a non-root user on Linux >= 5.10, a MIG slice): the columns read
  "-" and the reason goes to run.json (`metric_notes`).

Both counters are device- or package-wide: another process on the same GPU or CPU package adds its energy.
The window is the timer's own (after warmup, between device synchronisations), so energy per image is the
window's joules divided by the images it processed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .nvml_sampler import find_handle, load_nvml
from .spec import Collector, Column, Metric, MetricContext, TableColumn, Timing

POWERCAP_ROOT = Path("/sys/class/powercap")
POWERCAP_ENV = "VIMBENCH_POWERCAP_ROOT"  # points the collector at another tree (tests, containers)
ENERGY_SOURCES = {
    "nvml-energy": "NVML total-energy counter, whole GPU",
    "nvml-power": "NVML power readings integrated over the window, whole GPU",
    "rapl": "RAPL package energy counters (/sys/class/powercap), whole CPU package(s)",
    "-": "not measured (see run.json metric_notes)",
}
_TOP_ZONE = re.compile(r"^[a-z-]*rapl:\d+$")  # intel-rapl:0 (AMD packages are listed the same way); not :0:1


class NvmlPowerIntegrator:
    """Samples NVML power (mW) in a thread and integrates it (trapezoids) between start and stop."""

    def __init__(self, nvml: ModuleType, handle: Any, interval_ms: float):
        self.nvml, self.handle = nvml, handle
        self.period = max(interval_ms, 1.0) / 1000.0
        self.samples: list[tuple[float, float]] = []  # (perf_counter s, watts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read_watts(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def _sample(self) -> None:
        with contextlib.suppress(Exception):
            self.samples.append((time.perf_counter(), self.read_watts()))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    def start(self) -> None:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="vimbench-power", daemon=True)
        self._thread.start()

    def stop(self) -> float | None:
        """Joules over the window; None with fewer than two readings."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._sample()
        if len(self.samples) < 2:
            return None
        return sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in itertools.pairwise(self.samples))


def rapl_zones(root: Path) -> list[Path]:
    """Top-level RAPL zones with an energy counter: the packages when named so, else every top-level one."""
    if not root.is_dir():
        return []
    zones = sorted(p for p in root.iterdir() if _TOP_ZONE.match(p.name) and (p / "energy_uj").exists())
    packages = [z for z in zones if _read_text(z / "name").startswith("package")]
    return packages or zones


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class RaplCounter:
    """Sum of the packages' energy_uj, read at start and stop; a counter that wrapped adds its range."""

    def __init__(self, zones: list[Path]):
        self.zones = zones
        self.ranges = [int(_read_text(z / "max_energy_range_uj") or 0) for z in zones]
        self.begin: list[int] = []

    def read(self) -> list[int]:
        return [int((z / "energy_uj").read_text().strip()) for z in self.zones]

    def start(self) -> None:
        self.begin = self.read()

    def stop(self) -> float:
        total_uj = 0
        for start, end, span in zip(self.begin, self.read(), self.ranges, strict=True):
            total_uj += end - start if end >= start else end + span - start
        return total_uj / 1e6


class EnergyCollector:
    """Picks the best readable source when built; `start`/`stop` bracket the timed window."""

    def __init__(self, context: MetricContext, nvml: ModuleType | None = None,
                 powercap_root: Path | None = None):
        self.source = "-"
        self.reason = ""
        self.joules: float | None = None
        self.window_s = 0.0
        self._t0 = 0.0
        self._nvml_counter: tuple[ModuleType, Any] | None = None
        self._nvml_begin_mj: int | None = None
        self._power: NvmlPowerIntegrator | None = None
        self._rapl: RaplCounter | None = None
        if context.device.startswith("cuda"):
            self._setup_nvml(context, nvml if nvml is not None else load_nvml())
        else:
            root = powercap_root or Path(os.environ.get(POWERCAP_ENV) or POWERCAP_ROOT)
            self._setup_rapl(root)

    def _setup_nvml(self, context: MetricContext, nvml: ModuleType | None) -> None:
        if nvml is None:
            self.reason = "NVML is not available (no driver library)"
            return
        try:
            handle, _ = find_handle(nvml, context.device_uuid)
        except Exception as exc:
            self.reason = f"NVML has no handle for {context.device} ({exc})"
            return
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self._nvml_counter = (nvml, handle)
            self.source = "nvml-energy"
        except Exception as exc:
            self.reason = f"NVML total-energy counter unsupported ({type(exc).__name__})"
        try:
            self._power = NvmlPowerIntegrator(nvml, handle, context.nvml_interval_ms)
            self._power.read_watts()
            if self._nvml_counter is None:
                self.source = "nvml-power"
        except Exception as exc:
            self._power = None
            if self._nvml_counter is None:
                self.reason += f"; NVML power readings unsupported ({type(exc).__name__})"

    def _setup_rapl(self, root: Path) -> None:
        zones = rapl_zones(root)
        if not zones:
            self.reason = f"no RAPL energy counters under {root} (a VM, or a CPU without RAPL)"
            return
        try:
            counter = RaplCounter(zones)
            counter.read()
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            self.reason = (f"RAPL counters under {root} not readable ({why}; energy_uj is root-only "
                           "since Linux 5.10)")
            return
        self._rapl = counter
        self.source = "rapl"

    def start(self) -> None:
        self._t0 = time.perf_counter()
        if self._nvml_counter is not None:
            nvml, handle = self._nvml_counter
            self._nvml_begin_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        if self._power is not None:
            self._power.start()
        if self._rapl is not None:
            self._rapl.start()

    def stop(self) -> None:
        self.window_s = time.perf_counter() - self._t0
        try:
            self.joules = self._stop_readers()
        except Exception as exc:  # a counter that vanished mid-run: no number rather than a wrong one
            self.joules, self.source, self.reason = None, "-", f"energy reading failed ({exc})"

    def _stop_readers(self) -> float | None:
        power_j = self._power.stop() if self._power is not None else None
        if self._nvml_counter is not None and self._nvml_begin_mj is not None:
            nvml, handle = self._nvml_counter
            delta_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle) - self._nvml_begin_mj
            if delta_mj > 0:
                self.source = "nvml-energy"
                return delta_mj / 1000.0
            self.reason = "NVML energy counter did not advance over the window"
        if power_j is not None and power_j > 0:
            self.source = "nvml-power"
            return power_j
        if self._rapl is not None:
            joules = self._rapl.stop()
            if joules > 0:
                return joules
            self.reason = "RAPL counters did not advance over the window"
        self.source = "-"
        return None

    def columns(self, timing: Timing | None) -> dict[str, Any]:
        if timing is None:
            return {}
        images = timing.batch_size * sum(timing.iters)
        if self.joules is None or images <= 0 or self.window_s <= 0:
            return {"energy_source": "-", "metric_notes": {"energy_per_image": self.reason or "not measured"}}
        return {
            "energy_per_image": self.joules / images,
            "power_mean_w": self.joules / self.window_s,
            "energy_source": self.source,
        }


def _collector(context: MetricContext) -> Collector:
    return EnergyCollector(context)


METRIC = Metric(
    name="energy_per_image",
    value_column="energy_per_image",
    unit="J/img",
    direction="lower",
    label="energy per image (J, timed window)",
    title="Energy per image vs resolution",
    table=(TableColumn("J/img", "energy_per_image", ".3g"), TableColumn("W", "power_mean_w", ".0f")),
    columns=(
        Column("energy_per_image", "float", "J/img", "lower", core=False,
               doc="joules per image over the timed window (device- or package-wide counter)"),
        Column("power_mean_w", "float", "W", "lower", core=False, doc="mean power over the timed window"),
        Column("energy_source", "text", core=False, doc="nvml-energy | nvml-power | rapl | - (see run.json)"),
    ),
    gate=True,
    collector=_collector,
    doc=__doc__ or "",
)
