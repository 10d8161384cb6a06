"""A run folder has one writer: a second sweep is refused while the first lives, default folders never
collide, `--resume` only continues a real run, timeouts are retried with a longer --timeout, and bad knobs
are one line + exit 2 before anything is measured or created."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from vimbench.measure.plan import Point, SweepConfig
from vimbench.measure.rows import failure_row
from vimbench.measure.store import ResultsStore
from vimbench.measure.sweep import default_run_dir, latest_run_dir, run_sweep
from vimbench.testing.executors import RecordingExecutor

FAST = ["--iters", "1", "--repeats", "1", "--min-time", "0", "--warmup", "0", "--threads", "1", "--no-plots",
        "--device", "cpu"]


def _sweep(out: Path | None, **changes) -> tuple[RecordingExecutor, str]:
    recorder, console = RecordingExecutor(), Console(file=io.StringIO(), width=200)
    config = SweepConfig(**{"models": ["deit-t"], "resolutions": [32], "device": "cpu", "out_dir": out,
                            "plots": False, **changes})
    run_sweep(config, recorder, console=console)
    return recorder, console.file.getvalue()


def _wait_for(predicate, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def test_second_sweep_on_a_live_run_folder_is_refused_then_allowed_after_a_kill(cli, tmp_path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "VIMBENCH_SIMULATE_HANG_AT": "32"}
    first = subprocess.Popen(
        [sys.executable, "-m", "vimbench.cli.app", "sweep", "-m", "deit-t", "--res", "32", "--out", str(out),
         "--timeout", "300", *FAST],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    workers: list[psutil.Process] = []
    try:
        _wait_for(lambda: (out / "run.json").is_file())  # written under the lock, before measuring
        second = cli(["sweep", "-m", "deit-t", "--res", "32", "--out", out, "--resume", *FAST])
        assert second.code == 2, second.out + second.err
        assert f"being written by another sweep (pid {first.pid}" in second.err
        assert len(second.err.strip().splitlines()) == 1 and "Traceback" not in second.err
        assert not (out / "results.csv").exists()
        _wait_for(lambda: workers.extend(psutil.Process(first.pid).children()) or workers)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # kill -9 the sweep: the kernel drops its lock
        first.wait(30)
    # the hung worker runs in its own session; it must die with its sweep, not sleep on as an orphan
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"worker(s) outlived their killed sweep: {[p.pid for p in alive]}"
    recorder, _ = _sweep(out, resume=True)
    assert recorder.ran == [("deit-t", 32)]
    assert [r["status"] for r in ResultsStore(out).rows()] == ["ok"]


def _make_dirs(root: str, count: int, queue) -> None:
    queue.put([str(default_run_dir(["vim-t", "deit-t"], Path(root))) for _ in range(count)])


def test_default_run_folders_never_collide(tmp_path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_make_dirs, args=(str(tmp_path), 10, queue)) for _ in range(4)]
    for proc in procs:
        proc.start()
    made = [path for _ in procs for path in queue.get(timeout=60)]
    for proc in procs:
        proc.join(30)
    assert len(made) == 40 and len(set(made)) == 40
    assert all(Path(p).is_dir() and Path(p).name.endswith("-vim-t-deit-t") for p in made)
    assert str(latest_run_dir(["vim-t", "deit-t"], tmp_path)) == max(made)


def test_many_models_make_a_short_folder_name(tmp_path) -> None:
    names = [f"model-{i:02d}-with-a-long-name" for i in range(40)]
    path = default_run_dir(names, tmp_path)
    assert path.is_dir() and len(path.name) < 120
    assert latest_run_dir(names, tmp_path) == path


def test_resume_of_a_folder_without_a_run_is_refused(cli, tmp_path) -> None:
    typo = tmp_path / "rnu"
    result = cli(["sweep", "-m", "deit-t", "--res", "32", "--out", typo, "--resume", *FAST])
    assert result.code == 2 and "--resume: " in result.err and "holds no run" in result.err
    assert not typo.exists()


def test_an_alias_and_its_name_are_measured_once(tmp_path) -> None:
    recorder, _ = _sweep(tmp_path / "run", models=["deit-t", "deit-tiny", "deit-t"])
    assert recorder.ran == [("deit-t", 32)]


def test_timeouts_are_retried_on_resume_with_a_longer_timeout(cli, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv("VIMBENCH_SIMULATE_HANG_AT", "32")
    result = cli(["sweep", "-m", "deit-t", "--res", "32", "--out", out, "--timeout", "3", *FAST])
    assert result.code == 0, result.err
    assert [r["status"] for r in ResultsStore(out).rows()] == ["timeout"]
    monkeypatch.delenv("VIMBENCH_SIMULATE_HANG_AT")
    recorder, text = _sweep(out, resume=True, timeout_s=3)  # the same timeout: kept, and said so
    assert recorder.ran == [] and "1 timed-out point(s) kept" in text
    result = cli(["sweep", "-m", "deit-t", "--res", "32", "--out", out, "--resume", "--timeout", "300",
                  *FAST])
    assert result.code == 0, result.err
    assert [r["status"] for r in ResultsStore(out).rows()] == ["timeout", "ok"]


def test_a_recorded_error_is_measured_again_and_a_timeout_kept_for_the_same_timeout(tmp_path) -> None:
    out = tmp_path / "run"
    store = ResultsStore(out)
    store.append(failure_row(Point("deit-t", 32, device="cpu"), "error", "worker killed by SIGKILL"))
    store.append(failure_row(Point("deit-t", 48, device="cpu"), "timeout", "no result", duration_s=10.2))
    recorder, _ = _sweep(out, resolutions=[32, 48], resume=True, timeout_s=10)
    assert recorder.ran == [("deit-t", 32)]
    recorder, _ = _sweep(out, resolutions=[32, 48], resume=True, timeout_s=20)
    assert recorder.ran == [("deit-t", 48)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "inf"], "--timeout must be positive and finite"),
        (["--timeout", "nan"], "--timeout must be positive and finite"),
        (["--min-time", "nan"], "--min-time must be >= 0 and finite"),
        (["--min-time", "inf"], "--min-time must be >= 0 and finite"),
        (["--threads", "100000"], "--threads 100000 is more than"),
        (["--nvml-interval-ms", "-1"], "--nvml-interval-ms must be a finite number > 0"),
        (["--nvml-interval-ms", "nan"], "--nvml-interval-ms must be a finite number > 0"),
    ],
)
def test_bad_sweep_values_are_one_line_exit_2(cli, tmp_path, args, message) -> None:
    out = tmp_path / "run"
    result = cli(["sweep", "-m", "deit-t", "--res", "32", "--out", out, "--device", "cpu", *args])
    assert result.code == 2 and message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and not out.exists()


def test_sweep_out_that_cannot_be_a_folder_is_one_line_exit_2(cli, tmp_path) -> None:
    a_file = tmp_path / "results.csv"
    a_file.write_text("keep me\n")
    result = cli(["sweep", "-m", "deit-t", "--res", "32", "--out", a_file, *FAST])
    assert result.code == 2 and "is a file; give a folder" in result.err
    assert a_file.read_text() == "keep me\n"
    result = cli(["sweep", "-m", "deit-t", "--res", "32", "--out", a_file / "sub", *FAST])
    assert result.code == 2 and "cannot create a folder there" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_the_engine_refuses_a_file_or_an_impossible_run_folder(tmp_path) -> None:
    """What the CLI checks first, run_sweep checks again for callers of the API (compare, reproduce)."""
    a_file = tmp_path / "results.csv"
    a_file.write_text("keep me\n")
    with pytest.raises(ValueError, match="is a file, not a run folder"):
        _sweep(a_file)
    with pytest.raises(ValueError, match="cannot create run folder"):
        _sweep(a_file / "sub")
    assert a_file.read_text() == "keep me\n"


def test_a_worker_whose_sweep_is_already_gone_exits_at_once() -> None:
    """The sweep can die while its worker is still importing, before the worker asks to die with it: the
    worker compares its parent with the pid the sweep gave it and exits instead of measuring as an orphan."""
    # pid 1 is not this worker's parent; unchecked, the worker would measure the point and hang in it
    env = {**os.environ, "VIMBENCH_WORKER_PARENT_PID": "1", "VIMBENCH_SIMULATE_HANG_AT": "32"}
    point = Point("deit-t", 32, warmup=1, iters=1, min_time_s=0.0, repeats=1, threads=1)
    proc = subprocess.run([sys.executable, "-m", "vimbench.measure.worker"], env=env, input=point.to_json(),
                          capture_output=True, text=True, timeout=90)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "")
