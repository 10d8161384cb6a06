"""Synchronised wall-clock timing: explicit warmup, then K repeats of >= iters iterations and >= min_time.

`sync` is torch.cuda.synchronize on CUDA (the window then covers every queued kernel) and a no-op on CPU.
The iteration count is calibrated once from the warmup so every repeat times the same amount of work; a
repeat that still finishes under min_time keeps going until it reaches it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from vimbench.metrics.timing_stats import NOISY_IQR_PCT, TimingResult

__all__ = ["NOISY_IQR_PCT", "TimingResult", "time_steps"]


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
    on_start: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> TimingResult:
    """Time `step` (one batch) after `warmup` untimed calls.

    `on_start` / `on_stop` run right before the first timed repeat and right after the last (after a
    device synchronisation): metric collectors bracket exactly the timed window with them.
    """
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
    sync()
    if on_start is not None:
        on_start()
    for _ in range(repeats):
        done, spent = count, _timed(step, sync, count)
        while spent < min_time_s:  # calibration was optimistic: keep going until min_time
            more = max(1, math.ceil((min_time_s - spent) / (spent / done)))
            spent += _timed(step, sync, more)
            done += more
        count = max(count, done)
        counts.append(done)
        elapsed.append(spent)
    if on_stop is not None:
        on_stop()  # every repeat ended with a synchronisation
    return TimingResult(batch_size=batch_size, iters=counts, elapsed_s=elapsed, warmup=warmup)
