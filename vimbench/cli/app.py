"""Root `vimbench` app: global options and the command modules, each registering its own commands."""

from __future__ import annotations

import sys

import typer

from vimbench import __version__

from . import (
    check_cmd,
    env_cmd,
    gate_cmd,
    kernels_cmd,
    memory_cmd,
    models_cmd,
    profile_cmd,
    report_cmd,
    sweep_cmd,
)
from .common import EXIT_USAGE, click, fail

app = typer.Typer(
    name="vimbench",
    help="Benchmark and profile Vision Mamba (Vim) against DeiT: throughput, GPU memory, scan kernels, "
    "regression gates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vimbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """vimbench: measured, reproducible Vim vs DeiT numbers."""


for _module in (env_cmd, models_cmd, check_cmd, kernels_cmd, sweep_cmd, report_cmd, gate_cmd, profile_cmd,
                memory_cmd):
    _module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: usage errors (click's and ours) become one line and exit code 2."""
    from .common import UsageError

    try:
        rv = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except (typer.Abort, KeyboardInterrupt):
        fail("aborted", 130)
    except click.exceptions.UsageError as exc:
        message = exc.format_message().replace("\n", " ").strip()
        if not message:  # bare `vimbench`: help was printed
            sys.exit(0)
        path = exc.ctx.command_path if exc.ctx else "vimbench"
        fail(f"{message} (see: {path} --help)", EXIT_USAGE)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
