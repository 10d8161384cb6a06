"""Synchronised wall-clock timing: explicit warmup, then K repeats of >= iters iterations and >= min_time.

`sync` is torch.cuda.synchronize on CUDA (the window then covers every queued kernel) and a no-op on CPU.
The iteration count is calibrated once from the warmup so every repeat times the same amount of work; a
repeat that still finishes under min_time keeps going until it reaches it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NOISY_IQR_PCT = 10.0


@dataclass
class TimingResult:
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

    def summary(self) -> dict[str, float | int | bool | list[float]]:
        """The row's timing columns: median throughput/latency, p10/p90, IQR/median and the noisy flag."""
        lat = np.asarray(self.latencies_ms)
        median = float(np.median(lat))
        q25, q75 = np.percentile(lat, [25, 75])
        iqr_pct = 100.0 * float(q75 - q25) / median if median > 0 else 0.0
        return {
            "throughput": float(np.median(self.throughputs)),
            "throughput_samples": [round(v, 4) for v in self.throughputs],
            "latency_ms": median,
            "latency_ms_p10": float(np.percentile(lat, 10)),
            "latency_ms_p90": float(np.percentile(lat, 90)),
            "iqr_pct": iqr_pct,
            "noisy": iqr_pct > NOISY_IQR_PCT,
            "iters": min(self.iters),
            "repeats": len(self.iters),
        }


def _timed(step: Callable[[], object], sync: Callable[[], None], count: int) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(count):
        step()
    sync()
    return time.perf_counter() - start


def time_steps(
    step: Callable[[], object],
    *,
    batch_size: int,
    warmup: int,
    iters: int,
    min_time_s: float,
    repeats: int,
    sync: Callable[[], None] = lambda: None,
) -> TimingResult:
    """Time `step` (one batch) after `warmup` untimed calls."""
    if iters < 1 or repeats < 1 or warmup < 0:
        raise ValueError("iters and repeats must be >= 1 and warmup >= 0")
    per_iter = None
    if warmup:
        if warmup > 1:
            _timed(step, sync, warmup - 1)
        per_iter = _timed(step, sync, 1)  # the last warmup call calibrates the iteration count
    count = iters
    if per_iter and min_time_s > 0:
        count = max(iters, math.ceil(min_time_s / max(per_iter, 1e-9)))
    counts: list[int] = []
    elapsed: list[float] = []
    for _ in range(repeats):
        done, spent = count, _timed(step, sync, count)
        while spent < min_time_s:  # calibration was optimistic: keep going until min_time
            more = max(1, math.ceil((min_time_s - spent) / (spent / done)))
            spent += _timed(step, sync, more)
            done += more
        count = max(count, done)
        counts.append(done)
        elapsed.append(spent)
    return TimingResult(batch_size=batch_size, iters=counts, elapsed_s=elapsed, warmup=warmup)
