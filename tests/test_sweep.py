"""The sweep: scheduling (resume, skip-after-OOM) through a fake executor, and real CPU sweeps end to end."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from vimbench.measure.plan import Point, SweepConfig
from vimbench.measure.rows import identity_row
from vimbench.measure.store import ResultsStore
from vimbench.measure.sweep import latest_run_dir, run_sweep
from vimbench.results import CORE_COLUMNS as RESULT_COLUMNS
from vimbench.results import Run, point_key

FAST = ["--iters", "1", "--repeats", "2", "--min-time", "0", "--warmup", "1", "--threads", "1", "--no-plots"]


class FakeExecutor:
    """Answers every point instantly: `oom_above` sizes run out of memory. Records what it ran."""

    def __init__(self, oom_above: int | None = None):
        self.oom_above = oom_above
        self.ran: list[tuple[str, int]] = []

    def run(self, points, on_row, skip=None):
        for point in points:
            skipped = skip(point) if skip else None
            if skipped is not None:
                on_row(point, skipped)
                continue
            self.ran.append((point.model, point.img_size))
            row = identity_row(point)
            if self.oom_above is not None and point.img_size > self.oom_above:
                row.update(status="oom", error="CUDA out of memory (fake)")
            else:
                row.update(
                    status="ok",
                    throughput=1000.0 / point.img_size,
                    peak_mem_mib=point.img_size * 2.0,
                    peak_mem_source="rss",
                    latency_ms=point.img_size / 1000.0,
                    noisy=False,
                )
            on_row(point, row)


def _config(tmp_path, **changes) -> SweepConfig:
    base = {
        "models": ["vim-t", "deit-t"],
        "resolutions": [32, 48, 64],
        "device": "cpu",
        "out_dir": tmp_path / "run",
        "plots": False,
    }
    return SweepConfig(**{**base, **changes})


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=140)


def test_skip_after_oom_and_no_skip(tmp_path) -> None:
    executor = FakeExecutor(oom_above=32)
    run_dir = run_sweep(_config(tmp_path), executor, console=_quiet())
    rows = ResultsStore(run_dir).rows()
    assert [(r["model"], r["img_size"], r["status"]) for r in rows] == [
        ("vim-t", "32", "ok"),
        ("vim-t", "48", "oom"),
        ("vim-t", "64", "skipped-oom"),
        ("deit-t", "32", "ok"),
        ("deit-t", "48", "oom"),
        ("deit-t", "64", "skipped-oom"),
    ]
    assert executor.ran == [("vim-t", 32), ("vim-t", 48), ("deit-t", 32), ("deit-t", 48)]
    assert "ran out of memory at 48px" in rows[2]["error"]

    executor = FakeExecutor(oom_above=32)
    run_sweep(
        _config(tmp_path, out_dir=tmp_path / "noskip", skip_after_oom=False), executor, console=_quiet()
    )
    assert [s for _, s in executor.ran] == [32, 48, 64, 32, 48, 64]


def test_resume_runs_only_missing_points_without_duplicates(tmp_path) -> None:
    first = FakeExecutor()
    run_dir = run_sweep(_config(tmp_path, resolutions=[32, 48]), first, console=_quiet())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["points_planned"] == 4 and meta["status_counts"] == {"ok": 4}

    second = FakeExecutor()
    run_sweep(_config(tmp_path, resolutions=[32, 48, 64], resume=True), second, console=_quiet())
    assert second.ran == [("vim-t", 64), ("deit-t", 64)]
    rows = ResultsStore(run_dir).rows()
    keys = [point_key(r) for r in rows]
    assert len(rows) == 6 and len(set(keys)) == 6
    meta = json.loads((run_dir / "run.json").read_text())
    assert len(meta["resumes"]) == 1 and meta["resumes"][0]["points_left"] == 2

    third = FakeExecutor()
    run_sweep(_config(tmp_path, resolutions=[32, 48, 64], resume=True), third, console=_quiet())
    assert third.ran == [] and len(ResultsStore(run_dir).rows()) == 6


def test_resume_remembers_an_earlier_oom(tmp_path) -> None:
    run_sweep(
        _config(tmp_path, models=["deit-t"], resolutions=[32, 48]),
        FakeExecutor(oom_above=32),
        console=_quiet(),
    )
    again = FakeExecutor()
    run_sweep(
        _config(tmp_path, models=["deit-t"], resolutions=[32, 48, 64], resume=True), again, console=_quiet()
    )
    assert again.ran == []
    assert ResultsStore(tmp_path / "run").rows()[-1]["status"] == "skipped-oom"


def test_existing_run_needs_resume(tmp_path) -> None:
    run_sweep(_config(tmp_path, models=["deit-t"], resolutions=[32]), FakeExecutor(), console=_quiet())
    with pytest.raises(ValueError, match="already holds results; add --resume"):
        run_sweep(_config(tmp_path, models=["deit-t"], resolutions=[32]), FakeExecutor(), console=_quiet())


def test_default_run_dir_and_resume_without_out(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = run_sweep(_config(tmp_path, out_dir=None, resolutions=[32]), FakeExecutor(), console=_quiet())
    assert run_dir.parent.as_posix() == "results/runs" and run_dir.name.endswith("-vim-t-deit-t")
    assert latest_run_dir(["vim-t", "deit-t"]) == run_dir
    resumed = FakeExecutor()
    again = run_sweep(
        _config(tmp_path, out_dir=None, resolutions=[32, 48], resume=True), resumed, console=_quiet()
    )
    assert again == run_dir and resumed.ran == [("vim-t", 48), ("deit-t", 48)]


def test_failing_plotter_warns_and_keeps_results(tmp_path) -> None:
    def plot_run(run_dir):
        raise RuntimeError("matplotlib exploded\nsecond line")

    console = _quiet()
    run_dir = run_sweep(
        _config(tmp_path, models=["deit-t"], resolutions=[32], plots=True), FakeExecutor(), console=console,
        plotter=plot_run,
    )
    out = console.file.getvalue()
    assert "warning: no plots (RuntimeError: matplotlib exploded)" in out
    assert "second line" not in out
    assert len(ResultsStore(run_dir).rows()) == 1


def test_cpu_sweep_end_to_end(cli, tmp_path) -> None:
    """A real tiny sweep: every point in a worker process, rows appended, run.json, resume adds one."""
    out = tmp_path / "e2e"
    result = cli(["sweep", "--models", "vim-t,deit-t", "--res", "32,48", "--out", out, *FAST])
    assert result.code == 0, result.err
    frame = Run.load(out).table
    assert list(frame.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    assert list(zip(frame["model"], frame["img_size"], strict=True)) == [
        ("vim-t", 32),
        ("vim-t", 48),
        ("deit-t", 32),
        ("deit-t", 48),
    ]
    assert (frame["status"] == "ok").all()
    assert (frame["throughput"] > 0).all() and (frame["peak_mem_mib"] > 100).all()
    assert set(frame["peak_mem_source"]) == {"rss"} and set(frame["dtype"]) == {"fp32"}
    assert frame["scan_backend"].tolist()[2:] == ["-", "-"] and frame["attn_backend"].tolist()[:2] == [
        "-",
        "-",
    ]
    assert frame["tokens"].tolist() == [5, 10, 5, 10] and (frame["repeats"] == 2).all()
    meta = json.loads((out / "run.json").read_text())
    assert meta["environment"]["torch"] and "precision" in meta["environment"]
    assert meta["config"]["models"] == ["vim-t", "deit-t"] and meta["measurement"]["threads"] == 1
    assert "4 points (4 ok)" in result.out and "results.csv" in result.out

    again = cli(["sweep", "--models", "deit-t", "--res", "32..64:16", "--out", out, "--resume", *FAST])
    assert again.code == 0, again.err
    frame = Run.load(out).table
    assert len(frame) == 5 and frame["img_size"].tolist()[-1] == 64


def test_crash_and_oom_mid_sweep_are_recorded_and_the_sweep_goes_on(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VIMBENCH_SIMULATE_CRASH_AT", "48")
    monkeypatch.setenv("VIMBENCH_SIMULATE_OOM_ABOVE", "48")
    out = tmp_path / "crash"
    result = cli(["sweep", "--models", "deit-t", "--res", "32..80:16", "--out", out, *FAST])
    assert result.code == 0, result.err
    rows = ResultsStore(out).rows()
    assert [(r["img_size"], r["status"]) for r in rows] == [
        ("32", "ok"),
        ("48", "error"),
        ("64", "oom"),
        ("80", "skipped-oom"),
    ]
    assert "SIGKILL" in rows[1]["error"] and "simulated out of memory" in rows[2]["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "--res", "230"], "nearest valid: 224 or 240"),
        (["sweep", "--res", "1248..224"], "reversed resolution range"),
        (["sweep", "--res", "224..1248:abc"], "malformed resolution"),
        (["sweep", "--models", "vim-t,resnet"], "unknown model 'resnet'; known: vim-t, vim-s"),
        (["sweep", "--batch-size", "0"], "--batch-size must be positive"),
        (["sweep", "--batch-size", "-3"], "--batch-size must be positive"),
        (["sweep", "--device", "gpu0"], "unknown device 'gpu0'"),
        (["sweep", "--dtype", "fp64"], "unknown dtype"),
        (["compare", "vim-t", "vim-ti"], "two different models"),
        (["compare", "vim-t", "deit-x"], "unknown model"),
        (["compare", "vim-t", "deit-t", "--from", "/nonexistent/run"], "no results.csv"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, args, message) -> None:
    result = cli(args)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


def test_cuda_without_cuda_is_exit_2(cli) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli(["sweep", "--device", "cuda:0"])
    assert result.code == 2 and "CUDA is not available" in result.err


def _fake_run(run_dir, rows: list[tuple[str, int, str, float | None, float | None]]) -> None:
    store = ResultsStore(run_dir)
    for model, size, status, fps, mem in rows:
        row = identity_row(Point(model, size, device="cpu"))
        row.update(status=status, throughput=fps, peak_mem_mib=mem, peak_mem_source="nvml-process")
        store.append(row)


def test_compare_from_run_with_paper_figures(cli, tmp_path) -> None:
    _fake_run(
        tmp_path,
        [
            ("vim-t", 224, "ok", 500.0, 300.0),
            ("deit-t", 224, "ok", 1000.0, 250.0),
            ("vim-t", 1024, "ok", 80.0, 8000.0),
            ("deit-t", 1024, "ok", 40.0, 40000.0),
            ("vim-t", 1248, "ok", 50.0, 11000.0),
            ("deit-t", 1248, "oom", None, None),
        ],
    )
    result = cli(["compare", "vim-t", "deit-t", "--from", tmp_path])
    assert result.code == 0, result.err
    lines = {line.split("│")[1].strip(): line for line in result.out.splitlines() if line.count("│") > 5}
    assert "0.50x" in lines["224"] and "-20.0" in lines["224"]  # half the speed, 20% more memory
    assert "2.00x" in lines["1024"] and "80.0" in lines["1024"]  # 1 - 8000/40000
    assert "oom" in lines["1248"]
    assert "1248" in lines["1248"].split("│")[9]  # the paper's resolution column
    assert "paper: Vim arXiv 2401.09417" in result.out


def test_compare_reads_only_the_asked_configuration(cli, tmp_path) -> None:
    _fake_run(tmp_path, [("vim-s", 224, "ok", 100.0, 10.0), ("deit-s", 224, "ok", 50.0, 20.0)])
    result = cli(["compare", "vim-s", "deit-s", "--from", tmp_path, "--dtype", "bf16"])
    assert result.code == 2 and "no rows of vim-s or deit-s" in result.err
    result = cli(["compare", "vim-s", "deit-s", "--from", tmp_path])
    assert result.code == 0 and "2.00x" in result.out and "paper" not in result.out


def test_summary_table_names_the_setting_that_differs_within_a_model():
    from rich.console import Console

    from vimbench.measure.sweep import results_table

    rows = [
        {"model": "vim-t", "img_size": 128, "scan_backend": "cpu", "status": "ok", "throughput": 30.0},
        {"model": "vim-t", "img_size": 128, "scan_backend": "reference", "status": "error", "error": "x [y]"},
        {"model": "deit-t", "img_size": 128, "scan_backend": "-", "status": "ok", "throughput": 40.0},
    ]
    console = Console(width=200, record=True)
    console.print(results_table(rows))
    text = console.export_text()
    assert "scan=cpu" in text and "scan=reference" in text and "x [y]" in text
    console = Console(width=200, record=True)
    console.print(results_table([rows[0], rows[2]]))  # one config per model: no config column
    assert "config" not in console.export_text()


def test_compare_narrows_deit_by_attention_without_dropping_vim(cli, tmp_path) -> None:
    store = ResultsStore(tmp_path)
    for model, attn, fps in (("vim-t", "auto", 20.0), ("deit-t", "math", 10.0), ("deit-t", "sdpa", 40.0)):
        row = identity_row(Point(model, 224, device="cpu", options={"attn_backend": attn}))
        row.update(status="ok", throughput=fps, peak_mem_mib=100.0, peak_mem_source="rss")
        store.append(row)
    result = cli(["compare", "vim-t", "deit-t", "--from", tmp_path, "--attn-backend", "math"])
    assert result.code == 0, result.err
    assert "2.00x" in result.out and "several configurations" not in result.out
    result = cli(["compare", "vim-t", "deit-t", "--from", tmp_path])
    assert result.code == 0 and "several configurations of deit-t" in result.out
