"""The other hot ops of the Vim block as single Triton kernels, as upstream fuses them.

- depthwise causal (or anti-causal, `reverse=True`) conv1d + bias + SiLU: one pass over x, out written once
  (upstream: causal-conv1d's CUDA kernel; the reverse form replaces Vim's flip-conv-flip);
- residual add + RMSNorm: x + residual kept in fp32, normalised and scaled in the same pass (upstream:
  mamba's `layer_norm_fn(prenorm=True, residual_in_fp32=True)`).
Forwards run in Triton; backwards recompute the op in PyTorch (exact, and off the inference hot path).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .conv1d import causal_conv1d_ref, register_conv_backend
from .dtypes import IO_DTYPES
from .rmsnorm import add_rms_norm_ref, register_norm_backend
from .triton_scan_fwd import TritonKernel, triton_available

OP_DTYPES = IO_DTYPES  # vimbench.kernels.dtypes, the one table
CONV_BLOCK_E = 16
CONV_BLOCK_L = 64
CONV_NUM_WARPS = 4
MAX_NORM_DIM = 16384
MIN_NORM_BLOCK = 128


def _conv1d_silu_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr, E, L, K, sign, activation,
    sx_b, sx_e, sx_l, sw_e, sw_k, so_b, so_e, so_l,
    BLOCK_E: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """out[e, t] = silu(bias[e] + sum_k w[e, k] * x[e, t + sign * (K - 1 - k)]), sign -1 causal/+1 reverse."""
    pid_l = tl.program_id(0)
    pid_e = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    mask_e = offs_e < E
    acc = tl.zeros((BLOCK_E, BLOCK_L), dtype=tl.float32)
    acc += tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)[:, None]
    x_rows = x_ptr + pid_b * sx_b + offs_e[:, None] * sx_e
    for k in range(K):
        src = offs_l + sign * (K - 1 - k)
        ok = mask_e[:, None] & ((src >= 0) & (src < L))[None, :]
        xv = tl.load(x_rows + src[None, :] * sx_l, mask=ok, other=0.0).to(tl.float32)
        wv = tl.load(w_ptr + offs_e * sw_e + k * sw_k, mask=mask_e, other=0.0).to(tl.float32)
        acc += wv[:, None] * xv
    if activation:
        acc = acc * tl.sigmoid(acc)
    out = out_ptr + pid_b * so_b + offs_e[:, None] * so_e + offs_l[None, :] * so_l
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_e[:, None] & (offs_l < L)[None, :])


conv1d_silu_kernel = TritonKernel(_conv1d_silu_kernel)


def _add_rms_norm_kernel(
    x_ptr, res_in_ptr, w_ptr, out_ptr, res_out_ptr, D, eps, sx_row, sr_row, so_row, sro_row,
    HAS_RESIDUAL: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """One row: res = x + residual (fp32), out = res * rsqrt(mean(res^2) + eps) * w."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    res = tl.load(x_ptr + row * sx_row + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        res += tl.load(res_in_ptr + row * sr_row + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(res * res, axis=0) / D + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * so_row + offs, (res * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(res_out_ptr + row * sro_row + offs, res.to(res_out_ptr.dtype.element_ty), mask=mask)


add_rms_norm_kernel = TritonKernel(_add_rms_norm_kernel)


def norm_launch_config(dim: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for a row of `dim` features."""
    if not 1 <= dim <= MAX_NORM_DIM:
        raise ValueError(f"triton add+RMSNorm supports rows of 1..{MAX_NORM_DIM} features, got {dim}")
    block = max(MIN_NORM_BLOCK, triton.next_power_of_2(dim))
    return block, 4 if block <= 1024 else 8 if block <= 4096 else 16


def norm_configs() -> list[tuple[int, int]]:
    """Every (BLOCK_D, num_warps) `norm_launch_config` can return."""
    sizes = range(MIN_NORM_BLOCK.bit_length() - 1, MAX_NORM_DIM.bit_length())
    return [norm_launch_config(1 << i) for i in sizes]


def _check_dtype(x: Tensor, op: str) -> None:
    if x.dtype not in OP_DTYPES:
        raise ValueError(f"triton {op} takes float32/float16/bfloat16 inputs, got {x.dtype}")


def _conv_forward(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool, activation: bool) -> Tensor:
    _check_dtype(x, "conv1d")
    batch, dim, length = x.shape
    w = weight.reshape(dim, -1)
    out = torch.empty((batch, dim, length), device=x.device, dtype=x.dtype)
    if out.numel() == 0:
        return out
    b = bias if bias is not None else torch.zeros(dim, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(length, CONV_BLOCK_L), triton.cdiv(dim, CONV_BLOCK_E), batch)
    conv1d_silu_kernel.on(x.device)[grid](
        x, w, b, out, dim, length, w.shape[1], 1 if reverse else -1, int(activation),
        *x.stride(), *w.stride(), *out.stride(),
        BLOCK_E=CONV_BLOCK_E, BLOCK_L=CONV_BLOCK_L, num_warps=CONV_NUM_WARPS,
    )
    return out


class _ConvSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, reverse, activation):
        ctx.save_for_backward(x, weight, bias)
        ctx.reverse, ctx.activation = reverse, activation
        return _conv_forward(x, weight, bias, reverse, activation)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        leaves = [t.detach().requires_grad_(True) if t is not None else None for t in (x, weight, bias)]
        with torch.enable_grad():
            out = causal_conv1d_ref(leaves[0], leaves[1], leaves[2], ctx.reverse, ctx.activation)
            wanted = [t for t in leaves if t is not None]
            grads = iter(torch.autograd.grad(out, wanted, dout))
        return (*(next(grads) if t is not None else None for t in leaves), None, None)


def triton_conv1d_silu(
    x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool, activation: bool
) -> Tensor:
    """The "triton" conv backend: x (B, E, L) any strides, weight (E, K) or (E, 1, K)."""
    return _ConvSiLU.apply(x, weight, bias, reverse, activation)


def _norm_forward(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, residual_in_fp32: bool):
    _check_dtype(x, "add+RMSNorm")
    dim = x.shape[-1]
    block, warps = norm_launch_config(dim)
    x2 = x.reshape(-1, dim)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    r2 = x2 if residual is None else residual.reshape(-1, dim)
    if r2.stride(-1) != 1:
        r2 = r2.contiguous()
    out = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    res = torch.empty(x.shape, device=x.device, dtype=torch.float32 if residual_in_fp32 else x.dtype)
    rows = x2.shape[0]
    if rows and dim:
        add_rms_norm_kernel.on(x.device)[(rows,)](
            x2, r2, weight.contiguous(), out, res, dim, float(eps),
            x2.stride(0), r2.stride(0), dim, dim,
            HAS_RESIDUAL=residual is not None, BLOCK_D=block, num_warps=warps,
        )
    return out, res


class _AddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, eps, residual_in_fp32):
        ctx.save_for_backward(x, residual, weight)
        ctx.eps, ctx.residual_in_fp32 = eps, residual_in_fp32
        return _norm_forward(x, residual, weight, eps, residual_in_fp32)

    @staticmethod
    def backward(ctx, dout, dres):
        saved = ctx.saved_tensors
        leaves = [t.detach().requires_grad_(True) if t is not None else None for t in saved]
        with torch.enable_grad():
            out, res = add_rms_norm_ref(leaves[0], leaves[1], leaves[2], ctx.eps, ctx.residual_in_fp32)
            wanted = [t for t in leaves if t is not None]
            grads = iter(torch.autograd.grad((out, res), wanted, (dout, dres), allow_unused=True))
        return (*(next(grads) if t is not None else None for t in leaves), None, None)


def triton_add_rms_norm(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, residual_in_fp32: bool
) -> tuple[Tensor, Tensor]:
    """The "triton" norm backend: (RMSNorm(x + residual) in x's dtype, x + residual)."""
    return _AddRMSNorm.apply(x, residual, weight, eps, residual_in_fp32)


def _available(device: torch.device) -> bool:
    return triton_available(torch.device(device))


register_conv_backend("triton", triton_conv1d_silu, _available)
register_norm_backend("triton", triton_add_rms_norm, _available)
