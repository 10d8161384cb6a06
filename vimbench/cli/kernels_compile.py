"""`vimbench kernels compile`: build every Triton kernel configuration for sm_80/sm_90 on a machine with no
GPU and report registers, spills and shared memory per kernel; exit 1 if any configuration fails."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .common import UsageError, console, err_console, parse_csv_list


def compile_kernels(
    arch: str = typer.Option("sm_90", "--arch", help="Target architectures, comma-separated: sm_80, sm_90."),
    kernel: str = typer.Option("", "--kernel", help="Comma-separated kernels (default: all)."),
    dtype: str = typer.Option("", "--dtype", help="Comma-separated dtypes: fp32, fp16, bf16 (default: all)."),
    d_state: str = typer.Option("", "--d-state", help="Only scan configs for these state sizes."),
    quick: bool = typer.Option(False, "--quick", help="Only the first config of each kernel and dtype."),
    jobs: int = typer.Option(0, "--jobs", "-j", help="Parallel compile processes (0: one per CPU core)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write every result to this JSON file."),
) -> None:
    """Compile each kernel x dtype x launch config ahead of time (no GPU needed); print the resources."""
    from vimbench.kernels import aot

    archs = parse_csv_list(arch)
    if not archs or set(archs) - set(aot.ARCHS):
        raise UsageError(f"unknown --arch {arch!r}; choose from: {', '.join(aot.ARCHS)}")
    kernels = parse_csv_list(kernel) or None
    unknown = sorted(set(kernels or []) - set(aot.kernel_names()))
    if unknown:
        raise UsageError(f"unknown kernel(s) {', '.join(unknown)}; known: {', '.join(aot.kernel_names())}")
    dtypes = parse_csv_list(dtype) or None
    bad = sorted(set(dtypes or []) - set(aot.DTYPES))
    if bad:
        raise UsageError(f"unknown dtype(s) {', '.join(bad)}; choose from: {', '.join(aot.DTYPES)}")
    try:
        states = [int(n) for n in parse_csv_list(d_state)] or None
        todo = aot.compile_jobs(kernels, dtypes, states, quick)
    except ValueError as exc:
        raise UsageError(f"bad --d-state: {exc}") from None
    if jobs < 0:
        raise UsageError("--jobs must be >= 0")
    workers = jobs or os.cpu_count() or 1

    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION")
    failed = []
    for one_arch in archs:  # with several archs, --json F writes F-<arch> files
        out = json_out
        if json_out is not None and len(archs) > 1:
            out = json_out.with_name(f"{json_out.stem}-{one_arch}{json_out.suffix}")
        failed += _compile_for(one_arch, todo, workers, out)
    if failed:
        raise typer.Exit(1)


def _compile_for(arch: str, todo: list, workers: int, json_out: Path | None) -> list:
    from vimbench.kernels import aot

    table = Table(title=f"Triton kernels compiled for {arch} ({len(todo)} configurations)", box=box.SIMPLE,
                  caption="regs: registers/thread; spills: ptxas spill store/load bytes; smem: shared bytes")
    for col in ("kernel", "dtype", "config", "regs", "spills", "smem", "s"):
        justify = "left" if col in ("kernel", "dtype", "config") else "right"
        table.add_column(col, justify=justify, no_wrap=True)
    results = []
    with console.status(f"compiling {len(todo)} configurations for {arch}..."):
        for res in aot.compile_all(arch, todo, workers):
            results.append(res)
            if res.ok:
                table.add_row(res.kernel, res.dtype, res.config, str(res.registers),
                              f"{res.spill_store_bytes}/{res.spill_load_bytes}", str(res.shared_bytes),
                              f"{res.seconds:.1f}")
            else:
                table.add_row(res.kernel, res.dtype, res.config, "[red]FAILED[/]", "", "",
                              f"{res.seconds:.1f}")
    Console(width=max(console.width, 120)).print(table)  # never truncate a figure
    if json_out is not None:
        from dataclasses import asdict

        json_out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    failed = [r for r in results if not r.ok]
    spilling = sum(1 for r in results if r.ok and r.spill_store_bytes)
    console.print(f"{len(results) - len(failed)}/{len(results)} compiled for {arch}; {spilling} with spills")
    for res in failed:
        err_console.print(f"compile failed: {res.kernel} {res.dtype} {res.config}: {res.error}",
                          highlight=False, soft_wrap=True)
    return failed


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_kernels)
