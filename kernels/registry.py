"""Scan backends behind one interface (the tritonbench pattern): each backend is a forward and a backward
with the same signature, a device check, and a one-line description. The public op in `scan.py` dispatches
to them by name, so the model, `vimbench check` and `vimbench kernels bench` all see the same set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> (out, last_state)
ScanForward = Callable[..., tuple[Tensor, Tensor]]
# backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
#   -> (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), None where the input was None
ScanBackward = Callable[..., tuple[Tensor | None, ...]]
# A backend with `saves_for_backward` hands one tensor (e.g. its chunk-boundary states) from its forward
# to its backward, so the backward need not re-run the forward:
#   forward(..., reverse, save=True) -> (out, last_state, saved)   backward(..., reverse, saved) -> grads
# and `saved_like(u, A)` returns an empty tensor of saved's shape (what the custom op's fake returns).
SavedLike = Callable[[Tensor, Tensor], Tensor]


def backward_by_autograd(forward: ScanForward) -> ScanBackward:
    """A backend backward that re-runs a differentiable `forward` under autograd: slow, but exact."""

    def backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        leaves = [t.detach().requires_grad_(True) if t is not None else None for t in inputs]
        with torch.enable_grad():
            out, _ = forward(*leaves, delta_softplus, reverse)
            wanted = [t for t in leaves if t is not None]
            grads = iter(torch.autograd.grad(out, wanted, dout, allow_unused=True))
        return tuple(next(grads) if t is not None else None for t in leaves)

    return backward


@dataclass(frozen=True)
class ScanBackend:
    name: str
    description: str
    forward: ScanForward
    backward: ScanBackward | None
    is_available: Callable[[torch.device], bool]
    # lower runs first when `backend="auto"` picks for a device
    priority: int = 100
    saves_for_backward: bool = False
    saved_like: SavedLike | None = None


_BACKENDS: dict[str, ScanBackend] = {}

# Until a GPU measurement (scripts/gpu_validate.sh, same card) shows our kernels >= 1.0x the official one,
# "auto" on CUDA runs the official kernel when mamba_ssm is installed; rows still name the backend that ran.
PREFER_OFFICIAL_ON_CUDA = True
OFFICIAL = "mamba_ssm"


def register_backend(backend: ScanBackend) -> ScanBackend:
    _BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> ScanBackend:
    try:
        return _BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(_BACKENDS))
        raise ValueError(f"unknown scan backend {name!r}; known: {known}") from None


def all_backends() -> list[ScanBackend]:
    return sorted(_BACKENDS.values(), key=lambda b: (b.priority, b.name))


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Names of the backends that run on `device`, best first."""
    dev = torch.device(device)
    return [b.name for b in all_backends() if b.is_available(dev)]


def resolve_backend(name: str, device: torch.device | str) -> str:
    """Turn "auto" into the best backend for `device`; check an explicit name runs there."""
    dev = torch.device(device)
    if name == "auto":
        names = [n for n in available_backends(dev) if get_backend(n).priority < 1000]
        if dev.type == "cuda" and PREFER_OFFICIAL_ON_CUDA and OFFICIAL in names:
            return OFFICIAL
        return names[0] if names else "reference"
    backend = get_backend(name)
    if not backend.is_available(dev):
        raise ValueError(f"scan backend {name!r} is not available on {dev.type}")
    return name
