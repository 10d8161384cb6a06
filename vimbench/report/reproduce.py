"""`vimbench reproduce fig1`: the Vim paper's Fig. 1 (Vim-Ti vs DeiT-Ti) measured here, and a report.

The claim under test: at 1248 px Vim-Ti is 2.8x faster than DeiT-Ti and needs 86.8% less GPU memory.
Neither GPU nor batch size is stated in the paper, so the report lists every setting and says under which of
them the claim holds in this run. With `--attn-backend both`, DeiT-Ti runs with the explicit (math) and the
fused (sdpa) attention, which shows whether the claim depends on the attention kernel.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vimbench.measure.plan import SweepConfig, config_to_json

from . import paper
from .fig1_report import write_fig1_report
from .plots import plot_runs

FIG1_MODELS = ("vim-t", "deit-t")
ATTN_CHOICES = ("math", "sdpa", "both")
FIG1_METRICS = ("throughput", "memory", "speedup")
REPRODUCE_FILE = "reproduce.json"
OFF_GRID_NOTE = (
    "note: the paper's 738 px is off the 16-pixel patch grid; measured at 736 px instead (a stride-16 patch "
    "conv sees 46x46 = 2116 patches at both sizes, so it is the same workload)"
)


def run_sweep(config: SweepConfig) -> Path:
    """The sweep engine (imported here so tests can stand in a quick fake)."""
    from vimbench.measure.sweep import run_sweep as engine

    return engine(config)


def fig1_configs(
    out_dir: Path,
    device: str = "auto",
    batch_size: int = 1,
    dtype: str = "fp32",
    attn_backend: str = "both",
    resume: bool = False,
    **knobs: Any,
) -> list[SweepConfig]:
    """The sweeps of one Fig. 1 reproduction, all writing into out_dir.

    `both`: Vim-Ti and DeiT-Ti (math attention), then DeiT-Ti again with sdpa, resuming into the same folder.
    `knobs` are further SweepConfig fields (scan_backend, iters, repeats, min_time_s, timeout_s, threads...).
    """
    if attn_backend not in ATTN_CHOICES:
        raise ValueError(f"unknown attention backend {attn_backend!r}; use one of {', '.join(ATTN_CHOICES)}")
    base = SweepConfig(
        models=list(FIG1_MODELS),
        resolutions=list(paper.MEASURED_RESOLUTIONS),
        batch_size=batch_size,
        dtype=dtype,
        device=device,
        mode="infer",
        attn_backend="math" if attn_backend == "both" else attn_backend,
        out_dir=out_dir,
        resume=resume,
        plots=False,  # drawn once at the end, with the paper's points
        **knobs,
    )
    if attn_backend != "both":
        return [base]
    return [base, replace(base, models=["deit-t"], attn_backend="sdpa", resume=True)]


def default_out_dir(root: Path = Path("results/runs")) -> Path:
    return root / f"fig1-{datetime.now(UTC):%Y%m%d-%H%M%S}"


def reproduce_fig1(
    configs: list[SweepConfig],
    argv: list[str] | None = None,
    echo: Callable[[str], None] = print,
    predict: bool = False,
) -> Path:
    """Run the sweeps, then draw the figures (with the paper's points) and write report.md. -> run folder."""
    echo(OFF_GRID_NOTE)
    run_dir: Path | None = None
    for config in configs:
        run_dir = Path(run_sweep(config))
    assert run_dir is not None, "fig1_configs returns at least one sweep"
    record = {
        "argv": list(argv if argv is not None else sys.argv),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "sweeps": [config_to_json(c) for c in configs],
        "note": OFF_GRID_NOTE,
    }
    (run_dir / REPRODUCE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return redraw_fig1(run_dir, predict=predict, echo=echo)


def redraw_fig1(run_dir: str | Path, predict: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Figures (with the paper's points) and report.md of a Fig. 1 run folder, from what it holds.

    `predict`: first compute the no-GPU memory prediction and fit (kept in the folder, shown from then on).
    """
    if predict:
        from .fig1_predict import compute_prediction, draw_prediction_figure

        draw_prediction_figure(run_dir, compute_prediction(run_dir, echo))
    plot_runs([run_dir], run_dir, FIG1_METRICS, paper=True)
    return write_fig1_report(run_dir)


def predict_fig1(out_dir: str | Path, echo: Callable[[str], None] = print) -> Path:
    """Only the prediction (nothing measured): fig1_predicted.json, memory-predicted.png, report.md."""
    from .fig1_predict import compute_prediction, draw_prediction_figure, write_prediction_report

    data = compute_prediction(out_dir, echo)
    draw_prediction_figure(out_dir, data)
    return write_prediction_report(out_dir, data)

