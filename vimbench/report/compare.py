"""Side by side: two models' rows of one run, per resolution, with speedup, memory saving and the paper's
Fig. 1 numbers beside them when Vim-Ti and DeiT-Ti are compared at the paper's resolutions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from vimbench.results import number as _num
from vimbench.results import option_names, point_key, saving_pct, speedup

from . import paper


def matching_rows(frame: pd.DataFrame, model: str, filters: Mapping[str, Any]) -> pd.DataFrame:
    """Rows of `model` matching every `filters` column (bools compare as true/false).

    A cell "-" means the setting does not apply to that model (a scan backend for DeiT, an attention backend
    for Vim), so it matches any filter value; so does a filter on an option the model's family does not have.
    """
    rows = frame[frame["model"] == model]
    foreign = set(option_names()) - _own_options(model)
    for column, wanted in filters.items():
        if wanted is None or column not in rows.columns or column in foreign:
            continue
        text = ("true" if wanted else "false") if isinstance(wanted, bool) else str(wanted)
        rows = rows[rows[column].astype(str).str.lower().isin({text.lower(), f"{text}.0", "-"})]
    return rows


def _own_options(model: str) -> set[str]:
    """The option columns `model`'s family has (every one when this install does not know the model)."""
    from vimbench.models import get_spec

    try:
        return {opt.name for opt in get_spec(model).options}
    except ValueError:
        return set(option_names())


def select_rows(frame: pd.DataFrame, model: str, filters: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """img_size -> the latest row of `model` matching `filters` (see `matching_rows`)."""
    picked: dict[int, dict[str, Any]] = {}
    for record in matching_rows(frame, model, filters).to_dict("records"):
        size = _num(record.get("img_size"))
        if size is not None:
            picked[int(size)] = record  # later rows win: a resumed or re-run point replaces the old one
    return picked


def configurations(frame: pd.DataFrame, model: str) -> set[tuple[str, ...]]:
    """Distinct measured configurations of `model` (point_key without the resolution)."""
    rows = frame[frame["model"] == model].to_dict("records")
    return {tuple(v for i, v in enumerate(point_key(r)) if i != 1) for r in rows}


def compare_rows(
    frame: pd.DataFrame, model_a: str, model_b: str, filters: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One dict per resolution either model has: throughput, speedup (a/b), peak memory, saving of a vs b."""
    a_rows = select_rows(frame, model_a, filters or {})
    b_rows = select_rows(frame, model_b, filters or {})
    out = []
    for size in sorted(set(a_rows) | set(b_rows)):
        a, b = a_rows.get(size, {}), b_rows.get(size, {})
        entry: dict[str, Any] = {
            "img_size": size,
            "tokens": a.get("tokens") or b.get("tokens"),
            "a_status": a.get("status", "missing"),
            "b_status": b.get("status", "missing"),
            "a_throughput": _num(a.get("throughput")) if a.get("status") == "ok" else None,
            "b_throughput": _num(b.get("throughput")) if b.get("status") == "ok" else None,
            "a_peak_mib": _num(a.get("peak_mem_mib")) if a.get("status") == "ok" else None,
            "b_peak_mib": _num(b.get("peak_mem_mib")) if b.get("status") == "ok" else None,
            "mem_source": a.get("peak_mem_source") or b.get("peak_mem_source") or "",
            "a_noisy": str(a.get("noisy", "")).lower() == "true",
            "b_noisy": str(b.get("noisy", "")).lower() == "true",
        }
        ta, tb = entry["a_throughput"], entry["b_throughput"]
        ma, mb = entry["a_peak_mib"], entry["b_peak_mib"]
        entry["speedup"] = speedup(ta, tb)
        entry["mem_saving_pct"] = saving_pct(ma, mb)
        entry.update(_paper(model_a, model_b, size))
        out.append(entry)
    return out


def _paper(model_a: str, model_b: str, size: int) -> dict[str, Any]:
    """The paper's Fig. 1 numbers for this pair at this size, or {} when the paper has none."""
    pa, pb = paper.paper_point(model_a, size), paper.paper_point(model_b, size)
    if pa is None or pb is None:
        return {}
    fa, fb = pa["fps"], pb["fps"]  # Fig. 1 plots an FPS even where its memory curve is OOM (DeiT-Ti 1248)
    ga, gb = pa["memory_gb"], pb["memory_gb"]
    return {
        "paper_res": pa["paper_res"],
        "paper_a_fps": fa,
        "paper_b_fps": fb,
        "paper_speedup": paper.paper_speedup(size, model_a, model_b),
        "paper_a_gb": ga,
        "paper_b_gb": gb,
        "paper_mem_saving_pct": paper.paper_memory_saving_pct(size, model_a, model_b),
    }
