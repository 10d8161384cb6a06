"""Baseline vs current, point by point: relative change of the gated metric's value (median throughput by
default) + a one-sided Mann-Whitney U test on per-repeat samples when the metric has them.

The metric's direction decides what a regression is: a drop for higher-is-better metrics (throughput), a
rise for lower-is-better ones (latency, memory, energy per image)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from vimbench.results import OPTION_SHORT, option_names

from .inputs import GATE_KEY, GateInputError, GatePoint, GateRun
from .stats import mann_whitney_u

# The significance test needs this many per-repeat samples on each side; with 5 vs 5 the smallest
# one-sided exact p-value is 1/252 ~ 0.004, so alpha = 0.01 can be reached. Fewer: threshold alone.
MIN_SAMPLES_FOR_TEST = 5

# Verdicts. FAILING ones make the gate exit 1.
REGRESSION = "regression"
NOW_FAILING = "now failing"  # ok in baseline, oom/error/timeout/skipped-oom in current
IMPROVED = "improved"
UNCHANGED = "unchanged"
NOT_SIGNIFICANT = "not significant"  # dropped past the threshold, but the samples do not show it
FIXED = "fixed"  # failing in baseline, ok now
BOTH_FAILING = "failing in both"
BASELINE_ONLY = "baseline only"
CURRENT_ONLY = "current only"
FAILING_VERDICTS = frozenset({REGRESSION, NOW_FAILING})


def parse_threshold(text: str) -> float:
    """"5%", "5 %", "0.05" -> 0.05; nonsense (negative, >= 100%, not a number) is a GateInputError."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise GateInputError(f"--max-regression {text!r}: expected a fraction like 0.05 or a percentage "
                             "like 5%") from None
    if not math.isfinite(value) or value < 0 or value >= 1:
        raise GateInputError(f"--max-regression {text!r}: must be at least 0 and below 100% (a throughput "
                             "drop of 100% or more cannot be told apart from a crash)")
    return value


@dataclass(frozen=True)
class PointVerdict:
    key: tuple[str, ...]
    verdict: str
    baseline: float | None  # the metric's value (median img/s by default); None when not ok on that side
    current: float | None
    change: float | None  # current / baseline - 1
    pvalue: float | None  # one-sided Mann-Whitney p for "current is worse"; None when not tested
    samples: tuple[int, int]  # per-repeat sample counts (baseline, current)
    detail: str = ""  # statuses, errors, why not tested

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING_VERDICTS

    def field(self, name: str) -> str:
        return self.key[GATE_KEY.index(name)]

    @property
    def label(self) -> str:
        return point_label(self.key)


def point_label(key: tuple[str, ...]) -> str:
    """`vim-t 224px b64 bf16 infer scan=cuda` (+ compile / channels_last / cpu when set)."""
    f = dict(zip(GATE_KEY, key, strict=True))
    parts = [f["model"], f"{f['img_size']}px", f"b{f['batch_size']}", f["dtype"], f["mode"]]
    for column in option_names():
        if f[column] not in ("", "-"):
            parts.append(f"{OPTION_SHORT.get(column, column)}={f[column]}")
    if f["compile"] == "true":
        parts.append("compiled")
    if f["channels_last"] == "true":
        parts.append("channels_last")
    if f["device_kind"] != "cuda":
        parts.append(f"on {f['device_kind']}")
    return " ".join(parts)


def compare_point(
    base: GatePoint, cur: GatePoint, threshold: float, alpha: float, higher_is_better: bool = True
) -> PointVerdict:
    counts = (len(base.samples), len(cur.samples))
    base_ok, cur_ok = base.status == "ok", cur.status == "ok"
    if not (base_ok and cur_ok):
        status = f"baseline {base.status}, current {cur.status}"
        error = cur.error or base.error
        detail = f"{status}: {error}" if error else status
        verdict = NOW_FAILING if base_ok else FIXED if cur_ok else BOTH_FAILING
        return PointVerdict(base.key, verdict, base.value if base_ok else None,
                            cur.value if cur_ok else None, None, None, counts, detail)
    change = cur.value / base.value - 1
    pvalue = None
    detail = ""
    if min(counts) >= MIN_SAMPLES_FOR_TEST:
        worse = "less" if higher_is_better else "greater"
        pvalue = mann_whitney_u(cur.samples, base.samples, alternative=worse).pvalue
    else:
        detail = f"{min(counts)} samples on one side (< {MIN_SAMPLES_FOR_TEST}): threshold alone decides"
    worse_by = -change if higher_is_better else change
    if worse_by > threshold:
        significant = pvalue is None or pvalue < alpha
        verdict = REGRESSION if significant else NOT_SIGNIFICANT
        if not significant:
            what = "drop" if higher_is_better else "rise"
            detail = f"p = {pvalue:.3g} >= alpha {alpha:g}: the {what} is within the run-to-run noise"
    elif -worse_by > threshold:
        verdict = IMPROVED
    else:
        verdict = UNCHANGED
    return PointVerdict(base.key, verdict, base.value, cur.value, change, pvalue, counts, detail)


def compare_runs(baseline: GateRun, current: GateRun, threshold: float, alpha: float) -> list[PointVerdict]:
    """Every point of either run, matched by GATE_KEY; GateInputError when the runs share no point."""
    shared = [k for k in baseline.points if k in current.points]
    if not shared:
        raise GateInputError(
            f"nothing to compare: no point of {current.label} matches one of {baseline.label} "
            f"(matched on {', '.join(GATE_KEY)}); baseline has {_summary(baseline)}, current has "
            f"{_summary(current)}"
        )
    higher = current.metric.higher_is_better
    verdicts = [compare_point(baseline.points[k], current.points[k], threshold, alpha, higher)
                for k in shared]
    if all(v.verdict == BOTH_FAILING for v in verdicts):
        raise GateInputError(f"nothing to compare: all {len(verdicts)} shared point(s) failed in both runs")
    for key, point in baseline.points.items():
        if key not in current.points:
            verdicts.append(PointVerdict(key, BASELINE_ONLY, _ok_throughput(point), None, None, None,
                                         (len(point.samples), 0), f"baseline {point.status}"))
    for key, point in current.points.items():
        if key not in baseline.points:
            verdicts.append(PointVerdict(key, CURRENT_ONLY, None, _ok_throughput(point), None, None,
                                         (0, len(point.samples)), f"current {point.status}"))
    return verdicts


def _ok_throughput(point: GatePoint) -> float | None:
    return point.value if point.status == "ok" else None


def _summary(run: GateRun) -> str:
    models = sorted({p.field("model") for p in run.points.values()})
    sizes = sorted({p.field("img_size") for p in run.points.values()}, key=lambda s: (len(s), s))
    return f"{len(run.points)} point(s): {', '.join(models)} at {', '.join(sizes)}px"
