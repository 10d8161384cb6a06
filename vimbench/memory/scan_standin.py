"""The Vim scan during tracing: a stand-in that allocates what a real scan kernel allocates, visibly.

The real scan is a `torch.library` custom op whose fake implementation returns only its outputs (`out` like u
and `last_state` (B, E, N)); whatever the kernel's Python wrapper allocates around the launch (dtype
conversions, fp32 gradient partials, reductions) happens inside the op, where a dispatch-mode tracker cannot
see it, and its backward calls the backend's real kernel, which fake tensors cannot run. So while a model is
traced, its scan backend is swapped for `TRACE_BACKEND`, whose bidirectional entry runs one of these
kernel models as a plain `autograd.Function`: every allocation the modelled kernel makes is a torch op the
tracker sees, and `save_for_backward` keeps alive what the real op keeps alive.

Kernel models (what each allocates, read from the kernels' wrappers; the GPU ones in `scan_gpu_models.py`):
- "cpu": `kernels/cpu_scan.py` (the C++ CPU scan): fp32 out and last state; backward fp32 du, ddelta, dz,
  per-batch dA/dD/dbias partials, dB/dC partials (B, 1, ceil(E/32), L, N) reduced to (B, N, L) copies.
- "triton": `triton_scan.py` per direction: out, fp32 tile start states (B, ceil(L/16), E, N_PAD) kept from
  forward to backward in training; backward fp32 partials per span and channel block, scratch slab, carries;
  past 16 states fp32 per-state-group partials of out (forward) and du/ddelta/dz (backward).
- "triton-fused": `triton_bidirectional.py`: both directions in one launch (3 when chunk-parallel, with both
  directions' span states), one output, both directions' tile states (2, B, ceil(L/16), E, N_PAD) kept;
  backward one launch with stacked grads (chunk-parallel too), dz summed; past 16 states two grouped
  single-direction scans, forward and backward.
  Both Triton models, in inference (forward not asked to save): no tile states, only chunk-parallel span
  carries (B, n_par, E, N_PAD) per direction (issue 13's spec; `scan_gpu_models.triton_forward_states`).
- "cuda": `cuda_scan.py` per direction: tile states (B, ceil(L/16), E, N) fp32 kept (written and freed at
  once in inference); backward fp32 dA/dB/dC, scratch slab, span carries.
- "mamba_ssm": upstream's kernel per direction, flip copies for reverse, nothing kept between forward and
  backward (its backward re-runs the forward: chunk states, contiguous B/C copies, out and out_z).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from vimbench.kernels import ScanDirection

from . import scan_gpu_models

TRACE_BACKEND = "memory-trace"
KERNEL_MODELS = ("cpu", "triton", "triton-fused", "cuda", "mamba_ssm")
_CPU_CHANNEL_BLOCK = 32  # kernels/cpu_scan.py CHANNEL_BLOCK


def _f32(t: Tensor) -> Tensor:
    return t.to(torch.float32)


def _cpu_forward(u, delta, A, B, C, D, z):
    batch, dim, length = u.shape
    nstate = A.shape[1]
    out = torch.empty(batch, dim, length, dtype=torch.float32, device=u.device)
    last = torch.zeros(batch, dim, nstate, dtype=torch.float32, device=u.device)
    converted = [_f32(t) for t in (u, delta, z) if t is not None]  # no-ops at fp32
    converted += [_f32(t).transpose(1, 2).contiguous() for t in (B, C) if t.dtype != torch.float32]
    del converted
    return out.to(u.dtype), last


def _cpu_backward(dout, u, delta, A, B, C, D, z, bias):
    batch, dim, length = u.shape
    nstate = A.shape[1]
    dev, f32 = u.device, torch.float32
    blocks = -(-dim // _CPU_CHANNEL_BLOCK)
    du = torch.empty(batch, dim, length, dtype=f32, device=dev)
    ddelta = torch.empty(batch, dim, length, dtype=f32, device=dev)
    dz = torch.empty(batch, dim, length, dtype=f32, device=dev) if z is not None else None
    dA = torch.empty(batch, dim, nstate, dtype=f32, device=dev)
    dB = torch.empty(batch, 1, blocks, length, nstate, dtype=f32, device=dev)
    dC = torch.empty(batch, 1, blocks, length, nstate, dtype=f32, device=dev)
    dD = torch.empty(batch, dim, dtype=f32, device=dev)
    dbias = torch.empty(batch, dim, dtype=f32, device=dev)
    state_grads = [g[:, :, 0].transpose(2, 3)[:, 0].to(X.dtype).contiguous() for g, X in ((dB, B), (dC, C))]
    return (
        du.to(u.dtype), ddelta.to(delta.dtype), dA.sum(0).to(A.dtype), *state_grads,
        None if D is None else dD.sum(0).to(D.dtype), None if z is None else dz.to(z.dtype),
        None if bias is None else dbias.sum(0).to(bias.dtype),
    )  # fmt: skip


def _cpu_forward_model(u, delta, A, B, C, D, z, bias, save: bool, reverse: bool = False):
    out, _last = _cpu_forward(u, delta, A, B, C, D, z)  # last: returned by the op, dropped by selective_scan
    return out, None


def _cpu_backward_model(dout, u, delta, A, B, C, D, z, bias, saved, reverse: bool = False):
    return _cpu_backward(dout, u, delta, A, B, C, D, z, bias)


_FORWARD = {"cpu": _cpu_forward_model, **scan_gpu_models.FORWARD}
_BACKWARD = {"cpu": _cpu_backward_model, **scan_gpu_models.BACKWARD}


class _DirectionScan(torch.autograd.Function):
    """One scan direction as the modelled kernel runs it; saves what `vimbench::selective_scan` saves: its
    inputs and, for a backend that saves for its backward, the forward's tile states."""

    @staticmethod
    def forward(ctx, kernel: str, reverse: bool, save: bool, u, delta, A, B, C, D, z, bias):
        out, saved = _FORWARD[kernel](u, delta, A, B, C, D, z, bias, save, reverse)
        ctx.kernel, ctx.reverse = kernel, reverse
        ctx.save_for_backward(u, delta, A, B, C, D, z, bias, saved)
        return out

    @staticmethod
    def backward(ctx, dout):
        *inputs, saved = ctx.saved_tensors
        grads = _BACKWARD[ctx.kernel](dout.contiguous(), *inputs, saved, ctx.reverse)
        return (None, None, None, *grads)


class _FusedScan(torch.autograd.Function):
    """Both directions in one launch (`triton_bidirectional`): one output; both directions' inputs and
    tile states saved."""

    @staticmethod
    def forward(ctx, save: bool, uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z):
        fwd, bwd = (uf, df, Af, Bf, Cf, Df, biasf), (ub, db, Ab, Bb, Cb, Db, biasb)
        out, H = scan_gpu_models.fused_forward(fwd, bwd, z, save)
        ctx.save_for_backward(*fwd, *bwd, z, H)
        return out

    @staticmethod
    def backward(ctx, dout):
        s = ctx.saved_tensors
        z, H = s[14], s[15]
        gf, gb = scan_gpu_models.fused_backward(dout.contiguous(), s[0:7], s[7:14], z, H)
        dz = gf[6] + gb[6] if z is not None else None
        pick = (0, 1, 2, 3, 4, 5, 7)
        return (None, *(gf[i] for i in pick), *(gb[i] for i in pick), dz)


def _direction_args(d: ScanDirection) -> tuple:
    return (d.u, d.delta, d.A, d.B, d.C, d.D)


def standin_bidirectional(kernel: str):
    """A `register_fused_bidirectional` entry running kernel model `kernel` (one of KERNEL_MODELS)."""
    if kernel not in KERNEL_MODELS:
        raise ValueError(f"unknown scan kernel model {kernel!r}; known: {', '.join(KERNEL_MODELS)}")

    def run(fwd: ScanDirection, bwd: ScanDirection, z: Tensor | None, delta_softplus: bool) -> Tensor:
        inputs = (*_direction_args(fwd), fwd.delta_bias, *_direction_args(bwd), bwd.delta_bias, z)
        # as `selective_scan`: the forward saves its tile states only when autograd will need them
        save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
        if kernel == "triton-fused":
            return _FusedScan.apply(save, *inputs)
        y_f = _DirectionScan.apply(kernel, False, save, *_direction_args(fwd), z, fwd.delta_bias)
        y_b = _DirectionScan.apply(kernel, True, save, *_direction_args(bwd), z, bwd.delta_bias)
        return y_f + y_b

    return run


@contextlib.contextmanager
def trace_backend(kernel: str) -> Iterator[str]:
    """Register `TRACE_BACKEND` (running `kernel`'s model) for the duration; yields its name."""
    from vimbench.kernels import bidirectional, registry

    def no_single_direction(*_args, **_kwargs):
        raise RuntimeError("the memory-trace backend only runs through bidirectional_selective_scan")

    registry.register_backend(
        registry.ScanBackend(
            name=TRACE_BACKEND, description="memory tracing stand-in (vimbench.memory)",
            forward=no_single_direction, backward=None, is_available=lambda device: True, priority=10**6,
        )
    )  # fmt: skip
    bidirectional.register_fused_bidirectional(TRACE_BACKEND, standin_bidirectional(kernel), lambda d: True)
    try:
        yield TRACE_BACKEND
    finally:  # the registries have no public removal; this backend must never outlive the trace
        registry._BACKENDS.pop(TRACE_BACKEND, None)
        bidirectional._FUSED.pop(TRACE_BACKEND, None)
