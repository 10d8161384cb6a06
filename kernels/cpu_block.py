"""A whole Vim block in one C++ call for CPU inference (`torch.ops.vimbench_cpu_scan.vim_block`).

At 224 px a Vim-T block is ~40 small ops; the Python and dispatch between them, two fork/joins per op pair
and the aten::add of the two scan directions cost about as much as the scan itself on a 2-core CPU. The C++
op runs the same ATen GEMMs (MKL/oneDNN) on the same layouts and the same "cpu" kernels as the Python path,
so outputs match it (tests/test_cpu_block.py); the block's own Python path stays for training, other
dtypes, other devices and other backends. `VIMBENCH_CPU_BLOCK=0` (or `ENABLED = False`) turns it off, for
A/B measurements.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from . import conv1d, rmsnorm
from .cpu_scan import build_status
from .registry import all_backends, resolve_backend

ENABLED = os.environ.get("VIMBENCH_CPU_BLOCK", "1") != "0"

_auto_is_cpu: tuple[tuple[int, int, int], bool] | None = None


def _registries_pick_cpu() -> bool:
    """Whether "auto" resolves to the "cpu" scan, conv and norm backends on CPU (cached per registry size)."""
    global _auto_is_cpu
    key = (len(all_backends()), len(conv1d._CONV_BACKENDS), len(rmsnorm._NORM_BACKENDS))
    if _auto_is_cpu is None or _auto_is_cpu[0] != key:
        picks = (
            resolve_backend("auto", "cpu") == "cpu"
            and conv1d.conv_backends("cpu")[0] == "cpu"
            and rmsnorm.norm_backends("cpu")[0] == "cpu"
        )
        _auto_is_cpu = (key, picks)
    return _auto_is_cpu[1]


def vim_block_cpu_ready(hidden: Tensor, weight: Tensor, scan_backend: str) -> bool:
    """True when the fused op computes exactly what the Python path would: CPU, float32, no autograd, and
    the backends the Python path would use are the "cpu" ones."""
    return (
        ENABLED
        and not torch.is_grad_enabled()
        and hidden.device.type == "cpu"
        and hidden.dtype == torch.float32
        and weight.dtype == torch.float32
        and scan_backend in ("auto", "cpu")
        and build_status().ok
        and _registries_pick_cpu()
    )


def vim_block_cpu(
    hidden: Tensor,
    residual: Tensor | None,
    norm_weight: Tensor,
    eps: float,
    in_proj: Tensor,
    out_proj: Tensor,
    fwd: list[Tensor],
    bwd: list[Tensor],
    dt_rank: int,
) -> tuple[Tensor, Tensor]:
    """(mixer(RMSNorm(hidden + residual)), hidden + residual). fwd / bwd: each direction's conv weight (E, K),
    conv bias, x_proj weight, dt_proj weight, dt_proj bias, A_log, D."""
    return torch.ops.vimbench_cpu_scan.vim_block(
        hidden, residual, norm_weight, eps, in_proj, out_proj, fwd, bwd, dt_rank
    )
