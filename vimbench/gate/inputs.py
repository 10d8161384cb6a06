"""Reading the runs a gate compares: results.csv (+ run.json when present) and the machine fingerprint.

Every problem with an input is a GateInputError (a ValueError with a one-line message): the gate exits 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vimbench.metrics import Metric, get_metric
from vimbench.results import (
    POINT_KEY,
    RESULTS_FILE,
    RUN_FILE,
    ResultsError,
    Run,
    RunMetaError,
    cell_text,
    point_key,
    require_one_device,
)

# The identity of a point across two runs: the schema key without the device name (a different GPU is
# caught by the fingerprint check instead), plus cpu-vs-cuda so one run's CPU and GPU rows never merge.
GATE_KEY: tuple[str, ...] = (*(k for k in POINT_KEY if k != "device_name"), "device_kind")
_REQUIRED_COLUMNS = (*POINT_KEY, "device", "status")
DEFAULT_METRIC = "throughput"

# Compared between baseline and current; a difference refuses the gate unless --force.
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "gpu", "nvidia_driver", "cuda_runtime", "torch", "triton", "cpu", "cpu_threads", "cpu_capability",
)


class GateInputError(ValueError):
    """An input the gate cannot use (missing, corrupt, nothing to compare, different machine)."""


@dataclass(frozen=True)
class GatePoint:
    """One measured point of a run as the gate sees it: the gated metric's value and per-repeat samples."""

    key: tuple[str, ...]  # values of GATE_KEY
    status: str
    value: float  # the metric's headline value (e.g. img/s median over repeats); nan when not ok
    samples: tuple[float, ...]  # per-repeat values of the metric; may be empty
    device_name: str
    error: str = ""
    threads: str = ""  # torch threads of the worker (CSV "threads"), when recorded
    cpu_capability: str = ""  # SIMD level the worker ran at (CSV "cpu_capability"), when recorded

    def field(self, name: str) -> str:
        return self.key[GATE_KEY.index(name)]


@dataclass
class GateRun:
    """A run as the gate reads it: the loaded results.Run and its points for one metric."""

    source: Path  # what the user passed
    run: Run
    metric: Metric
    points: dict[tuple[str, ...], GatePoint]
    environment: dict[str, Any] | None  # run.json "environment"; None for a bare results.csv
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return str(self.source)

    @property
    def results_path(self) -> Path:
        return self.run.csv_path

    def for_metric(self, name: str) -> GateRun:
        """The same run with the points of another metric (ratio gates are on throughput)."""
        metric = _gate_metric(name)
        if metric.name == self.metric.name:
            return self
        points = _points_from_table(_as_written(self.run), self.run.csv_path, [], metric)
        return GateRun(self.source, self.run, metric, points, self.environment, [])


def _gate_metric(name: str) -> Metric:
    try:
        metric = get_metric(name)
    except ValueError as exc:
        raise GateInputError(f"--metric: {exc}") from None
    if not metric.gate:
        raise GateInputError(f"--metric {name}: this metric is not gate-eligible")
    return metric


def _parse_float(value: Any, where: str, what: str) -> float:
    is_number = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    text = repr(float(value)) if is_number else cell_text(value).strip()
    try:
        number = float(value) if is_number else float(text)
    except ValueError:
        raise GateInputError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise GateInputError(f"{where}: {what} {text!r} is not a finite non-negative number")
    return number


def _parse_samples(value: Any, where: str, what: str) -> tuple[float, ...]:
    if isinstance(value, list | tuple):
        return tuple(_parse_float(v, where, what) for v in value)
    return tuple(_parse_float(v, where, what) for v in cell_text(value).split())


def _device_kind(device: str) -> str:
    return device.split(":", 1)[0] if device else "cpu"


def _points_from_table(
    table: pd.DataFrame, csv_path: Path, notes: list[str], metric: Metric
) -> dict[tuple[str, ...], GatePoint]:
    missing = [c for c in (*_REQUIRED_COLUMNS, metric.value_column) if c not in table.columns]
    if missing:
        raise GateInputError(f"{csv_path}: not a vimbench results.csv (missing columns: "
                             f"{', '.join(missing)})")
    if table.empty:
        raise GateInputError(f"{csv_path}: no points in it")
    for kind, rows in table.groupby(table["device"].map(lambda d: _device_kind(cell_text(d)))):
        try:  # the gate key leaves device_name out, so two GPU models in one run would collide
            require_one_device(rows, f"{csv_path} ({kind} rows)")
        except ValueError as exc:
            raise GateInputError(str(exc)) from None
    what = "throughput" if metric.name == "throughput" else metric.value_column
    points: dict[tuple[str, ...], GatePoint] = {}
    duplicates = 0
    for line, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        where = f"{csv_path} line {line}"
        schema_key = dict(zip(POINT_KEY, point_key(row), strict=True))
        schema_key["device_kind"] = _device_kind(cell_text(row.get("device")))
        key = tuple(schema_key[k] for k in GATE_KEY)
        status = cell_text(row.get("status"))
        ok = status == "ok"
        if ok and not cell_text(row.get(metric.value_column)).strip() and metric.name != DEFAULT_METRIC:
            raise GateInputError(f"{where}: status ok but no {what} recorded for this point (run.json "
                                 "metric_notes says why); gate on a run that measured it")
        value = _parse_float(row.get(metric.value_column), where, what) if ok else math.nan
        samples: tuple[float, ...] = ()
        if ok and metric.samples_column:
            samples = _parse_samples(row.get(metric.samples_column), where, f"{what} sample")
        if ok and metric.higher_is_better and value <= 0:
            raise GateInputError(f"{where}: status ok with {what} {value}")
        point = GatePoint(key, status, value, samples, schema_key["device_name"], cell_text(row.get("error")),
                          cell_text(row.get("threads")), cell_text(row.get("cpu_capability")))
        previous = points.get(key)
        if previous is not None:
            duplicates += 1
            if previous.status == "ok" and not ok:  # a later failed retry never hides a measurement
                continue
        points[key] = point
    if duplicates:
        notes.append(f"{csv_path}: {duplicates} repeated point(s); the last ok row of each is used")
    return points


def _as_written(run: Run) -> pd.DataFrame:
    """The rows' text as written, so a bad value is named literally in the error."""
    return run.text_table if run.text_table is not None else run.table


def load_run(path: str | Path, role: str, metric: str = DEFAULT_METRIC) -> GateRun:
    """A run dir (results.csv + run.json) or a bare results.csv (run.json beside it is used if present)."""
    gated = _gate_metric(metric)
    source = Path(path)
    if source.is_dir():
        csv_path = source / RESULTS_FILE
        if not csv_path.is_file():
            raise GateInputError(f"{role} {source}: no {RESULTS_FILE} in this directory")
    elif not source.is_file():
        raise GateInputError(f"{role} {source}: no such file or directory")
    try:
        run = Run.load(source)
    except RunMetaError as exc:
        raise GateInputError(f"{role}: {exc}") from None
    except ResultsError as exc:
        raise GateInputError(str(exc)) from None
    notes: list[str] = []
    points = _points_from_table(_as_written(run), run.csv_path, notes, gated)
    json_path = run.path / RUN_FILE
    environment = run.meta.get("environment")
    if environment is not None and not isinstance(environment, dict):
        raise GateInputError(f"{json_path}: \"environment\" is not an object")
    if environment is None:
        notes.append(
            f"{role}: no run.json environment next to {run.csv_path.name}; the fingerprint uses only the "
            "CSV's device_name (driver, CUDA, torch, triton not checked)"
        )
    return GateRun(source, run, gated, points, environment, notes)


def fingerprint(run: GateRun) -> dict[str, str | None]:
    """What a throughput number depends on besides the code. Absent key = unknown; None = not applicable."""
    kinds = {p.field("device_kind") for p in run.points.values()}
    names = {kind: sorted({p.device_name for p in run.points.values() if p.field("device_kind") == kind})
             for kind in kinds}
    uses_gpu = any(kind != "cpu" for kind in kinds)
    uses_cpu = "cpu" in kinds
    result: dict[str, str | None] = {
        "gpu": ", ".join(n for kind in sorted(kinds - {"cpu"}) for n in names[kind]) if uses_gpu else None,
        "cpu": ", ".join(names["cpu"]) if uses_cpu else None,
    }
    env = run.environment
    if env is not None:
        def text(value: Any) -> str | None:
            return None if value is None else str(value)

        result["torch"] = text(env.get("torch"))
        result["triton"] = text(env.get("triton"))
        result["nvidia_driver"] = text(env.get("nvidia_driver")) if uses_gpu else None
        result["cuda_runtime"] = text(env.get("cuda_runtime")) if uses_gpu else None
        result["cpu_threads"] = text(env.get("torch_threads")) if uses_cpu else None
        if env.get("cpu_capability") is not None or not uses_cpu:  # runs before the field: unknown
            result["cpu_capability"] = text(env.get("cpu_capability")) if uses_cpu else None
    cpu_threads = sorted({p.threads for p in run.points.values() if p.field("device_kind") == "cpu"} - {""})
    if cpu_threads:  # what the workers really used beats the parent process's setting
        result["cpu_threads"] = ", ".join(cpu_threads)
    simd = sorted({p.cpu_capability for p in run.points.values() if p.field("device_kind") == "cpu"} - {""})
    if simd:  # likewise the SIMD level the workers ran at (a CPU number at AVX2 is not one at AVX-512)
        result["cpu_capability"] = ", ".join(simd)
    return {k: result[k] for k in FINGERPRINT_FIELDS if k in result}


@dataclass
class FingerprintCheck:
    differences: list[str]  # "torch: 2.11.0 (baseline) vs 2.12.0 (current)"
    unchecked: list[str]  # fields unknown on one side
    warnings: list[str]  # differences that do not refuse the gate (precision flags)


def compare_fingerprints(baseline: GateRun, current: GateRun) -> FingerprintCheck:
    base_fp, cur_fp = fingerprint(baseline), fingerprint(current)
    differences, unchecked = [], []
    for name in FINGERPRINT_FIELDS:
        if name not in base_fp or name not in cur_fp:
            if base_fp.get(name) is not None or cur_fp.get(name) is not None:
                unchecked.append(name)
            continue
        if base_fp[name] != cur_fp[name]:
            differences.append(
                f"{name}: {base_fp[name] or 'none'} (baseline) vs {cur_fp[name] or 'none'} (current)"
            )
    warnings = []
    if baseline.environment is not None and current.environment is not None:
        base_flags = baseline.environment.get("precision") or {}
        cur_flags = current.environment.get("precision") or {}
        for flag in sorted(set(base_flags) | set(cur_flags)):
            if base_flags.get(flag) != cur_flags.get(flag):
                warnings.append(f"precision flag {flag}: {base_flags.get(flag)} (baseline) vs "
                                f"{cur_flags.get(flag)} (current)")
    return FingerprintCheck(differences, unchecked, warnings)
