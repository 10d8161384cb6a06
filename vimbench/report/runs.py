"""A run folder as plots and reports see it: results.csv as typed rows, run.json, lines and Vim/DeiT pairs.

One line of a curve is one measured configuration: every POINT_KEY field except the resolution. Never mix two
configurations (e.g. two batch sizes or two GPUs) in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vimbench.metrics.peak_memory import MEMORY_SOURCES
from vimbench.results import OPTION_SHORT, POINT_KEY, Run, option_names, saving_pct, speedup

CONFIG_KEYS: tuple[str, ...] = tuple(k for k in POINT_KEY if k != "img_size")
OOM_STATUSES = ("oom", "skipped-oom")
__all__ = ["CONFIG_KEYS", "MEMORY_SOURCES", "OOM_STATUSES", "Line", "Pair", "Run", "lines", "vim_deit_pairs"]


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
        elif key in option_names():
            if value not in ("", "-"):
                parts.append(f"{OPTION_SHORT.get(key, key)} {value}")
        elif key == "compile":
            parts.append("compiled" if value == "true" else "eager")
        elif key == "channels_last":
            parts.append("channels_last" if value == "true" else "contiguous")
        elif value:
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
    table["speedup"] = _pairwise(speedup, table["vim_throughput"], table["deit_throughput"]).where(both_ok)
    table["memory_saving_pct"] = _pairwise(
        saving_pct, table["vim_peak_mem_mib"], table["deit_peak_mem_mib"]
    ).where(both_ok)
    for side in ("vim", "deit"):
        table[f"{side}_status"] = table[f"{side}_status"].fillna("not measured")
    return table.reset_index(drop=True)


def _pairwise(ratio, a: pd.Series, b: pd.Series) -> pd.Series:
    """`ratio` (vimbench.results.speedup / saving_pct) of each pair of values; NaN where it is undefined."""
    values = [ratio(x, y) for x, y in zip(a, b, strict=True)]
    return pd.Series([float("nan") if v is None else v for v in values], index=a.index, dtype=float)
