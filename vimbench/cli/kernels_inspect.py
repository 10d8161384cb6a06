"""`vimbench kernels inspect`: static figures of every scan kernel we own, compiled as the model launches
it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .common import UsageError, console, err_console, parse_csv_list

HELP = """Compile every Triton and CUDA scan kernel we own (forward, backward, fused bidirectional forward and
backward) for a GPU architecture exactly as a Vim mixer launches it at each shape (its strides and
specialisation), with no GPU, and print per kernel: registers, spill bytes, shared memory, warps per block,
blocks/SM (from registers and shared memory at the arch's limits), the launch grid and warps in flight
(warps/SM on a 132-SM H100), and the SASS of the time loop.

\b
How the loop figures are normalised: the time loops are the innermost loops holding a MUFU.EX2 (the decay
exp2(dt*A)) and their innermost sibling loops; each is counted along the longest path of one iteration and
divided by the state updates (one channel x one state x one step) one thread performs per iteration:
state elements per thread (state tile / threads) x steps per iteration (unrolling, from the EX2 count).
A kernel with several time loops (the backward) reports their sum. A kernel that walks L in tiles also
runs code per tile around its time loops (saved-state loads, the backward's dB/dC reduction, barriers):
every instruction of the enclosing loop outside its inner loops, divided by the updates of one tile
(tile positions x state elements per thread), is added; twice that where it runs twice per tile (the fused
bidirectional span pass: one segment from each direction's tile start). instr, MUFU, LDG, STG: per update;
BAR, SHFL: per time-loop iteration (they should be 0 in a scan's time loop; per-tile ones are in the JSON's
per_tile).

\b
Shapes: MODEL@RES[:bBATCH][:nSTATES], batch 128 and 16 states by default (e.g. vim-s@224, vim-s@1248:b1,
vim-s@224:n64: the kernels as a 64-state model would launch them).
--official DIR adds the official mamba forward compiled by scripts/fetch_official_mamba.sh DIR.
Instruction counts are a proxy, not time: only a GPU run says how fast a kernel is."""

COLUMNS = ("backend", "phase", "kernel", "config", "regs", "spill", "smem", "blk/SM", "grid", "warps",
           "warps/SM", "instr/upd", "MUFU/upd", "LDG/upd", "STG/upd", "BAR/it", "SHFL/it")


def _row(r) -> list[str]:
    if r.error:
        return [r.backend, r.phase, r.kernel, r.config, f"[red]{r.error}[/]", *[""] * (len(COLUMNS) - 5)]
    pu, pi = r.per_update, r.per_iteration
    grid = "x".join(str(g) for g in r.grid)
    return [r.backend, r.phase, r.kernel.replace("_kernel", ""), r.config, str(r.registers),
            str(r.spill_bytes),
            str(r.shared_bytes), str(r.blocks_per_sm), grid, str(r.warps_launched), f"{r.warps_per_sm:.1f}",
            f"{pu.get('instructions', 0):.1f}", f"{pu.get('mufu', 0):.2f}", f"{pu.get('ldg', 0):.2f}",
            f"{pu.get('stg', 0):.2f}", str(pi.get("bar", 0)), str(pi.get("shfl", 0))]


def inspect_kernels(
    arch: str = typer.Option("sm_90", "--arch", help="Comma-separated: sm_90, sm_80."),
    dtype: str = typer.Option("fp32", "--dtype", help="Comma-separated: fp32, bf16, fp16."),
    shape: str = typer.Option("vim-s@224,vim-s@1248:b1", "--shape",
                              help="Comma-separated MODEL@RES[:bN][:nSTATES] (states: 16 unless given)."),
    backend: str = typer.Option("triton,cuda", "--backend", help="Comma-separated: triton, cuda."),
    fmt: str = typer.Option("table", "--format", help="table or json."),
    official: Path | None = typer.Option(None, "--official", help="Folder of the fetched official kernel."),
) -> None:
    from vimbench.kernelbench import inspect as kinspect
    from vimbench.kernelbench.launches import DTYPES, Shape

    archs, dtypes, backends = parse_csv_list(arch), parse_csv_list(dtype), parse_csv_list(backend)
    for flag, given, known in (("--arch", archs, list(kinspect.ARCHS)), ("--dtype", dtypes, list(DTYPES)),
                               ("--backend", backends, ["triton", "cuda"])):
        bad = sorted(set(given) - set(known))
        if bad or not given:
            raise UsageError(f"unknown {flag} {', '.join(bad) or '(none)'}; choose from: {', '.join(known)}")
    if fmt not in ("table", "json"):
        raise UsageError(f"unknown --format {fmt!r}; choose table or json")
    if official is not None and not official.is_dir():
        raise UsageError(f"--official {official}: not a folder (scripts/fetch_official_mamba.sh {official})")
    try:
        shapes = [Shape.parse(s) for s in parse_csv_list(shape)]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not shapes:
        raise UsageError("--shape: give at least one MODEL@RES[:bBATCH]")

    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION")
    reports = []
    with console.status("compiling the scan kernels...") if fmt == "table" else _nothing():
        official_dir = str(official) if official else None
        for r in kinspect.inspect_all(archs, dtypes, shapes, triton="triton" in backends,
                                      cuda="cuda" in backends, official_dir=official_dir):
            reports.append(r)
    if fmt == "json":
        console.print_json(json.dumps([kinspect.as_dict(r) for r in reports]))
    else:
        wide = Console(width=max(console.width, 210))  # 17 columns: never truncate a figure
        groups: dict[tuple, list] = {}
        for r in reports:
            groups.setdefault((r.arch, r.dtype, r.shape), []).append(r)
        for (a, d, s), rows in groups.items():
            table = Table(title=f"scan kernels, {a}, {d}, {s}", box=box.SIMPLE)
            for col in COLUMNS:
                table.add_column(col, justify="left" if col in COLUMNS[:4] else "right", no_wrap=True)
            for r in rows:
                table.add_row(*_row(r))
            wide.print(table)
        for r in reports:
            if r.note:
                console.print(f"note: {r.backend} {r.phase} {r.kernel} ({r.shape}): {r.note}",
                              highlight=False)
        console.print("instr/MUFU/LDG/STG per state update, BAR/SHFL per time-loop iteration (see --help); "
                      "static figures, not GPU timings")
    failed = [r for r in reports if r.error]
    for r in failed:
        err_console.print(f"inspect failed: {r.backend} {r.phase} {r.arch} {r.dtype} {r.shape}: {r.error}",
                          highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def register(app: typer.Typer) -> None:
    app.command("inspect", help=HELP)(inspect_kernels)
