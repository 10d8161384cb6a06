"""An executor for sweep tests that measures nothing: every point answers at once with an ok row."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from vimbench.measure.plan import Point
from vimbench.measure.rows import identity_row


class RecordingExecutor:
    """Answers every point at once (ok, 1 img/s, 1 MiB) and records (model, img_size) of what it ran."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, int]] = []

    def run(self, points: Iterable[Point], on_row: Callable[[Point, dict[str, Any]], None],
            skip: Any = None) -> None:
        for point in points:
            self.ran.append((point.model, point.img_size))
            row = identity_row(point)
            row.update(status="ok", throughput=1.0, peak_mem_mib=1.0, peak_mem_source="rss")
            on_row(point, row)
