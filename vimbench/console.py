"""Console helpers every layer may use (sweep summaries, gate tables, CLI output)."""

from __future__ import annotations

from rich.console import Console


def wide_console(console: Console) -> Console:
    """Tables in logs and pipes get 160 columns instead of rich's 80; a terminal keeps its own width."""
    if console.is_terminal:
        return console
    return Console(file=console.file, width=160, highlight=False, color_system=None)
