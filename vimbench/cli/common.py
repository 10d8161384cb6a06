"""What every command shares: the console, one-line errors with exit code 2, input parsers."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

try:  # newer typer vendors click and raises its own copy's exceptions, even when a real click is installed
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer depends on the real click
    import click  # type: ignore[no-redef]

__all__ = ["EXIT_USAGE", "UsageError", "click", "console", "err_console", "fail", "parse_csv_list",
           "parse_model_names"]

console = Console()
err_console = Console(stderr=True)

EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit code 2, no traceback."""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print `error: message` on one line to stderr and exit (the message is literal text, not markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def parse_csv_list(value: str | None) -> list[str]:
    """"a,b, c" -> ["a", "b", "c"]; None or "" -> []."""
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parse_model_names(value: str) -> list[str]:
    """Comma-separated model names or globs (`timm:deit_*`) resolved to registry names; UsageError names the
    closest models, a glob that matches nothing, or one that matches more than the cap."""
    from vimbench.models import expand_model_patterns

    names = parse_csv_list(value)
    if not names:
        raise UsageError("no model given")
    try:
        return expand_model_patterns(names)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
