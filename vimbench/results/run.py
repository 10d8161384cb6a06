"""`Run.load`: a run folder (results.csv + run.json) read once, migrated to the current schema and typed by
the column spec. compare, plot, report, reproduce, gate and the tests all read runs through it.

`Run.table` is every complete row in file order (a resumed point appears once per attempt); `Run.results`
is what curves and reports show: the latest row of each point, sorted by model and resolution.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from .cells import point_key
from .columns import (
    POINT_KEY,
    SCHEMA_VERSION,
    all_columns,
    core_columns,
    numeric_columns,
)
from .csvtext import bad_row_error, complete_text, row_problem
from .row import ResultRow, parse_row

RESULTS_FILE = "results.csv"
RUN_FILE = "run.json"


class ResultsError(ValueError):
    """A results.csv that cannot be read (missing, empty, not a vimbench results.csv, too new): one line."""


class RunMetaError(ResultsError):
    """A run.json that cannot be read."""


def _read_csv(csv_path: Path, given: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        where = f"in {given}" if given.is_dir() else f"at {given}"
        raise ResultsError(f"no results.csv {where}")
    try:
        text = complete_text(csv_path.read_bytes())
    except OSError as exc:
        raise ResultsError(f"cannot read {csv_path}: {exc.strerror}") from None
    if not text.strip():
        raise ResultsError(f"{csv_path} is empty")
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{csv_path} is not a readable CSV: {str(exc).splitlines()[0]}") from None
    missing = [c for c in core_columns() if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ResultsError(f"{csv_path} is not a vimbench results.csv: missing column(s) {shown}")
    for line, record in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        problem = row_problem(record)
        if problem:
            raise ResultsError(str(bad_row_error(csv_path, line, problem)))
    return frame


# ------------------------------------------------------------------------------------------------ schema


def _v1_to_v2(frame: pd.DataFrame) -> pd.DataFrame:
    """Schema 1 (results written before the column spec) had no schema_version column and no energy
    metric; its columns are a subset of schema 2's with the same meaning, so rows gain empty new columns."""
    frame = frame.copy()
    frame["schema_version"] = "2"
    return frame


def _v2_to_v3(frame: pd.DataFrame) -> pd.DataFrame:
    """Schema 3 added the timm_kwargs option column (timm create_model keyword arguments). Nothing before it
    could pass any, so every older row gets "": no kwargs (for every family: the column's empty value)."""
    frame = frame.copy()
    frame["timm_kwargs"] = ""
    frame["schema_version"] = "3"
    return frame


# version N -> a function taking a frame of version N to N + 1
MIGRATIONS: dict[int, Callable[[pd.DataFrame], pd.DataFrame]] = {1: _v1_to_v2, 2: _v2_to_v3}


def file_schema_version(frame: pd.DataFrame, csv_path: Path) -> int:
    """The schema a results.csv was written with: its rows' schema_version (1 when the column is absent)."""
    if "schema_version" not in frame.columns:
        return 1
    versions = {v.strip() for v in frame["schema_version"]} - {""}
    try:
        numbers = sorted(int(float(v)) for v in versions) or [1]
    except ValueError:
        raise ResultsError(f"{csv_path}: schema_version {sorted(versions)[0]!r} is not a number") from None
    if len(numbers) > 1:
        raise ResultsError(f"{csv_path}: rows of several schema versions ({numbers}); not a single run")
    return numbers[0]


def migrate(frame: pd.DataFrame, version: int, csv_path: Path) -> pd.DataFrame:
    """Bring a frame of `version` up to SCHEMA_VERSION; every current column present afterwards."""
    if version > SCHEMA_VERSION:
        raise ResultsError(
            f"{csv_path} has schema_version {version}, newer than this vimbench reads ({SCHEMA_VERSION}): "
            "upgrade vimbench"
        )
    while version < SCHEMA_VERSION:
        frame = MIGRATIONS[version](frame)
        version += 1
    missing = [c for c in all_columns() if c not in frame.columns]
    if missing:
        frame = frame.assign(**{c: "" for c in missing})
    return frame


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as floats (NaN when empty), the rest as the CSV's text (True/False spelled true/false)."""
    frame = frame.copy()
    numeric = numeric_columns()
    for col in frame.columns:
        if col in numeric:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        else:
            frame[col] = frame[col].replace({"True": "true", "False": "false"})
    return frame


def latest_per_point(frame: pd.DataFrame) -> pd.DataFrame:
    """A point measured twice (a resumed sweep) keeps its latest row; sorted by model, then resolution."""
    frame = frame[frame["model"] != ""]
    keys = pd.Series([point_key(row) for row in frame.to_dict("records")], index=frame.index, dtype=object)
    frame = frame.loc[~keys.duplicated(keep="last")]
    return frame.sort_values(["model", "img_size"], kind="stable").reset_index(drop=True)


def read_run_json(path: Path) -> dict[str, Any]:
    """run.json as a dict ({} when the file is missing); RunMetaError when it is not a JSON object."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunMetaError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise RunMetaError(f"{path}: expected a JSON object")
    return meta


# ------------------------------------------------------------------------------------------------- Run


@dataclass(eq=False)
class Run:
    """One run folder: its rows (current schema, typed) and its run.json (empty dict when missing)."""

    path: Path  # the run folder
    csv_path: Path
    table: pd.DataFrame  # every complete row, in file order
    meta: dict[str, Any] = field(default_factory=dict)
    text_table: pd.DataFrame | None = None  # the same rows as written (every cell its CSV text)
    schema_version: int = SCHEMA_VERSION  # what the results.csv was written with (before migration)
    meta_schema_version: int = SCHEMA_VERSION  # what run.json says (1 when it says nothing)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Run:
        """A run folder or a results.csv (run.json beside it is read when present).

        ResultsError (a ValueError, one line) when the CSV is missing, empty, not a vimbench results.csv or
        newer than this code; RunMetaError when run.json is not a JSON object.
        """
        given = Path(path)
        if not given.exists():
            raise ResultsError(f"no results.csv at {given}: {given} does not exist")
        csv_path = given / RESULTS_FILE if given.is_dir() else given
        folder = csv_path.parent
        raw = _read_csv(csv_path, given)
        version = file_schema_version(raw, csv_path)
        text = migrate(raw, version, csv_path)
        meta = read_run_json(folder / RUN_FILE)
        meta_version = meta.get("schema_version", 1) if meta else SCHEMA_VERSION
        return cls(folder, csv_path, typed(text), meta, text, version, int(meta_version))

    @cached_property
    def results(self) -> pd.DataFrame:
        """The latest row of each point, sorted by model and resolution (what curves and reports show)."""
        return latest_per_point(self.table)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config") or {}

    @property
    def environment(self) -> dict[str, Any]:
        return self.meta.get("environment") or {}

    def device_names(self) -> list[str]:
        return sorted({d for d in self.results["device_name"] if d})

    def rows(self) -> list[ResultRow]:
        """Every row (file order) as a ResultRow (typed by the column spec; empty cells None)."""
        text = self.text_table if self.text_table is not None else self.table
        return [parse_row(r) for r in text.to_dict("records")]


__all__ = ["POINT_KEY", "RESULTS_FILE", "RUN_FILE", "ResultsError", "Run", "RunMetaError"]
