"""`vimbench kernels bench` and kernelbench/bench.py: traffic and ceiling arithmetic, speedups, bidirectional
variants, CSV rows and bad input, on CPU with the reference and test-double backends."""

from __future__ import annotations

import csv

import pytest
import torch
from vimbench.kernels import bidirectional, registry
from vimbench.kernels.registry import ScanBackend
from vimbench.kernels.scan import _reference_forward

from vimbench.kernelbench import bench as kbench
from vimbench.kernelbench.bench import CSV_COLUMNS, ceiling_for, minimal_bytes, run_bench, seqlen_for


@pytest.mark.parametrize(
    ("name", "bandwidth"),
    [
        ("NVIDIA H100 80GB HBM3", 3.35e12),
        ("NVIDIA H200", 4.8e12),
        ("NVIDIA H100 PCIe", 2.0e12),
        ("NVIDIA A100-SXM4-80GB", 2.04e12),
    ],
)
def test_known_ceilings(name, bandwidth) -> None:
    ceiling = ceiling_for(name)
    assert ceiling is not None and ceiling.bandwidth == bandwidth
    assert ceiling_for("NVIDIA H200").exp_rate == ceiling_for("NVIDIA H100 80GB HBM3").exp_rate


def test_unknown_gpu_gets_no_ceiling() -> None:
    assert ceiling_for("NVIDIA GeForce RTX 4090") is None
    assert ceiling_for("Some Future GPU") is None


def test_minimal_traffic_matches_the_documented_vim_s_example() -> None:
    """Vim-S, one direction, B=128, L=197, E=768, bf16: ~47 us at 3.35 TB/s, ~74 us at 4.2e12 exp/s."""
    nbytes = minimal_bytes(128, 197, 768, 1, 16, 2)
    assert nbytes == 128 * 197 * (4 * 768 + 32) * 2
    assert nbytes / 3.35e12 * 1e6 == pytest.approx(47, abs=0.5)
    assert pytest.approx(74, abs=1) == 128 * 197 * 768 * 16 / 4.2e12 * 1e6


@pytest.mark.parametrize(("res", "length"), [(224, 197), (512, 1025), (1248, 6085)])
def test_seqlen_at_resolution(res, length) -> None:
    assert seqlen_for(res) == length


def _double(name: str, slowdown: float = 1.0) -> ScanBackend:
    """A backend that is the reference run `slowdown` times (speedup vs reference = 1/slowdown)."""

    def forward(*args):
        for _ in range(int(slowdown) - 1):
            _reference_forward(*args)
        return _reference_forward(*args)

    return ScanBackend(name, "test double", forward, None, lambda d: True, priority=5000)


def test_run_bench_rows_speedups_and_bidirectional_variants(monkeypatch) -> None:
    monkeypatch.setitem(registry._BACKENDS, "twice", _double("twice", slowdown=2))
    monkeypatch.setitem(
        bidirectional._FUSED,
        "twice",
        (
            lambda f, b, z, sp: _reference_forward(
                f.u, f.delta, f.A, f.B, f.C, f.D, z, f.delta_bias, sp, False
            )[0],
            lambda d: True,
        ),
    )
    rows = run_bench(
        ["reference", "twice"], ["vim-t"], [1], ["fp32"], "cpu", res=64, warmup=1, repeats=3, min_sample_s=0
    )
    by = {(r.backend, r.variant): r for r in rows}
    assert set(by) == {
        ("reference", "scan"),
        ("twice", "scan"),
        ("twice", "bidir-fused"),
        ("twice", "bidir-reverse"),
        ("twice", "bidir-flip"),
    }
    ref, twice = by["reference", "scan"], by["twice", "scan"]
    assert ref.seqlen == 17 and ref.dim == 384 and ref.dstate == 16
    assert ref.speedup_vs_reference == 1.0
    # timings on a shared CI box are too noisy to compare; the arithmetic is not
    assert twice.speedup_vs_reference == pytest.approx(ref.median_ms / twice.median_ms)
    assert ref.gb_s == pytest.approx(minimal_bytes(1, 17, 384, 1, 16, 4) / (ref.median_ms / 1e3) / 1e9)
    assert ref.p10_ms <= ref.median_ms <= ref.p90_ms
    assert torch.isnan(torch.tensor(ref.pct_mem_peak))  # no ceiling on CPU, never an invented one
    assert by["twice", "bidir-flip"].directions == 2
    fused = by["twice", "bidir-fused"]
    # the reference's bidirectional time is two of its scans
    assert fused.speedup_vs_reference == pytest.approx(2 * ref.median_ms / fused.median_ms)


def test_reference_is_skipped_above_the_work_limit(monkeypatch) -> None:
    monkeypatch.setattr(kbench, "reference_work_limit", lambda device: 10)
    rows = run_bench(["reference"], ["vim-t"], [1], ["fp32"], "cpu", res=32, warmup=0, repeats=1)
    assert rows[0].status == "skipped" and "too slow" in rows[0].note


def test_cli_writes_csv(cli, tmp_path) -> None:
    out = tmp_path / "bench.csv"
    result = cli(
        [
            "kernels",
            "bench",
            "--device",
            "cpu",
            "--shapes",
            "vim-t,vim-s",
            "--batch",
            "1",
            "--res",
            "64",
            "--warmup",
            "1",
            "--repeats",
            "3",
            "--csv",
            out,
        ]
    )
    assert result.code == 0, result.out + result.err
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    ref = [r for r in rows if r["backend"] == "reference"]
    assert [r["shape"] for r in ref] == ["vim-t", "vim-s"]
    assert all(float(r["median_ms"]) > 0 and float(r["gb_s"]) > 0 for r in ref)
    assert {r["seqlen"] for r in rows} == {"17"} and {r["device"] for r in rows} == {"cpu"}
    assert "wrote" in result.out


@pytest.mark.parametrize(
    "args",
    [
        ["--shapes", "vim-x"],
        ["--batch", "0"],
        ["--batch", "a"],
        ["--dtype", "fp8"],
        ["--res", "100"],
        ["--backends", "nope"],
        ["--backends", "triton"],
    ]
    + ([] if torch.cuda.is_available() else [["--device", "cuda"]]),
)
def test_cli_bad_input_is_one_line_exit_2(cli, args) -> None:
    result = cli(
        ["kernels", "bench", "--device", "cpu", *args]
        if "--device" not in args
        else ["kernels", "bench", *args]
    )
    assert result.code == 2, result.out
    assert result.err.strip().startswith("error:") and len(result.err.strip().splitlines()) == 1
