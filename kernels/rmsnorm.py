"""Residual add + RMSNorm, as Vim's blocks do it (mamba's fused `layer_norm_fn` with prenorm).

`res = x + residual` (in float32 when `residual_in_fp32`), `out = res * rsqrt(mean(res^2) + eps) * weight`
computed in float32 and cast to x's dtype. Returns (out, res). Fused kernels register themselves; the
reference is plain PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

AddNormImpl = Callable[[Tensor, Tensor | None, Tensor, float, bool], tuple[Tensor, Tensor]]
_NORM_BACKENDS: dict[str, tuple[AddNormImpl, Callable[[torch.device], bool], int]] = {}


def add_rms_norm_ref(
    x: Tensor, residual: Tensor | None, weight: Tensor, eps: float = 1e-5, residual_in_fp32: bool = True
) -> tuple[Tensor, Tensor]:
    res = x.float() if residual is None else x.float() + residual.float()
    out = res * torch.rsqrt(res.square().mean(-1, keepdim=True) + eps) * weight.float()
    res_dtype = torch.float32 if residual_in_fp32 else x.dtype
    return out.to(x.dtype), res.to(res_dtype)


def register_norm_backend(
    name: str, fn: AddNormImpl, is_available: Callable[[torch.device], bool], priority: int = 100
) -> None:
    """`auto` picks the available backend of lowest priority (ties: first registered), else "reference"."""
    _NORM_BACKENDS[name] = (fn, is_available, priority)


def norm_backends(device: torch.device | str) -> list[str]:
    dev = torch.device(device)
    ranked = sorted(_NORM_BACKENDS.items(), key=lambda item: item[1][2])
    return [n for n, (_, ok, _) in ranked if ok(dev)] + ["reference"]


def add_rms_norm(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor,
    eps: float = 1e-5,
    *,
    residual_in_fp32: bool = True,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """(RMSNorm(x + residual), x + residual); residual None means this is the first block."""
    if backend == "auto":
        backend = norm_backends(x.device)[0]
    if backend == "reference":
        return add_rms_norm_ref(x, residual, weight, eps, residual_in_fp32)
    fn = _NORM_BACKENDS[backend][0]
    return fn(x, residual, weight, eps, residual_in_fp32)
