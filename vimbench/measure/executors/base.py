"""What an executor is. The sweep hands an executor its points and gets one result row back per point.

The seam: an `Executor` only runs points (each in isolation) and reports rows; it makes no scheduling
decisions. What to skip (resume, larger resolutions after an OOM) is decided by the sweep and passed in as
the `skip` callback, asked just before each point starts, so a multi-GPU or Ray executor gets the same
behaviour by calling it too. `OomSkipper` is that bookkeeping, reusable by any caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from ..plan import Point

OnRow = Callable[[Point, dict], None]
# -> None: run the point; -> a row: record that row instead (e.g. status skipped-oom) and do not run it
SkipCheck = Callable[[Point], dict | None]


class Executor(Protocol):
    def run(self, points: Sequence[Point], on_row: OnRow, skip: SkipCheck | None = None) -> None:
        """Run every point (each in a fresh process) and call on_row(point, row) as each finishes.

        Before starting a point, call `skip(point)` when given; a returned row goes to on_row instead.
        on_row is called from the caller's thread, one row at a time. Never raises for a failed point:
        failures are rows with a non-ok status.
        """
        ...


def _chain_key(point: Point) -> tuple[Any, ...]:
    """Points that differ only in resolution: one curve, where an OOM at one size dooms the larger ones."""
    return (
        point.model,
        point.batch_size,
        point.dtype,
        point.device,
        point.mode,
        tuple(sorted(point.options.items())),
        point.compile,
        point.channels_last,
    )


class OomSkipper:
    """Remembers the smallest resolution that ran out of memory per curve; larger ones are skipped."""

    def __init__(self) -> None:
        self._oom_at: dict[tuple[Any, ...], int] = {}

    def record(self, point: Point, row: Mapping[str, Any]) -> None:
        if row.get("status") == "oom":
            key = _chain_key(point)
            self._oom_at[key] = min(self._oom_at.get(key, point.img_size), point.img_size)

    def seed(self, pairs: Iterable[tuple[Point, Mapping[str, Any]]]) -> None:
        """Learn from rows recorded earlier (a resumed sweep)."""
        for point, row in pairs:
            self.record(point, row)

    def oom_below(self, point: Point) -> int | None:
        """The resolution (< point.img_size) of the same curve that ran out of memory, if any."""
        at = self._oom_at.get(_chain_key(point))
        return at if at is not None and at < point.img_size else None
