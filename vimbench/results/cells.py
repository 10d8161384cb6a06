"""Cells: the one conversion of a value to the text a results.csv holds, and back to a typed value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .columns import POINT_KEY, option_names


def cell_text(value: Any) -> str:
    """A cell as results.csv text: None/NaN -> "", True -> "true", 224.0 -> "224", floats to 6 significant
    digits, lists space separated, line breaks flattened. Text read back from a CSV maps to itself."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return format(value, ".6g") if abs(value) < 1e15 else repr(value)
    if isinstance(value, list | tuple):
        return " ".join(cell_text(v) for v in value)
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.lower() if text in ("True", "False") else text


def number(value: Any) -> float | None:
    """A finite-or-infinite float from a cell or a value; None for empty, NaN or not a number."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(result) else result


def point_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The identity of a measured point, as text so CSV-read and in-memory rows compare equal."""
    return tuple(cell_text(row.get(k)).strip() for k in POINT_KEY)


def row_options(row: Mapping[str, Any]) -> dict[str, str]:
    """The per-model options of a row (its option columns), without the ones that do not apply ("-")."""
    options = {}
    for name in option_names():
        text = cell_text(row.get(name)).strip()
        if text and text != "-":
            options[name] = text
    return options
