"""`vimbench report RUN_DIR`: a markdown report of any run (environment, knobs, tables, errors, plots).

The building blocks (tables, number formats, environment and settings sections) are shared with the Fig. 1
reproduction report (reproduce.py).
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from vimbench.metrics import Metric, all_metrics

from .runs import MEMORY_SOURCES, Line, Pair, Run, describe, lines, vim_deit_pairs

REPORT_NAME = "run-report.md"  # report.md in a fig1 run is the reproduction report: never clobber it
_ENV_KEYS = (
    "host", "platform", "python", "torch", "triton", "cuda_runtime", "cudnn", "nvidia_driver",
    "cuda_visible_devices", "cpu", "cpu_count", "cpu_capability", "cpu_simd_flags", "torch_threads",
)  # fmt: skip


# ------------------------------------------------------------------------------------------ formatting


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are stringified, pipes and newlines escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def fmt_num(value: Any, unit: str = "") -> str:
    """3 significant digits-ish without scientific notation; "-" for missing values."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(number):
        return "-"
    if abs(number) >= 100:
        text = f"{number:,.0f}"
    elif abs(number) >= 10:
        text = f"{number:.1f}"
    else:
        text = f"{number:.2f}"
    return f"{text}{unit}"


def fmt_int(value: Any) -> str:
    text = fmt_num(value)
    return text if text == "-" else str(round(float(value)))


def fmt_ratio(value: Any) -> str:
    text = fmt_num(value)
    return text if text == "-" else f"{float(value):.2f}x"


def fmt_pct(value: Any) -> str:
    text = fmt_num(value)
    return text if text == "-" else f"{float(value):.1f}%"


def first_line(text: str, limit: int = 160) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def image_link(image: Path, report: Path, alt: str) -> str:
    return f"![{alt}]({Path(os.path.relpath(image, report.parent)).as_posix()})"


# ------------------------------------------------------------------------------------------- sections


def command_section(run: Run) -> str:
    argv = run_command(run)
    if not argv:
        return "Command: not recorded (run.json has no argv)."
    command = shlex.join(str(a) for a in argv) if isinstance(argv, list) else str(argv)
    return f"Command:\n\n```\n{command}\n```"


def run_command(run: Run) -> list[str] | str | None:
    """The command line that made the run ("argv" in the contract; the sweep engine writes "command")."""
    return run.meta.get("argv") or run.meta.get("command")


def environment_section(env: dict[str, Any]) -> str:
    """Software, host, precision flags and GPUs, as recorded by collect_environment() in run.json."""
    if not env:
        return "Environment: not recorded (run.json missing or without an `environment` key)."
    parts = [md_table(("", "value"), [(k, _plain(env.get(k))) for k in _ENV_KEYS if k in env])]
    precision = env.get("precision") or {}
    if precision:
        parts.append("Precision flags (TF32, cudnn, matmul precision):\n\n" + md_table(
            ("flag", "value"), [(k, _plain(v)) for k, v in precision.items()]
        ))
    gpus = env.get("gpus_nvml") or []
    if gpus:
        keys = ("nvml_index", "name", "uuid", "memory_total_mib", "mig_enabled")
        gpu_rows = [tuple(g.get(k) for k in keys) for g in gpus]
        parts.append("GPUs (NVML):\n\n" + md_table(("index", "name", "uuid", "memory MiB", "MIG"), gpu_rows))
    elif env.get("gpus_torch"):
        parts.append("GPUs (torch): " + ", ".join(str(g.get("name")) for g in env["gpus_torch"]))
    else:
        parts.append("GPUs: none visible to this run.")
    return "\n\n".join(parts)


def knobs_section(config: dict[str, Any]) -> str:
    """The sweep's knobs as the user gave them; None there means "the device's default"."""
    if not config:
        return "Sweep settings: not recorded (run.json has no `config`)."
    rows = [(key, "default" if value is None else _plain(value)) for key, value in config.items()]
    return md_table(("setting", "value"), rows)


def _plain(value: Any) -> str:
    if value is None:
        return "not available"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def memory_cell(row: dict[str, Any]) -> str:
    source = row.get("peak_mem_source") or "?"
    mem = fmt_num(row.get("peak_mem_mib"))
    return mem if mem == "-" else f"{mem} ({source})"


def extra_metrics(rows: pd.DataFrame) -> list[Metric]:
    """Registered metrics beyond the contract's (energy...) that hold a value in `rows`: their columns join
    the tables only where they were recorded."""
    return [m for m in all_metrics()
            if not m.column(m.value_column).core and rows[m.value_column].notna().any()]


def line_table(line: Line) -> str:
    """One row per resolution of a configuration: status, speed, spread, memory (+ recorded extra metrics)."""
    extras = extra_metrics(line.rows)
    rows = []
    for row in line.rows.to_dict("records"):
        p10, p90 = fmt_num(row["latency_ms_p10"]), fmt_num(row["latency_ms_p90"])
        rows.append((
            int(row["img_size"]), fmt_num(row["tokens"]), row["status"], fmt_num(row["throughput"]),
            fmt_num(row["latency_ms"]), "-" if p10 == "-" else f"{p10} - {p90}",
            fmt_num(row["iqr_pct"], "%"), "yes" if row["noisy"] == "true" else "",
            memory_cell(row), *(fmt_num(row[m.value_column]) for m in extras), fmt_num(row["gflops"]),
        ))  # fmt: skip
    headers = ("resolution", "tokens", "status", "img/s (median)", "latency ms (median)",
               "latency p10 - p90 ms", "IQR", "noisy", "peak memory MiB (source)",
               *(m.label for m in extras), "GFLOP/img")  # fmt: skip
    return md_table(headers, rows)


def pair_rows(pair: Pair) -> list[tuple]:
    """Vim vs DeiT at each resolution: both throughputs and memories, speedup and memory saving."""
    out = []
    for row in pair.table.to_dict("records"):
        out.append((
            int(row["img_size"]), fmt_num(row["tokens"]),
            _status_or(row["vim_status"], fmt_num(row["vim_throughput"])),
            _status_or(row["deit_status"], fmt_num(row["deit_throughput"])),
            fmt_ratio(row["speedup"]),
            _status_or(row["vim_status"], fmt_num(row["vim_peak_mem_mib"])),
            _status_or(row["deit_status"], fmt_num(row["deit_peak_mem_mib"])),
            fmt_pct(row["memory_saving_pct"]),
        ))  # fmt: skip
    return out


def _status_or(status: str, value: str) -> str:
    return value if status == "ok" else status.upper()


def memory_sources_note(run: Run) -> str:
    sources = sorted({s for s in run.results.loc[run.results["status"] == "ok", "peak_mem_source"] if s})
    notes = [f"`{s}`: {MEMORY_SOURCES.get(s, 'unknown source')}" for s in sources]
    return "Memory sources: " + "; ".join(notes) + "." if notes else ""


def ensure_plots(run: Run, metrics: Sequence[str]) -> list[Path]:
    """The run's figures, drawn into the run folder where missing."""
    from .plots import plot_runs

    missing = [m for m in metrics if not (run.path / f"{m}.png").is_file()]
    if missing:
        plot_runs([run.path], run.path, missing, paper=False)
    return [run.path / f"{m}.png" for m in metrics if (run.path / f"{m}.png").is_file()]


# -------------------------------------------------------------------------------------------- report


def render_run_report(run: Run, report_path: Path) -> str:
    """The whole markdown of one run; image links are relative to report_path."""
    frame = run.results
    counts = frame["status"].value_counts().to_dict()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no rows"
    devices = ", ".join(run.device_names()) or "unknown device"
    parts = [
        f"# vimbench run `{run.name}`",
        f"{len(frame)} measured point(s): {summary}. Device: {devices}.",
        command_section(run),
        "## Environment",
        environment_section(run.environment),
        "## Sweep settings",
        knobs_section(run.config),
    ]
    measurement = run.meta.get("measurement")
    if isinstance(measurement, dict) and measurement:
        parts += ["Measurement:", knobs_section(measurement)]
    pairs = vim_deit_pairs(run)
    plots = ensure_plots(run, ["throughput", "memory", *(["speedup"] if pairs else [])])
    if plots:
        parts += ["## Figures", "\n\n".join(image_link(p, report_path, p.stem) for p in plots)]
    parts.append("## Results per configuration")
    note = memory_sources_note(run)
    if note:
        parts.append(note)
    for line in lines(run):
        parts += [f"### {describe(line.config, list(line.config))}", line_table(line)]
    if pairs:
        parts.append("## Vim vs DeiT (same batch, dtype, mode, device)")
        for pair in pairs:
            title = f"{pair.vim.config['model']} ({describe(pair.vim.config, ['scan_backend'])}) vs " \
                f"{pair.deit.config['model']} ({describe(pair.deit.config, ['attn_backend'])})"
            parts += [f"### {title}", md_table(PAIR_HEADERS, pair_rows(pair))]
    parts += ["## Points that did not run", errors_section(run)]
    return "\n\n".join(parts) + "\n"


PAIR_HEADERS = ("resolution", "tokens", "Vim img/s", "DeiT img/s", "speedup Vim/DeiT", "Vim memory MiB",
                "DeiT memory MiB", "memory saving")  # fmt: skip


def errors_section(run: Run) -> str:
    failed = run.results[run.results["status"] != "ok"]
    if failed.empty:
        return "None: every point has status ok."
    rows = [
        (r["model"], int(r["img_size"]), fmt_int(r["batch_size"]), r["dtype"], r["scan_backend"],
         r["attn_backend"], r["status"], first_line(r["error"]) or "-")
        for r in failed.to_dict("records")
    ]  # fmt: skip
    headers = ("model", "resolution", "batch", "dtype", "scan", "attn", "status", "error (first line)")
    return md_table(headers, rows)


def write_run_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the markdown report of a run (default RUN_DIR/report.md) and return its path."""
    run = Run.load(run_dir)
    target = Path(out) if out is not None else run.path / REPORT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_run_report(run, target))
    return target
