"""`vimbench memory`: each point's predicted peak GPU memory, by category, and whether it fits a device."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.table import Table

from .common import UsageError, console, parse_model_names


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


_CATEGORY_COLUMNS = ("weights", "inputs", "activations", "gradients", "optimizer")


def memory(
    models: str = typer.Option("vim-t,deit-t", "--models", "-m", help="Comma-separated model names."),
    res: str = typer.Option("224..1248", "--res", help="Resolutions: 224..1248 (step 128), A..B:STEP or a "
                            "comma list."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", help="Images per batch."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16 (infer: cast; train: autocast)."),
    mode: str = typer.Option("infer", "--mode", help="infer (forward) or train (forward+backward+AdamW)."),
    attn_backend: str = typer.Option("auto", "--attn-backend", help="DeiT attention: auto, sdpa, math."),
    timm_kwargs: str = typer.Option("", "--timm-kwargs", help="timm models: timm.create_model keyword "
                                    "arguments, e.g. 'drop_path_rate=0.1,global_pool=avg'."),
    scan_kernel: str = typer.Option("auto", "--scan-kernel", help="Vim scan allocation model: auto "
                                    "(triton-fused on cuda, cpu on cpu), triton-fused, triton, cuda, "
                                    "mamba_ssm, cpu."),
    vim_variant: str = typer.Option("ours", "--vim-variant", help="ours, or upstream (hustvl/Vim's flipped "
                                    "copies and mamba_ssm inner function; inference only)."),
    target: str = typer.Option("cuda", "--target", help="cuda (GPU kernels' allocations) or cpu."),
    device_memory: str = typer.Option("80GiB", "--device-memory", help="Device capacity for the fits "
                                      "column: 80GiB, 80GB (10^9), 40960MiB, or a number of GiB."),
    device_name: str | None = typer.Option(None, "--device-name", help="Use this device's measured overhead "
                                           "(CUDA context + libraries) when one is recorded."),
    overhead_mib: float | None = typer.Option(None, "--overhead-mib", help="Device overhead in MiB added to "
                                              "reserved memory for the NVML figure. Default: measured or "
                                              "the documented estimate."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
) -> None:
    """Predict each point's peak memory without a GPU: the model is traced on fake tensors (shapes, no data),
    the storage log replayed through a model of torch's CUDA caching allocator (512-byte blocks, 2 MiB
    small-pool and 20 MiB / 2 MiB-rounded large segments), plus a per-device overhead = the NVML figure."""
    from vimbench.measure.plan import parse_resolutions
    from vimbench.memory import (
        MemoryQuery,
        check_query,
        device_overhead_mib,
        fits,
        parse_memory_size,
        predict,
        predicted_nvml_mib,
    )

    names = parse_model_names(models)
    try:
        resolutions = parse_resolutions(res)
        capacity = parse_memory_size(device_memory)
        queries = [
            MemoryQuery(name, r, batch_size, dtype.lower(), mode.lower(), attn_backend.lower(),
                        scan_kernel.lower(), vim_variant.lower(), target.lower(), timm_kwargs)
            for name in names for r in resolutions
        ]  # fmt: skip
        for q in queries:
            check_query(q)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if overhead_mib is not None and overhead_mib < 0:
        raise UsageError(f"--overhead-mib must be >= 0, got {overhead_mib}")
    overhead, source = device_overhead_mib(device_name)
    if overhead_mib is not None:
        overhead, source = overhead_mib, "--overhead-mib"
    if target.lower() == "cpu":
        overhead, source = 0.0, "none (target cpu)"
    rows = []
    for q in queries:
        row = predict(q).as_row()
        nvml = predicted_nvml_mib(int(row["reserved_mib"] * 2**20), overhead)
        row.update(overhead_mib=overhead, overhead_source=source, nvml_mib=nvml,
                   device_memory_gib=capacity / 2**30, fits=fits(nvml, capacity))  # fmt: skip
        rows.append(row)
    _print(rows, fmt, overhead, source, device_memory)


def _print(rows: list[dict], fmt: Format, overhead: float, source: str, device_memory: str) -> None:
    if fmt is Format.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if fmt is Format.csv:
        import pandas as pd

        typer.echo(pd.DataFrame(rows).to_csv(index=False, float_format="%.3f"), nl=False)
        return
    first = rows[0]
    table = Table(
        title=f"predicted peak memory (MiB), {first['dtype']} {first['mode']}, batch {first['batch_size']}, "
        f"target {first['target']}; NVML = reserved + {overhead:.0f} MiB overhead ({source})",
        title_justify="left",
    )
    categories = _CATEGORY_COLUMNS if first["mode"] == "train" else _CATEGORY_COLUMNS[:3]
    for col in ("model", "res", "tokens", *categories, "allocated", "reserved", "NVML",
                f"fits {device_memory}"):  # fmt: skip
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(
            r["model"], str(r["img_size"]), str(r["tokens"]),
            *(f"{r[f'{c}_mib']:.0f}" for c in categories),
            f"{r['allocated_mib']:.0f}", f"{r['reserved_mib']:.0f}", f"{r['nvml_mib']:.0f}",
            "[green]yes[/]" if r["fits"] else "[red]no[/]",
        )  # fmt: skip
    from vimbench.measure.sweep import wide_console

    wide_console(console).print(table)
    console.print(
        "categories: tensor bytes at the allocator's peak; allocated/reserved: torch.cuda.max_memory_"
        "allocated/_reserved as the caching allocator would report them (a model, not a measurement)",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("memory")(memory)
