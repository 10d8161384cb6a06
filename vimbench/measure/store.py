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

import pandas as pd

from .schema import RESULT_COLUMNS, STATUSES, point_key

RESULTS_FILE = "results.csv"
RUN_FILE = "run.json"
# written after the contract columns: the knobs behind each number that the contract does not name
EXTRA_COLUMNS: tuple[str, ...] = (
    "warmup",
    "min_time_s",
    "threads",
    "precision",  # cast (infer fp16/bf16) | autocast (train fp16/bf16) | fp32
    "nvml_baseline_mib",
    "rss_baseline_mib",
    "torch_version",
)
ALL_COLUMNS: tuple[str, ...] = RESULT_COLUMNS + EXTRA_COLUMNS
NUMERIC_COLUMNS = frozenset(
    {
        "img_size",
        "tokens",
        "batch_size",
        "throughput",
        "latency_ms",
        "latency_ms_p10",
        "latency_ms_p90",
        "iqr_pct",
        "iters",
        "repeats",
        "peak_mem_mib",
        "torch_peak_alloc_mib",
        "torch_peak_reserved_mib",
        "nvml_peak_mib",
        "nvml_interval_ms",
        "rss_peak_mib",
        "params",
        "gflops",
        "duration_s",
        "warmup",
        "min_time_s",
        "threads",
        "nvml_baseline_mib",
        "rss_baseline_mib",
    }
)


def format_value(value: Any) -> str:
    """CSV text for one cell: booleans as true/false, None as empty, floats to 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN
            return ""
        return format(value, ".6g") if abs(value) < 1e15 else repr(value)
    if isinstance(value, list | tuple):
        return " ".join(format_value(v) for v in value)
    return str(value).replace("\r", " ").replace("\n", " ")


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


BOM = "\ufeff"


def _decode(raw: bytes) -> str:
    """UTF-8 text without a leading byte-order mark (some spreadsheet tools save one)."""
    return raw.decode("utf-8", errors="replace").removeprefix(BOM)


def _fields(line: str) -> list[str] | None:
    """The cells of one CSV record, or None when `line` is not exactly one record (e.g. a quote left open)."""
    try:
        records = list(csv.reader(io.StringIO(line), strict=True))
    except csv.Error:
        return None
    return records[0] if len(records) == 1 else None


def _tail_is_row(raw: bytes, end: int) -> bool:
    """Is the text after the last newline (at `end`) a whole row rather than a torn write?

    A whole row has exactly as many fields as the header; a writer killed mid-row leaves fewer (or an open
    quote). A row cut inside its last field would pass, but rows are written by one `write` each, so only a
    full disk or a power cut can produce that.
    """
    header = _fields(_decode(raw[: raw.find(b"\n")]))
    tail = _fields(_decode(raw[end + 1 :]))
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


def _bad_row_error(csv_path: Path, line: int, problem: str) -> ValueError:
    return ValueError(f"{csv_path} line {line} is not a results row ({problem}); fix or delete that line")


def _complete_text(raw: bytes) -> str:
    """The file's text up to its last complete row (BOM dropped): a torn final line is not a row."""
    end = raw.rfind(b"\n")
    if end < 0:  # one line and no newline: a header alone, or nothing usable
        fields = _fields(_decode(raw)) or []
        return _decode(raw) + "\n" if tuple(fields[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS else ""
    if end + 1 < len(raw) and _tail_is_row(raw, end):
        return _decode(raw) + "\n"
    return _decode(raw[: end + 1])


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
                if end < 0 or _tail_is_row(raw, end):  # a whole last row, its newline missing: finish it
                    text = "\n"
                else:  # a writer died mid-line: drop its fragment
                    os.ftruncate(fd, end + 1)
                    raw = raw[: end + 1]
            header = self._header(raw)
            text += "" if raw else _csv_line(header)
            text += _csv_line([format_value(row.get(col)) for col in header])
            data = text.encode("utf-8")
            written = os.write(fd, data)
            while written < len(data):  # regular files write fully; be safe anyway
                written += os.write(fd, data[written:])
            os.fsync(fd)

    def _header(self, raw: bytes) -> tuple[str, ...]:
        if not raw:
            return ALL_COLUMNS
        end = raw.find(b"\n")
        header = tuple(_fields(_decode(raw[:end] if end >= 0 else raw)) or ())
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

    def rows(self) -> list[dict[str, str]]:
        """Every complete row, as strings (the CSV's own text)."""
        if not self.csv_path.is_file():
            return []
        with _locked(self.csv_path, exclusive=False) as fd:
            raw = os.pread(fd, os.fstat(fd).st_size, 0)
        text = _complete_text(raw)
        if not text:
            return []
        rows = []
        reader = csv.DictReader(io.StringIO(text))
        for record in reader:
            problem = row_problem(record)
            if problem:
                raise _bad_row_error(self.csv_path, reader.line_num, problem)
            rows.append(dict(record))
        return rows

    def done_keys(self, statuses: Sequence[str] | None = None) -> set[tuple[str, ...]]:
        """schema.point_key of every recorded row (optionally only rows with one of `statuses`)."""
        return {point_key(r) for r in self.rows() if statuses is None or r.get("status") in statuses}

    def write_run_json(self, meta: Mapping[str, Any]) -> None:
        """Write run.json atomically (temp file + rename)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_json_path.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=False, default=str) + "\n")
        os.replace(tmp, self.run_json_path)

    def read_run_json(self) -> dict[str, Any]:
        if not self.run_json_path.is_file():
            return {}
        try:
            return json.loads(self.run_json_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{self.run_json_path} is not readable JSON: {exc}") from None


def read_results(path_or_dir: str | os.PathLike[str], numeric: bool = True) -> pd.DataFrame:
    """A run dir or a results.csv -> DataFrame: numeric columns as numbers (NaN when empty or not a number;
    `numeric=False` keeps every cell's text, for readers that name a bad value), the rest as text.

    Raises ValueError with a one-line message when the file is missing, empty, not a results.csv, or holds
    a line that is not a results row.
    """
    path = Path(path_or_dir)
    csv_path = path / RESULTS_FILE if path.is_dir() else path
    if not csv_path.is_file():
        where = f"in {path}" if path.is_dir() else f"at {path}"
        raise ValueError(f"no results.csv {where}")
    try:
        text = _complete_text(csv_path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {csv_path}: {exc.strerror}") from None
    if not text.strip():
        raise ValueError(f"{csv_path} is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{csv_path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{csv_path} is not a vimbench results.csv: missing column(s) {shown}")
    for line, record in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        problem = row_problem(record)
        if problem:
            raise _bad_row_error(csv_path, line, problem)
    for col in frame.columns:
        if numeric and col in NUMERIC_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
