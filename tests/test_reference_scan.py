"""The reference scan, the ground truth of `vimbench check`: semantics checked independently, gradients by
float64 gradcheck through the public op (the custom op and its autograd wiring)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from vimbench.kernels import selective_scan, selective_scan_ref


def _inputs(batch=2, dim=4, length=6, n=3, groups=0, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    delta = torch.randn(batch, dim, length, generator=g, dtype=dtype) * 0.5
    A = -torch.rand(dim, n, generator=g, dtype=dtype) - 0.1
    shape = (batch, groups, n, length) if groups else (batch, n, length)
    B = torch.randn(*shape, generator=g, dtype=dtype)
    C = torch.randn(*shape, generator=g, dtype=dtype)
    D = torch.randn(dim, generator=g, dtype=dtype)
    z = torch.randn(batch, dim, length, generator=g, dtype=dtype)
    bias = torch.randn(dim, generator=g, dtype=dtype) * 0.1
    return u, delta, A, B, C, D, z, bias


def _closed_form(u, delta, A, B, C, D, z, bias, softplus, reverse):
    """y_t = sum_s [prod over the steps between s and t of exp(dt A)] dt_s B_s u_s . C_t, by brute force."""
    batch, dim, length = u.shape
    dt = delta + bias[:, None]
    dt = F.softplus(dt) if softplus else dt
    Bx = B.unsqueeze(1).expand(batch, dim, *B.shape[1:]) if B.dim() == 3 else B.repeat_interleave(
        dim // B.shape[1], dim=1)
    Cx = C.unsqueeze(1).expand(batch, dim, *C.shape[1:]) if C.dim() == 3 else C.repeat_interleave(
        dim // C.shape[1], dim=1)
    out = torch.zeros_like(u)
    for t in range(length):
        sources = range(t, length) if reverse else range(t + 1)
        h = torch.zeros(batch, dim, A.shape[1], dtype=u.dtype)
        for s in sources:
            between = range(t, s) if reverse else range(s + 1, t + 1)
            decay = torch.ones_like(h)
            for k in between:
                decay = decay * torch.exp(dt[:, :, k, None] * A)
            h = h + decay * (dt[:, :, s, None] * Bx[:, :, :, s] * u[:, :, s, None])
        out[:, :, t] = (h * Cx[:, :, :, t]).sum(-1)
    return (out + D[:, None] * u) * F.silu(z)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups", [0, 2])
@pytest.mark.parametrize("softplus", [False, True])
def test_reference_matches_the_closed_form(reverse, groups, softplus):
    args = _inputs(groups=groups)
    ref = selective_scan_ref(*args[:5], args[5], args[6], args[7], softplus, reverse=reverse)
    torch.testing.assert_close(ref, _closed_form(*args, softplus, reverse), rtol=1e-10, atol=1e-10)


def test_reverse_equals_flip_scan_flip_and_its_last_state_is_after_position_0():
    u, delta, A, B, C, D, z, bias = _inputs()
    out, last = selective_scan_ref(u, delta, A, B, C, D, z, bias, True, True, reverse=True)
    f = lambda t: t.flip(-1)  # noqa: E731
    out_f, last_f = selective_scan_ref(f(u), f(delta), A, f(B), f(C), D, f(z), bias, True, True)
    torch.testing.assert_close(out, f(out_f), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(last, last_f, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups, with_z_d_bias", [(0, True), (2, True), (0, False)])
def test_public_op_gradients_pass_float64_gradcheck(reverse, groups, with_z_d_bias):
    u, delta, A, B, C, D, z, bias = _inputs(batch=1, dim=4, length=5, n=2, groups=groups)
    if not with_z_d_bias:
        D = z = bias = None
    tensors = [t.requires_grad_(True) for t in (u, delta, A, B, C, D, z, bias) if t is not None]

    def run(*ts):
        it = iter(ts)
        args = [next(it) if t is not None else None for t in (u, delta, A, B, C, D, z, bias)]
        return selective_scan(*args, delta_softplus=True, reverse=reverse, backend="reference")

    assert torch.autograd.gradcheck(run, tuple(tensors), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32_and_return_their_dtype(dtype):
    args = _inputs(dtype=torch.float32)
    low = [a.to(dtype) if a.dim() == 3 and a is not args[2] else a for a in args]
    out = selective_scan(*low[:5], low[5], low[6], low[7], True, backend="reference")
    ref = selective_scan_ref(*[a.to(dtype).float() if a.dim() == 3 else a for a in args[:5]], args[5],
                             args[6].to(dtype).float(), args[7], True)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.to(dtype).float(), rtol=0, atol=0)
