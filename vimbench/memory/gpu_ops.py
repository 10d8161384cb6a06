"""What the CUDA path runs instead of the reference ops, as allocation models for tracing on fake tensors.

On a GPU, Vim's residual add + RMSNorm and its conv1d + SiLU run fused Triton kernels
(`kernels/triton_ops.py`) that allocate only their outputs; the reference ops the CPU runs allocate several
fp32 temporaries. When the prediction targets CUDA these stand-ins replace the reference ops during the
trace. `upstream_mixer_forward` is hustvl/Vim's released mixer as its memory behaves (flipped copies of xz
and of the backward output, `mamba_inner_fn_no_out_proj` with contiguous B/C copies and the scan's chunk
states), for inference only.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .scan_gpu_models import MAMBA_SCAN_CHUNK
from .scan_standin import TRACE_BACKEND


class _FusedAddNorm(torch.autograd.Function):
    """Triton add + RMSNorm: out (dtype of x), residual (fp32), rstd (rows); grads like the inputs."""

    @staticmethod
    def forward(ctx, x, residual, weight, has_residual: bool):
        out = torch.empty_like(x)
        res = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        rstd = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
        ctx.has_residual = has_residual
        ctx.save_for_backward(res, weight, rstd)
        ctx.x_dtype = x.dtype
        return out, res

    @staticmethod
    def backward(ctx, dout, dres):
        res, weight, _rstd = ctx.saved_tensors
        dx = torch.empty(res.shape, dtype=ctx.x_dtype, device=res.device)
        dresidual = torch.empty_like(res) if ctx.has_residual else None
        dweight = torch.empty_like(weight)
        return dx, dresidual, dweight, None


def fused_add_rms_norm(x, residual, weight, eps, residual_in_fp32):
    if residual is None:
        return _FusedAddNorm.apply(x, None, weight, False)
    return _FusedAddNorm.apply(x, residual, weight, True)


class _FusedConv(torch.autograd.Function):
    """Triton causal conv1d + SiLU: one output like x; backward dx, dweight, dbias."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight, bias)
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        return torch.empty_like(x), torch.empty_like(weight), None if bias is None else torch.empty_like(bias)


def fused_conv1d_silu(x, weight, bias, reverse, activation):
    return _FusedConv.apply(x, weight, bias)


def _cpu_inference_fp32(*tensors) -> bool:
    """When the C++ CPU block ops run (kernels/cpu_scan.py): fp32 tensors, no autograd; else the reference."""
    given = [t for t in tensors if t is not None]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in given)
    return not needs_grad and all(t.dtype == torch.float32 for t in given)


def cpu_conv1d_silu(x, weight, bias, reverse, activation):
    """kernels/cpu_scan.py `_conv1d_silu`: one fp32 output in inference, the reference otherwise."""
    from vimbench.kernels import causal_conv1d_ref

    if not _cpu_inference_fp32(x, weight, bias):
        return causal_conv1d_ref(x, weight, bias, reverse, activation)
    weight.reshape(weight.shape[0], -1).contiguous()
    return torch.empty(x.shape, dtype=torch.float32, device=x.device)


def cpu_add_rms_norm(x, residual, weight, eps, residual_in_fp32):
    """kernels/cpu_scan.py `_add_rms_norm`: out and residual like x in inference, the reference otherwise."""
    from vimbench.kernels import add_rms_norm_ref

    if not _cpu_inference_fp32(x, residual, weight):
        return add_rms_norm_ref(x, residual, weight, eps, residual_in_fp32)
    x = x.contiguous()
    return torch.empty_like(x), torch.empty_like(x)


def _cpu_block_ops_built() -> bool:
    from vimbench.kernels import conv1d

    entry = conv1d._CONV_BACKENDS.get("cpu")
    return bool(entry and entry[1](torch.device("cpu")))


@contextlib.contextmanager
def op_models(target: str) -> Iterator[None]:
    """For the duration of a trace, run Vim's conv and norm as the target runs them, visibly.

    cuda: the fused Triton stand-ins above. cpu: the C++ CPU block ops' allocations where they are built
    (as `auto` picks them on this machine), the reference ops where they are not. The real backends are
    put back exactly afterwards (the registries have no public removal).
    """
    from vimbench.kernels import conv1d, rmsnorm

    saved = (dict(conv1d._CONV_BACKENDS), dict(rmsnorm._NORM_BACKENDS))
    if target == "cuda":
        conv_fn, norm_fn = fused_conv1d_silu, fused_add_rms_norm
    elif _cpu_block_ops_built():
        conv_fn, norm_fn = cpu_conv1d_silu, cpu_add_rms_norm
    else:
        conv_fn = norm_fn = None
    conv1d._CONV_BACKENDS.clear()
    rmsnorm._NORM_BACKENDS.clear()
    if conv_fn is not None:  # the only entries: no real kernel may see a fake tensor
        conv1d.register_conv_backend(TRACE_BACKEND, conv_fn, lambda d: True, priority=0)
        rmsnorm.register_norm_backend(TRACE_BACKEND, norm_fn, lambda d: True, priority=0)
    try:
        yield
    finally:
        conv1d._CONV_BACKENDS.clear()
        conv1d._CONV_BACKENDS.update(saved[0])
        rmsnorm._NORM_BACKENDS.clear()
        rmsnorm._NORM_BACKENDS.update(saved[1])


def _mamba_inner_no_out_proj(mixer, xz: Tensor, x_proj_w: Tensor, dt_proj_w: Tensor) -> Tensor:
    """mamba_ssm `MambaInnerFnNoOutProj.forward` (inference): what it allocates, in order."""
    batch, _, length = xz.shape
    n, rank = mixer.d_state, mixer.dt_rank
    if xz.stride(-1) != 1:
        xz = xz.contiguous()
    x, z = xz.chunk(2, dim=1)
    conv_out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # causal_conv1d_fwd
    x_dbl = F.linear(conv_out.transpose(1, 2).reshape(batch * length, -1), x_proj_w)  # rearrange copies
    delta = (dt_proj_w @ x_dbl[:, :rank].t()).view(-1, batch, length).transpose(0, 1)
    B = x_dbl[:, rank : rank + n].view(batch, length, n).transpose(1, 2).unsqueeze(1).contiguous()
    C = x_dbl[:, rank + n :].view(batch, length, n).transpose(1, 2).unsqueeze(1).contiguous()
    out = torch.empty_like(delta)  # selective_scan_cuda.fwd: out, chunk states, out_z
    states = torch.empty(
        batch, x.shape[1], math.ceil(length / MAMBA_SCAN_CHUNK), 2 * n, dtype=torch.float32, device=x.device
    )
    out_z = torch.empty_like(z)
    del conv_out, x_dbl, delta, B, C, out, states
    return out_z


def upstream_mixer_forward(mixer, hidden: Tensor) -> Tensor:
    """hustvl/Vim bimamba v2 with `if_devide_out=True`: runs the backward direction on flipped copies."""
    batch, length, _ = hidden.shape
    xz = (mixer.in_proj.weight @ hidden.reshape(batch * length, -1).t()).view(-1, batch, length)
    xz = xz.transpose(0, 1)
    out = _mamba_inner_no_out_proj(mixer, xz, mixer.x_proj.weight, mixer.dt_proj.weight)
    out_b = _mamba_inner_no_out_proj(mixer, xz.flip([-1]), mixer.x_proj_b.weight, mixer.dt_proj_b.weight)
    # xz, out and out_b stay alive until the method returns, as upstream's locals do
    return F.linear((out + out_b.flip([-1])).transpose(1, 2) / 2, mixer.out_proj.weight)
