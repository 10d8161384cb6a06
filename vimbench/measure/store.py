"""A run folder: `results.csv` (one row per point, appended as each finishes) and `run.json`.

Appends are crash-safe and process-safe: each row is formatted in memory, then written with one `write` on
an O_APPEND descriptor under an exclusive `flock`; a torn tail left by a killed writer is cut off before the
next append, and readers skip it. So a reader never sees half a row and nothing measured is ever lost.
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
    cell_text,
    complete_text,
    point_key,
    read_run_json,
)

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
            if raw and not raw.endswith(b"\n"):  # a writer died mid-line: drop its fragment
                keep = raw.rfind(b"\n") + 1
                os.ftruncate(fd, keep)
                raw = raw[:keep]
            header = self._header(raw)
            text = "" if raw else _csv_line(header)
            values = {**row, "schema_version": SCHEMA_VERSION}
            text += _csv_line([format_value(values.get(col)) for col in header])
            data = text.encode("utf-8")
            written = os.write(fd, data)
            while written < len(data):  # regular files write fully; be safe anyway
                written += os.write(fd, data[written:])
            os.fsync(fd)

    def _header(self, raw: bytes) -> tuple[str, ...]:
        if not raw:
            return ALL_COLUMNS
        first = raw[: raw.find(b"\n")].decode("utf-8", errors="replace")
        header = tuple(next(csv.reader([first])))
        if header[: len(RESULT_COLUMNS)] != RESULT_COLUMNS:
            raise ValueError(f"{self.csv_path} does not start with the results.csv header; not appending")
        return header

    def rows(self) -> list[dict[str, str]]:
        """Every complete row, as strings (the CSV's own text)."""
        if not self.csv_path.is_file():
            return []
        with _locked(self.csv_path, exclusive=False) as fd:
            raw = os.pread(fd, os.fstat(fd).st_size, 0)
        text = complete_text(raw)
        if not text:
            return []
        return [dict(r) for r in csv.DictReader(io.StringIO(text)) if r.get("model")]

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
