"""A run folder: `results.csv` (one row per point, appended as each finishes) and `run.json`.

Appends are crash-safe and process-safe: each row is formatted in memory, then written with one `write` on
an O_APPEND descriptor under an exclusive `flock`; a torn tail left by a killed writer is cut off before the
next append, and readers skip it. So a reader never sees half a row and nothing measured is ever lost.
A last line without its newline that is a whole row (as many fields as the header, quotes closed: a file
saved by an editor or a tool that drops the final newline) is a row, not a torn tail: readers keep it and
the next append first completes its line.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vimbench.results import (
    ALL_COLUMNS,
    CORE_COLUMNS,
    RESULTS_FILE,
    RUN_FILE,
    SCHEMA_VERSION,
    ResultRow,
    cell_text,
    parse_row,
    point_key,
    read_run_json,
)
from vimbench.results.columns import header_schema_version
from vimbench.results.csvtext import bad_row_error, complete_text, decode, fields, row_problem, tail_is_row

# kept under these names for the code that writes runs; the spec lives in vimbench.results
RESULT_COLUMNS: tuple[str, ...] = CORE_COLUMNS


def format_value(value: Any) -> str:
    """CSV text for one cell (vimbench.results.cell_text)."""
    return cell_text(value)


def _csv_line(values: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[int]:
    """An fd of `path` held under flock: exclusive ones create the file and append (every write lands at the
    end); shared ones only read, so read-only result folders can be read."""
    flags = os.O_RDWR | os.O_CREAT | os.O_APPEND if exclusive else os.O_RDONLY
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield fd
    finally:
        os.close(fd)  # releases the lock


class ResultsStore:
    """results.csv and run.json in `run_dir` (created on first write)."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / RESULTS_FILE
        self.run_json_path = self.run_dir / RUN_FILE

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row atomically (header first if the file is new). Unknown keys are dropped."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.csv_path, exclusive=True) as fd:
            size = os.fstat(fd).st_size
            raw = os.pread(fd, size, 0) if size else b""
            text = ""
            if raw and not raw.endswith(b"\n"):
                end = raw.rfind(b"\n")
                if end < 0 or tail_is_row(raw, end):  # a whole last row, its newline missing: finish it
                    text = "\n"
                else:  # a writer died mid-line: drop its fragment
                    os.ftruncate(fd, end + 1)
                    raw = raw[: end + 1]
            header = self._header(raw)
            text += "" if raw else _csv_line(header)
            # a resumed older file keeps its schema: its header decides the columns and the version
            values = {**row, "schema_version": header_schema_version(header)}
            text += _csv_line([format_value(values.get(col)) for col in header])
            data = text.encode("utf-8")
            written = os.write(fd, data)
            while written < len(data):  # regular files write fully; be safe anyway
                written += os.write(fd, data[written:])
            os.fsync(fd)

    def _header(self, raw: bytes) -> tuple[str, ...]:
        if not raw:
            return ALL_COLUMNS
        end = raw.find(b"\n")
        header = tuple(fields(decode(raw[:end] if end >= 0 else raw)) or ())
        if header[: len(RESULT_COLUMNS)] != RESULT_COLUMNS:
            raise ValueError(
                f"{self.csv_path} does not start with the results.csv header (it starts with "
                f"{', '.join(header[:3]) or 'nothing readable'}...); not appending to it"
            )
        return header

    def check_header(self) -> None:
        """ValueError (one line) unless results.csv is missing, empty or starts with our header: called
        before a resumed sweep measures anything, so a foreign file costs no measurement."""
        if not self.csv_path.is_file():
            return
        with _locked(self.csv_path, exclusive=False) as fd:
            raw = os.pread(fd, 64 * 1024, 0)
        if raw:
            self._header(raw)

    def unrecordable(self, row: Mapping[str, Any]) -> list[str]:
        """Columns of `row` with a value that an existing results.csv of an older schema has no column for
        (a resumed run: its rows keep their schema, and loading fills those columns with ""). Checked before
        a resumed sweep measures anything, so no measurement is dropped at append time."""
        if not self.csv_path.is_file():
            return []
        with _locked(self.csv_path, exclusive=False) as fd:
            raw = os.pread(fd, 64 * 1024, 0)
        if not raw:
            return []
        header = self._header(raw)
        return [k for k, v in row.items() if k in ALL_COLUMNS and k not in header and format_value(v) != ""]

    def rows(self) -> list[dict[str, str]]:
        """Every complete row, as strings (the CSV's own text)."""
        if not self.csv_path.is_file():
            return []
        with _locked(self.csv_path, exclusive=False) as fd:
            raw = os.pread(fd, os.fstat(fd).st_size, 0)
        text = complete_text(raw)
        if not text:
            return []
        rows = []
        reader = csv.DictReader(io.StringIO(text))
        for record in reader:
            problem = row_problem(record)
            if problem:
                raise bad_row_error(self.csv_path, reader.line_num, problem)
            rows.append(dict(record))
        return rows

    def typed_rows(self) -> list[ResultRow]:
        """Every complete row as a ResultRow (vimbench.results.parse_row: typed, empty cells None)."""
        return [parse_row(r) for r in self.rows()]

    def done_keys(self, statuses: Sequence[str] | None = None) -> set[tuple[str, ...]]:
        """schema.point_key of every recorded row (optionally only rows with one of `statuses`)."""
        return {point_key(r) for r in self.rows() if statuses is None or r.get("status") in statuses}

    def write_run_json(self, meta: Mapping[str, Any]) -> None:
        """Write run.json atomically (temp file + rename), stamped with the schema version."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        meta = {"schema_version": SCHEMA_VERSION, **meta}
        tmp = self.run_json_path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.run_json_path)

    def read_run_json(self) -> dict[str, Any]:
        """run.json as a dict ({} when missing); ValueError (one line) when it is not a JSON object."""
        return read_run_json(self.run_json_path)
