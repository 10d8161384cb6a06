"""`vimbench profile`: where one model's forward pass spends its time (and, on GPU, its memory)."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from .common import UsageError, check_output_file, console

KERNEL_NAME_WIDTH = 90


class DType(StrEnum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


def _validated_config(
    model: str, res: int, device: str, batch_size: int, dtype: str, scan_backend: str, attn_backend: str,
    warmup: int, iters: int, trace: Path | None, timm_kwargs: str = "",
):
    """Every input checked before anything heavy runs: a bad one is a one-line UsageError."""
    from vimbench.models import get_spec
    from vimbench.profile.profiler import ProfileConfig, resolve_device

    try:
        spec = get_spec(model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if res <= 0:
        raise UsageError(f"--res must be positive, got {res}")
    for flag, value, low in (("--batch-size", batch_size, 1), ("--warmup", warmup, 0), ("--iters", iters, 1)):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    try:
        torch_device = resolve_device(device)
        asked = _check_options({"scan_backend": scan_backend, "attn_backend": attn_backend,
                                "timm_kwargs": timm_kwargs})
        spec.contract.resolve_options(spec, asked, str(torch_device))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    problem = spec.contract.resolution_error(spec, res) or spec.contract.unsupported_reason(spec, res, asked)
    if problem is not None:
        raise UsageError(f"--res {res} for {spec.name}: {problem}")
    if trace is not None and trace.is_dir():  # --trace DIR: a file named after the run, inside DIR
        trace = trace / f"trace-{spec.name}-{res}px.json"
    check_output_file(trace, "--trace", parents=False)
    return ProfileConfig(
        model=spec.name, img_size=res, device=str(torch_device), batch_size=batch_size, dtype=dtype,
        scan_backend=scan_backend, attn_backend=attn_backend, timm_kwargs=asked["timm_kwargs"], warmup=warmup,
        iters=iters, trace_path=trace,
    )


def _check_options(options: dict[str, str]) -> dict[str, str]:
    """A value no family accepts for an option is a typo, even when the profiled model ignores it. Returns
    the options, free-form ones (timm kwargs) in their one spelling."""
    from vimbench.models import all_options

    options = dict(options)
    for opt in all_options():
        if opt.name in options:
            options[opt.name] = opt.check(options[opt.name])
    return options


def _ms(us: float) -> str:
    return f"{us / 1e3:.3f}"


def _pct(share: float) -> str:
    return f"{100 * share:.1f}%"


def _short(name: str, width: int = KERNEL_NAME_WIDTH) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def _category_table(result) -> Table:
    device = result.measure == "device"
    source = "self CUDA time" if device else "self CPU time"
    table = Table(title=f"Time by category ({source} per forward)")
    columns = ["category", "ms", "share"] + (["host ms", "host share"] if device else []) + ["GFLOPs"]
    for col in columns:
        table.add_column(col, justify="left" if col == "category" else "right")
    host = {c.category: c for c in result.cpu_summary.categories} if device else {}
    flops = result.flops.by_category if result.flops else {}
    for row in result.summary.categories:
        cells = [row.category, _ms(row.time_us), _pct(row.share)]
        if device:
            cells += [_ms(host[row.category].time_us), _pct(host[row.category].share)]
        table.add_row(*cells, f"{flops.get(row.category, 0) / 1e9:.3f}")
    total = [_ms(result.summary.total_us), "100.0%"]
    if device:
        total += [_ms(result.cpu_summary.total_us), "100.0%"]
    table.add_row("total", *total, f"{result.flops.total / 1e9:.3f}" if result.flops else "-", style="bold")
    return table


def _ops_table(title: str, ops, unit_us: bool = False) -> Table:
    table = Table(title=title)
    for col in ("name", "category", "calls", "us" if unit_us else "ms", "share"):
        table.add_column(col, justify="left" if col in ("name", "category") else "right")
    for op in ops:
        time_cell = f"{op.time_us:.1f}" if unit_us else _ms(op.time_us)
        table.add_row(_short(op.name), op.category, str(op.calls), time_cell, _pct(op.share))
    return table


def _print_memory(result) -> None:
    from vimbench.profile.memory import MIB, NOT_TRACKED_ON_CPU

    memory = result.memory
    if memory is None:
        console.print(NOT_TRACKED_ON_CPU)
        return
    table = Table(title="Activation memory per block (CUDA allocator, one forward)")
    for col in ("block", "allocated at entry MiB", "peak above entry MiB", "retained MiB"):
        table.add_column(col, justify="left" if col == "block" else "right")
    for block in memory.blocks:
        table.add_row(block.name, f"{block.baseline_bytes / MIB:.1f}", f"{block.peak_bytes / MIB:.1f}",
                      f"{block.retained_bytes / MIB:.1f}")
    console.print(table)
    console.print(
        f"forward peak above weights+input: {memory.peak_bytes / MIB:.1f} MiB "
        f"(allocated before the forward: {memory.start_bytes / MIB:.1f} MiB)",
        highlight=False, soft_wrap=True,
    )


def _print_result(result, top: int) -> None:
    from vimbench.metrics.timing_stats import is_noisy

    cfg = result.config
    chosen = [(label, value) for label, value in (("scan backend", result.scan_backend),
                                                  ("attention backend", result.attn_backend),
                                                  ("timm kwargs", cfg.timm_kwargs)) if value not in ("", "-")]
    backends = ", ".join(f"{label} {value}" for label, value in chosen) or "no backend choice"
    console.print(
        f"[bold]{cfg.model}[/] at {cfg.img_size}x{cfg.img_size}, batch {cfg.batch_size}, {cfg.dtype}, "
        f"{result.device}, {backends}; {cfg.warmup} warmup + {cfg.iters} profiled forward(s)",
        highlight=False, soft_wrap=True,
    )
    line = f"wall time per profiled forward: {result.wall_s_per_iter * 1e3:.2f} ms (with profiler overhead)"
    if is_noisy(result.wall_iqr_pct):
        line += f" [noisy: IQR {result.wall_iqr_pct:.0f}% of the median]"
    if result.flops is not None and result.wall_s_per_iter > 0:
        line += (f"; {result.flops.total / 1e9:.3f} GFLOPs per forward -> "
                 f"{result.flops.total / result.wall_s_per_iter / 1e9:.2f} GFLOP/s")
    console.print(line, highlight=False, soft_wrap=True)
    console.print(_category_table(result))
    if result.measure == "device":
        title = f"Top {top} ops (CUDA time of the kernels each launched, per forward)"
    else:
        title = f"Top {top} ops (self CPU time per forward; vimbench::scope::* rows: Python inside the scope)"
    console.print(_ops_table(title, result.summary.top_ops))
    if result.measure == "device":
        console.print(_ops_table(f"Top {top} CUDA kernels (time per forward)", result.summary.kernels, True))
        bw = result.scan_bandwidth
        if bw is not None:
            traffic = "fused: B*L*(6E+4N) per layer" if bw.fused else "B*L*(4E+2N) per direction"
            console.print(
                f"scan kernels: {bw.directions} directions per forward, {bw.bytes_per_forward / 1e6:.2f} MB "
                f"minimal traffic ({traffic}, {cfg.dtype}), {bw.time_us_per_forward:.1f} us -> "
                f"{bw.gbps:.1f} GB/s achieved",
                highlight=False, soft_wrap=True,
            )
    _print_memory(result)
    if result.trace_path is not None:
        console.print(f"chrome trace: {result.trace_path} (open in https://ui.perfetto.dev or chrome://tracing)",
                      highlight=False, soft_wrap=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def profile(
    model: str = typer.Argument(..., help="Model name, e.g. vim-t or deit-s (see `vimbench models`)."),
    res: int = typer.Option(224, "--res", help="Image size (on the model's patch grid)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (cuda when present)."),
    batch_size: int = typer.Option(1, "--batch-size", help="Images per forward."),
    dtype: DType = typer.Option(DType.fp32, "--dtype", help="Model and input dtype: fp32, fp16 or bf16."),
    scan_backend: str = typer.Option("auto", "--scan-backend", help="Vim scan backend (auto: best here)."),
    attn_backend: str = typer.Option("auto", "--attn-backend",
                                     help="DeiT / timm attention: auto, sdpa or math."),
    timm_kwargs: str = typer.Option("", "--timm-kwargs", help="timm models: timm.create_model keyword "
                                    "arguments, e.g. 'drop_path_rate=0.1,global_pool=avg'."),
    warmup: int = typer.Option(2, "--warmup", help="Forwards run before profiling."),
    iters: int = typer.Option(2, "--iters", help="Forwards profiled; times are per forward."),
    trace: Path | None = typer.Option(
        None, "--trace", help="Write a Chrome trace of the profiled runs to this file (given a folder: to "
        "trace-MODEL-RESpx.json in it)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write every number to this JSON file."),
    top: int = typer.Option(15, "--top", help="Rows in the top-ops and kernel tables."),
) -> None:
    """Profile inference forwards with torch.profiler: self time by category (scan, conv1d, linear/matmul,
    norm, attention, other; shares of the whole run), the top ops, FLOPs per category; on GPU also CUDA
    time per kernel, the scan kernels' achieved GB/s and the activation memory of each block."""
    config = _validated_config(model, res, device, batch_size, dtype.value, scan_backend, attn_backend,
                               warmup, iters, trace, timm_kwargs)
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    check_output_file(json_out, "--json", parents=False)
    trace_path = config.trace_path
    if json_out is not None and trace_path is not None and json_out.resolve() == trace_path.resolve():
        raise UsageError(f"--json and --trace both name {json_out}; give two files")
    from vimbench.profile.profiler import run_profile

    result = run_profile(config, top=top)
    _print_result(result, top)
    if json_out is not None:
        json_out.write_text(json.dumps(dataclasses.asdict(result), indent=2, default=_json_default))
        console.print(f"json: {json_out}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
