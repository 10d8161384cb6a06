"""Speed and memory curves against resolution, from one or several run folders (PNG + SVG, no display).

Lines are configurations (runs.lines); several runs are told apart by line style and device in the legend.
OOM / failed points are marked on the x axis edge, where a value would be meaningless.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vimbench.metrics import Metric, all_metrics
from vimbench.results import option_names

from . import paper as fig1_paper
from .plot_parts import (
    RUN_STYLES,
    color_map,
    color_of,
    failed_edge,
    finish,
    legend_keys,
    line_label,
    lines_of,
    log_if_wide,
    mark_failed,
    new_figure,
    resolution_axes,
    status_handles,
    title,
)
from .runs import (
    CONFIG_KEYS,
    MEMORY_SOURCES,
    OOM_STATUSES,
    Run,
    describe,
    varying_keys,
    vim_deit_pairs,
)


def _curve_metrics() -> dict[str, Metric]:
    """Every registered metric drawn as a curve against resolution (vimbench.metrics), by name."""
    return {m.name: m for m in all_metrics() if m.plot}


# the figures `vimbench plot --metric` knows: one per registered metric, then the Vim/DeiT speedup
DEFAULT_METRICS: tuple[str, ...] = ("throughput", "memory")
METRICS: tuple[str, ...] = (
    *DEFAULT_METRICS, *(name for name in _curve_metrics() if name not in DEFAULT_METRICS), "speedup"
)
FORMATS: tuple[str, ...] = ("png", "svg")
_PAPER_STYLE = {
    "vim-t": ("black", "s", "paper Vim-Ti (Fig. 1)"),
    "deit-t": ("dimgray", "D", "paper DeiT-Ti (Fig. 1)"),
}


def plot_run(run_dir: Path) -> list[Path]:
    """The default throughput and memory figures of one run, written into the run folder (PNG + SVG)."""
    return plot_runs([run_dir], run_dir, DEFAULT_METRICS, paper=False)


def plot_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    metrics: Iterable[str] = DEFAULT_METRICS,
    paper: bool = False,
) -> list[Path]:
    """Draw each metric over all runs into out_dir/<metric>.{png,svg}; a metric with no data draws nothing.

    `paper` adds the Vim paper's Fig. 1 points (Vim-Ti / DeiT-Ti) to throughput, memory and speedup.
    """
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
    runs = [Run.load(d) for d in run_dirs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for metric in metrics:
        with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable and editable
            fig = _draw(metric, runs, paper)
            if fig is None:
                continue
            try:
                for fmt in FORMATS:
                    target = out / f"{metric}.{fmt}"
                    fig.savefig(target, dpi=150, bbox_inches="tight")
                    written.append(target)
            finally:
                plt.close(fig)
    return written


# ----------------------------------------------------------------------------------------------- metrics


def _draw_curves(runs: list[Run], paper_overlay: bool, name: str) -> Figure | None:
    """A registered metric against resolution, one line per configuration."""
    metric = _curve_metrics()[name]
    all_lines = lines_of(runs)
    if not all_lines or not _has_values(all_lines, metric):
        return None
    shown, common = legend_keys(all_lines, len(runs) > 1)
    colors = color_map(all_lines)
    fig, ax = new_figure()
    plotted: list[float] = []
    kinds: set[str] = set()
    failed_lines = 0
    for line in all_lines:
        color = color_of(colors, line)
        style = RUN_STYLES[runs.index(line.run) % len(RUN_STYLES)]
        ok = line.ok
        ok = ok[ok[metric.value_column].notna()]
        x = ok["img_size"].to_numpy()
        y = ok[metric.value_column].to_numpy()
        low, high = metric.band(ok) if metric.band is not None else (None, None)
        if len(x):
            ax.plot(x, y, style, marker="o", color=color, label=line_label(line, shown, runs))
            if low is not None and np.isfinite(low).any():
                ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
            plotted.extend(y)
        else:  # nothing ok: still give the configuration a legend entry
            ax.plot(
                [],
                [],
                style,
                marker="o",
                color=color,
                label=line_label(line, shown, runs) + " (no ok point)",
            )
        drawn = mark_failed(ax, line, color, failed_edge(failed_lines))
        failed_lines += bool(drawn)
        kinds |= drawn
    extra_sizes: list[int] = []
    if paper_overlay and name in _PAPER_METRICS:
        plotted.extend(_draw_paper(ax, name, failed_edge(failed_lines)))
        extra_sizes = list(fig1_paper.MEASURED_RESOLUTIONS)
        kinds |= {"oom"} if name == "memory" else set()
    if paper_overlay and name == "memory":  # `reproduce fig1 --predict` left predicted curves
        from .fig1_predict import draw_predicted, load_prediction

        for data in filter(None, (load_prediction(run.path) for run in runs)):
            plotted.extend(draw_predicted(ax, data))
    ax.set_ylabel(_memory_label(runs) if name == "memory" else metric.label)
    log_if_wide(ax, plotted, 8.0 if name == "memory" else 4.0)
    resolution_axes(ax, runs, extra_sizes)
    band = "; band: p10-p90 latency over repeats" if metric.band is not None else ""
    ax.set_title(title(metric.title + band, all_lines, common), fontsize="medium")
    return finish(fig, ax, status_handles(kinds))


# the paper's Fig. 1 has these two
_PAPER_METRICS = ("throughput", "memory")


def _has_values(all_lines: list, metric: Metric) -> bool:
    """False when points ran but none recorded the metric (energy is "-" where no counter is readable):
    no figure then. A run whose points all failed still gets one, with the failures marked."""
    ok = [line.ok for line in all_lines]
    if not any(len(rows) for rows in ok):
        return True
    return any(rows[metric.value_column].notna().any() for rows in ok)


def _memory_label(runs: list[Run]) -> str:
    sources = sorted(
        {s for run in runs for s in run.results.loc[run.results["status"] == "ok", "peak_mem_source"] if s}
    )
    if not sources:
        return "peak memory (MiB)"
    return "peak memory (MiB)\nsource: " + "; ".join(f"{s} = {MEMORY_SOURCES.get(s, s)}" for s in sources)


def _draw_paper(ax: Axes, metric: str, oom_edge: float) -> list[float]:
    """The paper's Fig. 1 points (738 plotted at 736); memory GB shown as GiB x 1024 MiB."""
    values: list[float] = []
    for model, (color, marker, label) in _PAPER_STYLE.items():
        points = fig1_paper.paper_points(model)
        ok = [p for p in points if p["status"] == "ok"]
        if metric == "throughput":
            x, y = [p["img_size"] for p in points], [p["fps"] for p in points]
        else:
            x, y = [p["img_size"] for p in ok], [p["memory_gb"] * 1024 for p in ok]
            oom = [p["img_size"] for p in points if p["status"] != "ok"]
            if oom:
                ax.plot(
                    oom,
                    [oom_edge] * len(oom),
                    "X",
                    color=color,
                    markersize=10,
                    linestyle="none",
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
        ax.plot(
            x,
            y,
            linestyle=(0, (1, 1)),
            marker=marker,
            color=color,
            mfc="white",
            label=label[:-1] + ("; GB read as GiB)" if metric == "memory" else ")"),
        )
        values.extend(y)
    return values


def _draw_speedup(runs: list[Run], paper_overlay: bool) -> Figure | None:
    """Vim over DeiT throughput at each resolution, one line per (Vim line, DeiT line) pair in a run."""
    pairs = [(run, pair) for run in runs for pair in vim_deit_pairs(run)]
    if not pairs:
        return None
    configs = [{**p.vim.config, "attn_backend": p.deit.config["attn_backend"]} for _, p in pairs]
    varying = varying_keys(configs)
    if len(runs) > 1 and "device_name" not in varying:
        varying.append("device_name")
    shown = [k for k in CONFIG_KEYS if k in varying and k != "model"]
    fig, ax = new_figure()
    cmap = plt.get_cmap("tab10")
    any_failed = False
    transform = ax.get_xaxis_transform()
    for index, ((run, pair), config) in enumerate(zip(pairs, configs, strict=True)):
        color = cmap(index % 10)
        style = RUN_STYLES[runs.index(run) % len(RUN_STYLES)]
        table = pair.table
        ok = table[table["speedup"].notna()]
        extra = describe(config, shown)
        label = f"{pair.vim.config['model']} / {pair.deit.config['model']}" + (f" ({extra})" if extra else "")
        ax.plot(ok["img_size"], ok["speedup"], style, marker="o", color=color, label=label)
        vim_ok = table["vim_status"] == "ok"
        deit_oom = table[table["deit_status"].isin(OOM_STATUSES) & vim_ok]
        deit_other = table[~table["deit_status"].isin((*OOM_STATUSES, "ok")) & vim_ok]
        vim_failed = table[~vim_ok]
        # failed points sit on the frame (axes fraction): DeiT's at the top, Vim's at the bottom
        for rows, height, marker, extra_style in (
            (deit_oom, 0.97, "^", {"markersize": 10}),
            (deit_other, 0.97, "o", {"markersize": 9, "mfc": "none"}),
            (vim_failed, 0.03, "v", {"markersize": 10}),
        ):
            if rows.empty:
                continue
            any_failed = True
            ax.plot(rows["img_size"], [height] * len(rows), marker, color=color, transform=transform,
                    clip_on=False, linestyle="none", **extra_style)
    if paper_overlay:
        sizes = fig1_paper.MEASURED_RESOLUTIONS
        ax.plot(
            sizes,
            [fig1_paper.paper_speedup(size) for size in sizes],
            linestyle=(0, (1, 1)),
            marker="s",
            mfc="white",
            color="black",
            label="paper Vim-Ti / DeiT-Ti",
        )
    ax.axhline(1.0, color="gray", linewidth=1)
    log_if_wide(ax, [v for _, pair in pairs for v in pair.table["speedup"].dropna()] + [1.0], 10.0)
    ax.set_ylabel("speedup: Vim throughput / DeiT throughput (x)")
    resolution_axes(ax, runs, fig1_paper.MEASURED_RESOLUTIONS if paper_overlay else ())
    common = [
        k for k in CONFIG_KEYS if k not in varying and k not in ("model", *option_names())
    ]
    ax.set_title(
        title("Vim speedup over DeiT at the same resolution (>1: Vim faster)", [pairs[0][1].vim], common),
        fontsize="medium",
    )
    handles = []
    if any_failed:
        handles = [
            Line2D([], [], marker="^", color="gray", linestyle="none", label="DeiT OOM, Vim ran (top edge)"),
            Line2D(
                [],
                [],
                marker="o",
                mfc="none",
                color="gray",
                linestyle="none",
                label="DeiT error / timeout (top edge)",
            ),
            Line2D([], [], marker="v", color="gray", linestyle="none", label="Vim did not run (bottom edge)"),
        ]
    return finish(fig, ax, handles)


def _draw(metric: str, runs: list[Run], paper_overlay: bool) -> Figure | None:
    if metric == "speedup":
        return _draw_speedup(runs, paper_overlay)
    return _draw_curves(runs, paper_overlay, metric)
