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
from datetime import UTC, datetime
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

from .executor import Executor, LocalExecutor, OomSkipper
from .executors import distinct_devices
from .plan import Point, SweepConfig, build_plan, config_to_json, validate_config
from .schema import point_key
from .store import ResultsStore
from .worker import failure_row, identity_row, now_utc

RUNS_DIR = Path("results") / "runs"
LIVE_ROWS = 12
_STATUS_STYLE = {
    "ok": "green",
    "oom": "yellow",
    "skipped-oom": "dim yellow",
    "error": "red",
    "timeout": "red",
}


def default_run_dir(models: list[str], root: Path = RUNS_DIR) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return root / f"{stamp}-{'-'.join(models)}"


def latest_run_dir(models: list[str], root: Path = RUNS_DIR) -> Path | None:
    """The newest run folder for these models (what `--resume` without `--out` continues)."""
    suffix = "-" + "-".join(models)
    pattern = re.compile(r"^\d{8}T\d{6}Z" + re.escape(suffix) + "$")
    runs = sorted(p for p in root.glob("*") if p.is_dir() and pattern.match(p.name)) if root.is_dir() else []
    return runs[-1] if runs else None


def wide_console(console: Console) -> Console:
    """Tables in logs and pipes get 160 columns instead of rich's 80; a terminal keeps its own width."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=160, highlight=False, color_system=None)


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or value == "":
        return "-"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if number != number else format(number, spec)


# what can differ between rows of one run besides model and resolution, with short labels for the table
_CONFIG_KEYS = ("batch_size", "dtype", "mode", "scan_backend", "attn_backend", "compile", "channels_last",
                "device_name")
_SHORT = {"batch_size": "bs", "scan_backend": "scan", "attn_backend": "attn", "device_name": "device"}


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
    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("model", "left"),
        *((("config", "left"),) if varying else ()),
        ("res", "right"),
        ("tokens", "right"),
        ("status", "left"),
        ("img/s", "right"),
        ("IQR %", "right"),
        ("latency ms", "right"),
        ("peak MiB", "right"),
        ("mem source", "left"),
        ("GFLOPs", "right"),
    ):
        table.add_column(col, justify=justify)
    for row in rows:
        status = str(row.get("status", ""))
        noisy = str(row.get("noisy", "")).lower() == "true"
        iqr = _fmt(row.get("iqr_pct")) + (" noisy" if noisy else "")
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
            _fmt(row.get("throughput"), ".2f"),
            iqr,
            _fmt(row.get("latency_ms"), ".2f"),
            _fmt(row.get("peak_mem_mib"), ".0f"),
            str(row.get("peak_mem_source") or "-"),
            _fmt(row.get("gflops"), ".2f"),
        )
    return table


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
            "precision": {
                "infer": "model and input cast to dtype (Vim residual stream stays fp32)",
                "train": "fp32 weights, torch.autocast to dtype, GradScaler for fp16, AdamW",
            },
            "isolation": "one fresh worker process per point",
        },
        "points_planned": len(points),
        "environment": collect_environment(),
    }


def run_sweep(config: SweepConfig, executor: Executor | None = None, console: Console | None = None) -> Path:
    """Run (or resume) a sweep; return its run folder. ValueError (one line) for bad config."""
    if console is None:
        from vimbench.cli.common import console as cli_console

        console = cli_console
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
    recorded = store.rows() if store.csv_path.is_file() else []
    if recorded and not config.resume:
        raise ValueError(
            f"{config.out_dir} already holds results; add --resume to continue it or pick another --out"
        )
    points = build_plan(config)
    identities = {p: identity_row(p) for p in points}
    # a point whose worker was lost (status error) is measured again on --resume; the newest row wins
    by_key = {point_key(r): r for r in recorded if r.get("status") != "error"}
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
    if config.plots:
        _plot(console, config.out_dir)
    return config.out_dir


def _summary(console: Console, store: ResultsStore, run_dir: Path, wall_s: float) -> None:
    rows = store.rows()
    model_order = {m: i for i, m in enumerate(dict.fromkeys(r.get("model", "") for r in rows))}
    rows.sort(key=lambda r: (model_order[r.get("model", "")], int(r.get("img_size") or 0)))
    wide_console(console).print(results_table(rows, title=f"summary: {run_dir}"))
    counts = Counter(r.get("status", "") for r in rows)
    noisy = sum(1 for r in rows if r.get("noisy") == "true")
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(
        f"{len(rows)} points ({parts}); {noisy} noisy (IQR > 10% of median); this run took {wall_s:.1f} s",
        highlight=False,
    )
    console.print(
        f"results: {store.csv_path}\nrun info: {store.run_json_path}", highlight=False, soft_wrap=True
    )


def _plot(console: Console, run_dir: Path) -> None:
    """Plots are a bonus: a missing or failing plotter prints one warning and never touches the results."""
    try:
        from vimbench.report.plots import plot_run

        made = plot_run(run_dir)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        console.print(
            f"[yellow]warning:[/] no plots ({type(exc).__name__}: {reason})", highlight=False, soft_wrap=True
        )
        return
    with contextlib.suppress(TypeError):
        for path in made or []:
            console.print(f"plot: {path}", highlight=False, soft_wrap=True)
