"""`vimbench reproduce fig1 --predict`, the rendering: the paper's Fig. 1 memory beside predicted curves,
and the fit, from the PREDICTED_FILE that `vimbench.reproduce` leaves in the run folder (so `report.md` and
the memory figure of that folder show it whenever they are redrawn).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .markdown import md_table

PREDICTED_FILE = "fig1_predicted.json"
FIGURE = "memory-predicted"
STYLES = {"vim-t": ("tab:green", "Vim-Ti"), "deit-t": ("tab:red", "DeiT-Ti")}


def load_prediction(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / PREDICTED_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _label(fit: dict[str, Any]) -> str:
    return (f"{fit['dtype']}, DeiT {fit['attn_backend']}, Vim {fit['vim_variant']}, "
            f"batch {fit['batch_size']}, overhead {fit['overhead_mib']:.0f} MiB")  # fmt: skip


def prediction_section(data: dict[str, Any]) -> str:
    """Markdown: best fit beside the paper, every setting's fit, and what it says about 86.8%."""
    best = data["fits"][0]
    rows = []
    for i, (paper_res, res) in enumerate(zip(data["paper_resolutions"], data["resolutions"], strict=True)):
        row: list[Any] = [paper_res, res]
        for model in STYLES:
            theirs = data["paper_gb"][model][i]
            ours = best["predicted_gib"][model][i]
            error = "" if theirs is None else f" ({100 * (ours - theirs) / theirs:+.1f}%)"
            row += ["OOM" if theirs is None else f"{theirs:.2f}", f"{ours:.2f}{error}"]
        rows.append(row)
    table = md_table(["paper res", "res", "Vim-Ti paper GB", "Vim-Ti predicted GiB", "DeiT-Ti paper GB",
                      "DeiT-Ti predicted GiB"], rows)  # fmt: skip
    fits = md_table(
        ["dtype", "DeiT attention", "Vim", "batch", "overhead MiB", "mean abs error", "max abs error",
         "DeiT-Ti 1248 GiB"],
        [[f["dtype"], f["attn_backend"], f["vim_variant"], f["batch_size"], f"{f['overhead_mib']:.0f}",
          f"{f['mean_abs_error_pct']:.1f}%", f"{f['max_abs_error_pct']:.1f}%",
          f"{f['predicted_gib']['deit-t'][-1]:.1f}"] for f in data["fits"]],
    )  # fmt: skip
    return "\n\n".join([
        "## Predicted memory (no GPU): which settings reproduce Fig. 1?",
        f"Best fit: **{_label(best)}**, mean absolute error {best['mean_abs_error_pct']:.1f}% "
        f"(max {best['max_abs_error_pct']:.1f}%) over the paper's nine measured memory points.",
        table,
        "**What it says about 86.8%.** " + data["statement"],
        "Every setting, each with its own best batch size and overhead (the top three re-traced exactly at "
        "that batch; the others from the affine-in-batch shortcut):",
        fits,
        f"Method: {data['method']}. Traced on {data.get('traced_on', 'an unrecorded machine')}. A "
        "prediction (an estimate), not a measurement: scripts/gpu_validate.sh checks it on a GPU.",
    ])  # fmt: skip


def draw_predicted(ax, data: dict[str, Any]) -> list[float]:
    """Predicted curves of the best fit (solid) and the runner-up (dotted), MiB, on a memory axis."""
    values: list[float] = []
    for rank, fit in enumerate(data["fits"][:2]):
        for model, (color, name) in STYLES.items():
            y = [v * 1024 for v in fit["predicted_gib"][model]]
            style, alpha = ("-", 1.0) if rank == 0 else (":", 0.6)
            ax.plot(data["resolutions"], y, style, color=color, alpha=alpha,
                    label=f"{name} predicted ({_label(fit)})")  # fmt: skip
            values.extend(y)
    return values


def draw_prediction_figure(run_dir: str | Path, data: dict[str, Any]) -> list[Path]:
    """memory-predicted.{png,svg}: the paper's points and the fitted curves (works without measurements)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    draw_predicted(ax, data)
    for model, (color, name) in STYLES.items():
        pts = [(r, gb) for r, gb in zip(data["resolutions"], data["paper_gb"][model], strict=True) if gb]
        ax.plot([p[0] for p in pts], [p[1] * 1024 for p in pts], "s", mfc="white", color=color,
                label=f"{name} paper Fig. 1 (GB read as GiB)")  # fmt: skip
        oom = [r for r, gb in zip(data["resolutions"], data["paper_gb"][model], strict=True) if gb is None]
        if oom:
            ax.plot(oom, [80 * 1024] * len(oom), "X", color=color, markersize=10, linestyle="none",
                    label=f"{name} paper: OOM (drawn at 80 GiB)")  # fmt: skip
    ax.axhline(80 * 1024, color="gray", linewidth=0.8, linestyle="--")
    ax.set_yscale("log")
    ax.set_xlabel("resolution (px)")
    ax.set_ylabel("GPU memory (MiB), predicted NVML")
    ax.set_title("Fig. 1 memory: paper vs prediction from fake-tensor traces (no GPU)", fontsize="medium")
    ax.legend(fontsize="x-small")
    written = []
    for fmt in ("png", "svg"):
        target = Path(run_dir) / f"{FIGURE}.{fmt}"
        fig.savefig(target, dpi=150, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def write_prediction_report(run_dir: str | Path, data: dict[str, Any]) -> Path:
    """report.md of a prediction-only folder (nothing measured)."""
    target = Path(run_dir) / "report.md"
    parts = ["# Vim paper Fig. 1 memory, predicted without a GPU",
             f"![{FIGURE}]({FIGURE}.png)", prediction_section(data)]  # fmt: skip
    target.write_text("\n\n".join(parts) + "\n")
    return target
