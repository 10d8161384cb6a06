"""Energy per image (vimbench/metrics/energy.py): NVML energy counter, NVML power integration, RAPL powercap,
"-" with a reason; and the metric end to end (worker row, run.json notes, plot, gate)."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from vimbench.metrics import MetricContext, get_metric
from vimbench.metrics.energy import EnergyCollector, rapl_zones
from vimbench.metrics.timing_stats import TimingResult

UUID = "GPU-energy"


class NvmlError(Exception):
    pass


class FakeNvml:
    """pynvml's energy/power calls on one GPU: the energy counter advances `mj_per_read` per call."""

    def __init__(self, energy: bool = True, power_mw: float | None = 250_000.0, mj_per_read: int = 0):
        self.energy, self.power_mw, self.mj_per_read = energy, power_mw, mj_per_read
        self.counter_mj = 5_000_000

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid != UUID:
            raise NvmlError("NotFound")
        return "handle"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:
        if not self.energy:
            raise NvmlError("NotSupported")
        value = self.counter_mj
        self.counter_mj += self.mj_per_read
        return value

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:
        if self.power_mw is None:
            raise NvmlError("NotSupported")
        return int(self.power_mw)


def cuda_context() -> MetricContext:
    return MetricContext("cuda:0", batch_size=4, nvml_interval_ms=2.0, device_uuid=UUID)


def timing(batch: int = 4, iters: tuple[int, ...] = (10, 10, 5)) -> TimingResult:
    return TimingResult(batch_size=batch, iters=list(iters), elapsed_s=[0.1] * len(iters), warmup=1)


def window(collector: EnergyCollector, seconds: float = 0.05) -> None:
    collector.start()
    time.sleep(seconds)
    collector.stop()


def test_nvml_energy_counter_gives_joules_per_image() -> None:
    nvml = FakeNvml(mj_per_read=12_000)  # 12 J between the start and the stop reading
    collector = EnergyCollector(cuda_context(), nvml=nvml)
    nvml.counter_mj = 7_000_000  # setup probed the counter; the window starts here
    window(collector)
    cols = collector.columns(timing())
    assert cols["energy_source"] == "nvml-energy"
    assert cols["energy_per_image"] == pytest.approx(12.0 / 100)  # 4 images x 25 iterations
    assert cols["power_mean_w"] == pytest.approx(12.0 / collector.window_s)
    assert 0.04 < collector.window_s < 1.0


def test_power_samples_integrated_when_the_counter_is_missing() -> None:
    collector = EnergyCollector(cuda_context(), nvml=FakeNvml(energy=False, power_mw=250_000))
    assert collector.source == "nvml-power" and "counter unsupported" in collector.reason
    window(collector, 0.1)
    cols = collector.columns(timing(batch=1, iters=(10,)))
    assert cols["energy_source"] == "nvml-power"
    assert cols["power_mean_w"] == pytest.approx(250.0, rel=0.15)  # constant 250 W over the window
    assert cols["energy_per_image"] == pytest.approx(250.0 * collector.window_s / 10, rel=0.15)


def test_counter_that_does_not_advance_falls_back_to_power() -> None:
    collector = EnergyCollector(cuda_context(), nvml=FakeNvml(mj_per_read=0, power_mw=100_000))
    window(collector)
    assert collector.columns(timing())["energy_source"] == "nvml-power"


@pytest.mark.parametrize(
    ("nvml", "reason"),
    [(None, "NVML is not available"), (FakeNvml(energy=False, power_mw=None), "power readings unsupported")],
)
def test_no_nvml_source_is_a_dash_with_the_reason(monkeypatch, nvml, reason) -> None:
    import vimbench.metrics.energy as energy

    monkeypatch.setattr(energy, "load_nvml", lambda: None)
    collector = EnergyCollector(cuda_context(), nvml=nvml)
    window(collector, 0.01)
    cols = collector.columns(timing())
    assert cols["energy_source"] == "-" and "energy_per_image" not in cols
    assert reason in cols["metric_notes"]["energy_per_image"]


def make_powercap(root: Path, packages: dict[str, tuple[int, int]]) -> Path:
    """A fake /sys/class/powercap: zone -> (energy_uj, max_energy_range_uj), plus a sub-zone and psys."""
    for i, (name, (energy, span)) in enumerate(packages.items()):
        zone = root / f"intel-rapl:{i}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(name + "\n")
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text(f"{span}\n")
        sub = root / f"intel-rapl:{i}:0"  # a core sub-zone: inside the package, never added twice
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("1\n")
    return root


def set_energy(root: Path, zone: int, value: int) -> None:
    """Replace the counter file at once (sysfs reads never see a half-written value)."""
    target = root / f"intel-rapl:{zone}" / "energy_uj"
    tmp = target.with_name("energy_uj.tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, target)


def test_rapl_packages_summed_with_wrap_around(tmp_path) -> None:
    root = make_powercap(tmp_path / "powercap", {"package-0": (1_000_000, 10**9),
                                                  "package-1": (999_000_000, 10**9)})
    psys = root / "intel-rapl:2"
    psys.mkdir()
    (psys / "name").write_text("psys\n")  # platform zone overlaps the packages: left out
    (psys / "energy_uj").write_text("0\n")
    assert [z.name for z in rapl_zones(root)] == ["intel-rapl:0", "intel-rapl:1"]
    collector = EnergyCollector(MetricContext("cpu", batch_size=1), powercap_root=root)
    collector.start()
    set_energy(root, 0, 3_000_000)  # +2 J
    set_energy(root, 1, 1_000_000)  # wrapped: +1 J to the range, +1 J after it
    time.sleep(0.02)
    collector.stop()
    cols = collector.columns(timing(batch=1, iters=(2, 2)))
    assert cols["energy_source"] == "rapl"
    assert cols["energy_per_image"] == pytest.approx(4.0 / 4)
    assert cols["power_mean_w"] == pytest.approx(4.0 / collector.window_s)


def test_rapl_unavailable_or_unreadable(tmp_path) -> None:
    missing = EnergyCollector(MetricContext("cpu", batch_size=1), powercap_root=tmp_path / "nothing")
    assert missing.source == "-" and "no RAPL energy counters under" in missing.reason
    root = make_powercap(tmp_path / "pc", {"package-0": (5, 100)})
    (root / "intel-rapl:0" / "energy_uj").unlink()
    (root / "intel-rapl:0" / "energy_uj").mkdir()  # reading it fails like a root-only file does
    unreadable = EnergyCollector(MetricContext("cpu", batch_size=1), powercap_root=root)
    assert unreadable.source == "-" and "not readable" in unreadable.reason
    still = make_powercap(tmp_path / "still", {"package-0": (5, 100)})
    frozen = EnergyCollector(MetricContext("cpu", batch_size=1), powercap_root=still)
    window(frozen, 0.01)
    assert frozen.columns(timing())["metric_notes"]["energy_per_image"] == (
        "RAPL counters did not advance over the window"
    )


def test_failed_point_gets_no_energy_columns(tmp_path) -> None:
    root = make_powercap(tmp_path / "pc", {"package-0": (5, 100)})
    assert EnergyCollector(MetricContext("cpu", batch_size=1), powercap_root=root).columns(None) == {}


def test_metric_declaration() -> None:
    metric = get_metric("energy_per_image")
    assert (metric.unit, metric.direction, metric.gate) == ("J/img", "lower", True)
    assert [c.name for c in metric.columns] == ["energy_per_image", "power_mean_w", "energy_source"]
    assert not any(c.core for c in metric.columns)  # extras: older results.csv files lack them


class _Ticker:
    """Advances a fake RAPL counter at `watts` while a worker measures (a real package would)."""

    def __init__(self, root: Path, watts: float):
        self.root, self.watts = root, watts
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self.stop.wait(0.002):
            set_energy(self.root, 0, int(1_000_000 + (time.perf_counter() - start) * self.watts * 1e6))

    def __enter__(self) -> _Ticker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_worker_row_carries_rapl_energy(tmp_path, monkeypatch) -> None:
    """A real worker subprocess reads the fake powercap tree around its timed window."""
    from vimbench.measure.executors import run_point_subprocess
    from vimbench.measure.plan import Point

    root = make_powercap(tmp_path / "pc", {"package-0": (1_000_000, 10**12)})
    monkeypatch.setenv("VIMBENCH_POWERCAP_ROOT", str(root))
    point = Point("deit-t", 32, warmup=1, iters=1, min_time_s=0.3, repeats=2, threads=1)
    with _Ticker(root, watts=20.0):
        row = run_point_subprocess(point)
    assert row["status"] == "ok", row.get("error")
    assert row["energy_source"] == "rapl", row.get("metric_notes")
    assert row["power_mean_w"] == pytest.approx(20.0, rel=0.25)
    # joules per image = watts / (images per second) over the same window
    assert row["energy_per_image"] == pytest.approx(20.0 / row["throughput"], rel=0.3)


def test_sweep_records_why_energy_is_missing(tmp_path) -> None:
    from vimbench.measure.plan import SweepConfig
    from vimbench.measure.rows import identity_row
    from vimbench.measure.sweep import run_sweep

    class NoEnergyExecutor:
        def run(self, points, on_row, skip=None):
            for point in points:
                row = identity_row(point)
                row.update(status="ok", throughput=10.0, energy_source="-",
                           metric_notes={"energy_per_image": "no RAPL energy counters under /x"})
                on_row(point, row)

    config = SweepConfig(models=["deit-t"], resolutions=[32, 48], device="cpu", out_dir=tmp_path / "run",
                         plots=False)
    run_dir = run_sweep(config, NoEnergyExecutor(), console=Console(file=io.StringIO(), width=140))
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["metric_notes"] == {"energy_per_image": ["no RAPL energy counters under /x"]}
    assert meta["metrics"]["energy_per_image"]["unit"] == "J/img"
    csv_text = (run_dir / "results.csv").read_text().splitlines()
    header = csv_text[0].split(",")
    assert csv_text[1].split(",")[header.index("energy_source")] == "-"


def _energy_run(run_dir: Path, joules: dict[int, float | None]) -> Path:
    """A run of vim-t with energy per image at each resolution (None: "-", not measured)."""
    from vimbench.measure.store import ResultsStore

    store = ResultsStore(run_dir)
    for size, value in joules.items():
        store.append({
            "model": "vim-t", "family": "vim", "img_size": size, "tokens": (size // 16) ** 2 + 1,
            "batch_size": 1, "dtype": "fp32", "device": "cpu", "device_name": "Test CPU", "mode": "infer",
            "scan_backend": "cpu", "attn_backend": "-", "compile": False, "channels_last": False,
            "status": "ok", "throughput": 10.0, "throughput_samples": [10.0], "latency_ms": 100.0,
            "latency_ms_p10": 95.0, "latency_ms_p90": 105.0, "peak_mem_mib": 400.0, "peak_mem_source": "rss",
            "energy_per_image": value, "power_mean_w": None if value is None else value * 10.0,
            "energy_source": "-" if value is None else "rapl",
        })  # fmt: skip
    store.write_run_json({"environment": {"cpu": "Test CPU", "torch": "2.13.0"}})
    return run_dir


def test_plot_draws_energy_where_it_was_measured(cli, tmp_path) -> None:
    measured = _energy_run(tmp_path / "measured", {224: 1.5, 448: 6.0})
    result = cli(["plot", measured, "--metric", "energy_per_image"])
    assert result.code == 0, result.err
    svg = (measured / "energy_per_image.svg").read_text()
    assert "energy per image (J, timed window)" in svg and "Energy per image vs resolution" in svg
    missing = _energy_run(tmp_path / "missing", {224: None})
    result = cli(["plot", missing, "--metric", "energy_per_image"])
    assert result.code == 0 and "no energy_per_image figure" in result.out
    assert not (missing / "energy_per_image.svg").exists()


@pytest.mark.parametrize(("current", "verdict", "code"), [(1.2, "regression", 1), (0.8, "improved", 0),
                                                           (1.01, "unchanged", 0)])
def test_gate_on_energy_per_image_lower_is_better(cli, tmp_path, current, verdict, code) -> None:
    base = _energy_run(tmp_path / "base", {224: 1.0})
    cur = _energy_run(tmp_path / "cur", {224: current})
    out = tmp_path / "gate.json"
    result = cli(["gate", "--baseline", base, "--current", cur, "--metric", "energy_per_image",
                  "--json", out])
    assert result.code == code, result.out + result.err
    report = json.loads(out.read_text())
    (point,) = report["points"]
    assert point["verdict"] == verdict and point["current_energy_per_image"] == pytest.approx(current)
    assert "energy_per_image, lower is better" in result.out and "J/img" in result.out


def test_gate_on_energy_refuses_a_run_without_it(cli, tmp_path) -> None:
    base = _energy_run(tmp_path / "base", {224: 1.0})
    cur = _energy_run(tmp_path / "cur", {224: None})
    result = cli(["gate", "--baseline", base, "--current", cur, "--metric", "energy_per_image"])
    assert result.code == 2 and "no energy_per_image recorded" in result.err
