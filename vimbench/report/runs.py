"""A run folder as plots and reports see it: results.csv as typed rows, run.json, lines and Vim/DeiT pairs.

One line of a curve is one measured configuration: every POINT_KEY field except the resolution. Never mix two
configurations (e.g. two batch sizes or two GPUs) in one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vimbench.measure.schema import POINT_KEY, RESULT_COLUMNS, as_text, point_key
from vimbench.measure.store import NUMERIC_COLUMNS, read_results

CONFIG_KEYS: tuple[str, ...] = tuple(k for k in POINT_KEY if k != "img_size")
OOM_STATUSES = ("oom", "skipped-oom")
# what each peak_mem_source means, for axis labels and reports
MEMORY_SOURCES = {
    "nvml-process": "NVML, this process",
    "nvml-device-delta": "NVML, device used minus pre-run baseline",
    "torch-reserved": "torch allocator, reserved",
    "rss": "process RSS (CPU run: not GPU memory)",
}


def normalize_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Every contract column present; numbers as floats (NaN when empty), the rest as plain strings.

    A point measured twice (a resumed sweep) keeps its latest row.
    """
    frame = frame.copy()
    for col in RESULT_COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
    for col in frame.columns:
        if col in NUMERIC_COLUMNS:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
        else:
            frame[col] = frame[col].map(as_text)
    frame = frame[frame["model"] != ""]
    keys = pd.Series([point_key(row) for row in frame.to_dict("records")], index=frame.index, dtype=object)
    frame = frame.loc[~keys.duplicated(keep="last")]
    return frame.sort_values(["model", "img_size"], kind="stable").reset_index(drop=True)


@dataclass(eq=False)
class Run:
    """One run folder: its rows and its run.json (empty dict when that file is missing)."""

    path: Path
    results: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

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


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder; ValueError (one line) when it is not one."""
    path = Path(run_dir)
    if not path.exists():
        raise ValueError(f"run folder {path} does not exist")
    if path.is_file():  # a results.csv given directly
        path = path.parent
    results = normalize_results(read_results(path))
    meta: dict[str, Any] = {}
    meta_file = path / "run.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{meta_file} is not valid JSON: {exc}") from None
    return Run(path, results, meta if isinstance(meta, dict) else {})


@dataclass(eq=False)
class Line:
    """One configuration of one run: its rows sorted by resolution."""

    run: Run
    config: dict[str, str]
    rows: pd.DataFrame

    @property
    def ok(self) -> pd.DataFrame:
        return self.rows[(self.rows["status"] == "ok") & self.rows["throughput"].notna()]

    @property
    def failed(self) -> pd.DataFrame:
        return self.rows[self.rows["status"] != "ok"]


def lines(run: Run) -> list[Line]:
    """The run's configurations, in a stable order (model, then the other knobs)."""
    frame = run.results
    if frame.empty:
        return []
    out = []
    for values, rows in frame.groupby(list(CONFIG_KEYS), sort=True, dropna=False):
        config = dict(zip(CONFIG_KEYS, (str(v) for v in values), strict=True))
        out.append(Line(run, config, rows.sort_values("img_size").reset_index(drop=True)))
    return out


def varying_keys(configs: list[dict[str, str]]) -> list[str]:
    """The knobs whose value differs between configurations (what a legend has to show)."""
    return [k for k in CONFIG_KEYS if len({c.get(k, "") for c in configs}) > 1]


def describe(config: dict[str, str], keys: list[str] | tuple[str, ...]) -> str:
    """A short human label for the given knobs of a configuration: "vim-t, bs 8, fp16, attn sdpa"."""
    parts = []
    for key in keys:
        value = config.get(key, "")
        if key == "batch_size":
            parts.append(f"bs {value}")
        elif key == "scan_backend" and value not in ("", "-"):
            parts.append(f"scan {value}")
        elif key == "attn_backend" and value not in ("", "-"):
            parts.append(f"attn {value}")
        elif key == "compile":
            parts.append("compiled" if value == "true" else "eager")
        elif key == "channels_last":
            parts.append("channels_last" if value == "true" else "contiguous")
        elif key not in ("scan_backend", "attn_backend") and value:
            parts.append(value)
    return ", ".join(parts)


@dataclass(eq=False)
class Pair:
    """A Vim line and the DeiT line of the same size and settings, joined on resolution."""

    vim: Line
    deit: Line
    table: pd.DataFrame  # img_size, tokens, vim_*, deit_*, speedup, memory_saving_pct


_PAIR_MATCH = ("batch_size", "dtype", "mode", "compile", "channels_last", "device_name")


def _baseline(model: str) -> str | None:
    """The model a registered model is paired with in reports (its spec's `baseline`: vim-t -> deit-t)."""
    from vimbench.models import get_spec

    try:
        return get_spec(model).baseline
    except ValueError:  # a model this install does not know (an old run, a missing optional family)
        return None


def vim_deit_pairs(run: Run) -> list[Pair]:
    """Every (model, its baseline) pair of lines measured with the same batch, dtype, mode and device.

    speedup = Vim throughput / DeiT throughput; memory_saving_pct = 100 * (1 - Vim memory / DeiT memory);
    both only where both points are ok (NaN otherwise: the statuses say why).
    """
    all_lines = lines(run)
    baselines = {ln.config["model"]: _baseline(ln.config["model"]) for ln in all_lines}
    pairs = []
    for vim in all_lines:
        for deit in all_lines:
            if baselines[vim.config["model"]] != deit.config["model"]:
                continue
            if any(vim.config[k] != deit.config[k] for k in _PAIR_MATCH):
                continue
            pairs.append(Pair(vim, deit, _join(vim.rows, deit.rows)))
    return pairs


def _join(vim_rows: pd.DataFrame, deit_rows: pd.DataFrame) -> pd.DataFrame:
    cols = ["img_size", "tokens", "status", "throughput", "peak_mem_mib", "peak_mem_source"]
    table = pd.merge(
        vim_rows[cols].add_prefix("vim_").rename(columns={"vim_img_size": "img_size"}),
        deit_rows[cols].add_prefix("deit_").rename(columns={"deit_img_size": "img_size"}),
        on="img_size",
        how="outer",
    ).sort_values("img_size")
    table["tokens"] = table["vim_tokens"].fillna(table["deit_tokens"])
    both_ok = (table["vim_status"] == "ok") & (table["deit_status"] == "ok")
    table["speedup"] = (table["vim_throughput"] / table["deit_throughput"]).where(both_ok)
    table["memory_saving_pct"] = (
        100.0 * (1.0 - table["vim_peak_mem_mib"] / table["deit_peak_mem_mib"])
    ).where(both_ok)
    for side in ("vim", "deit"):
        table[f"{side}_status"] = table[f"{side}_status"].fillna("not measured")
    return table.reset_index(drop=True)
