"""`vimbench reproduce fig1`: the Vim paper's Fig. 1 (Vim-Ti vs DeiT-Ti) measured here, and a report.

The claim under test: at 1248 px Vim-Ti is 2.8x faster than DeiT-Ti and needs 86.8% less GPU memory.
Neither GPU nor batch size is stated in the paper, so the report lists every setting and says under which of
them the claim holds in this run. With `--attn-backend both`, DeiT-Ti runs with the explicit (math) and the
fused (sdpa) attention, which shows whether the claim depends on the attention kernel.

It runs sweeps (measure) and then draws and writes the report (report), so it sits above both.
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
from vimbench.report import paper
from vimbench.report.fig1_report import write_fig1_report
from vimbench.report.plots import plot_runs

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
    """A new, empty folder results/runs/fig1-<UTC time to the millisecond>/ (created: names never collide)."""
    from vimbench.measure.run_folder import new_dir

    return new_dir(root, lambda now: f"fig1-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}")


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
        from vimbench.report.fig1_predict import draw_prediction_figure

        draw_prediction_figure(run_dir, compute_fig1_prediction(run_dir, echo))
    plot_runs([run_dir], run_dir, FIG1_METRICS, paper=True)
    return write_fig1_report(run_dir)


def predict_fig1(out_dir: str | Path, echo: Callable[[str], None] = print) -> Path:
    """Only the prediction (nothing measured): fig1_predicted.json, memory-predicted.png, report.md."""
    from vimbench.report.fig1_predict import draw_prediction_figure, write_prediction_report

    data = compute_fig1_prediction(out_dir, echo)
    draw_prediction_figure(out_dir, data)
    return write_prediction_report(out_dir, data)


def compute_fig1_prediction(run_dir: str | Path, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit the paper's Fig. 1 memory from fake-tensor traces (vimbench.memory); write and return it."""
    import platform
    from importlib.metadata import version

    import torch

    from vimbench.measure.environment import describe_device
    from vimbench.memory.fig1_fit import MODELS, fit_fig1, headline_statement
    from vimbench.report.fig1_predict import PREDICTED_FILE

    echo("predicting Fig. 1 memory on fake tensors (no GPU): 8 settings x 10 points, minutes on 2 cores")
    resolutions = list(paper.MEASURED_RESOLUTIONS)
    paper_gb = {m: [p["memory_gb"] for p in paper.paper_points(m)] for m in MODELS}
    fits = fit_fig1(resolutions, paper_gb)
    data = {
        "traced_on": f"{describe_device('cpu')['name']} ({platform.machine()}), no GPU; torch "
        f"{torch.__version__}, vimbench {version('vimbench')}",
        "resolutions": resolutions,
        "paper_resolutions": list(paper.PAPER_RESOLUTIONS),
        "paper_gb": paper_gb,
        "fits": [f.as_dict() for f in fits],
        "statement": headline_statement(fits[0], paper.implied_deit_memory_gb()),
        "method": "predicted NVML = caching-allocator reserved peak (fake-tensor trace, vimbench.memory) + "
        "device overhead; paper GB read as GiB; target cuda, inference, Vim scan kernels as fused Triton "
        "(ours) or mamba_ssm with flipped copies (upstream)",
    }
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / PREDICTED_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return data
