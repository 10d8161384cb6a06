"""Curves from small results.csv files: files written, not blank, legends and OOM marks, Vim/DeiT pairing.

`write_run` / `fig1_rows` (vimbench.testing.plot_runs) build synthetic run folders, as for test_report.py and
test_reproduce.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from vimbench.report.plots import plot_run, plot_runs
from vimbench.report.runs import vim_deit_pairs
from vimbench.results import Run
from vimbench.testing.plot_runs import fig1_rows, make_row, write_run


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
