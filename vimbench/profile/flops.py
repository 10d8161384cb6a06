"""Scan-aware FLOP counts with torch.utils.flop_counter.FlopCounterMode.

What is counted (FLOPs = 2 per multiply-accumulate, one forward pass, on the meta device):
- matmuls (mm/addmm/bmm; biases ignored) and convolutions, by FlopCounterMode's formulas, except that
  convolution MACs on zero padding are not counted: Vim's causal conv pads K-1 zeros on both sides and drops
  K-1 outputs, the architecture does L*K MACs per channel, and so do the fused kernels;
- the selective scan, which FlopCounterMode does not know: 9*B*L*E*N per direction (mamba issue 110),
  registered here for `vimbench::selective_scan`;
- attention through SDPA as its two matmuls (QK^T and AV, 4*B*H*L*L*d): on meta SDPA decomposes into the
  math path, and FlopCounterMode's own SDPA formula gives the same number;
- nothing elementwise (softmax, scaling, SiLU, softplus, norms, residual adds, the gate): FlopCounterMode
  has no formula for them, and papers do not count them either.
Vim models are counted with the reference scan backend, which always runs two `selective_scan` calls per
layer, so the count never depends on which (possibly fused) backend is registered or available.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry, register_flop_formula

import vimbench.kernels  # noqa: F401  (defines torch.ops.vimbench.selective_scan)
from vimbench.kernels.flops import scan_flops

from .categories import CATEGORIES, OTHER, CategoryScopes, strong_category, weak_category

COUNTING_SCAN_BACKEND = "reference"

aten = torch.ops.aten


if torch.ops.vimbench.selective_scan not in flop_registry:  # a module reload must not register twice

    @register_flop_formula(torch.ops.vimbench.selective_scan)
    def _selective_scan_flop(u_shape, delta_shape, A_shape, *args, out_shape=None, **kwargs) -> int:
        batch, channels, length = u_shape
        return scan_flops(batch, length, channels, A_shape[1])


def _as_list(value: int | Sequence[int], dims: int) -> list[int]:
    return [int(value)] * dims if isinstance(value, int) else [int(v) for v in value]


def conv_flops_without_padding(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    out_shape: Sequence[int],
    stride: int | Sequence[int],
    padding: int | Sequence[int],
    dilation: int | Sequence[int],
) -> int:
    """2 * MACs of a (non-transposed) convolution whose input element is real, not zero padding.

    Per spatial dim, kernel tap j feeds output o from input o*stride - padding + j*dilation; the taps that
    land inside the input are counted. Without padding this equals FlopCounterMode's formula.
    """
    c_out, c_in_per_group, *kernel = w_shape
    dims = len(kernel)
    stride, padding, dilation = (_as_list(v, dims) for v in (stride, padding, dilation))
    taps_total = 1
    for dim, width in enumerate(kernel):
        n_in, n_out = x_shape[2 + dim], out_shape[2 + dim]
        s, p, d = stride[dim], padding[dim], dilation[dim]
        taps = 0
        for j in range(width):
            first = max(0, math.ceil((p - j * d) / s))
            last = min(n_out - 1, (n_in - 1 + p - j * d) // s)
            taps += max(0, last - first + 1)
        taps_total *= taps
    return 2 * x_shape[0] * c_out * c_in_per_group * taps_total


def _convolution_flop(x_shape, w_shape, _bias, stride, padding, dilation, transposed, *args,
                      out_shape=None, **kwargs) -> int:
    if transposed:
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=True)
    return conv_flops_without_padding(x_shape, w_shape, out_shape, stride, padding, dilation)


@dataclass
class FlopCount:
    """FLOPs of one forward: total, by aten/custom op, and by the profiler's categories."""

    total: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    by_category: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, **{op: int(n) for op, n in self.by_op.items()}}


def _op_category(packet: Any, args: tuple, scopes: CategoryScopes) -> str:
    """Same rule as the profiler: strong op name, then the innermost scope, then what the op is."""
    name = str(packet).replace("aten.", "aten::", 1).replace("vimbench.", "vimbench::", 1)
    input_dims = args[0].dim() if args and isinstance(args[0], torch.Tensor) else None
    return strong_category(name) or scopes.current() or weak_category(name, input_dims) or OTHER


def _counting_mapping(count: FlopCount, scopes: CategoryScopes) -> dict[Any, Any]:
    """Every registered formula, wrapped to tally categories; padding-aware convolution formula."""
    from torch.utils.flop_counter import shape_wrapper

    overrides = {aten.convolution: shape_wrapper(_convolution_flop),
                 aten._convolution: shape_wrapper(_convolution_flop)}
    mapping = {}
    for packet, formula in {**flop_registry, **overrides}.items():
        def tallied(*args, out_val=None, _formula=formula, _packet=packet, **kwargs) -> int:
            flops = int(_formula(*args, out_val=out_val, **kwargs))
            category = _op_category(_packet, args, scopes)
            count.by_category[category] = count.by_category.get(category, 0) + flops
            return flops

        tallied._get_raw = True  # FlopCounterMode passes tensors; `formula` does its own shape wrapping
        mapping[packet] = tallied
    return mapping


def count_model_flops(model: nn.Module, img_size: int, batch_size: int = 1) -> FlopCount:
    """FLOPs of one forward pass of `model` on (batch, 3, img, img), counted on the meta device.

    The model may live on any device; a meta copy is counted (weights are never copied). Vim models are
    counted with the reference scan backend (see the module docstring).
    """
    meta_model = _to_meta(model)
    previous_backend = getattr(meta_model, "scan_backend", None)
    if previous_backend is not None:
        meta_model.set_scan_backend(COUNTING_SCAN_BACKEND)
    count = FlopCount()
    dtype = next(meta_model.parameters()).dtype  # a half-precision model needs a half-precision input
    x = torch.empty(batch_size, 3, img_size, img_size, device="meta", dtype=dtype)
    try:
        with CategoryScopes(meta_model, record=False) as scopes:
            counter = FlopCounterMode(display=False, custom_mapping=_counting_mapping(count, scopes))
            with counter, torch.no_grad():
                meta_model(x)
    finally:
        if previous_backend is not None:
            meta_model.set_scan_backend(previous_backend)
    count.total = int(counter.get_total_flops())
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        count.by_op[str(op)] = count.by_op.get(str(op), 0) + int(flops)
    return count


def count_flops(model: nn.Module, img_size: int, batch_size: int = 1) -> dict[str, int]:
    """{"total": n, <op name>: n, ...} for one forward pass (see `count_model_flops`)."""
    return count_model_flops(model, img_size, batch_size).as_dict()


def _to_meta(model: nn.Module) -> nn.Module:
    """The model itself if it is already on meta, else a meta copy; the original (and its GPU memory) is
    left untouched: parameters and buffers are swapped for meta tensors during the copy, never duplicated."""
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    if tensors and all(t.device.type == "meta" for t in tensors):
        return model
    memo: dict[int, Any] = {}
    for tensor in tensors:
        meta = torch.empty_like(tensor, device="meta")
        is_param = isinstance(tensor, nn.Parameter)
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if is_param else meta
    return copy.deepcopy(model, memo)


def model_flop_count(
    name: str, img_size: int, batch_size: int = 1, attn_backend: str = "auto",
    options: Mapping[str, str] | None = None,
) -> FlopCount:
    """FlopCount of model `name` at `img_size`, built directly on meta with its family's counting options
    (`options`: the point's model options, e.g. timm kwargs that change the architecture)."""
    from vimbench.models import create_model, get_spec

    spec = get_spec(name)
    options = spec.contract.flop_options({**(options or {}), "attn_backend": attn_backend})
    with torch.device("meta"):
        model = create_model(spec.name, img_size=img_size, options=options)
    return count_model_flops(model, img_size, batch_size)


def model_gflops(
    name: str, img_size: int, batch_size: int = 1, options: Mapping[str, str] | None = None
) -> float:
    """GFLOPs (1e9 FLOPs, 2 per MAC) of registered model `name` at `img_size`, scan included."""
    return model_flop_count(name, img_size, batch_size, options=options).total / 1e9
