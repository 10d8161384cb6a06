"""Small, dependency-free statistics for the gate: Mann-Whitney U and distribution-free median bounds.

scipy is deliberately not a runtime dependency; tests check these functions against scipy.stats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Alternative = Literal["less", "greater", "two-sided"]
Method = Literal["auto", "exact", "asymptotic"]

# Same rule as scipy's method="auto": exact distribution when the smaller sample has <= 8 values and there
# are no ties. The exact count costs O(min(n1, n2)**2 * max(n1, n2)), so it would be cheap further out too.
EXACT_MAX_SMALLER_SAMPLE = 8


@dataclass(frozen=True)
class MannWhitneyResult:
    statistic: float  # U of the first sample: #pairs (x_i > y_j) + 0.5 * #ties
    pvalue: float
    method: str  # "exact" | "asymptotic"


def _ranks_with_ties(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Mid-ranks (1-based) of `values`, and the size of every group of tied values."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    tie_sizes: list[int] = []
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        mid_rank = (start + end) / 2 + 1
        for pos in range(start, end + 1):
            ranks[order[pos]] = mid_rank
        tie_sizes.append(end - start + 1)
        start = end + 1
    return ranks, tie_sizes


def u_null_counts(n1: int, n2: int) -> list[int]:
    """counts[k] = number of the C(n1+n2, n1) equally likely rank arrangements with U == k (no ties).

    The generating function of U is the Gaussian binomial [n1+n2 choose m], m = min(n1, n2), built as
    prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i) with n = max(n1, n2); every partial product is a polynomial, so
    integer arithmetic stays exact.
    """
    m, n = min(n1, n2), max(n1, n2)
    coeffs = [1] + [0] * (m * n)
    degree = 0
    for i in range(1, m + 1):
        top = min(m * n, degree + n + i)  # degree of the product before the division, truncated
        for k in range(top, n + i - 1, -1):  # multiply by (1 - q^(n+i)), high to low: reads old values
            coeffs[k] -= coeffs[k - n - i]
        for k in range(i, top + 1):  # divide by (1 - q^i): exact, so everything above degree + n ends at 0
            coeffs[k] += coeffs[k - i]
        degree += n
    return coeffs


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def mann_whitney_u(
    x: Sequence[float],
    y: Sequence[float],
    alternative: Alternative = "less",
    method: Method = "auto",
    continuity: bool = True,
) -> MannWhitneyResult:
    """Mann-Whitney U test of x against y; "less" tests whether x is stochastically smaller than y.

    The gate calls mann_whitney_u(current_samples, baseline_samples, "less"): a small p-value means the
    current throughput is really lower. "exact" ignores ties (as scipy does); "asymptotic" is the normal
    approximation with tie correction and continuity correction; "auto" picks exact for small untied samples.
    """
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs at least one value in each sample")
    if alternative not in ("less", "greater", "two-sided"):
        raise ValueError(f"alternative must be less, greater or two-sided, not {alternative!r}")
    values = [float(v) for v in x] + [float(v) for v in y]
    if any(math.isnan(v) for v in values):
        raise ValueError("mann_whitney_u got NaN samples")
    ranks, tie_sizes = _ranks_with_ties(values)
    u1 = sum(ranks[:n1]) - n1 * (n1 + 1) / 2
    has_ties = any(t > 1 for t in tie_sizes)
    if method == "auto":
        method = "exact" if min(n1, n2) <= EXACT_MAX_SMALLER_SAMPLE and not has_ties else "asymptotic"
    if method == "exact":
        return MannWhitneyResult(u1, _exact_pvalue(u1, n1, n2, alternative), "exact")
    if method != "asymptotic":
        raise ValueError(f"method must be auto, exact or asymptotic, not {method!r}")
    return MannWhitneyResult(u1, _asymptotic_pvalue(u1, n1, n2, tie_sizes, alternative, continuity), method)


def _exact_pvalue(u1: float, n1: int, n2: int, alternative: Alternative) -> float:
    counts = u_null_counts(n1, n2)
    total = math.comb(n1 + n2, n1)

    def cdf(u: float) -> float:  # P(U <= u)
        return sum(counts[: math.floor(u) + 1]) / total

    def sf(u: float) -> float:  # P(U >= u)
        return sum(counts[math.ceil(u) :]) / total

    if alternative == "less":
        return cdf(u1)
    if alternative == "greater":
        return sf(u1)
    return min(1.0, 2.0 * sf(max(u1, n1 * n2 - u1)))


def _asymptotic_pvalue(
    u1: float, n1: int, n2: int, tie_sizes: list[int], alternative: Alternative, continuity: bool
) -> float:
    n = n1 + n2
    tie_term = sum(t**3 - t for t in tie_sizes)
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every value tied: no evidence either way
        return 1.0
    mean = n1 * n2 / 2
    correction = 0.5 if continuity else 0.0
    sd = math.sqrt(variance)
    if alternative == "greater":
        return _normal_sf((u1 - mean - correction) / sd)
    if alternative == "less":
        return _normal_sf((n1 * n2 - u1 - mean - correction) / sd)
    u_big = max(u1, n1 * n2 - u1)
    return min(1.0, 2.0 * _normal_sf((u_big - mean - correction) / sd))


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("median of no values")
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _binom_half_cdf(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_bounds(values: Sequence[float], miss_probability: float) -> tuple[float, float, float]:
    """(lower, upper, achieved miss) order-statistic bounds on the population median, distribution-free.

    The k-th smallest of n iid samples exceeds the median with probability P(Binom(n, 1/2) <= k-1); we take
    the largest k keeping that <= miss_probability (symmetrically for the upper bound). With too few samples
    even min/max miss more often; then min/max are returned with their real miss probability 0.5**n.
    """
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median_bounds of no values")
    k = 1
    while k < n and _binom_half_cdf(k, n) <= miss_probability:
        k += 1
    achieved = _binom_half_cdf(k - 1, n)
    return ordered[k - 1], ordered[n - k], achieved
