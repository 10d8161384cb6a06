"""What every command shares: the console, one-line errors with exit code 2, input parsers."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

try:  # newer typer vendors click and raises its own copy's exceptions, even when a real click is installed
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer depends on the real click
    import click  # type: ignore[no-redef]

__all__ = ["EXIT_USAGE", "UsageError", "check_output_dir", "check_output_file", "click", "console",
           "err_console", "fail", "parse_csv_list", "parse_model_names"]

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


# what only `sweep` (and its resume) writes: no other command's output may land on these
RUN_FILES = ("results.csv", "run.json")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(
    path: Path | None, option: str, inputs: Sequence[Path] = (), parents: bool = True
) -> Path | None:
    """Check, before any work, that `path` can take this command's output file; UsageError (one line) if not.

    Refuses a folder, a run's results.csv / run.json, any of the command's `inputs`, and a place where the
    file cannot be created (probed by creating it and any missing folders, then removing what was new; the
    command creates them again when it writes). `parents=False`: the file's folder must exist already.
    """
    if path is None:
        return None
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    if path.name in RUN_FILES:
        raise UsageError(f"{option} {path}: refusing to write over a run's {path.name}; pick another name")
    for source in inputs:
        if _same_file(path, source) or _same_file(path, source / "results.csv"):
            raise UsageError(f"{option} {path} is an input of this command; pick another name")
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    if missing and not parents:
        raise UsageError(f"{option} {path}: directory {path.parent} does not exist")
    existed = path.exists()
    try:  # a probe that leaves nothing behind: missing folders and the file are removed again
        for folder in reversed(missing):
            folder.mkdir()
        with path.open("a"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            if not existed:
                path.unlink(missing_ok=True)
        for folder in missing:
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def check_output_dir(path: Path | None, option: str) -> Path | None:
    """Check, before any work, that `path` is or can become a folder; UsageError (one line) if not.

    Nothing is created here: the nearest existing ancestor must be a writable folder.
    """
    if path is None:
        return None
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file; give a folder")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise UsageError(f"{option} {path}: cannot create a folder there ({ancestor} is not a writable one)")
    return path
