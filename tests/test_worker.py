"""Timing statistics, and the worker subprocess: ok rows, simulated OOM, crashes, kills and hangs."""

from __future__ import annotations

import time

import pytest

from vimbench.measure.executors import run_point_subprocess
from vimbench.measure.plan import Point
from vimbench.measure.timing import TimingResult, time_steps
from vimbench.measure.worker import is_oom
from vimbench.results import CORE_COLUMNS as RESULT_COLUMNS

TINY = {"warmup": 1, "iters": 1, "min_time_s": 0.0, "repeats": 2, "threads": 1}


def test_time_steps_counts_warmup_iters_and_repeats() -> None:
    calls = []
    syncs = []
    result = time_steps(
        lambda: calls.append(1),
        batch_size=4,
        warmup=3,
        iters=5,
        min_time_s=0.0,
        repeats=4,
        sync=lambda: syncs.append(1),
    )
    assert len(calls) == 3 + 5 * 4
    assert result.iters == [5, 5, 5, 5]
    assert len(syncs) >= 2 * 4  # a synchronisation on both sides of every timed window


def test_time_steps_runs_until_min_time() -> None:
    result = time_steps(
        lambda: time.sleep(0.002), batch_size=2, warmup=1, iters=1, min_time_s=0.03, repeats=2
    )
    assert all(t >= 0.03 for t in result.elapsed_s)
    assert min(result.iters) >= 5
    summary = result.summary()
    assert summary["iters"] == min(result.iters)
    assert 2 / 0.01 < summary["throughput"] < 2 / 0.002  # batch / per-iteration time


def test_time_steps_without_warmup_still_reaches_min_time() -> None:
    result = time_steps(
        lambda: time.sleep(0.002), batch_size=1, warmup=0, iters=1, min_time_s=0.02, repeats=1
    )
    assert result.elapsed_s[0] >= 0.02


def test_summary_statistics() -> None:
    # latencies 10, 20, 30, 40, 100 ms per batch of 2
    result = TimingResult(batch_size=2, iters=[1] * 5, elapsed_s=[0.01, 0.02, 0.03, 0.04, 0.1], warmup=0)
    s = result.summary()
    assert s["latency_ms"] == pytest.approx(30.0)
    assert s["throughput"] == pytest.approx(2 / 0.03)
    assert s["latency_ms_p10"] == pytest.approx(14.0)
    assert s["latency_ms_p90"] == pytest.approx(76.0)
    assert s["iqr_pct"] == pytest.approx(100 * (40 - 20) / 30)
    assert s["noisy"] is True
    assert s["throughput_samples"] == [200.0, 100.0, 66.6667, 50.0, 20.0]
    steady = TimingResult(batch_size=1, iters=[10] * 3, elapsed_s=[1.0, 1.01, 1.02], warmup=0).summary()
    assert steady["noisy"] is False and steady["iqr_pct"] == pytest.approx(100 * 1 / 101)


def test_is_oom() -> None:
    import torch

    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom(
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
    )
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))


def test_worker_measures_a_point() -> None:
    row = run_point_subprocess(Point("deit-t", 32, **TINY))
    assert row["status"] == "ok", row.get("error")
    assert set(RESULT_COLUMNS) - {"error"} <= {k for k, v in row.items() if v is not None} | {
        "device_uuid",
        "torch_peak_alloc_mib",
        "torch_peak_reserved_mib",
        "nvml_peak_mib",
        "nvml_interval_ms",
    }
    assert row["throughput"] > 0 and row["repeats"] == 2 and row["iters"] >= 1
    assert len(row["throughput_samples"]) == 2
    assert row["peak_mem_source"] == "rss" and row["peak_mem_mib"] >= row["rss_baseline_mib"] > 0
    assert row["attn_backend"] == "sdpa" and row["scan_backend"] == "-"
    assert row["tokens"] == 5 and row["params"] > 5_000_000 and row["gflops"] > 0
    assert row["threads"] == 1 and row["duration_s"] > 0


def test_worker_train_mode_with_autocast() -> None:
    """Forward + backward + AdamW step, fp32 weights under bf16 autocast."""
    row = run_point_subprocess(Point("deit-t", 32, mode="train", dtype="bf16", **TINY))
    assert row["status"] == "ok", row.get("error")
    assert row["mode"] == "train" and row["precision"] == "autocast" and row["throughput"] > 0


def test_worker_simulated_oom() -> None:
    row = run_point_subprocess(Point("deit-t", 64, **TINY), env={"VIMBENCH_SIMULATE_OOM_ABOVE": "32"})
    assert row["status"] == "oom"
    assert "simulated out of memory at img_size 64" in row["error"]
    assert row["model"] == "deit-t" and row["img_size"] == 64 and row["attn_backend"] == "sdpa"
    assert row.get("throughput") in (None, "")


def test_worker_killed_mid_point_is_an_error_row() -> None:
    row = run_point_subprocess(Point("deit-t", 32, **TINY), env={"VIMBENCH_SIMULATE_CRASH_AT": "32"})
    assert row["status"] == "error"
    assert "SIGKILL" in row["error"]
    assert row["model"] == "deit-t" and row["device_name"]


def test_worker_hang_becomes_timeout() -> None:
    start = time.perf_counter()
    row = run_point_subprocess(
        Point("deit-t", 32, **{**TINY, "timeout_s": 3.0}), env={"VIMBENCH_SIMULATE_HANG_AT": "32"}
    )
    assert row["status"] == "timeout"
    assert "no result after 3 s" in row["error"]
    assert time.perf_counter() - start < 15


def test_worker_exception_is_an_error_row_with_the_message() -> None:
    row = run_point_subprocess(Point("vim-t", 32, options={"scan_backend": "no-such-backend"}, **TINY))
    assert row["status"] == "error"
    assert "no-such-backend" in row["error"]


@pytest.mark.gpu
def test_worker_on_cuda_reads_nvml_and_the_allocator() -> None:
    from vimbench.metrics.nvml_sampler import load_nvml

    row = run_point_subprocess(
        Point("deit-t", 224, device="cuda:0", warmup=2, iters=3, min_time_s=0.0, repeats=2)
    )
    assert row["status"] == "ok", row.get("error")
    assert row["device_uuid"].startswith(("GPU-", "MIG-"))
    assert row["torch_peak_alloc_mib"] > 0 and row["torch_peak_reserved_mib"] >= row["torch_peak_alloc_mib"]
    if load_nvml() is not None:
        assert row["peak_mem_source"] in ("nvml-process", "nvml-device-delta")
        assert row["nvml_interval_ms"] == 5.0 and row["peak_mem_mib"] > 0
    else:
        assert row["peak_mem_source"] == "torch-reserved"
