"""Depthwise causal conv1d + SiLU (the short convolution in front of each scan direction).

`reverse=True` gives the anti-causal conv that equals upstream's conv on the flipped sequence, read back in
the original order: out[t] = bias + sum_j w[K-1-j] * x[t+j]. Vim's backward direction uses it so no
reversed copy of the sequence is ever built. Backends: "reference" (torch conv1d) and fused kernels that
register themselves (e.g. Triton on GPU).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

ConvImpl = Callable[[Tensor, Tensor, Tensor | None, bool, bool], Tensor]
_CONV_BACKENDS: dict[str, tuple[ConvImpl, Callable[[torch.device], bool], int]] = {}


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool = False, activation: bool = True
) -> Tensor:
    """x: (B, E, L); weight: (E, K) or (E, 1, K). Plain PyTorch; output dtype of x."""
    w = weight.reshape(weight.shape[0], 1, -1)
    width = w.shape[-1]
    length = x.shape[-1]
    if reverse:
        out = F.conv1d(x, w.flip(-1), bias, padding=width - 1, groups=x.shape[1])[..., width - 1 :]
    else:
        out = F.conv1d(x, w, bias, padding=width - 1, groups=x.shape[1])[..., :length]
    return F.silu(out) if activation else out


def register_conv_backend(
    name: str, fn: ConvImpl, is_available: Callable[[torch.device], bool], priority: int = 100
) -> None:
    """`auto` picks the available backend of lowest priority (ties: first registered), else "reference"."""
    _CONV_BACKENDS[name] = (fn, is_available, priority)


def conv_backends(device: torch.device | str) -> list[str]:
    dev = torch.device(device)
    ranked = sorted(_CONV_BACKENDS.items(), key=lambda item: item[1][2])
    return [n for n, (_, ok, _) in ranked if ok(dev)] + ["reference"]


def causal_conv1d_silu(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    *,
    reverse: bool = False,
    activation: bool = True,
    backend: str = "auto",
) -> Tensor:
    """Causal (or, with `reverse`, anti-causal) depthwise conv1d followed by SiLU."""
    if backend == "auto":
        backend = conv_backends(x.device)[0]
    if backend == "reference":
        return causal_conv1d_ref(x, weight, bias, reverse, activation)
    fn = _CONV_BACKENDS[backend][0]
    return fn(x, weight, bias, reverse, activation)
