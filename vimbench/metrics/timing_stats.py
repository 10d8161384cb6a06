"""Timing statistics, written once: median, p10/p90, IQR and the one noise rule every timing in vimbench
uses (sweep points, `vimbench kernels bench`, `vimbench profile`).

The noise rule: a measurement is noisy when the interquartile range of its per-repeat times exceeds
NOISY_IQR_PCT (10%) of their median. The IQR ignores one outlier on each side, so a single preempted repeat
on a busy machine does not flag a point, while a consistently spread distribution does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NOISY_IQR_PCT = 10.0
NOISE_RULE = f"IQR of per-repeat times > {NOISY_IQR_PCT:g}% of their median"


@dataclass(frozen=True)
class Spread:
    """Summary of per-repeat times (any unit; the percentages are unit-free)."""

    median: float
    p10: float
    p90: float
    iqr_pct: float  # (q75 - q25) / median, percent
    count: int

    @property
    def noisy(self) -> bool:
        return is_noisy(self.iqr_pct)


def is_noisy(iqr_pct: float) -> bool:
    """The one noise rule (see module docstring)."""
    return iqr_pct > NOISY_IQR_PCT


def spread(samples: Sequence[float]) -> Spread:
    """Median, p10/p90 and IQR% of `samples` (linear interpolation, numpy's default)."""
    values = np.asarray(list(samples), dtype=float)
    if values.size == 0:
        raise ValueError("no samples to summarise")
    median = float(np.median(values))
    q25, q75 = np.percentile(values, [25, 75])
    iqr_pct = 100.0 * float(q75 - q25) / median if median > 0 else 0.0
    p10, p90 = np.percentile(values, [10, 90])
    return Spread(median, float(p10), float(p90), iqr_pct, int(values.size))


@dataclass
class TimingResult:
    """The timed window of one point: `iters[i]` iterations of one batch took `elapsed_s[i]` in repeat i."""

    batch_size: int
    iters: list[int]  # timed iterations per repeat
    elapsed_s: list[float]  # per repeat
    warmup: int

    @property
    def latencies_ms(self) -> list[float]:
        return [1000.0 * t / n for t, n in zip(self.elapsed_s, self.iters, strict=True)]

    @property
    def throughputs(self) -> list[float]:
        return [self.batch_size * n / t for t, n in zip(self.elapsed_s, self.iters, strict=True)]

    @property
    def images(self) -> int:
        """Images processed in the timed window (every repeat)."""
        return self.batch_size * sum(self.iters)

    def summary(self) -> dict[str, float | int | bool | list[float]]:
        """The row's timing columns: median throughput/latency, p10/p90, IQR/median and the noisy flag."""
        lat = spread(self.latencies_ms)
        return {
            "throughput": float(np.median(self.throughputs)),
            "throughput_samples": [round(v, 4) for v in self.throughputs],
            "latency_ms": lat.median,
            "latency_ms_p10": lat.p10,
            "latency_ms_p90": lat.p90,
            "iqr_pct": lat.iqr_pct,
            "noisy": lat.noisy,
            "iters": min(self.iters),
            "repeats": len(self.iters),
        }
