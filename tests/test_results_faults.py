"""results.csv faults every reader must survive: a last row without its newline (kept), a torn tail
(dropped), a BOM, garbage lines and non-numbers (one line naming the line or the value, exit 2)."""

from __future__ import annotations

import io
import os

import pytest
from rich.console import Console

from vimbench.measure.plan import Point, SweepConfig
from vimbench.measure.rows import identity_row
from vimbench.measure.store import ResultsStore
from vimbench.measure.sweep import run_sweep
from vimbench.results import Run
from vimbench.testing.executors import RecordingExecutor


def _append(run_dir, model: str, size: int, fps: float, samples: int = 5) -> None:
    row = identity_row(Point(model, size, device="cpu"))
    row.update(status="ok", throughput=fps, throughput_samples=[fps] * samples, peak_mem_mib=100.0,
               peak_mem_source="rss")
    ResultsStore(run_dir).append(row)


def _run(run_dir, fps_scale: float = 1.0) -> None:
    for model, size, fps in (("vim-t", 32, 100.0), ("deit-t", 32, 50.0)):
        _append(run_dir, model, size, fps * fps_scale)


def _drop_final_newline(run_dir) -> None:
    path = run_dir / "results.csv"
    assert path.read_bytes().endswith(b"\n")
    os.truncate(path, path.stat().st_size - 1)


def test_last_row_without_newline_is_a_row_for_every_reader(tmp_path) -> None:
    _run(tmp_path)
    _drop_final_newline(tmp_path)
    store = ResultsStore(tmp_path)
    assert [r["model"] for r in store.rows()] == ["vim-t", "deit-t"]
    assert Run.load(tmp_path).table["throughput"].tolist() == [100.0, 50.0]
    _append(tmp_path, "vim-s", 32, 20.0)  # completes the unterminated line first, then appends
    assert [r["model"] for r in store.rows()] == ["vim-t", "deit-t", "vim-s"]
    assert store.csv_path.read_text().count("\n") == 4


@pytest.mark.parametrize("cut", [13, 30, 80])
def test_torn_last_row_is_still_dropped(tmp_path, cut) -> None:
    _run(tmp_path)
    path = tmp_path / "results.csv"
    os.truncate(path, path.stat().st_size - cut)  # a writer killed mid-row: fewer fields than the header
    assert [r["model"] for r in ResultsStore(tmp_path).rows()] == ["vim-t"]
    assert Run.load(tmp_path).table["model"].tolist() == ["vim-t"]
    _append(tmp_path, "vim-s", 32, 20.0)
    assert [r["model"] for r in ResultsStore(tmp_path).rows()] == ["vim-t", "vim-s"]


def test_gate_sees_a_regression_on_a_row_without_newline(cli, tmp_path) -> None:
    base, cur = tmp_path / "base", tmp_path / "cur"
    _run(base)
    _run(cur, fps_scale=0.3)  # a 70% drop everywhere
    _drop_final_newline(base)
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 1, result.out + result.err
    assert "2 of 2 compared point(s) regressed" in result.out and "baseline only" not in result.out


def _resume(run_dir, **changes) -> RecordingExecutor:
    recorder = RecordingExecutor()
    config = SweepConfig(models=["vim-t", "deit-t"], resolutions=[32], device="cpu", out_dir=run_dir,
                         plots=False, resume=True, **changes)
    run_sweep(config, recorder, console=Console(file=io.StringIO()))
    return recorder


def test_resume_keeps_a_finished_row_without_newline(tmp_path) -> None:
    _run(tmp_path)
    _drop_final_newline(tmp_path)
    assert _resume(tmp_path).ran == []
    assert [r["model"] for r in ResultsStore(tmp_path).rows()] == ["vim-t", "deit-t"]


def test_bom_is_read_and_appended_to(cli, tmp_path) -> None:
    _run(tmp_path)
    path = tmp_path / "results.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert Run.load(tmp_path).table["model"].tolist() == ["vim-t", "deit-t"]
    _append(tmp_path, "vim-s", 32, 20.0)
    assert [r["model"] for r in ResultsStore(tmp_path).rows()] == ["vim-t", "deit-t", "vim-s"]
    assert cli(["report", tmp_path]).code == 0


def test_foreign_header_is_refused_before_measuring(tmp_path) -> None:
    (tmp_path / "results.csv").write_text("name,size,fps\nfoo,1,2\n")
    recorder = RecordingExecutor()
    config = SweepConfig(models=["deit-t"], resolutions=[32], device="cpu", out_dir=tmp_path, plots=False,
                         resume=True)
    with pytest.raises(ValueError, match=r"does not start with the results\.csv header"):
        run_sweep(config, recorder, console=Console(file=io.StringIO()))
    assert recorder.ran == []


GARBAGE = "garbage line here\n,,,\n"


@pytest.mark.parametrize(
    "command",
    [
        ["report", "{run}"],
        ["plot", "{run}", "--out", "{tmp}/plots"],
        ["reproduce", "fig1", "--from", "{run}"],
        ["gate", "--baseline", "{run}", "--current", "{run}"],
        ["compare", "vim-t", "deit-t", "--from", "{run}"],
        ["sweep", "-m", "vim-t", "--res", "32", "--out", "{run}", "--resume", "--device", "cpu",
         "--scan-backend", "reference"],
    ],
)
def test_garbage_lines_are_one_line_naming_the_line(cli, tmp_path, command) -> None:
    run = tmp_path / "run"
    _run(run)
    with open(run / "results.csv", "a") as fh:
        fh.write(GARBAGE)
    before = (run / "results.csv").read_bytes()
    result = cli([part.format(run=run, tmp=tmp_path) for part in command])
    assert result.code == 2, result.out + result.err
    assert "line 4 is not a results row" in result.err and "status ''" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert (run / "results.csv").read_bytes() == before


def test_gate_names_a_non_numeric_throughput_literally(cli, tmp_path) -> None:
    base, cur = tmp_path / "base", tmp_path / "cur"
    _run(base)
    _run(cur)
    text = (base / "results.csv").read_text().replace(",ok,100,", ",ok,fast,", 1)
    (base / "results.csv").write_text(text)
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 2
    assert "line 2: throughput 'fast' is not a number" in result.err
