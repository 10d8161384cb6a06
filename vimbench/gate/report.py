"""A GateReport as a rich table, JSON, JUnit XML and a GitHub step-summary markdown."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vimbench.console import wide_console
from vimbench.metrics import Metric, get_metric

from .compare import (
    BASELINE_ONLY,
    BOTH_FAILING,
    CURRENT_ONLY,
    FIXED,
    IMPROVED,
    MIN_SAMPLES_FOR_TEST,
    NOT_SIGNIFICANT,
    NOW_FAILING,
    REGRESSION,
    UNCHANGED,
    PointVerdict,
)
from .inputs import GATE_KEY
from .ratio import BOUND_CONFIDENCE, RatioVerdict
from .runner import GateReport

_STYLE = {
    REGRESSION: "bold red", NOW_FAILING: "bold red", IMPROVED: "green", FIXED: "green",
    UNCHANGED: "", NOT_SIGNIFICANT: "yellow", BOTH_FAILING: "dim", BASELINE_ONLY: "dim", CURRENT_ONLY: "dim",
    "pass": "green", "pass (marginal)": "yellow", "fail": "bold red",
}


def _num(value: float | None) -> str:
    """1,234 / 123.4 / 0.123 (CPU runs measure well under 1 img/s)."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def _pct(change: float | None) -> str:
    return "-" if change is None else f"{change * 100:+.1f}%"


def _p(pvalue: float | None) -> str:
    return "-" if pvalue is None else f"{pvalue:.3g}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3g}"


def headline(report: GateReport) -> str:
    if report.error:
        return f"unusable input: {report.error}"
    counts = report.counts()
    failed_points = counts.get(REGRESSION, 0) + counts.get(NOW_FAILING, 0)
    compared = sum(counts.get(v, 0) for v in (REGRESSION, NOW_FAILING, IMPROVED, UNCHANGED, NOT_SIGNIFICANT,
                                             FIXED, BOTH_FAILING))
    parts = []
    if report.points:
        parts.append(f"{failed_points} of {compared} compared point(s) regressed"
                     + (f" ({counts.get(NOW_FAILING, 0)} now failing)" if counts.get(NOW_FAILING) else ""))
        for verdict in (IMPROVED, NOT_SIGNIFICANT, BASELINE_ONLY, CURRENT_ONLY):
            if counts.get(verdict):
                parts.append(f"{counts[verdict]} {verdict}")
    if report.ratios:
        failed = sum(r.failed for r in report.ratios)
        parts.append(f"{failed} of {len(report.ratios)} ratio check(s) failed")
    return f"{report.outcome.upper()}: " + "; ".join(parts)


def _print_details(console: Console, details: list[tuple[str, str]]) -> None:
    """Why a row got its verdict, under the table: long error messages would squeeze a column."""
    for label, detail in details:
        if detail:
            console.print(f"  {escape(label)}: {escape(detail)}", highlight=False, soft_wrap=True)


def render_console(report: GateReport, console: Console) -> None:
    console = wide_console(console)  # CI logs do not wrap: never squeeze tables into 80 columns
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if report.points:
        metric = _metric(report)
        title = (f"{metric.name}, {metric.direction} is better: regression = {_worse(metric)} > "
                 f"{report.threshold:.1%} and Mann-Whitney p < {report.alpha:g} "
                 f"(when >= {MIN_SAMPLES_FOR_TEST} samples a side)")
        table = Table(title=title, title_justify="left")
        table.add_column("point", ratio=1, overflow="fold")  # wraps on a narrow console; numbers never do
        for column in (f"baseline {metric.unit}", f"current {metric.unit}", "change", "p-value"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("verdict", no_wrap=True)
        for v in report.points:
            style = _STYLE.get(v.verdict, "")
            table.add_row(escape(v.label), _num(v.baseline), _num(v.current), _pct(v.change), _p(v.pvalue),
                          f"[{style}]{v.verdict}[/]" if style else v.verdict)
        console.print(table)
        _print_details(console, [(v.label, v.detail) for v in report.points])
    if report.ratios:
        title = (f"ratio gates (within {escape(str(report.current))}; bound = {BOUND_CONFIDENCE:.0%} "
                 "distribution-free bound on the median ratio)")
        table = Table(title=title, title_justify="left")
        table.add_column("gate", ratio=1, overflow="fold")
        table.add_column("pair", ratio=1)
        for column in ("num img/s", "den img/s", "ratio", "bound"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("verdict", no_wrap=True)
        for r in report.ratios:
            style = _STYLE.get(r.verdict, "")
            table.add_row(escape(r.gate.text), escape(r.context), _num(r.num_throughput),
                          _num(r.den_throughput), _ratio(r.ratio), _ratio(r.bound),
                          f"[{style}]{r.verdict}[/]")
        console.print(table)
        _print_details(console, [(r.gate.text, r.detail) for r in report.ratios])
    style = "bold green" if report.exit_code == 0 else "bold red"
    console.print(f"[{style}]gate {escape(headline(report))}[/]", highlight=False, soft_wrap=True)


def _metric(report: GateReport) -> Metric:
    return get_metric(report.metric)


def _worse(metric: Metric) -> str:
    return "drop" if metric.higher_is_better else "rise"


def _finite(value: float | None) -> float | str | None:
    return "inf" if value is not None and math.isinf(value) else value


def to_json(report: GateReport) -> dict[str, Any]:
    """Machine-readable verdicts: the same facts as the table, keyed fields instead of labels."""
    value = _metric(report).value_column
    return {
        "outcome": report.outcome,
        "exit_code": report.exit_code,
        "error": report.error,
        "baseline": report.baseline,
        "current": report.current,
        "max_regression": report.threshold,
        "alpha": report.alpha,
        "metric": report.metric,
        "min_samples_for_test": MIN_SAMPLES_FOR_TEST,
        "fingerprint_differences": report.fingerprint_differences,
        "forced": report.forced,
        "notes": report.notes,
        "counts": report.counts(),
        "points": [
            {
                **dict(zip(GATE_KEY, v.key, strict=True)),
                "label": v.label, "verdict": v.verdict, "failed": v.failed,
                f"baseline_{value}": v.baseline, f"current_{value}": v.current, "change": v.change,
                "pvalue": v.pvalue, "baseline_samples": v.samples[0], "current_samples": v.samples[1],
                "detail": v.detail,
            }
            for v in report.points
        ],
        "ratios": [
            {
                "gate": r.gate.text, "context": r.context, "numerator": str(r.gate.num),
                "denominator": str(r.gate.den), "img_size": r.gate.img_size, "op": r.gate.op,
                "value": r.gate.value, "num_throughput": r.num_throughput, "den_throughput": r.den_throughput,
                "ratio": _finite(r.ratio), "bound": _finite(r.bound), "bound_confidence": BOUND_CONFIDENCE,
                "verdict": r.verdict, "failed": r.failed, "detail": r.detail,
            }
            for r in report.ratios
        ],
    }


def _point_message(v: PointVerdict, unit: str = "img/s") -> str:
    return (f"{v.label}: {_num(v.baseline)} -> {_num(v.current)} {unit} ({_pct(v.change)}, "
            f"p = {_p(v.pvalue)})" + (f"; {v.detail}" if v.detail else ""))


def _ratio_message(r: RatioVerdict) -> str:
    return (f"{r.name}: ratio {_ratio(r.ratio)} (need {r.gate.op} {r.gate.value:g}; bound {_ratio(r.bound)})"
            + (f"; {r.detail}" if r.detail else ""))


def to_junit(report: GateReport) -> str:
    """One testcase per compared point and per ratio check; regressions are failures, bad input an error."""
    suite = ET.Element("testsuite", name="vimbench.gate")
    cases = 0
    if report.error:
        case = ET.SubElement(suite, "testcase", classname="vimbench.gate", name="inputs")
        ET.SubElement(case, "error", message=report.error, type="unusable input").text = report.error
        cases += 1
    metric = _metric(report)
    for v in report.points:
        case = ET.SubElement(suite, "testcase", classname=f"vimbench.gate.{metric.name}", name=v.label)
        message = _point_message(v, metric.unit)
        if v.failed:
            ET.SubElement(case, "failure", message=message, type=v.verdict).text = message
        elif v.verdict in (BASELINE_ONLY, CURRENT_ONLY, BOTH_FAILING):
            ET.SubElement(case, "skipped", message=f"{v.verdict}: {v.detail}")
        else:
            ET.SubElement(case, "system-out").text = message
        cases += 1
    for r in report.ratios:
        case = ET.SubElement(suite, "testcase", classname="vimbench.gate.ratio", name=r.name)
        if r.failed:
            ET.SubElement(case, "failure", message=_ratio_message(r), type="ratio").text = _ratio_message(r)
        else:
            ET.SubElement(case, "system-out").text = _ratio_message(r)
        cases += 1
    failures = sum(p.failed for p in report.points) + sum(r.failed for r in report.ratios)
    skipped = sum(v.verdict in (BASELINE_ONLY, CURRENT_ONLY, BOTH_FAILING) for v in report.points)
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", str(int(bool(report.error))))
    suite.set("skipped", str(skipped))
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: GateReport) -> str:
    """The GitHub step summary: verdict first, failures in the open, every point in a collapsed table."""
    icon = {0: "✅", 1: "❌", 2: "⚠️"}[report.exit_code]
    lines = [f"## {icon} vimbench gate: {_md_cell(headline(report))}", ""]
    metric = _metric(report)
    if report.baseline and report.threshold is not None and not report.error:
        lines.append(f"baseline `{report.baseline}` vs current `{report.current}`; regression = "
                     f"{metric.name} {_worse(metric)} > {report.threshold:.1%} and Mann-Whitney "
                     f"p < {report.alpha:g} (threshold alone below {MIN_SAMPLES_FOR_TEST} samples a side)")
        lines.append("")
    lines.extend(f"> {_md_cell(note)}" for note in report.notes)
    if report.notes:
        lines.append("")
    header = [f"| point | baseline {metric.unit} | current {metric.unit} | change | p-value | verdict |",
              "|---|---:|---:|---:|---:|---|"]

    def point_rows(verdicts: list[PointVerdict]) -> list[str]:
        return [f"| {_md_cell(v.label)} | {_num(v.baseline)} | {_num(v.current)} | {_pct(v.change)} | "
                f"{_p(v.pvalue)} | {'**' + v.verdict + '**' if v.failed else v.verdict} |" for v in verdicts]

    failing = [v for v in report.points if v.failed]
    if failing:
        lines += ["### Regressions", "", *header, *point_rows(failing), ""]
    if report.ratios:
        lines += ["### Ratio gates", "", "| gate | pair | ratio | bound | verdict |",
                  "|---|---|---:|---:|---|"]
        lines += [f"| `{_md_cell(r.gate.text)}` | {_md_cell(r.context)} | {_ratio(r.ratio)} | "
                  f"{_ratio(r.bound)} | {'**fail**' if r.failed else r.verdict} |" for r in report.ratios]
        lines.append("")
    if report.points:
        lines += [f"<details><summary>all {len(report.points)} points</summary>", "", *header,
                  *point_rows(report.points), "", "</details>", ""]
    return "\n".join(lines) + "\n"
