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

import pandas as pd

from .schema import RESULT_COLUMNS, point_key

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
    "predicted_mem_mib",  # CUDA: vimbench memory's predicted NVML figure (compare with nvml_peak_mib)
    "predicted_alloc_mib",  # CUDA: predicted torch.cuda.max_memory_allocated (torch_peak_alloc_mib)
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


def _complete_text(raw: bytes) -> str:
    """The file's text up to its last newline: a torn final line (a killed writer) is not a row."""
    end = raw.rfind(b"\n")
    return raw[: end + 1].decode("utf-8", errors="replace") if end >= 0 else ""


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
            text += _csv_line([format_value(row.get(col)) for col in header])
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
        text = _complete_text(raw)
        if not text:
            return []
        return [dict(r) for r in csv.DictReader(io.StringIO(text)) if r.get("model")]

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


def read_results(path_or_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A run dir or a results.csv -> DataFrame: numeric columns as numbers (NaN when empty), the rest as text.

    Raises ValueError with a one-line message when the file is missing, empty or not a results.csv.
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
    for col in frame.columns:
        if col in NUMERIC_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame
