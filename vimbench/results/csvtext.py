"""How a results.csv is read as text, shared by the store (appends, resume) and `Run.load`: a torn last line
is not a row, a whole last row without its newline is one, a BOM is dropped, and a line that is not a results
row is refused naming its line.

A last line without its newline that is a whole row (as many fields as the header, quotes closed: a file saved
by an editor or a tool that drops the final newline) is a row, not a torn tail: readers keep it and the next
append first completes its line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .columns import CORE_COLUMNS, STATUSES

BOM = "\ufeff"


def decode(raw: bytes) -> str:
    """UTF-8 text without a leading byte-order mark (some spreadsheet tools save one)."""
    return raw.decode("utf-8", errors="replace").removeprefix(BOM)


def fields(line: str) -> list[str] | None:
    """The cells of one CSV record, or None when `line` is not exactly one record (e.g. a quote left open)."""
    try:
        records = list(csv.reader(io.StringIO(line), strict=True))
    except csv.Error:
        return None
    return records[0] if len(records) == 1 else None


def tail_is_row(raw: bytes, end: int) -> bool:
    """Is the text after the last newline (at `end`) a whole row rather than a torn write?

    A whole row has exactly as many fields as the header; a writer killed mid-row leaves fewer (or an open
    quote). A row cut inside its last field would pass, but rows are written by one `write` each, so only a
    full disk or a power cut can produce that.
    """
    header = fields(decode(raw[: raw.find(b"\n")]))
    tail = fields(decode(raw[end + 1 :]))
    return header is not None and tail is not None and len(tail) == len(header)


def row_problem(row: Mapping[str, Any]) -> str | None:
    """Why a CSV record is not a results row (None when it is one): a model, a known status and a whole
    img_size are what every reader relies on. Other cells may be empty or odd; readers judge those."""
    model, status = str(row.get("model") or "").strip(), str(row.get("status") or "").strip()
    size = str(row.get("img_size") or "").strip()
    if not model:
        return "no model"
    if status not in STATUSES:
        return f"status {status!r} is not one of {', '.join(STATUSES)}"
    if not size.isdigit():
        return f"img_size {size!r} is not a whole number"
    return None


def bad_row_error(csv_path: Path, line: int, problem: str) -> ValueError:
    return ValueError(f"{csv_path} line {line} is not a results row ({problem}); fix or delete that line")


def complete_text(raw: bytes) -> str:
    """The file's text up to its last complete row (BOM dropped): a torn final line is not a row."""
    end = raw.rfind(b"\n")
    if end < 0:  # one line and no newline: a header alone, or nothing usable
        cells = fields(decode(raw)) or []
        return decode(raw) + "\n" if tuple(cells[: len(CORE_COLUMNS)]) == CORE_COLUMNS else ""
    if end + 1 < len(raw) and tail_is_row(raw, end):
        return decode(raw) + "\n"
    return decode(raw[: end + 1])
