"""Curves from small results.csv files: files written, not blank, legends and OOM marks, Vim/DeiT pairing.

`write_run` / `fig1_rows` build synthetic run folders; test_report.py and test_reproduce.py reuse them.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from vimbench.report.plots import plot_run, plot_runs
from vimbench.report.runs import vim_deit_pairs
from vimbench.results import CORE_COLUMNS as RESULT_COLUMNS
from vimbench.results import Run

FAKE_ENV = {
    "host": "testhost", "platform": "Linux", "python": "3.11", "torch": "2.13.0+cpu", "triton": "3.9.0",
    "cuda_runtime": None, "cudnn": None, "nvidia_driver": None, "cuda_visible_devices": None,
    "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "gpus_nvml": [], "gpus_torch": [],
    "precision": {"matmul_allow_tf32": False, "cudnn_allow_tf32": True,
                  "float32_matmul_precision": "highest"},
}  # fmt: skip


def make_row(model: str, img_size: int, status: str = "ok", throughput: float = 0.0, mem: float = 0.0,
             *, batch: int = 1, attn: str = "sdpa", scan: str = "cpu", device_name: str = "Test CPU",
             error: str = "") -> dict:  # fmt: skip
    """One results.csv row as the sweep writes it (latency p10/p90 at -5% / +10% of the median)."""
    family = model.split("-")[0]
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(model=model, family=family, img_size=img_size, tokens=(img_size // 16) ** 2 + 1,
               batch_size=batch, dtype="fp32", device="cpu", device_name=device_name, mode="infer",
               scan_backend=scan if family == "vim" else "-", attn_backend=attn if family == "deit" else "-",
               compile="false", channels_last="false", status=status, error=error)  # fmt: skip
    if status == "ok":
        latency = 1000.0 * batch / throughput
        row.update(throughput=throughput, latency_ms=latency, latency_ms_p10=0.95 * latency,
                   latency_ms_p90=1.1 * latency, iqr_pct=12.5 if img_size == 512 else 2.0,
                   noisy="true" if img_size == 512 else "false", peak_mem_mib=mem, peak_mem_source="rss",
                   iters=2, repeats=3, gflops=1.5)  # fmt: skip
    return row


def fig1_rows(attn: str = "math", batch: int = 1, deit_oom_at: int | None = 1248, models=("vim-t", "deit-t"),
              resolutions=(512, 640, 736, 1024, 1248)) -> list[dict]:  # fmt: skip
    """Vim-Ti flat-ish, DeiT-Ti quadratic: math attention 3x slower than sdpa; DeiT OOM from deit_oom_at."""
    rows = []
    for model in models:
        for res in resolutions:
            scale = (res / 512) ** 2
            if model == "vim-t":
                rows.append(make_row(model, res, "ok", 40.0 / scale, 400.0 + 100 * scale, batch=batch))
            elif deit_oom_at is not None and res >= deit_oom_at and attn == "math":
                status = "oom" if res == deit_oom_at else "skipped-oom"
                rows.append(make_row(model, res, status, attn=attn, batch=batch, error="out of memory"))
            else:
                slow = 3.0 if attn == "math" else 1.0
                throughput, mem = 60.0 / (scale**1.5 * slow), 300.0 + 200 * scale**2 / slow
                rows.append(make_row(model, res, "ok", throughput, mem, attn=attn, batch=batch))
    return rows


def write_run(run_dir: Path, rows: list[dict], meta: dict | None = None, append: bool = False) -> Path:
    """results.csv (+ run.json unless meta is False-y and a run.json exists)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "results.csv"
    new = not (append and csv_path.exists())
    with csv_path.open("w" if new else "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    if meta is not None or not (run_dir / "run.json").exists():
        default = {"argv": ["vimbench", "sweep", "--device", "cpu"],
                   "config": {"models": ["vim-t", "deit-t"]}, "environment": FAKE_ENV}  # fmt: skip
        (run_dir / "run.json").write_text(json.dumps(meta if meta is not None else default))
    return run_dir


def assert_png_drawn(path: Path) -> None:
    """A real picture: a few hundred pixels wide and tall, with many non-white pixels of several colours."""
    image = mpimg.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 500, image.shape
    rgb = image[..., :3]
    ink = (rgb < 0.9).any(axis=-1).mean()
    assert 0.01 < ink < 0.6, ink
    assert len(np.unique(rgb.reshape(-1, 3).round(1), axis=0)) > 8


def test_plot_run_writes_default_png_and_svg(tmp_path):
    run = write_run(tmp_path / "run", fig1_rows("math"))
    written = plot_run(run)
    assert sorted(p.name for p in written) == ["memory.png", "memory.svg", "throughput.png", "throughput.svg"]
    for path in written:
        assert path.parent == run and path.stat().st_size > 10_000
    assert_png_drawn(run / "throughput.png")
    svg = (run / "memory.svg").read_text()
    assert "rss = process RSS" in svg  # the memory source is named on the axis
    assert "OOM (marked over the x axis)" in svg  # DeiT-Ti OOM at 1248 is marked and explained


def test_overlaid_runs_name_devices_and_paper(tmp_path):
    cpu = write_run(tmp_path / "cpu", fig1_rows("math"))
    gpu_rows = [dict(r, device_name="Fake H100") for r in fig1_rows("sdpa", deit_oom_at=None)]
    gpu = write_run(tmp_path / "gpu", gpu_rows)
    metrics = ["throughput", "memory", "latency", "speedup"]
    written = plot_runs([cpu, gpu], tmp_path / "out", metrics, paper=True)
    assert len(written) == 8 and all(p.exists() for p in written)
    throughput = (tmp_path / "out" / "throughput.svg").read_text()
    for text in ("Test CPU", "Fake H100", "paper Vim-Ti (Fig. 1)", "paper DeiT-Ti (Fig. 1)", "tokens"):
        assert text in throughput, text
    assert "attn math" in throughput and "attn sdpa" in throughput  # what differs is in the labels
    speedup = (tmp_path / "out" / "speedup.svg").read_text()
    assert "paper Vim-Ti / DeiT-Ti" in speedup and "DeiT OOM, Vim ran" in speedup
    assert_png_drawn(tmp_path / "out" / "speedup.png")


def test_run_with_only_oom_rows_still_plots(tmp_path):
    rows = [make_row("deit-t", r, "oom", error="CUDA out of memory") for r in (512, 640)]
    run = write_run(tmp_path / "run", rows)
    written = plot_runs([run], run, ["throughput", "speedup"])
    assert [p.name for p in written] == ["throughput.png", "throughput.svg"]  # no Vim: no speedup figure
    assert "(no ok point)" in (run / "throughput.svg").read_text()


def test_pairs_compute_speedup_and_memory_saving(tmp_path):
    rows = fig1_rows("math") + fig1_rows("sdpa", models=("deit-t",))
    run = Run.load(write_run(tmp_path / "run", rows))
    pairs = {p.deit.config["attn_backend"]: p.table.set_index("img_size") for p in vim_deit_pairs(run)}
    assert set(pairs) == {"math", "sdpa"}
    at_1024 = pairs["math"].loc[1024]
    assert at_1024["speedup"] == pytest.approx(at_1024["vim_throughput"] / at_1024["deit_throughput"])
    assert at_1024["speedup"] == pytest.approx((40 / 4) / (60 / (8 * 3)), rel=1e-4)
    assert at_1024["memory_saving_pct"] == pytest.approx(100 * (1 - 800 / (300 + 3200 / 3)), rel=1e-4)
    assert math.isnan(pairs["math"].loc[1248, "speedup"]) and pairs["math"].loc[1248, "deit_status"] == "oom"
    assert not math.isnan(pairs["sdpa"].loc[1248, "speedup"])


def test_resumed_point_keeps_latest_row(tmp_path):
    run_dir = write_run(tmp_path / "run", [make_row("vim-t", 512, "error", error="first try")])
    write_run(run_dir, [make_row("vim-t", 512, "ok", 10.0, 500.0)], append=True)
    frame = Run.load(run_dir).results
    assert len(frame) == 1 and frame.loc[0, "status"] == "ok" and frame.loc[0, "throughput"] == 10.0


def test_plot_cli(cli, tmp_path):
    run = write_run(tmp_path / "run", fig1_rows("math"))
    result = cli(["plot", run, "--metric", "throughput,speedup", "--paper", "--out", tmp_path / "figs"])
    assert result.code == 0, result.err
    assert (tmp_path / "figs" / "speedup.svg").exists() and (tmp_path / "figs" / "throughput.png").exists()
    assert not (tmp_path / "figs" / "memory.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plot", "{tmp}/missing"], "does not exist"),
        (["plot", "{run}", "--metric", "fps"], "unknown metric 'fps'"),
        (["plot", "{tmp}/notarun"], "no results.csv"),
    ],
)
def test_plot_cli_bad_input_is_one_line(cli, tmp_path, args, message):
    run = write_run(tmp_path / "run", fig1_rows("math", resolutions=(512,)))
    (tmp_path / "notarun").mkdir()
    result = cli([a.format(tmp=tmp_path, run=run) for a in args])
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
