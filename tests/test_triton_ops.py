"""Triton conv1d + SiLU (causal and anti-causal) and residual add + RMSNorm against the PyTorch references,
forward and gradients, in Triton's interpreter (one subprocess, see test_triton_scan.py)."""

from __future__ import annotations

import pytest
import torch
from vimbench.kernels import add_rms_norm, add_rms_norm_ref, causal_conv1d_ref, causal_conv1d_silu
from vimbench.kernels.conv1d import conv_backends
from vimbench.kernels.rmsnorm import norm_backends

from vimbench.testing.interpreter import interpreter_tests
from vimbench.testing.numerics import rel_err

CHECKS: dict = {}


def check_conv(reverse: bool, width: int, activation: bool, dtype: torch.dtype, device: str = "cpu") -> None:
    g = torch.Generator().manual_seed(width)
    # (B, L, E) memory transposed to (B, E, L), like Vim's x: not contiguous, L stride E
    x = torch.randn(2, 70, 20, generator=g).transpose(1, 2).to(device)
    weight = torch.randn(20, 1, width, generator=g).to(device)
    bias = torch.randn(20, generator=g).to(device)
    ref = causal_conv1d_ref(x.double(), weight.double(), bias.double(), reverse, activation)
    leaves = [t.to(dtype).requires_grad_(True) for t in (x, weight, bias)]
    out = causal_conv1d_silu(*leaves, reverse=reverse, activation=activation, backend="triton")
    assert out.dtype == dtype and out.shape == x.shape
    assert rel_err(out, ref) < (1e-5 if dtype == torch.float32 else 1e-2)
    if dtype == torch.float32:
        ref_leaves = [t.double().requires_grad_(True) for t in (x, weight, bias)]
        dout = torch.randn_like(ref)
        grads = torch.autograd.grad(out, leaves, dout.float())
        ref_grads = torch.autograd.grad(
            causal_conv1d_ref(*ref_leaves, reverse, activation), ref_leaves, dout)
        for a, b in zip(grads, ref_grads, strict=True):
            assert rel_err(a, b) < 1e-5


def check_norm(with_residual: bool, residual_in_fp32: bool, dtype: torch.dtype, dim: int,
               device: str = "cpu") -> None:
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(2, 9, dim, generator=g).to(device)
    residual = torch.randn(2, 9, dim, generator=g).to(device) if with_residual else None
    weight = torch.randn(dim, generator=g).to(device)
    ref_out, ref_res = add_rms_norm_ref(x.double(), None if residual is None else residual.double(),
                                        weight.double(), 1e-5)
    xs = x.to(dtype).requires_grad_(True)
    rs = residual.requires_grad_(True) if residual is not None else None
    ws = weight.clone().requires_grad_(True)
    out, res = add_rms_norm(xs, rs, ws, 1e-5, residual_in_fp32=residual_in_fp32, backend="triton")
    assert out.dtype == dtype
    assert res.dtype == (torch.float32 if residual_in_fp32 else dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert rel_err(out, ref_out) < tol and rel_err(res, ref_res) < tol
    d_out, d_res = torch.randn_like(out), torch.randn_like(res)
    leaves = [t for t in (xs, rs, ws) if t is not None]
    grads = torch.autograd.grad((out, res), leaves, (d_out, d_res))
    ref_leaves = [t.detach().double().requires_grad_(True) for t in leaves]
    ref_args = (ref_leaves[0], ref_leaves[1] if rs is not None else None, ref_leaves[-1])
    ro, rr = add_rms_norm_ref(*ref_args, 1e-5)
    ref_grads = torch.autograd.grad((ro, rr), ref_leaves, (d_out.double(), d_res.double()))
    for a, b in zip(grads, ref_grads, strict=True):
        assert rel_err(a, b) < (1e-5 if dtype == torch.float32 else 2e-2)


for _rev in (False, True):
    for _width in (2, 4):
        CHECKS[f"conv-rev{_rev}-K{_width}"] = lambda r=_rev, w=_width: check_conv(r, w, True, torch.float32)
CHECKS["conv-no-activation"] = lambda: check_conv(True, 4, False, torch.float32)
CHECKS["conv-bf16"] = lambda: check_conv(False, 4, True, torch.bfloat16)
CHECKS["norm-residual-fp32"] = lambda: check_norm(True, True, torch.float32, 48)
CHECKS["norm-first-block"] = lambda: check_norm(False, True, torch.float32, 200)
CHECKS["norm-fp16-residual-fp16"] = lambda: check_norm(True, False, torch.float16, 64)


interpreter_results, test_in_triton_interpreter = interpreter_tests(__file__, CHECKS)


def test_ops_register_for_cuda_and_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert conv_backends("cpu") == ["reference"] or "triton" not in conv_backends("cpu")
    assert "triton" not in norm_backends("cpu")
    assert "triton" in conv_backends("cuda") and "triton" in norm_backends("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert conv_backends("cpu")[0] == "triton" and norm_backends("cpu")[0] == "triton"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_ops_match_reference(dtype):
    for rev in (False, True):
        check_conv(rev, 4, True, dtype, device="cuda")
    check_norm(True, True, dtype, 768, device="cuda")
    check_norm(False, True, dtype, 384, device="cuda")
