"""The public selective-scan op: one signature for every backend (mamba's `selective_scan_fn` shape).

The op is a `torch.library` custom op, so torch.compile and FlopCounterMode see a single
`vimbench::selective_scan` call whatever backend runs inside, and the FLOP formula registered in
`vimbench.profile.flops` counts it. Backends register themselves in `registry.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .reference import selective_scan_ref
from .registry import ScanBackend, backward_by_autograd, get_backend, register_backend, resolve_backend


def _reference_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    return selective_scan_ref(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state=True, reverse=reverse
    )


register_backend(
    ScanBackend(
        name="reference",
        description="plain PyTorch sequential loop (any dtype, float64 included)",
        forward=_reference_forward,
        backward=backward_by_autograd(_reference_forward),
        is_available=lambda device: True,
        priority=900,
    )
)


@torch.library.custom_op("vimbench::selective_scan", mutates_args=())
def _selective_scan_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    reverse: bool,
    backend: str,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    impl = get_backend(backend)
    if impl.saves_for_backward and save:
        out, last_state, saved = impl.forward(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, save=True
        )
    else:
        out, last_state = impl.forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
        saved = _nothing_saved(u)
    # custom ops may not return views of their inputs
    return out.clone() if out is u else out, last_state, saved


def _nothing_saved(u: Tensor) -> Tensor:
    return u.new_empty((0,), dtype=torch.float32)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, backend, save):
    state_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    impl = get_backend(backend)
    saves = impl.saves_for_backward and save and impl.saved_like is not None
    saved = impl.saved_like(u, A) if saves else _nothing_saved(u)
    return torch.empty_like(u), u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=state_dtype), saved


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:8], output[2])
    ctx.delta_softplus, ctx.reverse, ctx.backend = inputs[8], inputs[9], inputs[10]
    ctx.mark_non_differentiable(output[1], output[2])


def _backward(ctx, dout, _dlast_state, _dsaved):
    backend = get_backend(ctx.backend)
    if backend.backward is None:
        raise RuntimeError(f"scan backend {ctx.backend!r} has no backward; use another for training")
    *inputs, saved = ctx.saved_tensors
    args = (dout.contiguous(), *inputs, ctx.delta_softplus, ctx.reverse)
    if backend.saves_for_backward and saved.numel():
        grads = backend.backward(*args, saved)
    else:
        grads = backend.backward(*args)
    return (*grads, None, None, None, None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def _per_channel_state(X: Tensor, batch: int, dim: int, length: int) -> Tensor:
    """B or C as (batch, E, N, L), one group per channel: expanded views where possible, so autograd sums
    the gradient back to the caller's own shape."""
    if X.dim() == 2:  # (E, N): constant over time
        return X[None, :, :, None].expand(batch, dim, X.shape[1], length)
    if X.dim() == 3:  # (B, N, L): shared by every channel
        return X[:, None].expand(batch, dim, *X.shape[1:])
    groups = X.shape[1]
    if dim % groups:
        raise ValueError(f"{dim} channels cannot be split into {groups} groups of B/C")
    return X.repeat_interleave(dim // groups, dim=1)


def match_state_inputs(B: Tensor, C: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """B and C in layouts every backend takes together: when exactly one of them is constant (E, N), both
    become per-channel (batch, E, N, L); otherwise they are returned as given."""
    if (B.dim() == 2) == (C.dim() == 2):
        return B, C
    batch, dim, length = u.shape
    return _per_channel_state(B, batch, dim, length), _per_channel_state(C, batch, dim, length)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    reverse: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan (Mamba-1 semantics) on the named backend.

    u, delta, z: (B, E, L); A: (E, N) float32; D, delta_bias: (E,).
    B, C: each input-dependent, (B, N, L) shared by every channel or grouped (B, G, N, L) with E divisible by
    G, or constant over time as (E, N) (mamba's non-variable B/C, usually float32). Any mix works, e.g. B
    constant (E, N) and C (B, N, L): the two are then brought to one per-channel layout before the backend
    runs, and gradients come back in each one's own shape.
    `reverse=True` scans from position L-1 down to 0 (Vim's backward direction) without reversed copies.
    Returns `out` (dtype of u), or `(out, last_state)` with last_state (B, E, N) in float32. As in mamba,
    gradients do not flow through last_state.
    """
    name = resolve_backend(backend, u.device)
    B, C = match_state_inputs(B, C, u)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    out, last_state, _saved = _selective_scan_op(
        u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), bool(reverse), name, save
    )
    return (out, last_state) if return_last_state else out
