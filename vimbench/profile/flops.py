"""Scan-aware FLOP counts with torch.utils.flop_counter.FlopCounterMode.

FlopCounterMode counts matmuls and convolutions (2 FLOPs per multiply-accumulate) but knows nothing of the
selective scan. We register a formula for `vimbench::selective_scan`: 9*B*L*E*N FLOPs per direction
(mamba issue 110), so each Vim layer counts its two directions. Elementwise ops are not counted by anyone.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

import vimbench.kernels  # noqa: F401  (defines torch.ops.vimbench.selective_scan)

SCAN_FLOPS_PER_ELEMENT = 9


def scan_flops(batch: int, length: int, channels: int, d_state: int) -> int:
    """FLOPs of one selective-scan direction: 9 per (batch, position, channel, state)."""
    return SCAN_FLOPS_PER_ELEMENT * batch * length * channels * d_state


@register_flop_formula(torch.ops.vimbench.selective_scan)
def _selective_scan_flop(u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
    batch, channels, length = u_shape
    return scan_flops(batch, length, channels, A_shape[1])


def count_flops(model: torch.nn.Module, img_size: int, batch_size: int = 1) -> dict[str, int]:
    """FLOPs of one forward pass of `model` on (batch, 3, img, img), counted on the meta device.

    Returns {"total": n, <op name>: n, ...}. The model may live on any device; it is copied to meta.
    """
    meta_model = _to_meta(model)
    x = torch.empty(batch_size, 3, img_size, img_size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(x)
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), **by_op}


def _to_meta(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself if it is already on meta, else a meta copy (the original is left untouched)."""
    import copy

    if next(model.parameters()).device.type == "meta":
        return model
    return copy.deepcopy(model).to("meta")


def model_gflops(name: str, img_size: int, batch_size: int = 1) -> float:
    """GFLOPs (1e9 FLOPs, 2 per MAC) of registered model `name` at `img_size`, scan included."""
    from vimbench.models import create_model

    with torch.device("meta"):
        model = create_model(name, img_size=img_size, scan_backend="reference")
    return count_flops(model, img_size, batch_size)["total"] / 1e9
