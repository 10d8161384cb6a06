"""`vimbench plot`, `vimbench report` and `vimbench reproduce fig1`: curves, markdown reports, the paper's
Fig. 1 measured on this machine."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import typer

from .common import UsageError, check_output_dir, check_output_file, console, parse_csv_list


def plot(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run folders (each with results.csv)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for the figures. Default: the run folder (one run) or "
        "results/runs/plots-<UTC time>/ (several).",
    ),
    metric: str = typer.Option(
        "throughput,memory",
        "--metric",
        help="throughput, memory, latency, energy_per_image (any registered metric), speedup (Vim/DeiT), "
        "a comma list, or all.",
    ),
    paper: bool = typer.Option(False, "--paper", help="Draw the paper's Fig. 1 Vim-Ti / DeiT-Ti points too."),
) -> None:
    """Throughput, peak memory, latency or Vim/DeiT speedup against resolution (PNG + SVG).

    One line per configuration, p10-p90 bands, OOM points marked; several runs are overlaid with their
    device in the legend.
    """
    from vimbench.report.plots import DEFAULT_METRICS, METRICS, plot_runs

    metrics = list(METRICS) if metric.strip() == "all" else parse_csv_list(metric)
    if not metrics:
        raise UsageError(f"no metric given; choose from {', '.join(METRICS)} or all")
    if out is None:  # a run given as its results.csv: the figures go beside it
        first = run_dirs[0].parent if run_dirs[0].is_file() else run_dirs[0]
        out = first if len(run_dirs) == 1 else Path("results/runs") / f"plots-{_stamp()}"
    check_output_dir(out, "--out")
    try:
        written = plot_runs(run_dirs, out, metrics, paper=paper)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    drawn = {p.stem for p in written}
    for name in metrics:
        if name not in drawn:
            why = ("no Vim/DeiT pair of the same size and settings" if name == "speedup"
                   else "no rows" if name in DEFAULT_METRICS else "not recorded in these runs")
            console.print(f"[yellow]note:[/] no {name} figure: {why}", highlight=False)
    for path in written:
        console.print(f"plot: {path}", highlight=False, soft_wrap=True)


def report(
    run_dir: Path = typer.Argument(..., help="A run folder (results.csv + run.json)."),
    out: Path | None = typer.Option(None, "--out", help="Markdown file. Default: RUN_DIR/run-report.md."),
) -> None:
    """A markdown report of any run: environment, knobs, a table per configuration, errors, plots."""
    from vimbench.report.markdown import write_run_report

    check_output_file(out, "--out", inputs=[run_dir])
    try:
        path = write_run_report(run_dir, out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


def fig1(
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        "-b",
        help="Images per batch (the paper does not state its own). Default: 1 on CPU, 64 on CUDA.",
    ),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16."),
    attn_backend: str = typer.Option(
        "both",
        "--attn-backend",
        help="DeiT-Ti attention: math (explicit softmax(QK^T)V), sdpa (fused), or "
        "both (DeiT-Ti runs twice: does the claim depend on the kernel?).",
    ),
    scan_backend: str = typer.Option("auto", "--scan-backend", help="Vim-Ti selective-scan backend."),
    out: Path | None = typer.Option(
        None, "--out", help="Run folder. Default: results/runs/fig1-<UTC time>/."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue --out: skip the points it already has."),
    warmup: int | None = typer.Option(None, "--warmup", help="Untimed iterations. Default: the sweep's."),
    iters: int | None = typer.Option(
        None, "--iters", help="Timed iterations per repeat. Default: the sweep's."
    ),
    min_time: float | None = typer.Option(None, "--min-time", help="Seconds per repeat, at least."),
    repeats: int | None = typer.Option(None, "--repeats", help="Repeats per point. Default: the sweep's."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds before a point's worker is killed."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads per worker (CPU)."),
    from_dir: Path | None = typer.Option(
        None, "--from", help="Do not measure: redraw the figures and rewrite report.md of this fig1 run."
    ),
    predict: bool = typer.Option(
        False, "--predict", help="Predict the GPU memory of every Fig. 1 point without a GPU (fake-tensor "
        "traces) and fit batch size, dtype, attention kernel and Vim flip copies to the paper's memory. "
        "Alone: only the prediction (nothing measured) into --out; with --from or --measure: added to it.",
    ),
    measure: bool = typer.Option(
        False, "--measure", help="With --predict: also measure (the sweep), not only predict."
    ),
) -> None:
    """Vim-Ti vs DeiT-Ti at 512, 640, 736 (the paper's 738), 1024, 1248 px, then report.md beside the
    paper's Fig. 1: speedup and memory saving at each resolution, every setting, a verdict on 2.8x / 86.8%."""
    from vimbench import reproduce
    from vimbench.measure.plan import resolve_device, validate_config

    echo = lambda text: console.print(text, highlight=False)  # noqa: E731
    if from_dir is not None:
        try:
            path = reproduce.redraw_fig1(from_dir, predict=predict, echo=echo)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        console.print(f"report: {path}", highlight=False, soft_wrap=True)
        return
    if resume and out is None:
        raise UsageError("--resume needs --out: the fig1 run folder to continue")
    check_output_dir(out, "--out")
    if predict and not measure:
        folder = out or reproduce.default_out_dir().with_name(
            reproduce.default_out_dir().name.replace("fig1-", "fig1-predict-"))
        path = reproduce.predict_fig1(folder, echo)
        console.print(f"report: {path}", highlight=False, soft_wrap=True)
        return
    try:
        resolved = resolve_device(device)
        batch = batch_size if batch_size is not None else (1 if resolved == "cpu" else 64)
        configs = reproduce.fig1_configs(
            out or Path("."),  # the default folder is created only once the settings are valid
            resolved,
            batch,
            dtype.lower(),
            attn_backend.lower(),
            resume,
            scan_backend=scan_backend,
            warmup=warmup,
            iters=iters,
            min_time_s=min_time,
            repeats=repeats,
            timeout_s=timeout,
            threads=threads,
        )
        for config in configs:
            validate_config(config)
        if out is None:
            folder = reproduce.default_out_dir()
            configs = [replace(config, out_dir=folder) for config in configs]
        path = reproduce.reproduce_fig1(configs, echo=echo, predict=predict)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    console.print(f"report: {path}", highlight=False, soft_wrap=True)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def register(app: typer.Typer) -> None:
    app.command("plot")(plot)
    app.command("report")(report)
    reproduce_app = typer.Typer(
        name="reproduce", help="Reproduce a published figure on this machine.", no_args_is_help=True
    )
    reproduce_app.command("fig1")(fig1)
    app.add_typer(reproduce_app, name="reproduce")
