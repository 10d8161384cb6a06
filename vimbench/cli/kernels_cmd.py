"""`vimbench kernels list|compile|bench|inspect`: the kernel tools, one sub-app."""

from __future__ import annotations

import typer
from rich.table import Table

from . import kernels_bench, kernels_compile, kernels_inspect
from .common import console

kernels_app = typer.Typer(
    help="Scan-kernel tools: the registered backends, ahead-of-time compile reports, benchmarks.",
    no_args_is_help=True,
)


@kernels_app.command("list")
def list_backends() -> None:
    """Every selective-scan backend, where it runs, and which one `--scan-backend auto` picks."""
    import torch

    from vimbench.kernels import all_backends, fused_bidirectional_backends, resolve_backend

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    table = Table(title="selective-scan backends")
    for col in ("name", *devices, "backward", "fused bidirectional", "description"):
        table.add_column(col)
    for backend in all_backends():
        runs = ["yes" if backend.is_available(torch.device(d)) else "-" for d in devices]
        fused = [d for d in devices if backend.name in fused_bidirectional_backends(d)]
        table.add_row(backend.name, *runs, "yes" if backend.backward else "-", ", ".join(fused) or "-",
                      backend.description)
    console.print(table)
    for d in devices:
        console.print(f"auto on {d}: {resolve_backend('auto', d)}")


def register(app: typer.Typer) -> None:
    kernels_compile.register(kernels_app)
    kernels_bench.register(kernels_app)
    kernels_inspect.register(kernels_app)
    app.add_typer(kernels_app, name="kernels")
