"""The one definition of the two comparisons vimbench reports: speedup and memory saving."""

from __future__ import annotations

import math
from typing import Any


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and not math.isnan(number) else None


def speedup(a: Any, b: Any) -> float | None:
    """How many times faster a is than b: a's throughput / b's (None unless both are positive numbers)."""
    fa, fb = _positive(a), _positive(b)
    return fa / fb if fa is not None and fb is not None else None


def saving_pct(a: Any, b: Any) -> float | None:
    """How much less a uses than b, in percent of b: 100 * (1 - a / b); negative when a uses more.
    None unless a is a number >= 0 and b a positive number."""
    fb = _positive(b)
    try:
        fa = float(a)
    except (TypeError, ValueError):
        return None
    if fb is None or math.isnan(fa) or fa < 0:
        return None
    return 100.0 * (1.0 - fa / fb)
