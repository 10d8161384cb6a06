"""The pieces every vimbench figure shares: legend keys and labels, colours, failed-point markers, the
resolution axis with token counts on top, log scales with plain numbers."""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from .runs import CONFIG_KEYS, OOM_STATUSES, Line, Run, describe, lines, varying_keys

RUN_STYLES = ("-", "--", ":", "-.")


def lines_of(runs: list[Run]) -> list[Line]:
    return [ln for run in runs for ln in lines(run)]


def legend_keys(all_lines: list[Line], several_runs: bool) -> tuple[list[str], list[str]]:
    """(knobs shown per line, knobs common to all lines: shown once in the title)."""
    configs = [ln.config for ln in all_lines]
    varying = varying_keys(configs)
    if several_runs and "device_name" not in varying:
        varying.append("device_name")
    shown = ["model", *[k for k in CONFIG_KEYS if k in varying and k != "model"]]
    common = [k for k in CONFIG_KEYS if k not in shown]
    return shown, common


def title(what: str, all_lines: list[Line], common: list[str]) -> str:
    if not all_lines:
        return what
    settings = describe(all_lines[0].config, [k for k in common if k != "device_name"])
    device = all_lines[0].config.get("device_name", "") if "device_name" in common else ""
    sub = "; ".join(s for s in (settings, device) if s)
    return f"{what}\n{sub}" if sub else what


def line_label(line: Line, shown: list[str], runs: list[Run]) -> str:
    label = describe(line.config, shown)
    same_device_runs = [r for r in runs if line.config["device_name"] in r.device_names()]
    if len(runs) > 1 and len(same_device_runs) > 1:  # two runs on one device: the device alone is ambiguous
        label += f" [{line.run.name}]"
    return label


def color_map(all_lines: list[Line]) -> dict[tuple, str]:
    """Same configuration (ignoring the device) -> same colour across runs; the run sets the line style."""
    cmap = plt.get_cmap("tab10")
    keys: dict[tuple, str] = {}
    for ln in all_lines:
        key = tuple(ln.config[k] for k in CONFIG_KEYS if k != "device_name")
        if key not in keys:
            keys[key] = cmap(len(keys) % 10)
    return keys


def color_of(colors: dict[tuple, str], line: Line) -> str:
    return colors[tuple(line.config[k] for k in CONFIG_KEYS if k != "device_name")]


def mark_failed(ax: Axes, line: Line, color: str, edge: float = 0.03) -> set[str]:
    """OOM as a filled X, other failures (error, timeout) as a hollow circle, at height `edge` (axes
    fraction) over the x axis; returns which kinds were drawn ("oom", "failed")."""
    failed = line.failed
    oom = failed[failed["status"].isin(OOM_STATUSES)]
    other = failed[~failed["status"].isin(OOM_STATUSES)]
    marks = {"transform": ax.get_xaxis_transform(), "clip_on": False, "linestyle": "none", "color": color}
    kinds = set()
    if not oom.empty:
        ax.plot(oom["img_size"], [edge] * len(oom), "X", markersize=10, **marks)
        kinds.add("oom")
    if not other.empty:
        ax.plot(other["img_size"], [edge] * len(other), "o", mfc="none", markersize=9, **marks)
        kinds.add("failed")
    return kinds


def failed_edge(index: int) -> float:
    """Stagger the failure marks of successive lines so that one OOM never hides another."""
    return 0.03 + 0.045 * (index % 5)


def status_handles(kinds: set[str]) -> list[Line2D]:
    """Legend entries for the failure marks actually drawn."""
    handles = []
    if "oom" in kinds:
        handles.append(Line2D([], [], marker="X", color="gray", linestyle="none", markersize=9,
                              label="OOM (marked over the x axis)"))  # fmt: skip
    if "failed" in kinds:
        handles.append(Line2D([], [], marker="o", mfc="none", color="gray", linestyle="none", markersize=8,
                              label="error / timeout"))  # fmt: skip
    return handles


def resolution_axes(ax: Axes, runs: list[Run], extra_sizes: Iterable[int] = ()) -> None:
    """Resolutions as x ticks, their token counts on a secondary axis on top."""
    sizes: dict[int, set[int]] = {}
    for run in runs:
        for size, tokens in zip(run.results["img_size"], run.results["tokens"], strict=True):
            if not np.isnan(size):
                bucket = sizes.setdefault(int(size), set())
                if not np.isnan(tokens):
                    bucket.add(int(tokens))
    for size in extra_sizes:
        sizes.setdefault(int(size), set())
    ticks = _spaced(sorted(sizes))
    if not ticks:
        return
    ax.set_xlabel("input resolution (pixels, square)")
    if len(ticks) <= 12:
        ax.set_xticks(ticks, [str(t) for t in ticks], rotation=45 if len(ticks) > 7 else 0)
        top = ax.secondary_xaxis("top")
        labels = ["/".join(str(t) for t in sorted(sizes[s])) or f"{(s // 16) ** 2 + 1}" for s in ticks]
        top.set_xticks(ticks, labels, rotation=45 if len(ticks) > 5 else 0, fontsize="small")
        top.set_xlabel("tokens (patches + cls)", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)


def _spaced(ticks: list[int], min_gap: float = 0.05) -> list[int]:
    """Drop tick labels that would overprint their left neighbour (gap under 5% of the range)."""
    if len(ticks) < 2:
        return ticks
    gap = min_gap * (ticks[-1] - ticks[0])
    kept = [ticks[0]]
    for tick in ticks[1:]:
        if tick - kept[-1] >= gap:
            kept.append(tick)
    return kept


def log_if_wide(ax: Axes, values: Iterable[float], ratio: float) -> None:
    vals = [v for v in values if v and np.isfinite(v) and v > 0]
    if vals and max(vals) / min(vals) >= ratio:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _pos: f"{value:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}" if is_2_or_5(v) else ""))


def is_2_or_5(value: float) -> bool:
    """Label the 2x and 5x minor ticks of a log axis: enough to read values without clutter."""
    if value <= 0:
        return False
    leading = value / 10 ** np.floor(np.log10(value))
    return bool(np.isclose(leading, 2.0) or np.isclose(leading, 5.0))


def finish(fig: Figure, ax: Axes, extra_handles: list[Line2D]) -> Figure:
    handles, _labels = ax.get_legend_handles_labels()
    handles = handles + extra_handles
    if handles:
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False
        )
    return fig


def new_figure() -> tuple[Figure, Axes]:
    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    return fig, ax
