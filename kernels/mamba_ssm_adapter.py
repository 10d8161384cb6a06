"""Backend "mamba_ssm": the official CUDA kernel (state-spaces/mamba `selective_scan_fn`), the peer to beat.

Never a dependency: the backend is always registered, but available only on CUDA devices when
`mamba_ssm.ops.selective_scan_interface` imports (checked once, lazily; importing mamba_ssm pulls in
triton and its CUDA extension, so nothing is imported here until a CUDA device asks).

Upstream has no reverse scan. `reverse=True` therefore flips u, delta, z, B and C along L, scans, and flips
the output back: three to five extra copies per call, exactly what upstream Vim pays. The state upstream
returns after the flipped scan is the state after original position 0, which is what `reverse=True`
defines as the last state. Priority 50, but "auto" on CUDA picks it while installed until a GPU measurement
shows ours >= 1.0x (`PREFER_OFFICIAL_ON_CUDA` in registry.py).

Backward re-runs the forward under autograd and differentiates through upstream's own autograd Function
(one extra forward per backward; its dB/dC use atomics, so its gradients are not bitwise deterministic).
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable

import torch
from torch import Tensor

from .registry import ScanBackend, backward_by_autograd, register_backend

log = logging.getLogger(__name__)

UPSTREAM_MODULE = "mamba_ssm.ops.selective_scan_interface"


@functools.lru_cache(maxsize=1)
def load_selective_scan_fn() -> Callable[..., object] | None:
    """Upstream's `selective_scan_fn`, or None when mamba_ssm is missing or broken (cached per process)."""
    try:
        return importlib.import_module(UPSTREAM_MODULE).selective_scan_fn
    except Exception as exc:  # ImportError, missing CUDA extension, version skew: all mean "not here"
        log.debug("mamba_ssm backend unavailable: %s", exc)
        return None


def is_available(device: torch.device) -> bool:
    return device.type == "cuda" and load_selective_scan_fn() is not None


def _flip(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.flip(-1)


def _flip_state_input(X: Tensor) -> Tensor:
    """B/C vary along L when 3-D or 4-D; a 2-D (dim, N) B/C is constant and needs no flip."""
    return X.flip(-1) if X.dim() >= 3 else X


def _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> tuple[Tensor, Tensor]:
    selective_scan_fn = load_selective_scan_fn()
    if selective_scan_fn is None:
        raise RuntimeError(f"scan backend 'mamba_ssm' needs {UPSTREAM_MODULE}, which does not import")
    if reverse:
        u, delta, z = _flip(u), _flip(delta), _flip(z)
        B, C = _flip_state_input(B), _flip_state_input(C)
    out, last_state = selective_scan_fn(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus=delta_softplus, return_last_state=True
    )
    return (out.flip(-1) if reverse else out), last_state.float()


register_backend(
    ScanBackend(
        name="mamba_ssm",
        description="official mamba_ssm CUDA selective_scan_fn (reverse by flip copies; if installed)",
        forward=_run,
        backward=backward_by_autograd(_run),
        is_available=is_available,
        priority=50,
    )
)
