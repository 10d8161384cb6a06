"""`vimbench sweep` (models x resolutions, each point in a fresh worker) and `vimbench compare` (two models
side by side, the paper's Fig. 1 beside Vim-Ti vs DeiT-Ti)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .common import UsageError, check_output_dir, console, parse_model_names

# shared by `sweep` and `compare`
RES = typer.Option(None, "--res", help="Resolutions: 224..1248 (step 128), A..B:STEP, or a comma list; mixes "
                   "allowed. Default: 224,320,448 on CPU, 224..1248 on CUDA.")
BATCH = typer.Option(1, "--batch-size", "-b", help="Images per batch (one batch size per curve).")
DTYPE = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16 (infer: cast; train: autocast).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
MODE = typer.Option("infer", "--mode", help="infer (forward) or train (forward+backward+AdamW step).")
WARMUP = typer.Option(None, "--warmup", help="Untimed iterations first. Default: 10 on CUDA, 1 on CPU.")
ITERS = typer.Option(None, "--iters", help="Timed iterations per repeat, at least. Default: 30 CUDA, 2 CPU.")
MIN_TIME = typer.Option(None, "--min-time", help="Seconds per repeat, at least. Default: 1 CUDA, 0.5 CPU.")
REPEATS = typer.Option(None, "--repeats", help="Repeats (median, p10/p90, IQR). Default: 5 CUDA, 3 CPU.")
SCAN = typer.Option("auto", "--scan-backend", help="Vim selective-scan backend (`vimbench kernels list`).")
ATTN = typer.Option("auto", "--attn-backend", help="DeiT / timm attention: auto, sdpa or math (timm models "
                    "without timm's fused_attn switch: '-').")
TIMM_KWARGS = typer.Option("", "--timm-kwargs", help="timm models: timm.create_model keyword arguments, "
                           "e.g. 'drop_path_rate=0.1,global_pool=avg' (Python literals; a bare word is a "
                           "string). Recorded in the timm_kwargs column; other families ignore them.")
COMPILE = typer.Option(False, "--compile", help="torch.compile the model (compiled during warmup).")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="channels_last model and input.")
OUT = typer.Option(None, "--out", help="Run folder. Default: results/runs/<UTC time>-<models>/.")
RESUME = typer.Option(False, "--resume", help="Continue a run folder: skip the points it already records.")
NO_SKIP = typer.Option(False, "--no-skip", help="Also run larger resolutions after an OOM.")
NO_PREFLIGHT = typer.Option(False, "--no-preflight", help="On CUDA, also run points predicted (vimbench "
                            "memory) to exceed free device memory by over 10 percent (default: skipped-oom).")
TIMEOUT = typer.Option(900.0, "--timeout", help="Seconds before a point's worker is killed (status timeout).")
THREADS = typer.Option(None, "--threads", help="torch threads in each worker. Default: all usable CPUs.")
NVML_MS = typer.Option(5.0, "--nvml-interval-ms", help="NVML memory sampling period.")
NO_PLOTS = typer.Option(False, "--no-plots", help="Do not draw plots at the end.")
DEVICES = typer.Option(None, "--devices", help="Spread the points over local GPUs, one point per GPU at a "
                       "time: all, or cuda:0,cuda:1,...")
EXECUTOR = typer.Option("local", "--executor", help="local (this machine) or ray (one Ray task per point).")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster address (with --executor ray).")


def build_config(models: list[str], *, res: str | None, min_time: float | None, compile_model: bool,
                 no_skip: bool, timeout: float, no_plots: bool, **knobs: Any):
    """The validated SweepConfig for these options; every problem a one-line UsageError.

    `knobs` are SweepConfig fields named as the options are (batch_size, dtype, device, mode, ...).
    """
    from vimbench.measure.plan import SweepConfig, parse_resolutions, validate_config

    try:
        config = SweepConfig(
            models=models, resolutions=parse_resolutions(res) if res is not None else [], min_time_s=min_time,
            compile=compile_model, skip_after_oom=not no_skip, timeout_s=timeout, plots=not no_plots,
            out_dir=knobs.pop("out"), **knobs,
        )
        config.dtype, config.mode = config.dtype.lower(), config.mode.lower()
        return validate_config(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _normalized_timm_kwargs(text: str) -> str:
    """--timm-kwargs in its one spelling (as results.csv holds it); UsageError when it does not parse."""
    from vimbench.models import all_options

    option = next(opt for opt in all_options() if opt.name == "timm_kwargs")
    try:
        return option.check(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def make_executor(devices: str | None, executor: str, ray_address: str | None):
    """The executor for --devices/--executor/--ray-address; None: the sweep's own LocalExecutor."""
    if devices is None and (executor or "local").strip().lower() == "local" and ray_address is None:
        return None
    from vimbench.measure.executors import make_executor as build

    try:
        return build(devices, executor, ray_address)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run(config, executor=None) -> Path:
    from vimbench.measure.sweep import run_sweep
    from vimbench.report.plots import plot_run

    try:
        return run_sweep(config, executor, console, plotter=plot_run)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def sweep(
    models: str = typer.Option("vim-t,deit-t", "--models", "-m", help="Comma-separated model names or globs: "
                               "vim-s,timm:vit_small_patch16_224,'timm:deit_*' (`vimbench models`)."),
    res: str | None = RES, batch_size: int = BATCH, dtype: str = DTYPE, device: str = DEVICE,
    mode: str = MODE, warmup: int | None = WARMUP, iters: int | None = ITERS,
    min_time: float | None = MIN_TIME, repeats: int | None = REPEATS, scan_backend: str = SCAN,
    attn_backend: str = ATTN, timm_kwargs: str = TIMM_KWARGS,
    compile_model: bool = COMPILE, channels_last: bool = CHANNELS_LAST, out: Path | None = OUT,
    resume: bool = RESUME, no_skip: bool = NO_SKIP, timeout: float = TIMEOUT,
    threads: int | None = THREADS, nvml_interval_ms: float = NVML_MS, no_plots: bool = NO_PLOTS,
    devices: str | None = DEVICES, executor: str = EXECUTOR, ray_address: str | None = RAY_ADDRESS,
    no_preflight: bool = NO_PREFLIGHT,
) -> None:  # fmt: skip
    """Measure throughput and peak memory of each model at each resolution, each point in a fresh worker.

    Appends DIR/results.csv row by row and writes DIR/run.json (command line and environment).
    """
    names = parse_model_names(models)
    check_output_dir(out, "--out")
    runner = make_executor(devices, executor, ray_address)
    plan_device = getattr(runner, "plan_device", None)
    if plan_device and device == "auto":
        device = plan_device  # defaults and resume keys follow the GPUs the points will run on
    config = build_config(
        names, res=res, batch_size=batch_size, dtype=dtype, device=device, mode=mode, warmup=warmup,
        iters=iters, min_time=min_time, repeats=repeats, scan_backend=scan_backend, attn_backend=attn_backend,
        timm_kwargs=timm_kwargs, compile_model=compile_model, channels_last=channels_last, out=out,
        resume=resume, no_skip=no_skip,
        timeout=timeout, threads=threads, nvml_interval_ms=nvml_interval_ms, no_plots=no_plots,
        preflight=not no_preflight,
    )  # fmt: skip
    _run(config, runner)


def _cell(value: float | None, spec: str, status: str = "ok") -> str:
    if status not in ("ok", ""):
        return f"[yellow]{status}[/]" if "oom" in status else f"[red]{status}[/]"
    return "-" if value is None else format(value, spec)


def compare_table(model_a: str, model_b: str, entries: list[dict[str, Any]], source: str) -> Table:
    with_paper = any("paper_res" in e for e in entries)
    table = Table(title=f"{model_a} vs {model_b}  (peak memory: {source or 'n/a'})", title_justify="left")
    cols = [
        "res",
        "tokens",
        f"{model_a} img/s",
        f"{model_b} img/s",
        "speedup",
        f"{model_a} MiB",
        f"{model_b} MiB",
        "mem saving %",
    ]
    if with_paper:
        cols += [
            "paper res",
            f"paper {model_a} fps",
            f"paper {model_b} fps",
            "paper speedup",
            f"paper {model_a} GB",
            f"paper {model_b} GB",
            "paper saving %",
        ]
    for col in cols:
        table.add_column(col, justify="right")
    for e in entries:
        sa, sb = e["a_status"], e["b_status"]
        cells = [
            str(e["img_size"]),
            str(int(float(e["tokens"]))) if e["tokens"] not in (None, "") else "-",
            _cell(e["a_throughput"], ".2f", sa) + (" ~" if e["a_noisy"] else ""),
            _cell(e["b_throughput"], ".2f", sb) + (" ~" if e["b_noisy"] else ""),
            _cell(e["speedup"], ".2f") + ("x" if e["speedup"] else ""),
            _cell(e["a_peak_mib"], ".0f", sa),
            _cell(e["b_peak_mib"], ".0f", sb),
            _cell(e["mem_saving_pct"], ".1f"),
        ]
        if with_paper:
            if "paper_res" in e:
                cells += [
                    str(e["paper_res"]),
                    _cell(e["paper_a_fps"], ".0f", "ok" if e["paper_a_fps"] else "oom"),
                    _cell(e["paper_b_fps"], ".0f", "ok" if e["paper_b_fps"] else "oom"),
                    _cell(e["paper_speedup"], ".2f") + ("x" if e["paper_speedup"] else ""),
                    _cell(e["paper_a_gb"], ".2f", "ok" if e["paper_a_gb"] is not None else "oom"),
                    _cell(e["paper_b_gb"], ".2f", "ok" if e["paper_b_gb"] is not None else "oom"),
                    _cell(e["paper_mem_saving_pct"], ".1f"),
                ]
            else:
                cells += [""] * 7
        table.add_row(*cells)
    return table


def compare(
    model_a: str = typer.Argument(..., help="First model (speedup and saving are its gain over the second)."),
    model_b: str = typer.Argument(..., help="Second model."),
    res: str | None = RES, batch_size: int = BATCH, dtype: str = DTYPE, device: str = DEVICE,
    mode: str = MODE, warmup: int | None = WARMUP, iters: int | None = ITERS,
    min_time: float | None = MIN_TIME, repeats: int | None = REPEATS, scan_backend: str = SCAN,
    attn_backend: str = ATTN, timm_kwargs: str = TIMM_KWARGS,
    compile_model: bool = COMPILE, channels_last: bool = CHANNELS_LAST, out: Path | None = OUT,
    resume: bool = RESUME, no_skip: bool = NO_SKIP, timeout: float = TIMEOUT,
    threads: int | None = THREADS, nvml_interval_ms: float = NVML_MS, no_plots: bool = NO_PLOTS,
    from_dir: Path | None = typer.Option(None, "--from", help="Read a finished run instead of measuring."),
) -> None:  # fmt: skip
    """Run two models (or read a finished run) and print them side by side per resolution."""
    from vimbench.console import wide_console
    from vimbench.measure.plan import parse_resolutions
    from vimbench.report.compare import compare_rows, configurations, matching_rows
    from vimbench.report.paper import MEASURED_RESOLUTIONS
    from vimbench.results import Run, require_one_device

    names = []
    for given in (model_a, model_b):
        resolved = parse_model_names(given)
        if len(resolved) != 1:
            raise UsageError(f"compare takes one model per argument; {given!r} names {len(resolved)}")
        names += resolved
    if names[0] == names[1]:
        raise UsageError(f"compare needs two different models, got {names[0]} twice")
    filters: dict[str, Any] = {}
    if from_dir is None:
        check_output_dir(out, "--out")
        config = build_config(
            names, res=res, batch_size=batch_size, dtype=dtype, device=device, mode=mode, warmup=warmup,
            iters=iters, min_time=min_time, repeats=repeats, scan_backend=scan_backend,
            attn_backend=attn_backend, timm_kwargs=timm_kwargs, compile_model=compile_model,
            channels_last=channels_last, out=out, resume=resume, no_skip=no_skip, timeout=timeout,
            threads=threads, nvml_interval_ms=nvml_interval_ms, no_plots=no_plots,
        )  # fmt: skip
        if res is None and config.device != "cpu":  # on a GPU, default to the paper's resolutions
            config.resolutions = [224, *MEASURED_RESOLUTIONS]
        run_dir = _run(config)
    else:
        run_dir = from_dir
        filters = {
            "batch_size": batch_size,
            "dtype": dtype.lower(),
            "mode": mode.lower(),
            "compile": compile_model,
            "channels_last": channels_last,
        }
        for column, value in (("scan_backend", scan_backend), ("attn_backend", attn_backend)):
            if value != "auto":
                filters[column] = value
        if timm_kwargs:
            filters["timm_kwargs"] = _normalized_timm_kwargs(timm_kwargs)
    try:
        frame = Run.load(run_dir).table
        wanted = set(parse_resolutions(res)) if res is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if wanted is not None:
        frame = frame[frame["img_size"].isin(wanted)]
    try:
        require_one_device(frame[frame["model"].isin(names)], "compare")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    entries = compare_rows(frame, names[0], names[1], filters)
    if not entries:
        raise UsageError(
            f"{run_dir} has no rows of {names[0]} or {names[1]} matching these options "
            f"(batch {batch_size}, {dtype}, {mode}); measured models: "
            f"{', '.join(sorted(set(frame['model']))) or 'none'}"
        )
    for name in names:
        if len(configurations(matching_rows(frame, name, filters), name)) > 1:
            console.print(
                f"[yellow]note:[/] {run_dir} holds several configurations of {name}; "
                "showing the latest row per resolution "
                "(narrow with --attn-backend, --scan-backend, --dtype, --batch-size...)",
                highlight=False,
                soft_wrap=True,
            )
    source = next((e["mem_source"] for e in entries if e["mem_source"]), "")
    wide_console(console).print(compare_table(names[0], names[1], entries, source))
    notes = [f"speedup = {names[0]} img/s / {names[1]} img/s; mem saving = 1 - {names[0]} / {names[1]} peak"]
    if any(e["a_noisy"] or e["b_noisy"] for e in entries):
        notes.append("~ marks a noisy point (IQR > 10% of the median)")
    if source == "rss":
        notes.append("CPU run: memory is each worker's peak RSS, Python and torch included")
    if any("paper_res" in e for e in entries):
        notes.append("paper: Vim arXiv 2401.09417 Fig. 1 (GPU and batch size not stated; FPS read off a log "
                     "axis; its 738 px is 736 here)")
    for note in notes:
        console.print(f"[dim]{note}[/]", highlight=False, soft_wrap=True)
    console.print(f"run: {run_dir}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("compare")(compare)
