"""Latency: milliseconds per batch (median, p10, p90), its spread and the noise flag, and how it was timed."""

from __future__ import annotations

from .spec import Column, Metric, TableColumn
from .timer import from_timer

_COLUMNS = (
    Column("latency_ms", "float", "ms", "lower", doc="median time per batch"),
    Column("latency_ms_p10", "float", "ms", "lower"),
    Column("latency_ms_p90", "float", "ms", "lower"),
    Column("iqr_pct", "float", "%", "lower", doc="IQR / median of per-repeat latency, percent"),
    Column("noisy", "bool", doc="the noise rule (vimbench.metrics.timing_stats) flags this point"),
    Column("iters", "int", doc="timed iterations per repeat (>= --iters, more to reach --min-time)"),
    Column("repeats", "int"),
)

METRIC = Metric(
    name="latency",
    value_column="latency_ms",
    unit="ms",
    direction="lower",
    label="latency per batch (ms, median)",
    title="Latency per batch vs resolution",
    band=lambda ok: (ok["latency_ms_p10"].to_numpy(), ok["latency_ms_p90"].to_numpy()),
    table=(
        TableColumn("IQR %", "iqr_pct", ".1f", flag="noisy"),
        TableColumn("latency ms", "latency_ms", ".2f"),
    ),
    columns=_COLUMNS,
    gate=True,
    collector=from_timer(*(c.name for c in _COLUMNS)),
)
