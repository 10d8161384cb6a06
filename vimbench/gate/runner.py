"""One gate evaluation: parse the knobs, load both runs, check fingerprints, compare points, ratio gates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .compare import PointVerdict, compare_runs, parse_threshold
from .inputs import DEFAULT_METRIC, GateInputError, compare_fingerprints, load_run
from .ratio import RatioVerdict, evaluate_ratio_gate, parse_ratio_gate

EXIT_PASS, EXIT_FAIL, EXIT_UNUSABLE = 0, 1, 2


@dataclass
class GateReport:
    baseline: str | None
    current: str | None
    threshold: float | None
    alpha: float
    points: list[PointVerdict] = field(default_factory=list)
    ratios: list[RatioVerdict] = field(default_factory=list)
    fingerprint_differences: list[str] = field(default_factory=list)
    forced: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # why the input is unusable (exit 2)
    metric: str = DEFAULT_METRIC  # the registered metric compared point by point

    @property
    def exit_code(self) -> int:
        if self.error:
            return EXIT_UNUSABLE
        failed = any(p.failed for p in self.points) or any(r.failed for r in self.ratios)
        return EXIT_FAIL if failed else EXIT_PASS

    @property
    def outcome(self) -> str:
        return {EXIT_PASS: "pass", EXIT_FAIL: "fail", EXIT_UNUSABLE: "unusable input"}[self.exit_code]

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for verdict in self.points:
            result[verdict.verdict] = result.get(verdict.verdict, 0) + 1
        return result


def parse_alpha(alpha: float) -> float:
    if not (math.isfinite(alpha) and 0 < alpha < 1):
        raise GateInputError(f"--alpha {alpha}: must be a probability strictly between 0 and 1, e.g. 0.01")
    return alpha


def _natural(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)


def _sort_key(verdict: PointVerdict) -> tuple:
    return tuple(_natural(v) for v in verdict.key)


def run_gate(
    baseline: str | None,
    current: str | None,
    max_regression: str = "5%",
    alpha: float = 0.01,
    ratios: Sequence[str] = (),
    force: bool = False,
    metric: str = DEFAULT_METRIC,
) -> GateReport:
    """Everything the `gate` command does except printing; input problems land in report.error."""
    report = GateReport(baseline, current, None, alpha, forced=force, metric=metric)
    try:
        report.threshold = parse_threshold(max_regression)
        parse_alpha(alpha)
        gates = [parse_ratio_gate(text) for text in ratios]
        if current is None:
            raise GateInputError("--current is required (the run to gate)")
        if baseline is None and not gates:
            raise GateInputError("nothing to gate: give --baseline to compare against, or --ratio gates")
        current_run = load_run(current, "current", metric)
        report.notes.extend(current_run.notes)
        if baseline is not None:
            baseline_run = load_run(baseline, "baseline", metric)
            report.notes[:0] = baseline_run.notes
            check = compare_fingerprints(baseline_run, current_run)
            report.fingerprint_differences = check.differences
            report.notes.extend(check.warnings)
            if check.unchecked:
                report.notes.append(f"fingerprint fields not checked (unknown on one side): "
                                    f"{', '.join(check.unchecked)}")
            if check.differences and not force:
                raise GateInputError(
                    "baseline and current were measured on different machines or software, refusing to "
                    f"compare ({'; '.join(check.differences)}); --force compares anyway"
                )
            if check.differences:
                report.notes.append(f"--force: comparing despite {'; '.join(check.differences)}")
            report.points = sorted(compare_runs(baseline_run, current_run, report.threshold, alpha),
                                   key=_sort_key)
        for gate in gates:
            report.ratios.extend(evaluate_ratio_gate(gate, current_run.for_metric("throughput")))
    except GateInputError as exc:
        report.error = str(exc)
    return report
