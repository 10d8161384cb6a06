"""`vimbench check` and kernelbench/check.py: the grid covers every listed dimension, a correct backend passes
with real error numbers, and a wrong, NaN-producing or crashing backend fails with exit code 1."""

from __future__ import annotations

import json

import pytest
import torch
from vimbench.kernels import registry
from vimbench.kernels.registry import ScanBackend, backward_by_autograd
from vimbench.kernels.scan import _reference_forward

from vimbench.kernelbench.check import (
    FULL_LENGTHS,
    CheckCase,
    full_cases,
    make_inputs,
    quick_cases,
    run_checks,
)

_reference_backward = backward_by_autograd(_reference_forward)

SMALL = [
    CheckCase("L7", 7),
    CheckCase("rev-G2-L9", 9, groups=2, reverse=True),
    CheckCase("strided-big-dA-L12", 12, noncontiguous=True, large_decay=True),
]


def _fake(name: str, forward, backward=_reference_backward, cpu_only: bool = True) -> ScanBackend:
    return ScanBackend(
        name, "test double", forward, backward, lambda d: d.type == "cpu" if cpu_only else True, priority=5000
    )


def _scaled_forward(scale: float):
    """The reference with a relative error of `scale` injected into every output."""

    def forward(*args):
        out, last = _reference_forward(*args)
        return out * (1 + scale), last

    return forward


def _nan_forward(*args):
    out, last = _reference_forward(*args)
    out = out.clone()
    out.view(-1)[-1] = float("nan")  # one unwritten element is enough
    return out, last


def _fp32_only_forward(*args):
    if args[0].dtype != torch.float32:
        raise TypeError(f"no {args[0].dtype} kernel")
    return _reference_forward(*args)


@pytest.fixture
def fake_backend(monkeypatch):
    def add(backend: ScanBackend) -> str:
        monkeypatch.setitem(registry._BACKENDS, backend.name, backend)
        return backend.name

    return add


def test_full_grid_covers_every_listed_dimension() -> None:
    cases = full_cases()
    assert {c.seqlen for c in cases} >= set(FULL_LENGTHS)
    assert {c.dstate for c in cases} == {1, 16, 64}
    assert {c.groups for c in cases} == {1, 2}
    for flag in ("has_z", "has_D", "has_bias", "softplus", "reverse", "noncontiguous", "large_decay"):
        assert {getattr(c, flag) for c in cases} == {True, False}, flag
    assert len(cases) < 60  # a designed grid, not a cartesian product
    assert len({c.name for c in cases}) == len(cases)
    assert len(quick_cases()) <= 8


def test_inputs_are_strided_and_decay_is_large_where_asked() -> None:
    case = CheckCase("x", 33, groups=2, noncontiguous=True, large_decay=True)
    args = make_inputs(case, torch.float32, torch.device("cpu")).args
    for name in ("u", "delta", "z", "B", "C", "A"):
        assert not args[name].is_contiguous(), name
    delta = torch.nn.functional.softplus(args["delta"] + args["delta_bias"][:, None])
    assert float((delta.unsqueeze(2) * args["A"].abs()[None, :, :, None]).max()) > 88  # exp(-88) underflows


def test_reference_backend_passes_with_tiny_errors() -> None:
    rows = run_checks(["reference"], ["fp32"], SMALL, "cpu")
    assert [r.status for r in rows] == ["pass"] * 6
    assert {r.phase for r in rows} == {"fwd", "bwd"}
    fwd = [r for r in rows if r.phase == "fwd"]
    assert all(r.rel < 1e-5 for r in rows) and all(r.max_abs >= 0 for r in rows)
    assert set(fwd[0].errors) == {"out", "last_state"}
    bwd = next(r for r in rows if r.phase == "bwd")
    assert set(bwd.errors) == {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias"}


@pytest.mark.parametrize(
    ("scale", "dtype", "status"),
    [(3e-4, "fp32", "FAIL"), (3e-5, "fp32", "pass"), (1e-2, "bf16", "pass"), (5e-2, "bf16", "FAIL")],
)
def test_injected_error_is_judged_against_the_dtype_tolerance(fake_backend, scale, dtype, status) -> None:
    name = fake_backend(_fake("skewed", _scaled_forward(scale), backward=None))
    rows = run_checks([name], [dtype], SMALL[:1], "cpu")
    fwd = next(r for r in rows if r.phase == "fwd")
    assert fwd.status == status
    assert fwd.worst == "out" and fwd.rel == pytest.approx(scale, rel=0.5)


def test_nan_fails_and_is_named(fake_backend) -> None:
    name = fake_backend(_fake("nanny", _nan_forward))
    rows = run_checks([name], ["fp32"], SMALL[:1], "cpu")
    assert rows[0].status == "FAIL" and "out: 1 non-finite" in rows[0].note


def test_backend_without_backward_gets_forward_only_rows(fake_backend) -> None:
    name = fake_backend(_fake("fwdonly", _reference_forward, backward=None))
    rows = run_checks([name], ["fp32"], SMALL[:2], "cpu")
    assert [(r.phase, r.status) for r in rows] == [("fwd", "pass"), ("bwd", "fwd-only")] * 2


def test_unsupported_half_dtype_is_skipped_but_fp32_crash_fails(fake_backend) -> None:
    name = fake_backend(_fake("fp32only", _fp32_only_forward))
    rows = run_checks([name], ["bf16", "fp32"], SMALL[:1], "cpu")
    assert rows[0].status == "skip" and "no torch.bfloat16 kernel" in rows[0].note
    assert [r.status for r in rows[1:]] == ["pass", "pass"]

    def broken(*args):
        raise RuntimeError("boom")

    name = fake_backend(_fake("broken", broken))
    rows = run_checks([name], ["fp32"], SMALL[:1], "cpu")
    assert rows[0].status == "FAIL" and "boom" in rows[0].note


def test_cli_quick_cpu_passes_and_writes_json(cli, tmp_path) -> None:
    out = tmp_path / "check.json"
    result = cli(
        ["check", "--device", "cpu", "--quick", "--backends", "reference", "--dtypes", "fp32", "--json", out]
    )
    assert result.code == 0, result.out + result.err
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 2 * len(quick_cases()) - 1  # fwd + bwd per case, one case forward-only
    assert all(r["status"] == "pass" for r in rows)
    assert "rev-G2-N64-L128" in result.out and "pass, 0 FAIL" in result.out


def test_cli_exits_1_on_wrong_or_nan_backend(cli, fake_backend) -> None:
    skewed = fake_backend(_fake("skewed", _scaled_forward(1e-2)))
    nanny = fake_backend(_fake("nanny", _nan_forward))
    result = cli(
        [
            "check",
            "--device",
            "cpu",
            "--quick",
            "--backends",
            f"{skewed},{nanny}",
            "--dtypes",
            "fp32",
            "--max-len",
            "16",
        ]
    )
    assert result.code == 1
    assert "FAIL" in result.out and "non-finite" in result.out
    assert "L > 16 not run" in result.out  # --max-len skips are reported, not silently dropped


@pytest.mark.parametrize(
    "args",
    [["--backends", "nope"], ["--dtypes", "fp8"], ["--device", "tpu"]]
    + ([] if torch.cuda.is_available() else [["--device", "cuda"]]),
)
def test_cli_bad_input_is_one_line_exit_2(cli, args) -> None:
    result = cli(
        ["check", "--quick", "--device", "cpu", *args] if "--device" not in args else ["check", *args]
    )
    assert result.code == 2
    assert result.err.strip().startswith("error:") and len(result.err.strip().splitlines()) == 1


def test_cli_unavailable_backend_is_a_usage_error(cli, fake_backend) -> None:
    name = fake_backend(ScanBackend("gpuonly", "test", _reference_forward, None, lambda d: d.type == "cuda"))
    result = cli(["check", "--device", "cpu", "--backends", name])
    assert result.code == 2 and "not available on cpu" in result.err
