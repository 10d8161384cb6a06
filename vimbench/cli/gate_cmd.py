"""`vimbench gate`: fail CI when throughput (or another --metric) regresses against a baseline run or a ratio
gate breaks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from .common import UsageError, check_output_file, console, fail

GATE_HELP = "\n\n".join((
    "Gate --current against --baseline and/or ratio gates within --current: exit 0 pass, 1 fail, "
    "2 unusable input.",
    "Points are matched on model, img_size, batch, dtype, mode, backends, compile and channels_last. A point "
    "regresses when its median throughput (higher is better) drops by more than --max-regression AND, when "
    "both sides have >= 5 per-repeat samples (throughput_samples), a one-sided Mann-Whitney U test gives "
    "p < --alpha. With fewer than 5 samples on either side the threshold alone decides. A point ok in "
    "the baseline but oom/error/timeout in current fails the gate; points on one side only are listed, "
    "not failed.",
    "Baseline and current must come from the same GPU(s), driver, CUDA, torch and triton (CPU model and "
    "threads for CPU runs): otherwise exit 2 naming the fields that differ, unless --force. A bare "
    "results.csv works too: run.json beside it is used when present; without it only the CSV's device "
    "names are checked.",
    "--metric picks another registered metric (latency, memory, energy_per_image...): a lower-is-better "
    "metric regresses when it rises by more than --max-regression; metrics without per-repeat samples are "
    "decided by the threshold alone.",
    "Appends a markdown summary to $GITHUB_STEP_SUMMARY when that is set.",
))


def _markup_safe(text: str) -> str:
    """Typer renders help as rich markup (where `[scan=cpu]` would vanish) only in its "rich" mode."""
    if getattr(getattr(typer, "core", None), "DEFAULT_MARKUP_MODE", None) == "rich":
        from rich.markup import escape

        return escape(text)
    return text


def _gate_metric_help() -> list[str]:
    from vimbench.metrics import gate_metrics

    return [f"{m.name} ({m.unit}, {m.direction} is better)" for m in gate_metrics()]


def gate(
    baseline: str | None = typer.Option(
        None, "--baseline", metavar="DIR|CSV",
        help="Run dir or results.csv to compare against (optional with --ratio).",
    ),
    current: str | None = typer.Option(
        None, "--current", metavar="DIR|CSV", help="Run dir or results.csv being gated."
    ),
    max_regression: str = typer.Option(
        "5%", "--max-regression", help="Largest tolerated drop of median throughput: '5%' or '0.05'."
    ),
    alpha: float = typer.Option(
        0.01, "--alpha",
        help="Significance level of the one-sided Mann-Whitney U test (5 vs 5 samples reach p = 1/252).",
    ),
    ratio: list[str] | None = typer.Option(
        None, "--ratio",
        metavar="GATE",
        help=_markup_safe(
            "Ratio gate within --current, repeatable: 'NUM/DEN@RES OP VALUE', e.g. 'vim-t/deit-t@1248>=2.0', "
            "'vim-t[scan=cpu]/vim-t[scan=reference]@224>=3', 'deit-t[attn=sdpa]/deit-t[attn=math]@512>=1' "
            "(selectors: scan attn batch dtype mode compile channels_last device). Decided on the ratio of "
            "median throughputs; a 90% distribution-free bound is shown with >= 5 samples a side."
        ),
    ),
    force: bool = typer.Option(False, "--force", help="Compare even if GPU or software fingerprints differ."),
    metric: str = typer.Option(
        "throughput", "--metric",
        help="What --baseline/--current compare, any gate-eligible registered metric: "
        + ", ".join(_gate_metric_help()) + ". Ratio gates always use throughput.",
    ),
    json_path: Path | None = typer.Option(None, "--json", help="Write machine-readable verdicts here."),
    junit_path: Path | None = typer.Option(
        None, "--junit", help="Write JUnit XML here: one testcase per point and per ratio check."
    ),
) -> None:
    from vimbench.gate import run_gate
    from vimbench.gate.report import render_console, to_json, to_junit, to_markdown

    inputs = [Path(p) for p in (baseline, current) if p]
    try:  # before reading anything: an output never lands on an input or a run's files
        check_output_file(json_path, "--json", inputs)
        check_output_file(junit_path, "--junit", inputs)
    except UsageError as exc:
        fail(str(exc))
    report = run_gate(baseline, current, max_regression, alpha, ratio or [], force, metric)
    outputs = []
    if json_path is not None:
        outputs.append((json_path, "w", json.dumps(to_json(report), indent=2) + "\n"))
    if junit_path is not None:
        outputs.append((junit_path, "w", to_junit(report)))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        outputs.append((Path(summary), "a", to_markdown(report)))
    for path, mode, text in outputs:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open(mode, encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            fail(f"cannot write {path}: {exc.strerror or exc}")
    if report.error:
        fail(report.error)
    render_console(report, console)
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command("gate", help=GATE_HELP)(gate)
