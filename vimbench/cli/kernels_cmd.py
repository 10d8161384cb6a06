"""`vimbench kernels compile|bench`: the kernel tools, one sub-app."""

from __future__ import annotations

import typer

from . import kernels_bench, kernels_compile

kernels_app = typer.Typer(help="Scan-kernel tools: ahead-of-time compile reports and benchmarks.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    kernels_compile.register(kernels_app)
    kernels_bench.register(kernels_app)
    app.add_typer(kernels_app, name="kernels")
