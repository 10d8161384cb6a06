"""`vimbench env`: what this machine is, as every run.json records it."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from vimbench.measure.environment import collect_environment

from .common import console


def env(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Python, torch, triton, CUDA versions; CPU and its SIMD level; each GPU (NVML: name, UUID, memory,
    driver, MIG); TF32."""
    info = collect_environment()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title="software and host", show_header=False)
    for key in ("host", "platform", "python", "torch", "triton", "cuda_runtime", "cudnn", "nvidia_driver",
                "cuda_visible_devices", "cpu", "cpu_count", "cpu_capability", "torch_threads"):
        table.add_row(key, str(info[key]) if info[key] is not None else "[dim]not available[/]")
    flags = info["cpu_simd_flags"]
    table.add_row("cpu_simd_flags", " ".join(f if on else f"[dim]no-{f}[/]" for f, on in flags.items()))
    console.print(table)
    flags = Table(title="precision flags", show_header=False)
    for key, value in info["precision"].items():
        flags.add_row(key, str(value))
    console.print(flags)
    if not info["gpus_nvml"] and not info["gpus_torch"]:
        why = "NVML not available" if not info["nvml_available"] else "NVML sees no GPU"
        console.print(f"GPUs: none ({why}; torch.cuda.is_available() = {info['cuda_available']})")
        return
    gpus = Table(title="GPUs (NVML)")
    for col in ("index", "name", "uuid", "memory MiB", "MIG"):
        gpus.add_column(col)
    for gpu in info["gpus_nvml"]:
        gpus.add_row(str(gpu["nvml_index"]), gpu["name"], gpu["uuid"], str(gpu["memory_total_mib"]),
                     str(gpu["mig_enabled"]))
    console.print(gpus)


def register(app: typer.Typer) -> None:
    app.command("env")(env)
