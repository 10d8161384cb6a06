"""Sweep pre-flight: CUDA points predicted not to fit are skipped with their predicted size."""

from __future__ import annotations

import pytest

from vimbench.measure.plan import Point
from vimbench.measure.store import ALL_COLUMNS
from vimbench.memory import preflight as pf

IDENTITY = {"device_uuid": "GPU-test", "device_name": "Test GPU", "scan_backend": "triton",
            "attn_backend": "math"}


@pytest.fixture
def free_mib(monkeypatch):
    def set_free(value: float | None) -> None:
        monkeypatch.setattr(pf, "free_device_mib", lambda uuid: value)

    return set_free


def test_point_predicted_over_free_memory_is_skipped_with_its_size(free_mib):
    free_mib(80 * 1024.0)
    point = Point("deit-t", 1248, batch_size=128, device="cuda:0", options={"attn_backend": "math"})
    check = pf.Preflight()
    why = check.too_big(point, IDENTITY)
    predicted = check.columns(point, IDENTITY)["predicted_mem_mib"]
    assert predicted > 80 * 1024 * 1.1  # ~116 GiB: math attention, batch 128
    assert why is not None and f"predicted {predicted:.0f} MiB" in why and "81920 MiB free" in why


@pytest.mark.parametrize("free", [80 * 1024.0, None])
def test_point_that_fits_or_unknown_free_memory_runs(free_mib, free):
    free_mib(free)
    point = Point("vim-t", 224, batch_size=8, device="cuda:0")
    check = pf.Preflight()
    assert check.too_big(point, IDENTITY) is None
    columns = check.columns(point, IDENTITY)
    assert 0 < columns["predicted_alloc_mib"] < columns["predicted_mem_mib"]


def test_no_preflight_runs_everything_but_still_predicts(free_mib):
    free_mib(1.0)
    point = Point("vim-t", 224, batch_size=8, device="cuda:0")
    check = pf.Preflight(enabled=False)
    assert check.too_big(point, IDENTITY) is None
    assert "predicted_mem_mib" in check.columns(point, IDENTITY)


def test_cpu_points_are_not_predicted():
    assert pf.Preflight().columns(Point("vim-t", 224), IDENTITY) == {}


def test_results_csv_has_the_prediction_columns():
    assert {"predicted_mem_mib", "predicted_alloc_mib"} <= set(ALL_COLUMNS)


@pytest.mark.parametrize(("backend", "kernel"), [("triton", "triton-fused"), ("cuda", "cuda"),
                                                 ("mamba_ssm", "mamba_ssm"), ("cpu", "cpu")])  # fmt: skip
def test_scan_kernel_model_of_a_backend(backend, kernel):
    assert pf.scan_kernel_for(backend) == kernel
