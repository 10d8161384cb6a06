"""What a metric is: its columns in results.csv, its unit and direction, its label, whether gates may use it,
and how the worker collects it around the timed window.

`Column` is the unit of the results.csv column spec (vimbench.results assembles the full header from the
identity columns and every registered metric's columns). A metric's `collector` is built by the worker at
the start of a point, `start()`/`stop()` bracket the timed window, and `columns()` fills the row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

ColumnKind = Literal["text", "int", "float", "bool", "floats"]
Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Column:
    """One results.csv column: its type, unit, whether a larger value is better, and whether it is part of
    the contract (core: every results.csv has it, in this order) or an extra (after the core ones)."""

    name: str
    kind: ColumnKind = "text"
    unit: str = ""
    direction: Direction | None = None  # None: not a quantity to rank (an identity field, a source label)
    core: bool = True
    doc: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")


@dataclass(frozen=True)
class MetricContext:
    """What a collector may know about the point it measures (no model, no Point: metrics sit below
    measure)."""

    device: str  # "cpu" or "cuda:N"
    batch_size: int
    nvml_interval_ms: float = 5.0
    device_uuid: str = ""  # NVML/torch UUID of a CUDA device, when known


class Timing(Protocol):
    """The timed window as the timer reports it (vimbench.metrics.timing_stats.TimingResult)."""

    batch_size: int
    iters: list[int]
    elapsed_s: list[float]

    def summary(self) -> Mapping[str, Any]: ...


class Collector(Protocol):
    """Built at the start of a point (before the model): `start`/`stop` bracket the timed window; `columns`
    is asked once at the end, with the timing (None when the point failed before or during timing)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def columns(self, timing: Timing | None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TableColumn:
    """One column of the sweep's console table: a header, the results column, and its format."""

    header: str
    column: str
    format: str | None = ".2f"  # None: the text as is
    flag: str | None = None  # a boolean column: " <flag>" is appended to the cell where it is true


@dataclass(frozen=True)
class Metric:
    """A registered metric (one module in vimbench/metrics): what `--metric NAME` means everywhere."""

    name: str  # e.g. "throughput", the name --metric takes
    value_column: str  # the headline column plotted, tabled and gated
    unit: str  # of the headline value, e.g. "img/s"
    direction: Direction  # is a larger value better?
    label: str  # plot axis label
    columns: tuple[Column, ...]  # every column this metric writes (the headline first)
    gate: bool  # may `vimbench gate --metric NAME` use it?
    samples_column: str | None = None  # per-repeat samples for the significance test, when it has them
    collector: Callable[[MetricContext], Collector] | None = None  # None: filled by the timer itself
    title: str = ""  # plot title, e.g. "Throughput vs resolution"
    band: Callable[[Any], tuple[Any, Any]] | None = None  # ok rows -> (low, high) band around the curve
    table: tuple[TableColumn, ...] = ()  # its columns in the sweep's console table
    plot: bool = True  # draw a curve of value_column against resolution
    doc: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)
