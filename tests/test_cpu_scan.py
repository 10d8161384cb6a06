"""The "cpu" scan backend (C++ compiled on first use) against the float64 reference loop.

Shapes are picked so every code path runs: channel tiles of 16 with a partial tail tile, several blocks of
32 channels in the backward's dB/dC reduction, grouped and ungrouped B/C, both scan directions.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import torch
from vimbench.kernels import cpu_scan, resolve_backend, selective_scan, selective_scan_ref
from vimbench.kernels.registry import get_backend

from vimbench.kernelbench.check import single_threaded

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
FP32_TOL = 1e-5


@pytest.fixture(scope="session")
def cpu_backend():
    """Build the extension once for the whole session (skip the kernel tests when this machine cannot)."""
    status = cpu_scan.build_status()
    if not status.ok:
        pytest.skip(f"cpu scan extension unavailable: {status.error}")
    return get_backend("cpu")


def make_inputs(
    batch: int = 2,
    dim: int = 72,
    length: int = 33,
    nstate: int = 16,
    groups: int | None = None,  # None: B/C (batch, N, L); int: (batch, groups, N, L)
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    with_z: bool = True,
    with_D: bool = True,
    with_bias: bool = True,
    delta_scale: float = 0.5,
    A_scale: float = 2.0,
) -> dict[str, torch.Tensor | None]:
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    A_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    bc_shape = (batch, nstate, length) if groups is None else (batch, groups, nstate, length)
    return {
        "u": randn(batch, dim, length),
        "delta": randn(batch, dim, length) * delta_scale,
        "A": -(torch.rand(dim, nstate, generator=gen, dtype=torch.float64) * A_scale + 0.05).to(A_dtype),
        "B": randn(*bc_shape),
        "C": randn(*bc_shape),
        "D": randn(dim) if with_D else None,
        "z": randn(batch, dim, length) if with_z else None,
        "delta_bias": randn(dim) * 0.3 if with_bias else None,
    }


def as_float64(inputs: dict) -> dict:
    return {k: None if v is None else v.detach().double() for k, v in inputs.items()}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    assert x.shape == ref.shape, (x.shape, ref.shape)
    assert torch.isfinite(x).all(), "non-finite values"
    scale = ref.abs().max().item()
    return (x.double() - ref).abs().max().item() / (scale if scale > 0 else 1.0)


def compare(backend, inputs: dict, softplus: bool, reverse: bool, tol: float = FP32_TOL) -> None:
    """Forward output, last state and all eight gradients of `backend` vs the float64 reference."""
    args = [inputs[k] for k in GRAD_NAMES]
    ref_backend = get_backend("reference")
    ref_args = [as_float64(inputs)[k] for k in GRAD_NAMES]
    out, last = backend.forward(*args, softplus, reverse)
    with single_threaded():  # the reference loop is thousands of tiny ops
        ref_out, ref_last = ref_backend.forward(*ref_args, softplus, reverse)
    assert out.dtype == inputs["u"].dtype and last.shape == ref_last.shape
    assert rel_err(out, ref_out) < tol
    assert rel_err(last, ref_last) < tol
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = backend.backward(dout.to(out.dtype), *args, softplus, reverse)
    with single_threaded():  # the reference loop is thousands of tiny ops
        ref_grads = ref_backend.backward(dout, *ref_args, softplus, reverse)
    for name, given, grad, ref in zip(GRAD_NAMES, args, grads, ref_grads, strict=True):
        if given is None:
            assert grad is None, name
            continue
        assert grad.shape == given.shape and grad.dtype == given.dtype, name
        assert rel_err(grad, ref) < tol, f"d{name}: {rel_err(grad, ref):.2e}"


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("groups", [None, 1, 2], ids=["BNL", "G1", "G2"])
@pytest.mark.parametrize("nstate", [1, 16])
@pytest.mark.parametrize("length", [1, 7, 197, 300])
def test_matches_reference_fp32(cpu_backend, length, nstate, groups, reverse):
    dim = 80 if groups == 2 else 72  # 40 or 72 channels per group: partial tiles, several dB/dC blocks
    inputs = make_inputs(batch=2 if length < 300 else 1, dim=dim, length=length, nstate=nstate, groups=groups)
    compare(cpu_backend, inputs, softplus=True, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize(
    "options",
    [
        {"with_z": False},
        {"with_D": False},
        {"with_bias": False},
        {"softplus": False},
        {"with_z": False, "with_D": False, "with_bias": False, "softplus": False},
    ],
    ids=["no_z", "no_D", "no_bias", "no_softplus", "bare"],
)
def test_optional_inputs(cpu_backend, options, reverse):
    options = dict(options)
    softplus = options.pop("softplus", True)
    delta_scale = 0.5 if softplus else 0.05  # without softplus keep delta mostly positive-small
    inputs = make_inputs(length=40, delta_scale=delta_scale, **options)
    if not softplus:
        inputs["delta"] = inputs["delta"].abs()
    compare(cpu_backend, inputs, softplus=softplus, reverse=reverse)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_float64_is_exact(cpu_backend, reverse):
    inputs = make_inputs(dim=20, length=50, groups=2, dtype=torch.float64)
    compare(cpu_backend, inputs, softplus=True, reverse=reverse, tol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 3e-3), (torch.bfloat16, 3e-2)])
def test_half_inputs_compute_in_fp32(cpu_backend, dtype, tol):
    inputs = make_inputs(dim=24, length=30, dtype=dtype)
    inputs["A"] = inputs["A"].float()
    args = [inputs[k] for k in GRAD_NAMES]
    out, last = cpu_backend.forward(*args, True, False)
    ref_out, ref_last = selective_scan_ref(*as_float64(inputs).values(), True, return_last_state=True)
    assert out.dtype == dtype and last.dtype == torch.float32
    assert rel_err(out, ref_out) < tol and rel_err(last, ref_last) < 1e-5
    grads = cpu_backend.backward(torch.ones_like(out), *args, True, False)
    assert [g.dtype for g in grads] == [t.dtype for t in args]


def test_non_contiguous_inputs(cpu_backend):
    """Strided u/delta/z (as the Vim mixer passes them) and transposed B/C give the contiguous result."""
    base = make_inputs(batch=2, dim=40, length=25, groups=2)
    strided = dict(base)
    for name in ("delta", "z"):  # (L, B, E) storage viewed as (B, E, L)
        strided[name] = base[name].permute(2, 0, 1).contiguous().permute(1, 2, 0)
    strided["u"] = torch.stack([base["u"], torch.zeros_like(base["u"])], dim=-1).flatten(-2)[..., ::2]
    for name in ("B", "C"):  # (B, G, L, N) storage
        strided[name] = base[name].transpose(2, 3).contiguous().transpose(2, 3)
    assert strided["u"].stride(-1) == 2 and not strided["delta"].is_contiguous()
    assert not strided["B"].is_contiguous()
    compare(cpu_backend, strided, softplus=True, reverse=True)
    out_strided, _ = cpu_backend.forward(*[strided[k] for k in GRAD_NAMES], True, False)
    out_base, _ = cpu_backend.forward(*[base[k] for k in GRAD_NAMES], True, False)
    torch.testing.assert_close(out_strided, out_base, rtol=0, atol=0)


def test_large_decay_stays_finite(cpu_backend):
    """delta*|A| in the hundreds (real Vim weights reach it): decays underflow to 0, nothing overflows."""
    inputs = make_inputs(length=60, delta_scale=4.0, A_scale=60.0)
    inputs["delta_bias"] = inputs["delta_bias"] + 6.0
    compare(cpu_backend, inputs, softplus=True, reverse=False)


def test_constant_state_inputs(cpu_backend):
    """B, C of shape (dim, N) (constant over time), as the reference allows."""
    inputs = make_inputs(dim=24, length=20)
    inputs["B"] = torch.randn(24, 16)
    inputs["C"] = torch.randn(24, 16)
    compare(cpu_backend, inputs, softplus=True, reverse=True)


def test_empty_sequence(cpu_backend):
    inputs = make_inputs(dim=8, length=0)
    args = [inputs[k] for k in GRAD_NAMES]
    out, last = cpu_backend.forward(*args, True, False)
    assert out.shape == (2, 8, 0) and torch.equal(last, torch.zeros(2, 8, 16))
    grads = cpu_backend.backward(torch.zeros_like(out), *args, True, False)
    assert all(g.shape == t.shape and not g.any() for g, t in zip(grads, args, strict=True))


def test_nan_propagates(cpu_backend):
    inputs = make_inputs(dim=20, length=12)
    inputs["delta"][0, 3, 5] = float("nan")
    out, _ = cpu_backend.forward(*[inputs[k] for k in GRAD_NAMES], True, False)
    assert out[0, 3, 5:].isnan().all() and not out[1].isnan().any() and not out[0, 2].isnan().any()


def test_forward_and_backward_are_deterministic_across_thread_counts(cpu_backend):
    """The other tests run with one torch thread (tests/conftest.py): here the kernels' parallel split."""
    inputs = make_inputs(batch=1, dim=128, length=50)
    args = [inputs[k] for k in GRAD_NAMES]
    dout = torch.randn(1, 128, 50)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = (*cpu_backend.forward(*args, True, True), *cpu_backend.backward(dout, *args, True, True))
        torch.set_num_threads(max(2, threads))
        multi = (*cpu_backend.forward(*args, True, True), *cpu_backend.backward(dout, *args, True, True))
    finally:
        torch.set_num_threads(threads)
    for name, a, b in zip(("out", "last", *GRAD_NAMES), single, multi, strict=True):
        assert (a is None and b is None) or torch.equal(a, b), name


def test_public_op_autograd_and_auto(cpu_backend):
    """`selective_scan(backend="auto")` runs "cpu" on CPU, and autograd goes through its backward."""
    assert resolve_backend("auto", "cpu") == "cpu"
    inputs = make_inputs(dim=32, length=20, groups=2)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    out, _ = selective_scan(**leaves, delta_softplus=True, return_last_state=True, reverse=True)
    out.sum().backward()
    ref_leaves = {k: v.double().requires_grad_(True) for k, v in inputs.items()}
    ref_out = selective_scan_ref(**ref_leaves, delta_softplus=True, reverse=True)
    ref_out.sum().backward()
    assert rel_err(out.detach(), ref_out.detach()) < FP32_TOL
    for name in GRAD_NAMES:
        assert rel_err(leaves[name].grad, ref_leaves[name].grad) < FP32_TOL, name


def test_vim_model_uses_cpu_backend(cpu_backend):
    from vimbench.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("vim-t", img_size=64, scan_backend="auto").eval()
    image = torch.randn(1, 3, 64, 64)
    assert resolve_backend(model.scan_backend, "cpu") == "cpu"
    with torch.inference_mode():
        fast = model(image)
        model.set_scan_backend("reference")
        slow = model(image)
    assert rel_err(fast, slow.double()) < 1e-4


# ---------------------------------------------------------------- SIMD level of the build

VECTOR_LANES = {"AVX2": 8, "AVX512": 16}  # fp32 lanes of ATen's Vectorized at each x86 capability


def test_build_matches_cpu_capability(cpu_backend):
    """The loaded build vectorises for the SIMD level torch runs at: a scalar (or lower) build fails here."""
    isa, lanes = cpu_scan.compiled_isa()
    capability = torch.backends.cpu.get_cpu_capability()
    assert isa == (capability if capability in VECTOR_LANES else "DEFAULT")
    assert lanes == VECTOR_LANES.get(isa, lanes) and lanes >= 1


LEVEL_NOT_RUNNABLE = 3  # the level script's exit code when this CPU runs the asked level as another

_LEVEL_SCRIPT = """
import sys, torch
capability = torch.backends.cpu.get_cpu_capability()
if capability.lower() != sys.argv[1]:
    print(f"this CPU runs ATEN_CPU_CAPABILITY={sys.argv[1]} as {capability}")
    sys.exit(3)  # LEVEL_NOT_RUNNABLE
from vimbench.kernels import cpu_scan, get_backend, selective_scan_ref
isa, lanes = cpu_scan.compiled_isa()
print("build", isa, lanes)
assert isa == (capability if capability in ("AVX2", "AVX512") else "DEFAULT"), (isa, capability)
gen = torch.Generator().manual_seed(0)
u, delta, z = (torch.randn(2, 24, 40, generator=gen, dtype=torch.float64) for _ in range(3))
A = -torch.rand(24, 16, generator=gen, dtype=torch.float64) - 0.1
B, C = (torch.randn(2, 2, 16, 40, generator=gen, dtype=torch.float64) for _ in range(2))
for reverse in (False, True):
    out, _ = get_backend("cpu").forward(u, delta, A, B, C, None, z, None, True, reverse)
    ref = selective_scan_ref(u, delta, A, B, C, None, z, None, True, reverse=reverse)
    assert (out - ref).abs().max() <= 1e-12 * ref.abs().max(), "fp64"
from vimbench.cli.app import main
main(["check", "--device", "cpu", "--backends", "cpu", "--quick", "--quiet"])
"""


@pytest.mark.slow
@pytest.mark.parametrize("level", ["default", "avx2", "avx512"])
def test_every_simd_level_passes_check(level):
    """Each build this CPU can run (its own extension name): an fp64 forward and `vimbench check --quick`
    (fp32, fp16, bf16, grouped B/C, reverse, gradients), in one fresh process with ATEN_CPU_CAPABILITY. The
    level this process runs at is skipped: every other test here checks that build, gradients included."""
    if level == torch.backends.cpu.get_cpu_capability().lower():
        pytest.skip(f"{level} is this process's own build, checked by the tests above")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": level, "VIMBENCH_CPU_SCAN_SCALAR": "0"}
    run = subprocess.run([sys.executable, "-c", _LEVEL_SCRIPT, level], env=env, capture_output=True,
                         text=True, timeout=600)
    if run.returncode == LEVEL_NOT_RUNNABLE:
        pytest.skip(run.stdout.strip())
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------- build and fallback


@pytest.fixture
def fresh_build(monkeypatch):
    """Forget this process's build result (restored after the test)."""
    monkeypatch.setattr(cpu_scan, "_status", None)
    return monkeypatch


def test_failed_build_falls_back_to_reference(fresh_build, caplog):
    def no_compiler() -> None:
        raise RuntimeError("Error building extension: g++: command not found")

    fresh_build.setattr(cpu_scan, "_compile", no_compiler)
    with caplog.at_level(logging.WARNING, logger=cpu_scan.__name__):
        assert not cpu_scan.is_available(torch.device("cpu"))
        assert not cpu_scan.is_available(torch.device("cpu"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "command not found" in warnings[0].getMessage()
    assert resolve_backend("auto", "cpu") == "reference"
    inputs = make_inputs(dim=8, length=9)
    out = selective_scan(**inputs, delta_softplus=True)
    torch.testing.assert_close(out, selective_scan_ref(**inputs, delta_softplus=True), rtol=0, atol=0)
    with pytest.raises(ValueError, match="not available"):
        selective_scan(**inputs, backend="cpu")


def test_compiler_error_is_reported(fresh_build, tmp_path, caplog):
    """A real (failing) build through torch's cpp_extension: one warning naming the compiler's error."""
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    (csrc / "cpu_scan.cpp").write_text("this is not C++;\n")
    fresh_build.setattr(cpu_scan, "CSRC", csrc)
    fresh_build.setattr(cpu_scan, "SOURCE", csrc / "cpu_scan.cpp")
    fresh_build.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    with caplog.at_level(logging.WARNING, logger=cpu_scan.__name__):
        assert not cpu_scan.is_available(torch.device("cpu"))
    assert "error" in cpu_scan.build_status().error.lower()
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_env_switch_disables_build(fresh_build):
    fresh_build.setenv("VIMBENCH_CPU_SCAN", "0")
    fresh_build.setattr(cpu_scan, "_compile", lambda: pytest.fail("must not compile"))
    assert not cpu_scan.is_available(torch.device("cpu"))
    assert "VIMBENCH_CPU_SCAN" in cpu_scan.build_status().error


def test_build_runs_once_across_threads(fresh_build):
    calls = []

    def slow_compile() -> None:
        calls.append(1)
        time.sleep(0.05)

    fresh_build.setattr(cpu_scan, "_compile", slow_compile)
    threads = [threading.Thread(target=cpu_scan.build_status) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1] and cpu_scan.build_status().ok


def test_not_available_off_cpu(cpu_backend):
    assert not cpu_scan.is_available(torch.device("meta"))
    assert not cpu_scan.is_available(torch.device("cuda"))


def test_build_flavour_follows_capability_and_scalar_switch(monkeypatch):
    """Name part and flags: ATen's macros for the capability torch runs at, or the forced scalar build."""
    monkeypatch.setenv("VIMBENCH_CPU_SCAN_SCALAR", "1")
    name, flags = cpu_scan.build_flavour()
    assert name == "scalar" and "-DVIMBENCH_CPU_SCAN_SCALAR" in flags and "-fno-tree-vectorize" in flags
    monkeypatch.setenv("VIMBENCH_CPU_SCAN_SCALAR", "0")
    name, flags = cpu_scan.build_flavour()
    capability = torch.backends.cpu.get_cpu_capability()
    if capability in VECTOR_LANES:
        assert name == capability.lower() and f"-DCPU_CAPABILITY_{capability}" in flags
    else:
        assert (name, flags) == ("default", ["-DCPU_CAPABILITY=DEFAULT"])


# ---------------------------------------------------------------- conv1d + SiLU and add + RMSNorm (inference)


@pytest.mark.parametrize("activation", [True, False], ids=["silu", "linear"])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "anti"])
@pytest.mark.parametrize("length, width", [(1, 4), (7, 4), (197, 4), (33, 2)])
def test_conv1d_silu_matches_reference(cpu_backend, length, width, reverse, activation):
    from vimbench.kernels import causal_conv1d_ref, causal_conv1d_silu

    gen = torch.Generator().manual_seed(length)
    xz = torch.randn(2, 2 * 40, length, generator=gen)
    x = xz[:, :40]  # a channel slice of in_proj's output, as the Vim mixer passes it
    weight, bias = torch.randn(40, 1, width, generator=gen), torch.randn(40, generator=gen)
    with torch.inference_mode():
        out = causal_conv1d_silu(x, weight, bias, reverse=reverse, activation=activation, backend="cpu")
    ref = causal_conv1d_ref(x, weight, bias, reverse, activation)
    assert out.shape == ref.shape and rel_err(out, ref.double()) < FP32_TOL


@pytest.mark.parametrize("with_residual", [False, True])
def test_add_rms_norm_matches_reference(cpu_backend, with_residual):
    from vimbench.kernels import add_rms_norm, add_rms_norm_ref

    gen = torch.Generator().manual_seed(0)
    x, residual = torch.randn(2, 197, 192, generator=gen), torch.randn(2, 197, 192, generator=gen)
    weight = torch.randn(192, generator=gen)
    residual = residual if with_residual else None
    with torch.inference_mode():
        out, res = add_rms_norm(x, residual, weight, 1e-5, backend="cpu")
    ref_out, ref_res = add_rms_norm_ref(x, residual, weight, 1e-5)
    assert rel_err(out, ref_out.double()) < FP32_TOL and torch.equal(res, ref_res)


def test_block_ops_fall_back_for_training_and_other_dtypes(cpu_backend):
    """No backward in C++: with autograd (or a non-fp32 dtype) the reference runs, gradients included."""
    from vimbench.kernels import add_rms_norm, causal_conv1d_silu
    from vimbench.kernels.conv1d import conv_backends
    from vimbench.kernels.rmsnorm import norm_backends

    assert conv_backends("cpu")[0] == "cpu" and norm_backends("cpu")[0] == "cpu"
    x = torch.randn(1, 8, 10, requires_grad=True)
    causal_conv1d_silu(x, torch.randn(8, 1, 4), None, backend="cpu").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    out, res = add_rms_norm(torch.randn(3, 8, dtype=torch.bfloat16), None, torch.ones(8), backend="cpu")
    assert out.dtype == torch.bfloat16 and res.dtype == torch.float32
