"""The metric registry: one module per metric, listed once in `METRIC_MODULES`.

A metric module defines `METRIC` (vimbench.metrics.spec.Metric): its results.csv columns, unit, direction,
plot label, whether gates may use it, and its collector (built by the worker at the start of a point,
started and stopped around the timed window). The runner, the results column spec, the console tables,
plots, reports and the gate all loop over `all_metrics()`; adding a metric is one module plus one line here.
"""

from __future__ import annotations

import importlib

from .spec import Collector, Column, Metric, MetricContext, TableColumn

# in results.csv column order
METRIC_MODULES: tuple[str, ...] = ("throughput", "latency", "peak_memory", "energy")

_REGISTRY: dict[str, Metric] = {}


def _load() -> dict[str, Metric]:
    if not _REGISTRY:
        for module in METRIC_MODULES:
            metric = importlib.import_module(f"{__name__}.{module}").METRIC
            _REGISTRY[metric.name] = metric
    return _REGISTRY


def all_metrics() -> tuple[Metric, ...]:
    """Every registered metric, in registry order."""
    return tuple(_load().values())


def metric_names() -> tuple[str, ...]:
    return tuple(_load())


def get_metric(name: str) -> Metric:
    """The metric called `name`; ValueError (one line, listing the known ones) otherwise."""
    metrics = _load()
    if name not in metrics:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(metrics)}")
    return metrics[name]


def gate_metrics() -> tuple[Metric, ...]:
    return tuple(m for m in all_metrics() if m.gate)


def describe_metrics() -> dict[str, dict[str, object]]:
    """For run.json: what each registered metric is and which columns carry it."""
    return {
        m.name: {"unit": m.unit, "direction": f"{m.direction} is better", "gate": m.gate,
                 "columns": [c.name for c in m.columns]}
        for m in all_metrics()
    }


def metric_columns() -> tuple[Column, ...]:
    """Every metric's columns, in registry order (core and extra mixed; the results spec orders them)."""
    return tuple(c for m in all_metrics() for c in m.columns)


__all__ = [
    "METRIC_MODULES",
    "Collector",
    "Column",
    "Metric",
    "MetricContext",
    "TableColumn",
    "all_metrics",
    "describe_metrics",
    "gate_metrics",
    "get_metric",
    "metric_columns",
    "metric_names",
]
