"""`run_sweep`: plan the points, skip what is recorded (resume) or doomed (after an OOM), run the rest through
an executor, append each row the moment it arrives, and show progress, a live table and a summary.

The executor only runs points; every scheduling decision lives here, so another executor (multi-GPU, Ray)
gets resume and skip-after-OOM for free.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from vimbench.console import wide_console
from vimbench.metrics import TableColumn, all_metrics, describe_metrics
from vimbench.metrics.timing_stats import NOISE_RULE
from vimbench.results import OPTION_SHORT, ResultRow, option_names, point_key

from .executors import Executor, LocalExecutor, OomSkipper, distinct_devices
from .plan import Point, SweepConfig, build_plan, config_to_json, validate_config
from .rows import failure_row, identity_row, now_utc
from .run_folder import hold_run_folder, models_slug, new_dir, stamp
from .store import ResultsStore

RUNS_DIR = Path("results") / "runs"
LIVE_ROWS = 12
_STATUS_STYLE = {
    "ok": "green",
    "oom": "yellow",
    "skipped-oom": "dim yellow",
    "skipped": "dim",
    "error": "red",
    "timeout": "red",
}


def default_run_dir(models: list[str], root: Path = RUNS_DIR) -> Path:
    """A new, empty run folder: results/runs/<UTC time to the millisecond>-<models>/."""
    return new_dir(root, lambda now: f"{stamp(now)}-{models_slug(models)}")


def latest_run_dir(models: list[str], root: Path = RUNS_DIR) -> Path | None:
    """The newest run folder for these models (what `--resume` without `--out` continues)."""
    suffix = "-" + models_slug(models)
    pattern = re.compile(r"^\d{8}T\d{6}(?:\.\d{3})?Z" + re.escape(suffix) + "$")
    runs = sorted(p for p in root.glob("*") if p.is_dir() and pattern.match(p.name)) if root.is_dir() else []
    return runs[-1] if runs else None


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or value == "":
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if number != number else format(number, spec)


# what can differ between rows of one run besides model and resolution, with short labels for the table
_CONFIG_KEYS = ("batch_size", "dtype", "mode", *option_names(), "compile", "channels_last", "device_name")
_SHORT = {"batch_size": "bs", **OPTION_SHORT, "device_name": "device"}


def _table_columns(rows: list[dict[str, Any]]) -> list[TableColumn]:
    """Every registered metric's console columns; an extra metric's (energy) only when a row has it."""
    shown = []
    for metric in all_metrics():
        headline = metric.column(metric.value_column)
        if headline.core or any(_fmt(r.get(metric.value_column)) != "-" for r in rows):
            shown.extend(metric.table)
    return shown


def results_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    """One line per row: what a user scans for (throughput, spread, memory and its source, status).

    When rows of one model differ in more than resolution (backends, mode, batch...), a "config" column
    says how.
    """
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_model.setdefault(str(r.get("model", "")), []).append(r)
    groups = list(by_model.values())
    varying = [k for k in _CONFIG_KEYS if any(len({str(r.get(k, "")) for r in g}) > 1 for g in groups)]
    metric_columns = _table_columns(rows)
    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("model", "left"),
        *((("config", "left"),) if varying else ()),
        ("res", "right"),
        ("tokens", "right"),
        ("status", "left"),
        *((c.header, "right" if c.format else "left") for c in metric_columns),
        ("GFLOPs", "right"),
    ):
        table.add_column(col, justify=justify)
    for row in rows:
        status = str(row.get("status", ""))
        shown_status = f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"
        if status not in ("ok", "skipped-oom") and row.get("error"):
            shown_status += f" [dim]{escape(str(row['error'])[:60])}[/]"
        config = [" ".join(f"{_SHORT.get(k, k)}={row.get(k, '')}" for k in varying)] if varying else []
        table.add_row(
            str(row.get("model", "")),
            *config,
            str(row.get("img_size", "")),
            str(row.get("tokens", "")),
            shown_status,
            *(_metric_cell(row, c) for c in metric_columns),
            _fmt(row.get("gflops"), ".2f"),
        )
    return table


def _metric_cell(row: dict[str, Any], column: TableColumn) -> str:
    if column.format is None:
        text = str(row.get(column.column) or "-")
    else:
        text = _fmt(row.get(column.column), column.format)
    if column.flag and str(row.get(column.flag, "")).lower() == "true":
        text += f" {column.flag}"
    return text


class _Display:
    """Progress bar with ETA and a live table on a terminal; one line per point otherwise (logs, CI)."""

    def __init__(self, console: Console, total: int, run_dir: Path):
        self.console = console
        self.rows: list[dict[str, Any]] = []
        self.progress = Progress(
            TextColumn("[bold]sweep[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(str(run_dir), total=total)
        self.live = None
        if console.is_terminal:
            self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)

    def _render(self) -> Group:
        return Group(self.progress, results_table(self.rows[-LIVE_ROWS:]))

    def running(self, point: Point) -> None:
        self.progress.update(self.task, description=f"{point.model} @ {point.img_size}px")

    def done(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.progress.advance(self.task)
        if self.live is not None:
            self.live.update(self._render())
        else:
            status = row.get("status")
            detail = (
                f"{_fmt(row.get('throughput'), '.2f')} img/s, peak {_fmt(row.get('peak_mem_mib'), '.0f')} "
                f"MiB ({row.get('peak_mem_source')})"
                if status == "ok"
                else str(row.get("error", ""))[:120]
            )
            self.console.print(
                f"[{len(self.rows)}/{self.progress.tasks[0].total}] {row.get('model')} "
                f"{row.get('img_size')}px: {status} {detail}",
                highlight=False,
                soft_wrap=True,
            )

    def __enter__(self) -> _Display:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


def _run_meta(config: SweepConfig, points: list[Point]) -> dict[str, Any]:
    from vimbench import __version__

    from .environment import collect_environment

    first = points[0] if points else None
    return {
        "vimbench_version": __version__,
        "command": " ".join(sys.argv),
        "argv": sys.argv,
        "started": now_utc(),
        "config": config_to_json(config),
        "measurement": {
            "warmup": first.warmup if first else None,
            "iters": first.iters if first else None,
            "min_time_s": first.min_time_s if first else None,
            "repeats": first.repeats if first else None,
            "threads": first.threads if first else None,
            "timeout_s": config.timeout_s,
            "nvml_interval_ms": config.nvml_interval_ms,
            "timing": "perf_counter window between device synchronizations; explicit warmup",
            "noise": NOISE_RULE,
            "precision": {
                "infer": "model and input cast to dtype (Vim residual stream stays fp32)",
                "train": "fp32 weights, torch.autocast to dtype, GradScaler for fp16, AdamW",
            },
            "isolation": "one fresh worker process per point",
        },
        "metrics": describe_metrics(),
        "points_planned": len(points),
        "environment": collect_environment(),
    }


def _kept_on_resume(row: ResultRow, timeout_s: float) -> bool:
    """Is a recorded row final? A lost worker (error) is measured again, and so is a timeout when this run
    allows more time than that row had (its duration_s is the old --timeout plus the kill)."""
    status = row.get("status")
    if status == "error":
        return False
    if status == "timeout":
        try:
            return (row.get("duration_s") or 0.0) >= timeout_s
        except TypeError:  # not a number (a hand-edited file): measure it again
            return False
    return True


def run_sweep(
    config: SweepConfig,
    executor: Executor | None = None,
    console: Console | None = None,
    plotter: Callable[[Path], list[Path]] | None = None,
) -> Path:
    """Run (or resume) a sweep; return its run folder. ValueError (one line) for bad config.

    The run folder is locked for the whole sweep: a second sweep on it is refused (RunFolderBusy).
    `plotter(run_dir)` draws the run's figures at the end when config.plots is set (the CLI passes
    vimbench.report.plots.plot_run; measurement itself never imports the report layer).
    """
    with contextlib.ExitStack() as held:
        return _run_sweep(config, executor, console or Console(), plotter, held)


def _run_sweep(
    config: SweepConfig,
    executor: Executor | None,
    console: Console,
    plotter: Callable[[Path], list[Path]] | None,
    held: contextlib.ExitStack,
) -> Path:
    config = validate_config(config)
    if config.out_dir is None:
        found = latest_run_dir(config.models) if config.resume else None
        if config.resume and found is None:
            raise ValueError(
                f"--resume: no earlier run of {','.join(config.models)} in {RUNS_DIR}; pass --out DIR"
            )
        config.out_dir = found or default_run_dir(config.models)
    config.out_dir = Path(config.out_dir)
    store = ResultsStore(config.out_dir)
    if config.resume and not (store.csv_path.is_file() or store.run_json_path.is_file()):
        raise ValueError(
            f"--resume: {config.out_dir} holds no run (no results.csv or run.json); check the path, or drop "
            "--resume to start a new run there"
        )
    held.enter_context(hold_run_folder(config.out_dir))
    store.check_header()
    recorded = store.typed_rows() if store.csv_path.is_file() else []
    if recorded and not config.resume:
        raise ValueError(
            f"{config.out_dir} already holds results; add --resume to continue it or pick another --out"
        )
    points = build_plan(config)
    identities = {p: identity_row(p) for p in points}
    for point, identity in identities.items():  # a resumed older-schema file cannot hold a newer option
        missing = store.unrecordable(identity)
        if missing:
            raise ValueError(
                f"{store.csv_path} was written by an older results schema without the column(s) "
                f"{', '.join(missing)} that {point.model} needs; pick a new --out for these options"
            )
    # lost workers and timeouts that may now finish are measured again on --resume; the newest row wins
    by_key = {point_key(r): r for r in recorded if _kept_on_resume(r, config.timeout_s)}
    kept_timeouts = [float(r["duration_s"]) for p in points
                     if (r := by_key.get(point_key(identities[p]), {})).get("status") == "timeout"]
    skipper = OomSkipper()
    from vimbench.memory.preflight import Preflight

    preflight = Preflight(enabled=config.preflight)
    skipper.seed((p, by_key[point_key(identities[p])]) for p in points if point_key(identities[p]) in by_key)
    todo = [p for p in points if point_key(identities[p]) not in by_key]

    executor = executor or LocalExecutor()
    describe = getattr(executor, "describe", None)
    how = describe() if callable(describe) else {"executor": type(executor).__name__}
    meta = store.read_run_json() if config.resume else {}
    if meta:
        meta.setdefault("resumes", []).append(
            {"command": sys.argv, "started": now_utc(), "points_left": len(todo), "executor": how}
        )
    else:
        meta = {**_run_meta(config, points), "executor": how}
    store.write_run_json(meta)
    if config.resume:
        console.print(
            f"resuming {config.out_dir}: {len(points) - len(todo)} of {len(points)} points already recorded",
            highlight=False,
        )
    if config.resume and kept_timeouts:
        console.print(
            f"note: {len(kept_timeouts)} timed-out point(s) kept; a --timeout above "
            f"{max(kept_timeouts):.0f} s measures them again",
            highlight=False,
        )

    def skip(point: Point) -> dict | None:
        at = skipper.oom_below(point) if config.skip_after_oom else None
        if at is not None:
            return failure_row(
                point, "skipped-oom", f"not run: {point.model} ran out of memory at {at}px", duration_s=0.0
            )
        too_big = preflight.too_big(point, identities[point])  # CUDA: predicted to exceed free memory
        if too_big is not None:
            return failure_row(point, "skipped-oom", too_big, duration_s=0.0)
        return None

    started = time.perf_counter()
    with _Display(console, len(todo), config.out_dir) as display:

        def on_row(point: Point, row: dict) -> None:
            for column, value in preflight.columns(point, identities[point]).items():
                row.setdefault(column, value)
            store.append(row)  # first, so nothing measured is lost whatever happens next
            skipper.record(point, row)
            _collect_notes(meta, row)
            display.done(row)

        def announce(point: Point) -> dict | None:
            display.running(point)
            return skip(point)

        try:
            executor.run(todo, on_row, skip=announce)
        except KeyboardInterrupt:
            console.print(
                f"interrupted: {len(display.rows)} point(s) recorded in {config.out_dir}; "
                "rerun with --resume to continue",
                highlight=False,
            )
            raise

    workers = getattr(executor, "worker_environments", None)
    if workers:
        meta["worker_environments"] = workers
    meta["device_names"] = distinct_devices(store.rows())
    if len(meta["device_names"]) > 1:
        console.print(
            f"note: this run mixes {len(meta['device_names'])} device models "
            f"({'; '.join(meta['device_names'])}): plots keep them apart, compare and gate refuse to mix",
            highlight=False,
            soft_wrap=True,
        )
    meta["finished"] = now_utc()
    meta["wall_time_s"] = round(time.perf_counter() - started, 2)
    meta["status_counts"] = dict(Counter(r.get("status", "") for r in store.rows()))
    store.write_run_json(meta)
    _summary(console, store, config.out_dir, meta["wall_time_s"])
    if config.plots and plotter is not None:
        _plot(console, config.out_dir, plotter)
    return config.out_dir


def _collect_notes(meta: dict[str, Any], row: dict[str, Any]) -> None:
    """Why a metric read "-" (no energy counter here, say): once per distinct reason, into run.json."""
    for metric, reason in (row.get("metric_notes") or {}).items():
        reasons = meta.setdefault("metric_notes", {}).setdefault(metric, [])
        if reason not in reasons:
            reasons.append(reason)


def _summary(console: Console, store: ResultsStore, run_dir: Path, wall_s: float) -> None:
    rows = store.typed_rows()
    model_order = {m: i for i, m in enumerate(dict.fromkeys(r.get("model", "") for r in rows))}
    rows.sort(key=lambda r: (model_order[r.get("model", "")], r.get("img_size") or 0))
    wide_console(console).print(results_table(rows, title=f"summary: {run_dir}"))
    counts = Counter(r.get("status", "") for r in rows)
    noisy = sum(1 for r in rows if r.get("noisy") is True)
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(
        f"{len(rows)} points ({parts}); {noisy} noisy (IQR > 10% of median); this run took {wall_s:.1f} s",
        highlight=False,
    )
    console.print(
        f"results: {store.csv_path}\nrun info: {store.run_json_path}", highlight=False, soft_wrap=True
    )


def _plot(console: Console, run_dir: Path, plotter: Callable[[Path], list[Path]]) -> None:
    """Plots are a bonus: a missing or failing plotter prints one warning and never touches the results."""
    try:
        made = plotter(run_dir)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        console.print(
            f"[yellow]warning:[/] no plots ({type(exc).__name__}: {reason})", highlight=False, soft_wrap=True
        )
        return
    with contextlib.suppress(TypeError):
        for path in made or []:
            console.print(f"plot: {path}", highlight=False, soft_wrap=True)
