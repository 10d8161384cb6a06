"""`vimbench kernels bench`: every scan backend timed at Vim layer shapes, against the card's ceilings."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .common import UsageError, check_output_file, console, parse_csv_list

DEFAULT_BATCHES = {"cpu": [1, 2], "cuda": [1, 32, 128]}
DEFAULT_DTYPES = {"cpu": ["fp32"], "cuda": ["fp32", "bf16"]}
DEFAULT_SHAPES = {"cpu": ["vim-t", "vim-s"], "cuda": ["vim-t", "vim-s", "vim-b"]}


def _parse_device(device: str | None) -> torch.device:
    from .check_cmd import _parse_device as parse

    return parse(device)


def _parse_ints(value: str | None, default: list[int], what: str) -> list[int]:
    items = parse_csv_list(value)
    if not items:
        return default
    try:
        numbers = [int(v) for v in items]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, got {value!r}") from None
    if any(n < 1 for n in numbers):
        raise UsageError(f"{what} must be >= 1, got {value!r}")
    return numbers


def _parse_shapes(value: str | None, device: torch.device) -> list[str]:
    from vimbench.kernelbench.bench import VIM_SHAPES

    shapes = parse_csv_list(value) or DEFAULT_SHAPES[device.type]
    for shape in shapes:
        if shape not in VIM_SHAPES:
            raise UsageError(f"unknown shape {shape!r}; known: {', '.join(VIM_SHAPES)}")
    return list(dict.fromkeys(shapes))


def _interpreted(name: str, device: torch.device) -> bool:
    """Triton on CPU only runs in its interpreter: correct, but its time says nothing about the kernel."""
    return device.type == "cpu" and name.startswith("triton")


def _parse_backends(value: str | None, device: torch.device) -> list[str]:
    from vimbench.kernels import all_backends, available_backends

    available = [n for n in available_backends(device) if not _interpreted(n, device)]
    names = parse_csv_list(value)
    if not names:
        return available
    known = [b.name for b in all_backends()]
    for name in names:
        if name not in known:
            raise UsageError(f"unknown scan backend {name!r}; known: {', '.join(known)}")
        if _interpreted(name, device):
            raise UsageError(f"{name!r} runs on CPU only in the Triton interpreter: nothing to benchmark")
        if name not in available:
            raise UsageError(
                f"scan backend {name!r} is not available on {device.type}; available: {', '.join(available)}"
            )
    return list(dict.fromkeys(names))


# live tensors of one benchmark point, in units of batch*dim*L fp32 values: u, delta, z, their flipped copies
# (bidir-flip) and the outputs. A lower estimate (no staging copies): when it does not fit, nothing does
_LIVE_TENSORS = 6


def _check_memory(shapes: list[str], batches: list[int], res: int, device: torch.device) -> None:
    """Refuse, before allocating, a size whose inputs alone would not fit (e.g. --res 100000: ~60 GB)."""
    import psutil

    from vimbench.kernelbench.bench import VIM_SHAPES, seqlen_for

    length = seqlen_for(res)
    need = _LIVE_TENSORS * 4 * length * max(batches) * max(VIM_SHAPES[s] for s in shapes)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = psutil.virtual_memory().available
    if need > free:
        raise UsageError(
            f"--res {res} (L={length}) needs about {need / 2**30:.1f} GiB at batch {max(batches)}, more "
            f"than the {free / 2**30:.1f} GiB free on {device.type}; use a smaller --res, --batch or --shapes"
        )


def _write_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite the whole file through a temporary name, so an interrupted run leaves a valid CSV."""
    from vimbench.kernelbench.bench import CSV_COLUMNS

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _num(value: float, fmt: str) -> str:
    return "" if value != value else format(value, fmt)


def _table(rows: list[dict], gpu: str, has_ceiling: bool) -> Table:
    title = f"selective scan forward on {gpu}" + (
        "" if has_ceiling else " (no known ceilings for this device)"
    )
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    columns = [
        "shape",
        "B",
        "dtype",
        "backend",
        "variant",
        "median ms",
        "p10-p90 ms",
        "GB/s",
        "% mem",
        "% exp",
        "x ref",
        "x mamba",
        "note",
    ]
    for col in columns:
        table.add_column(
            col,
            justify="left" if col in ("shape", "dtype", "backend", "variant", "note") else "right",
            no_wrap=col != "note",
        )
    for r in rows:
        spread = f"{r['p10_ms']:.3f}-{r['p90_ms']:.3f}" if r["status"] == "ok" else ""
        table.add_row(
            r["shape"],
            str(r["batch"]),
            r["dtype"],
            r["backend"],
            r["variant"],
            _num(r["median_ms"], ".3f"),
            spread,
            _num(r["gb_s"], ".1f"),
            _num(r["pct_mem_peak"], ".1f"),
            _num(r["pct_exp_peak"], ".1f"),
            _num(r["speedup_vs_reference"], ".1f"),
            _num(r["speedup_vs_mamba_ssm"], ".2f"),
            r["note"] or ("" if r["status"] == "ok" else r["status"]),
        )
    return table


def bench(
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    shapes: str = typer.Option(
        None, "--shapes", help="Comma-separated Vim layer shapes (default: cpu vim-t,vim-s; cuda all three)."
    ),
    batch: str = typer.Option(
        None, "--batch", help="Comma-separated batch sizes (default: cpu 1,2; cuda 1,32,128)."
    ),
    dtype: str = typer.Option(
        None, "--dtype", help="Comma-separated I/O dtypes (default: cpu fp32; cuda fp32,bf16)."
    ),
    res: int = typer.Option(224, "--res", min=16, help="Image resolution: L = (res/16)^2 + 1 tokens."),
    backends: str = typer.Option(
        None, "--backends", help="Comma-separated backends (default: all available)."
    ),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed calls before measuring."),
    repeats: int = typer.Option(20, "--repeats", min=1, help="Timed samples; the median is reported."),
    csv_path: Path = typer.Option(None, "--csv", help="Write one row per measurement to this CSV file."),
) -> None:
    """Time each scan backend at Vim layer shapes: median and p10/p90, GB/s and % of the card's ceilings."""
    from vimbench.dtypes import normalize_dtype
    from vimbench.kernelbench.bench import ceiling_for, device_name, run_bench, seqlen_for

    dev = _parse_device(device)
    shape_names = _parse_shapes(shapes, dev)
    batches = _parse_ints(batch, DEFAULT_BATCHES[dev.type], "--batch")
    try:
        dtypes = list(
            dict.fromkeys(normalize_dtype(d) for d in (parse_csv_list(dtype) or DEFAULT_DTYPES[dev.type]))
        )
        seqlen_for(res)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    names = _parse_backends(backends, dev)
    _check_memory(shape_names, batches, res, dev)
    check_output_file(csv_path, "--csv")
    gpu = device_name(dev)
    has_ceiling = dev.type == "cuda" and ceiling_for(gpu) is not None
    console.print(
        f"benchmarking {', '.join(names)} on {gpu}: L={seqlen_for(res)} (res {res}), "
        f"batch {batches}, {', '.join(dtypes)}",
        highlight=False,
    )
    done: list[dict] = []

    def on_row(row) -> None:
        done.append(row.to_dict())
        if csv_path is not None:
            _write_csv(csv_path, done)

    run_bench(
        names, shape_names, batches, dtypes, dev, res=res, warmup=warmup, repeats=repeats, on_row=on_row
    )
    Console(width=max(console.width, 140)).print(_table(done, gpu, has_ceiling))
    if csv_path is not None:
        console.print(f"wrote {len(done)} rows to {csv_path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
