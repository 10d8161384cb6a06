"""The typed results row: `ResultRow`, a TypedDict generated from the column spec (one key per results.csv
column, typed by the column's kind), so it follows the registered metrics without being edited.

Rows are built as ResultRow (`typed_row`: vimbench.measure.rows, the worker) and read back as ResultRow
(`parse_row`: ResultsStore.typed_rows, Run.rows). It is a plain dict at run time: results.csv text still
comes from the one `cell_text`, so the file is exactly what it was. `typed_row` refuses a key that is no
column and a value of the wrong kind (a typo or a collector returning text for a number), in one line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, TypedDict

from .columns import all_column_specs, column

KIND_TYPES: dict[str, Any] = {"text": str, "int": int, "float": float, "bool": bool, "floats": list[float]}

# what a row may carry besides its columns: it goes to run.json, never to results.csv (the store drops it)
SIDE_KEYS: dict[str, Any] = {"metric_notes": dict[str, str]}  # {metric: why it was not measured}

# total=False: a row holds the columns it knows (identity first, metrics once measured); missing = empty cell
ResultRow = TypedDict(  # type: ignore[misc]  # generated from the spec, like the header
    "ResultRow",
    {**{c.name: KIND_TYPES[c.kind] | None for c in all_column_specs()}, **SIDE_KEYS},
    total=False,
)


def _number(name: str, value: Any, kind: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"results column {name} ({kind}) cannot hold {value!r}")
    if kind == "int":
        if isinstance(value, numbers.Integral):
            return int(value)
        if float(value).is_integer():
            return int(value)
        raise ValueError(f"results column {name} (int) cannot hold {value!r}")
    # numpy scalars become Python's; an integer stays an integer (its CSV text is the same)
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _checked(name: str, value: Any) -> Any:
    if name in SIDE_KEYS:
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"row key {name} holds a mapping, not {value!r}")
        return value
    spec = column(name)
    if spec is None:
        raise ValueError(f"{name!r} is not a results.csv column (vimbench.results.columns)")
    if value is None:
        return None
    kind = spec.kind
    if kind == "text":
        if not isinstance(value, str):
            raise ValueError(f"results column {name} (text) cannot hold {value!r}")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if getattr(getattr(value, "dtype", None), "kind", "") == "b":  # numpy's bool scalar
            return bool(value)
        raise ValueError(f"results column {name} (bool) cannot hold {value!r}")
    if kind == "floats":
        if not isinstance(value, list | tuple):
            raise ValueError(f"results column {name} (floats) cannot hold {value!r}")
        return [_number(name, v, "float") for v in value]
    return _number(name, value, kind)


def typed_row(values: Mapping[str, Any]) -> ResultRow:
    """`values` checked against the column spec: ValueError (one line) for a key that is no column or a
    value of the wrong kind. Numbers keep their Python type (an int stays an int), so the CSV text is
    unchanged; NaN is kept (written as an empty cell)."""
    return {name: _checked(name, value) for name, value in values.items()}  # type: ignore[return-value]


def _parse(name: str, text: str) -> Any:
    kind = column(name).kind  # type: ignore[union-attr]
    text = text.strip()
    if text == "":
        return None
    try:
        if kind == "int":
            number = float(text)
            return int(number) if number.is_integer() else number
        if kind == "float":
            return float(text)
        if kind == "bool":
            return {"true": True, "false": False}.get(text.lower(), text)
        if kind == "floats":
            return [float(v) for v in text.split()]
    except ValueError:
        return text  # not this version's kind (an older or hand-edited file): kept as written
    return text


def parse_row(cells: Mapping[str, Any]) -> ResultRow:
    """A row as results.csv holds it (every cell text) -> typed values; empty cells -> None. Columns this
    version does not know are left out. `cell_text(parse_row(r)[c]) == r[c]` for text the store wrote."""
    row: dict[str, Any] = {}
    for name, text in cells.items():
        if column(name) is None:
            continue
        if isinstance(text, float) and math.isnan(text):
            row[name] = None
        else:
            row[name] = _parse(name, "" if text is None else str(text))
    return row  # type: ignore[return-value]
