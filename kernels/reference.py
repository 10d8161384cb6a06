"""Plain PyTorch selective scan: the ground truth every fast backend is checked against.

Mamba-1 semantics (state-spaces/mamba `selective_scan_ref`), plus `reverse=True`, which scans from the last
position to the first without building reversed copies. Computed in float32 (float64 when the inputs are
float64), so `vimbench check` can compare every backend against a float64 run of this same loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def expand_state_input(X: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """B or C as (batch, dim, N, L) (input-dependent) or (dim, N) (constant), whatever the grouping."""
    if X.dim() == 2:  # constant over time: (D, N)
        return X.to(dtype)
    if X.dim() == 3:  # (B, N, L): shared by every channel
        return X.to(dtype).unsqueeze(1)
    groups = X.shape[1]
    if dim % groups:
        raise ValueError(f"{dim} channels cannot be split into {groups} groups of B/C")
    return X.to(dtype).repeat_interleave(dim // groups, dim=1)


def selective_scan_ref(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential selective scan, differentiable by autograd.

    u, delta, z: (B, E, L); A: (E, N); B, C: (B, N, L), (B, G, N, L) or (E, N); D, delta_bias: (E,).
    Returns `out` (dtype of u) or `(out, last_state)` with last_state (B, E, N) in the compute dtype; with
    `reverse=True` the "last" state is the one after position 0.
    """
    dtype_in = u.dtype
    cdt = _compute_dtype(u)
    batch, dim, length = u.shape
    u = u.to(cdt)
    delta = delta.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    A = A.to(cdt)
    Bx = expand_state_input(B, dim, cdt)
    Cx = expand_state_input(C, dim, cdt)

    delta_A = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (b, d, n, l)
    if Bx.dim() == 2:
        delta_B_u = (delta * u).unsqueeze(2) * Bx[None, :, :, None]
    else:
        delta_B_u = (delta * u).unsqueeze(2) * Bx
    state = u.new_zeros(batch, dim, A.shape[1])
    outputs: list[Tensor] = [u.new_empty(0)] * length
    positions = range(length - 1, -1, -1) if reverse else range(length)
    for t in positions:
        state = delta_A[..., t] * state + delta_B_u[..., t]
        c_t = Cx[None] if Cx.dim() == 2 else Cx[..., t]
        outputs[t] = (state * c_t).sum(-1)
    y = torch.stack(outputs, dim=-1) if length else u.new_zeros(batch, dim, 0)
    out = y if D is None else y + u * D.to(cdt)[:, None]
    if z is not None:
        out = out * F.silu(z.to(cdt))
    out = out.to(dtype_in)
    return (out, state) if return_last_state else out
