"""Multi-GPU scheduling without GPUs: device parsing and pinning, largest-first order, one point per GPU at a
time, rows recorded in the caller's thread, OOM skipping, failures as rows, and a sweep's results.csv."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
from dataclasses import replace

import pandas as pd
import pytest
import torch

from vimbench.devices import parse_devices
from vimbench.measure.executors import (
    LocalExecutor,
    OomSkipper,
    distinct_devices,
    make_executor,
    require_one_device,
)
from vimbench.measure.executors.multi_gpu import (
    MultiDeviceExecutor,
    cpu_shares,
    largest_first,
    pinned_environment,
    point_cost,
)
from vimbench.measure.plan import Point

FAKE_GPUS = {
    "cuda:0": {"name": "Fake H100", "uuid": "GPU-aaaa"},
    "cuda:1": {"name": "Fake H100", "uuid": "GPU-bbbb"},
    "cuda:2": {"name": "Fake A100", "uuid": "GPU-cccc"},
}


def fake_identify(device: str) -> dict:
    return FAKE_GPUS[device]


class FakeRunner:
    """Stands in for run_point_subprocess: records what each 'worker' saw and when, returns an ok row."""

    def __init__(
        self, seconds: float = 0.02, oom_above: int | None = None, uuid_of_child: dict | None = None
    ):
        self.seconds = seconds
        self.oom_above = oom_above
        self.uuid_of_child = uuid_of_child  # CUDA_VISIBLE_DEVICES -> uuid the child reports
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, point: Point, env: dict | None) -> dict:
        start = time.perf_counter()
        time.sleep(self.seconds)
        visible = (env or {}).get("CUDA_VISIBLE_DEVICES")
        with self.lock:
            self.calls.append({"point": point, "visible": visible, "start": start,
                               "end": time.perf_counter(), "cpus": frozenset(os.sched_getaffinity(0))})
        status = "oom" if self.oom_above is not None and point.img_size > self.oom_above else "ok"
        uuid = (self.uuid_of_child or {}).get(visible, "")
        return {"model": point.model, "img_size": point.img_size, "device": point.device, "status": status,
                "device_name": "Fake H100" if uuid else "", "device_uuid": uuid, "throughput": 1.0}


def plan(models=("vim-t", "deit-t"), sizes=(224, 320, 448), **knobs) -> list[Point]:
    return [Point(model=m, img_size=s, **knobs) for m in models for s in sizes]


def collect(executor, points, skip=None):
    rows, threads = [], set()

    def on_row(point, row):
        threads.add(threading.get_ident())
        rows.append((point, row))

    executor.run(points, on_row, skip=skip)
    return rows, threads


@pytest.mark.parametrize(
    ("spec", "count", "expected"),
    [("all", 3, ["cuda:0", "cuda:1", "cuda:2"]), ("cuda:2,cuda:0", 3, ["cuda:2", "cuda:0"]),
     (" CUDA:1 ", 2, ["cuda:1"]), ("cuda", 1, ["cuda:0"])],
)
def test_parse_devices(spec, count, expected):
    assert parse_devices(spec, device_count=count) == expected


@pytest.mark.parametrize(
    ("spec", "count", "message"),
    [("", 2, "empty"), ("all", 0, "no CUDA GPU"), ("cuda:0", 0, "no CUDA GPU"),
     ("gpu1", 2, "unknown device"), ("cpu,cpu", 2, "unknown device"), ("cuda:0,all", 2, "unknown device"),
     ("cuda:2", 2, "does not exist: 2 CUDA GPU(s) visible (cuda:0..cuda:1)"),
     ("cuda:1,cuda:1", 2, "listed twice")],
)
def test_parse_devices_rejects_with_one_line(spec, count, message):
    with pytest.raises(ValueError, match=None) as err:
        parse_devices(spec, device_count=count)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("device", "parent", "expected"),
    [("cuda:3", None, {"CUDA_VISIBLE_DEVICES": "3"}), ("cuda:1", "4,6", {"CUDA_VISIBLE_DEVICES": "6"}),
     ("cuda:0", "GPU-x, GPU-y", {"CUDA_VISIBLE_DEVICES": "GPU-x"}),
     ("cuda:1", "", {"CUDA_VISIBLE_DEVICES": "1"}), ("fake-a", None, {})],
)
def test_pinned_environment_names_the_parents_gpu(device, parent, expected):
    assert pinned_environment(device, parent) == expected


def test_pinned_environment_outside_parent_list():
    with pytest.raises(ValueError, match="not in CUDA_VISIBLE_DEVICES=2"):
        pinned_environment("cuda:1", "2")


def test_cost_heuristic_scales_like_the_models():
    def cost(model, size, **kw):
        return point_cost(Point(model=model, img_size=size, **kw))

    # DeiT attention is quadratic in tokens, Vim linear: doubling the side (4x tokens) costs DeiT more
    vim_ratio = cost("vim-t", 1024) / cost("vim-t", 512)
    deit_ratio = cost("deit-t", 1024) / cost("deit-t", 512)
    assert 3.8 < vim_ratio < 4.2 and deit_ratio > 5.0
    assert cost("vim-t", 448, batch_size=8) == pytest.approx(8 * cost("vim-t", 448))
    assert cost("deit-t", 448, mode="train") == pytest.approx(3 * cost("deit-t", 448))
    assert cost("vim-b", 224) > cost("vim-s", 224) > cost("vim-t", 224)
    assert cost("no-such-model", 224) == 0.0
    order = [(p.model, p.img_size) for p in largest_first(plan(("vim-t", "deit-b"), (224, 1024)))]
    assert order == [("deit-b", 1024), ("vim-t", 1024), ("deit-b", 224), ("vim-t", 224)]


def test_points_spread_over_gpus_one_at_a_time_largest_first():
    runner = FakeRunner(seconds=0.05)
    executor = MultiDeviceExecutor(["cuda:0", "cuda:1"], runner=runner, identify=fake_identify)
    points = plan(sizes=(224, 320, 448, 512))
    rows, threads = collect(executor, points)

    assert threads == {threading.get_ident()}  # on_row only ever in the caller's thread
    assert sorted((p.model, p.img_size) for p, _ in rows) == sorted((p.model, p.img_size) for p in points)
    assert len(runner.calls) == len(points)
    assert {c["visible"] for c in runner.calls} == {"0", "1"}  # both GPUs used, each pinned
    assert all(c["point"].device == "cuda:0" for c in runner.calls)  # the worker sees only its GPU
    for visible in ("0", "1"):  # never two points on one GPU at once
        spans = sorted((c["start"], c["end"]) for c in runner.calls if c["visible"] == visible)
        assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(spans))
    by_start = sorted(runner.calls, key=lambda c: c["start"])
    started_first = {(c["point"].model, c["point"].img_size) for c in by_start[:2]}
    assert started_first == {("deit-t", 512), ("deit-t", 448)}
    for _, row in rows:  # labelled with the sweep's device and the pinned GPU's identity
        assert row["device"] in ("cuda:0", "cuda:1")
        assert (row["device_name"], row["device_uuid"]) == (FAKE_GPUS[row["device"]]["name"],
                                                            FAKE_GPUS[row["device"]]["uuid"])
    assert sum(w["points"] for w in executor.worker_environments) == len(points)
    assert {w["cuda_visible_devices"] for w in executor.worker_environments} == {"0", "1"}


@pytest.mark.parametrize(
    ("count", "cpus", "expected"),
    [(2, range(8), [{0, 1, 2, 3}, {4, 5, 6, 7}]), (3, [2, 3, 5, 7, 11, 13, 17], [{2, 3}, {5, 7}, {11, 13}]),
     (4, [0, 1], []), (1, [0, 1], [{0, 1}])],
)
def test_cpu_shares_are_disjoint_and_equal(count, cpus, expected):
    assert [set(share) for share in cpu_shares(count, list(cpus))] == expected


def test_each_gpu_gets_its_own_cpu_share_and_no_more_threads():
    shares = cpu_shares(2)
    if not shares:
        pytest.skip("fewer than 2 usable CPUs")
    runner = FakeRunner()
    executor = MultiDeviceExecutor(["cuda:0", "cuda:1"], runner=runner, identify=fake_identify)
    callers_cpus = os.sched_getaffinity(0)
    collect(executor, plan(sizes=(224, 320), threads=64))
    assert os.sched_getaffinity(0) == callers_cpus  # the caller's own thread is never pinned
    by_gpu = {c["visible"]: c["cpus"] for c in runner.calls}
    assert sorted(by_gpu.values(), key=min) == shares and by_gpu["0"] != by_gpu["1"]
    assert {c["point"].threads for c in runner.calls} == {len(shares[0])}
    recorded = {w["cpus"] for w in executor.worker_environments}
    assert recorded == {",".join(map(str, sorted(share))) for share in shares}
    unpinned = FakeRunner()
    executor = MultiDeviceExecutor(["cuda:0", "cuda:1"], runner=unpinned, identify=fake_identify,
                                   pin_cpus=False)
    collect(executor, plan(sizes=(224,), threads=64))
    assert {c["point"].threads for c in unpinned.calls} == {64}


def test_parallel_gpus_shorten_the_sweep():
    points = plan(sizes=(224, 320, 448, 512))
    started = time.perf_counter()
    three_gpus = MultiDeviceExecutor(["cuda:0", "cuda:1", "cuda:2"], runner=FakeRunner(0.1),
                                     identify=fake_identify)
    collect(three_gpus, points)
    parallel = time.perf_counter() - started
    assert parallel < 0.8 * len(points) * 0.1 / 1.5  # 8 points x 0.1 s on 3 GPUs: ~0.3 s, serial 0.8 s


def test_worker_row_keeps_the_gpu_it_really_ran_on():
    runner = FakeRunner(uuid_of_child={"0": "GPU-aaaa", "1": "GPU-zzzz"})  # cuda:1's pinning went wrong
    executor = MultiDeviceExecutor(["cuda:0", "cuda:1"], runner=runner, identify=fake_identify)
    with pytest.warns(UserWarning, match="expected GPU-bbbb"):
        rows, _ = collect(executor, plan(("vim-t",), (224, 320, 448, 512)))
    uuids = {row["device"]: row["device_uuid"] for _, row in rows}
    assert uuids == {"cuda:0": "GPU-aaaa", "cuda:1": "GPU-zzzz"}


def test_parent_written_failure_row_gets_the_pinned_gpu():
    def timeout_runner(point, env):  # what run_point_subprocess writes in the parent: the parent's cuda:0
        return {"model": point.model, "img_size": point.img_size, "status": "timeout", "device": point.device,
                "device_name": "Fake H100", "device_uuid": "GPU-aaaa"}

    executor = MultiDeviceExecutor(["cuda:2"], runner=timeout_runner, identify=fake_identify)
    (_, row), = collect(executor, plan(("vim-t",), (224,)))[0]
    assert (row["device"], row["device_name"], row["device_uuid"]) == ("cuda:2", "Fake A100", "GPU-cccc")


def test_a_failing_runner_becomes_an_error_row_and_the_rest_still_run():
    def flaky(point, env):
        if point.img_size == 320:
            raise RuntimeError("runner bug")
        return {"model": point.model, "img_size": point.img_size, "status": "ok"}

    executor = MultiDeviceExecutor(["gpu-a", "gpu-b"], runner=flaky)
    rows, _ = collect(executor, plan(("vim-t",), (224, 320, 448)))
    status = {p.img_size: (r["status"], r.get("error", "")) for p, r in rows}
    assert status[224][0] == status[448][0] == "ok"
    assert status[320] == ("error", "RuntimeError: runner bug")


def test_oom_rows_and_skip_of_queued_larger_points():
    """Resumed sweep: an OOM recorded at 320 skips the larger queued points of that curve; in the run,
    every size is attempted (largest first) and the OOMs are recorded as such."""
    skipper = OomSkipper()
    skipper.seed([(Point(model="vim-t", img_size=320), {"status": "oom"})])

    def skip(point):
        at = skipper.oom_below(point)
        if at is None:
            return None
        return {"model": point.model, "img_size": point.img_size, "status": "skipped-oom"}

    runner = FakeRunner(oom_above=448)
    executor = MultiDeviceExecutor(["gpu-a", "gpu-b"], runner=runner)
    points = [p for p in plan(sizes=(224, 448, 512, 640)) if not (p.model == "vim-t" and p.img_size == 320)]

    def on_row(point, row):
        skipper.record(point, row)
        rows[(point.model, point.img_size)] = row["status"]

    rows: dict = {}
    executor.run(points, on_row, skip=skip)
    assert rows == {("vim-t", 224): "ok", ("vim-t", 448): "skipped-oom", ("vim-t", 512): "skipped-oom",
                    ("vim-t", 640): "skipped-oom", ("deit-t", 224): "ok", ("deit-t", 448): "ok",
                    ("deit-t", 512): "oom", ("deit-t", 640): "oom"}
    assert {(c["point"].model, c["point"].img_size) for c in runner.calls} == {
        ("vim-t", 224), ("deit-t", 224), ("deit-t", 448), ("deit-t", 512), ("deit-t", 640)}


def test_a_failing_on_row_stops_the_run_promptly():
    def on_row(point, row):
        raise OSError("disk full")

    started = time.perf_counter()
    with pytest.raises(OSError, match="disk full"):
        MultiDeviceExecutor(["gpu-a", "gpu-b"], runner=FakeRunner(0.05)).run(plan(), on_row)
    assert time.perf_counter() - started < 5


def test_executor_refuses_shared_devices():
    with pytest.raises(ValueError, match="never share"):
        MultiDeviceExecutor(["cuda:0", "cuda:0"])
    with pytest.raises(ValueError, match="at least one"):
        MultiDeviceExecutor([])


def test_sweep_over_fake_devices_writes_one_results_csv_and_resumes(tmp_path, monkeypatch):
    from vimbench.measure.plan import SweepConfig
    from vimbench.measure.rows import identity_row
    from vimbench.measure.store import ALL_COLUMNS
    from vimbench.measure.sweep import run_sweep
    from vimbench.results import Run

    calls: list[Point] = []

    def runner(point, env):
        calls.append(point)
        row = identity_row(replace(point, device="cpu"))
        row.update(status="ok", throughput=100.0 / point.img_size, timestamp="2026-01-01T00:00:00+00:00")
        return row

    config = SweepConfig(models=["vim-t", "deit-t"], resolutions=[224, 320], device="cpu",
                         out_dir=tmp_path / "run", plots=False)
    run_dir = run_sweep(config, executor=MultiDeviceExecutor(["gpu-a", "gpu-b"], runner=runner))
    header = (run_dir / "results.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == ALL_COLUMNS
    frame = Run.load(run_dir).table
    assert sorted(zip(frame["model"], frame["img_size"], strict=True)) == [
        ("deit-t", 224), ("deit-t", 320), ("vim-t", 224), ("vim-t", 320)]
    assert set(frame["device"]) == {"gpu-a", "gpu-b"} and set(frame["status"]) == {"ok"}
    assert len(calls) == 4

    csv_path = run_dir / "results.csv"
    csv_path.write_text("\n".join(csv_path.read_text().splitlines()[:3]) + "\n")  # lose two rows
    config = replace(config, resume=True)
    run_sweep(config, executor=MultiDeviceExecutor(["gpu-b", "gpu-c"], runner=runner))
    assert len(calls) == 6  # only the two points whose rows were lost ran again
    assert len(Run.load(run_dir).table) == 4


def test_make_executor_picks_and_refuses(monkeypatch):
    assert isinstance(make_executor(None), LocalExecutor)
    assert isinstance(make_executor(""), LocalExecutor)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    executor = make_executor("all")
    assert isinstance(executor, MultiDeviceExecutor) and executor.devices == ["cuda:0", "cuda:1"]
    assert executor.plan_device == "cuda:0"
    refused = [(("cuda:0", "ray"), "Ray assigns"), ((None, "dask"), "unknown executor"),
               ((None, "local", "head:6379"), "needs --executor ray"), (("cuda:7",), "does not exist")]
    for args, message in refused:
        with pytest.raises(ValueError, match=message):
            make_executor(*args)


def test_make_executor_ray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ValueError, match=r"pip install vimbench\[ray\]"):
        make_executor(None, "ray")


def test_distinct_devices_and_refusal_to_mix():
    rows = [{"device_name": "NVIDIA H100 80GB HBM3"}, {"device_name": "NVIDIA A100-SXM4-40GB"},
            {"device_name": ""}, {"device_name": "NVIDIA H100 80GB HBM3"}, {}]
    assert distinct_devices(rows) == ["NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3"]
    frame = pd.DataFrame({"device_name": ["NVIDIA H100 80GB HBM3", float("nan"), "NVIDIA H100 80GB HBM3"]})
    assert distinct_devices(frame) == ["NVIDIA H100 80GB HBM3"]
    assert distinct_devices(pd.DataFrame({"model": ["vim-t"]})) == []
    assert require_one_device(frame, "compare") == "NVIDIA H100 80GB HBM3"
    assert require_one_device([], "gate") is None
    with pytest.raises(ValueError, match="compare: results mix 2 device models"):
        require_one_device(rows, "compare")


@pytest.mark.gpu
def test_real_workers_on_every_local_gpu(tmp_path):
    """On a GPU machine: tiny points through real pinned workers; each row names the GPU it was pinned to."""
    from vimbench.measure.environment import describe_device

    devices = parse_devices("all")
    points = plan(("vim-t", "deit-t"), (224,), warmup=1, iters=2, repeats=1, min_time_s=0.0, timeout_s=300.0)
    rows, _ = collect(MultiDeviceExecutor(devices), points)
    assert [r["status"] for _, r in rows] == ["ok", "ok"], [r.get("error") for _, r in rows]
    for _, row in rows:
        assert row["device_uuid"] == describe_device(row["device"])["uuid"]


def test_ctrl_c_kills_running_workers_and_keeps_nothing_half_done():
    """Real worker processes that hang: an interrupt must end them all (no GPU left busy) and return fast."""
    import _thread

    import psutil

    from vimbench.measure.executors import run_point_subprocess

    def cpu_runner(point, env):
        hang = {**(env or {}), "VIMBENCH_SIMULATE_HANG_AT": "32"}
        return run_point_subprocess(replace(point, device="cpu"), hang)

    def workers():
        return [c for c in psutil.Process().children() if "vimbench.measure.worker" in " ".join(c.cmdline())]

    def interrupt_when_both_run():
        deadline = time.monotonic() + 60
        while len(workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        _thread.interrupt_main()

    rows: list = []
    points = plan(("vim-t", "deit-t"), (32,), threads=1, timeout_s=120.0)
    # interrupt_main() goes through the SIGINT handler: make sure it is Python's own, whatever ran before
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt_when_both_run, daemon=True).start()
        executor = MultiDeviceExecutor(["gpu-a", "gpu-b"], runner=cpu_runner)
        with pytest.raises(KeyboardInterrupt):
            executor.run(points, lambda p, r: rows.append(r))
    finally:
        signal.signal(signal.SIGINT, previous)
    started = time.monotonic()
    while workers() and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert workers() == [] and rows == []


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--devices", "cuda:0", "--executor", "ray"], "Ray assigns one GPU per point"),
     (["--executor", "dask"], "unknown executor 'dask'"),
     (["--ray-address", "head:6379"], "needs --executor ray")]
    + ([] if torch.cuda.is_available() else [(["--devices", "all"], "no CUDA GPU is visible here")]),
)
def test_cli_refuses_bad_executor_options(cli, tmp_path, args, message):
    result = cli(["sweep", "-m", "vim-t", "--res", "32", "--out", tmp_path / "run", *args])
    assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "results.csv").exists()
