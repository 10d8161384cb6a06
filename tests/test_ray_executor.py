"""The Ray executor on a local 2-CPU Ray cluster (CPU/test mode): a tiny real sweep end to end, a worker that
dies mid-point, the rerun of that point, and refusals. Skipped cleanly when Ray is not installed."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from vimbench.measure.executors.ray import RAY_MISSING, RayExecutor
from vimbench.measure.plan import Point, SweepConfig

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install vimbench[ray]")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one costs ~3 s), whatever RAY_ADDRESS says; shut down after."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fake runners below, for the tasks
    try:
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, object_store_memory=80 * 2**20)  # the minimum: rows are tiny
    except ModuleNotFoundError as exc:  # a partial install (e.g. without click, which Ray needs)
        ray.shutdown()
        pytest.skip(f"Ray is installed but cannot start: {exc}")
    yield ray
    ray.shutdown()


def fast_runner(point, env):
    """A stand-in worker for scheduling tests: an ok row at once."""
    return {"model": point.model, "img_size": point.img_size, "device": point.device, "status": "ok",
            "throughput": 1.0, "host": socket.gethostname(), "device_name": "test cpu"}


def dying_runner(point, env):
    """Like fast_runner, but the Ray worker process itself dies at 64 px: a killed worker or a lost node."""
    if point.img_size == 64:
        os._exit(1)
    return fast_runner(point, env)


def test_tiny_cpu_sweep_end_to_end(local_ray, tmp_path):
    from vimbench.measure.store import ALL_COLUMNS
    from vimbench.measure.sweep import run_sweep
    from vimbench.results import Run

    config = SweepConfig(models=["vim-t", "deit-t"], resolutions=[32], device="cpu", warmup=0, iters=1,
                         repeats=1, min_time_s=0.0, threads=1, plots=False, out_dir=tmp_path / "run")
    executor = RayExecutor(num_gpus_per_point=0)
    run_dir = run_sweep(config, executor=executor)

    frame = Run.load(run_dir).table
    assert tuple((run_dir / "results.csv").read_text().splitlines()[0].split(",")) == ALL_COLUMNS
    assert sorted(frame["model"]) == ["deit-t", "vim-t"]
    assert list(frame["status"]) == ["ok", "ok"], list(frame["error"])
    assert (frame["throughput"] > 0).all() and (frame["img_size"] == 32).all()
    assert set(frame["host"]) == {socket.gethostname()} and set(frame["device"]) == {"cpu"}
    assert (run_dir / "run.json").is_file()
    (worker,) = executor.worker_environments  # one host, no GPU: one worker entry
    assert worker["host"] == socket.gethostname() and worker["points"] == 2
    assert worker["vimbench"] and worker["torch"] and worker["ray_node_id"]
    assert ray.is_initialized()  # a Ray the executor did not start is left running


def test_a_lost_worker_is_an_error_row_and_can_be_rerun(local_ray):
    points = [Point(model="vim-t", img_size=s, threads=1) for s in (32, 64, 96)]
    rows: dict[int, dict] = {}
    executor = RayExecutor(num_gpus_per_point=0, runner=dying_runner)
    executor.run(points, lambda p, r: rows.__setitem__(p.img_size, r))

    assert {s: r["status"] for s, r in rows.items()} == {32: "ok", 64: "error", 96: "ok"}
    assert rows[64]["error"].startswith("Ray task lost: ")
    assert "WorkerCrashedError" in rows[64]["error"] or "died" in rows[64]["error"].lower()
    assert rows[64]["host"] == "" and rows[64]["model"] == "vim-t"

    # the node is back: rerunning the failed point succeeds
    (lost,) = [p for p in points if rows[p.img_size]["status"] == "error"]
    again: list[dict] = []
    RayExecutor(num_gpus_per_point=0, runner=fast_runner).run([lost], lambda p, r: again.append(r))
    assert [r["status"] for r in again] == ["ok"]


def test_skip_and_largest_first_through_ray(local_ray):
    points = [Point(model="deit-t", img_size=s, threads=1) for s in (32, 64, 96, 128)]
    order: list[int] = []

    def skip(point):
        order.append(point.img_size)
        if point.img_size <= 96:
            return None
        return {"model": point.model, "img_size": point.img_size, "status": "skipped-oom"}

    rows: dict[int, str] = {}
    RayExecutor(num_gpus_per_point=0, runner=fast_runner, max_in_flight=1).run(
        points, lambda p, r: rows.__setitem__(p.img_size, r["status"]), skip=skip)
    assert order == [128, 96, 64, 32]
    assert rows == {128: "skipped-oom", 96: "ok", 64: "ok", 32: "ok"}


def test_cpu_mode_refuses_gpu_points_and_bad_claims(local_ray):
    with pytest.raises(ValueError, match="would use a GPU no task claimed"):
        RayExecutor(num_gpus_per_point=0).run([Point(model="vim-t", img_size=32, device="cuda:0")], print)
    with pytest.raises(ValueError, match="the Ray cluster has no GPU"):
        RayExecutor().run([Point(model="vim-t", img_size=32, device="cuda:0")], print)
    with pytest.raises(ValueError, match="1 \\(a GPU per point\\) or 0"):
        RayExecutor(num_gpus_per_point=2)


@pytest.mark.parametrize(
    ("device", "threads", "node_cpus", "cpus_per_gpu", "gpus", "claimed"),
    [("cuda:0", 16, 64, 8, 1, 8), ("cuda:0", 2, 64, 8, 1, 2), ("cuda:0", None, 64, 8, 1, 8),
     ("cpu", 4, 2, 8, 0, 2), ("cpu", None, 16, 8, 0, 1)],
)
def test_claims_one_gpu_and_no_more_threads_than_cpus(device, threads, node_cpus, cpus_per_gpu, gpus,
                                                      claimed):
    point = Point(model="vim-t", img_size=32, device=device, threads=threads)
    options, used = RayExecutor()._claim(point, node_cpus, cpus_per_gpu)
    assert (options["num_gpus"], options["num_cpus"], used) == (gpus, claimed, claimed)
    assert options["max_retries"] == 0 and options.get("max_calls") == (1 if gpus else None)


def test_missing_ray_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ValueError, match="pip install vimbench\\[ray\\]") as err:
        RayExecutor().run([Point(model="vim-t", img_size=32)], print)
    assert str(err.value) == RAY_MISSING


def test_cli_sweep_with_executor_ray(local_ray, cli, tmp_path):
    out = tmp_path / "cli-run"
    result = cli(["sweep", "-m", "deit-t", "--res", "32", "--device", "cpu", "--executor", "ray",
                  "--warmup", "0", "--iters", "1", "--repeats", "1", "--min-time", "0", "--threads", "1",
                  "--no-plots", "--out", out])
    assert result.code == 0, result.err
    from vimbench.results import Run

    frame = Run.load(out).table
    assert list(frame["status"]) == ["ok"] and list(frame["model"]) == ["deit-t"]
