"""vimbench.gate.stats against scipy.stats (scipy is a test-only dependency)."""

from __future__ import annotations

import math
import random

import pytest

from vimbench.gate.stats import mann_whitney_u, median, median_bounds, u_null_counts

scipy_stats = pytest.importorskip("scipy.stats")

ALTERNATIVES = ("less", "greater", "two-sided")


def _untied(rng: random.Random, n: int, shift: float) -> list[float]:
    return [rng.gauss(100.0 + shift, 3.0) for _ in range(n)]


@pytest.mark.parametrize("n1,n2", [(1, 1), (2, 5), (5, 5), (3, 8), (8, 8), (7, 12), (8, 30)])
@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_exact_matches_scipy(n1: int, n2: int, alternative: str) -> None:
    rng = random.Random(n1 * 100 + n2)
    for shift in (-4.0, 0.0, 2.0):
        x, y = _untied(rng, n1, shift), _untied(rng, n2, 0.0)
        ours = mann_whitney_u(x, y, alternative=alternative, method="exact")  # type: ignore[arg-type]
        ref = scipy_stats.mannwhitneyu(x, y, alternative=alternative, method="exact")
        assert ours.statistic == pytest.approx(ref.statistic)
        assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
        assert ours.method == "exact"


@pytest.mark.parametrize("n1,n2", [(5, 5), (9, 9), (20, 13), (40, 40)])
@pytest.mark.parametrize("alternative", ALTERNATIVES)
@pytest.mark.parametrize("continuity", [True, False])
def test_asymptotic_with_ties_matches_scipy(n1: int, n2: int, alternative: str, continuity: bool) -> None:
    rng = random.Random(n1 * 1000 + n2)
    for shift in (-1.0, 0.0, 1.0):
        x = [float(round(rng.gauss(10 + shift, 2))) for _ in range(n1)]  # rounded: many ties
        y = [float(round(rng.gauss(10, 2))) for _ in range(n2)]
        ours = mann_whitney_u(x, y, alternative=alternative, method="asymptotic",  # type: ignore[arg-type]
                              continuity=continuity)
        ref = scipy_stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic",
                                       use_continuity=continuity)
        assert ours.statistic == pytest.approx(ref.statistic)
        assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("n1,n2,tied", [(5, 5, False), (5, 5, True), (8, 20, False), (9, 9, False)])
def test_auto_picks_the_same_method_as_scipy(n1: int, n2: int, tied: bool) -> None:
    rng = random.Random(7)
    x, y = _untied(rng, n1, -2.0), _untied(rng, n2, 0.0)
    if tied:
        y[0] = x[0]
    ours = mann_whitney_u(x, y, alternative="less")
    ref = scipy_stats.mannwhitneyu(x, y, alternative="less")
    assert ours.method == ("asymptotic" if tied or min(n1, n2) > 8 else "exact")
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=1e-9)


def test_five_vs_five_complete_separation_reaches_one_over_252() -> None:
    current, baseline = [80, 81, 82, 83, 84], [100, 101, 102, 103, 104]
    result = mann_whitney_u(current, baseline, alternative="less")
    assert result.statistic == 0
    assert result.pvalue == pytest.approx(1 / 252)
    assert result.pvalue < 0.01
    assert mann_whitney_u(baseline, current, alternative="less").pvalue == 1.0


def test_all_values_tied_gives_no_evidence() -> None:
    assert mann_whitney_u([5.0] * 6, [5.0] * 6, alternative="less").pvalue == 1.0


@pytest.mark.parametrize("m,n", [(1, 1), (2, 3), (5, 5), (4, 9), (8, 40)])
def test_null_counts_are_the_gaussian_binomial(m: int, n: int) -> None:
    counts = u_null_counts(m, n)
    assert len(counts) == m * n + 1
    assert sum(counts) == math.comb(m + n, m)
    assert counts == counts[::-1]  # U and m*n - U are equally likely
    assert min(counts) >= 1


def test_bad_input_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        mann_whitney_u([math.nan], [1.0])
    with pytest.raises(ValueError, match="alternative"):
        mann_whitney_u([1.0], [2.0], alternative="bigger")  # type: ignore[arg-type]


def test_median_and_order_statistic_bounds() -> None:
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 2, 3]) == 2.5
    lower, upper, miss = median_bounds([5, 1, 4, 2, 3], 0.05)  # n = 5: only min/max miss <= 5%
    assert (lower, upper, miss) == (1, 5, pytest.approx(1 / 32))
    values = list(range(1, 21))  # n = 20: P(Binom(20, .5) <= 5) = 0.0207 <= 5% < P(<= 6) = 0.0577
    lower, upper, miss = median_bounds(values, 0.05)
    assert (lower, upper) == (6, 15)
    assert miss == pytest.approx(scipy_stats.binom.cdf(5, 20, 0.5))
    assert median_bounds([7.0], 0.05) == (7.0, 7.0, 0.5)


def test_median_bound_coverage_is_at_least_nominal() -> None:
    """Simulated: the lower bound exceeds the true median (0 for a symmetric law) at most ~5% of the time."""
    rng = random.Random(3)
    misses = sum(median_bounds([rng.gauss(0, 1) for _ in range(9)], 0.05)[0] > 0 for _ in range(4000))
    assert misses / 4000 < 0.05 + 0.01
