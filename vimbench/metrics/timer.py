"""The collector of metrics the timer itself measures (throughput, latency): their columns are read off the
timed window's summary, so start/stop have nothing to do."""

from __future__ import annotations

from typing import Any

from .spec import Collector, MetricContext, Timing


class TimerColumns:
    """Copies `names` from the timing summary into the row (nothing when the point failed)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def columns(self, timing: Timing | None) -> dict[str, Any]:
        if timing is None:
            return {}
        summary = timing.summary()
        return {name: summary[name] for name in self.names if name in summary}


def from_timer(*names: str):
    """A collector factory for Metric.collector: the named columns of the timing summary."""

    def build(context: MetricContext) -> Collector:
        return TimerColumns(names)

    return build
