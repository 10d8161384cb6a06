"""Vim's two scan directions as one call.

The backward direction of a Vim mixer scans the sequence from the end. Instead of flipping x, z and the
output as upstream does, the model hands both directions here in the original token order: the backward
direction's conv is anti-causal and its scan runs with `reverse=True`. A backend may register a fused
implementation (one launch for both directions); otherwise two `selective_scan` calls run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .registry import resolve_backend
from .scan import selective_scan


@dataclass(frozen=True)
class ScanDirection:
    """One direction's scan inputs, all in the original token order."""

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor | None
    delta_bias: Tensor | None


# fused(fwd, bwd, z, delta_softplus) -> y_fwd + y_bwd
FusedBidirectional = Callable[[ScanDirection, ScanDirection, Tensor | None, bool], Tensor]
_FUSED: dict[str, tuple[FusedBidirectional, Callable[[torch.device], bool]]] = {}


def register_fused_bidirectional(
    backend: str, fn: FusedBidirectional, is_available: Callable[[torch.device], bool]
) -> None:
    """Let scan backend `backend` run both directions in one launch on devices where `is_available`."""
    _FUSED[backend] = (fn, is_available)


def fused_bidirectional_backends(device: torch.device | str) -> list[str]:
    dev = torch.device(device)
    return [name for name, (_, ok) in _FUSED.items() if ok(dev)]


def bidirectional_selective_scan(
    fwd: ScanDirection,
    bwd: ScanDirection,
    z: Tensor | None,
    *,
    delta_softplus: bool = True,
    backend: str = "auto",
    fused: bool = True,
) -> Tensor:
    """`y_fwd + y_bwd`: the forward direction scans 0..L-1, the backward one L-1..0, both gated by silu(z)."""
    name = resolve_backend(backend, fwd.u.device)
    entry = _FUSED.get(name)
    if fused and entry is not None and entry[1](fwd.u.device):
        return entry[0](fwd, bwd, z, delta_softplus)
    outputs = [
        selective_scan(
            d.u, d.delta, d.A, d.B, d.C, d.D, z, d.delta_bias, delta_softplus, reverse=rev, backend=name
        )
        for d, rev in ((fwd, False), (bwd, True))
    ]
    return outputs[0] + outputs[1]
