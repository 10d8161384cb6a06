"""Backend "cuda": our own CUDA C++ selective scan (forward and backward), built on first use.

The kernels (csrc/selective_scan_cuda.cu, selective_scan_cuda_core.cuh, selective_scan_cuda_backward.cuh)
are plain CUDA C++: one thread per (batch, channel) row walks the sequence with its d_state states in float32
registers, reads any strides (no copies for transposed inputs), runs `reverse` by walking from the end, and
writes out * silu(z), the last state and every 16-position tile's start state. The launch config is the
Triton backend's (`launch_rules.pick_config`, keyed on (L, B*E); no triton import, so this backend runs
without triton installed): when B*E channels cannot fill an H100 the
sequence is cut into spans scanned in parallel (summary, combine, span pass). The tile states go to the
backward through the custom op (`saves_for_backward`): it re-runs each tile from its saved start state (never
the whole forward), walks it backwards, and sums dB/dC over a block's channels once per tile; dA/dB/dC/dD/
d(delta_bias) are written as float32 partials (one writer per element) that the binding sums with torch
reductions: no atomics, two backward runs are bitwise equal. Past 16 states a channel's states run as groups
of 16 (csrc kGroupStates: one thread per (row, group)), their partial outputs summed in a fixed order.

Nothing is compiled at import: the first `is_available(cuda device)` or call builds the extension with
torch.utils.cpp_extension (a minute or two, cached by torch afterwards). A failed build logs one line
and the backend reports itself unavailable.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from .dtypes import IO_DTYPES
from .launch_rules import ScanConfig, pick_config
from .registry import ScanBackend, register_backend

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ("selective_scan_cuda_binding.cpp", "selective_scan_cuda.cu")
MAX_DSTATE = 256  # one thread holds 16 states; more run as state groups (csrc kGroupStates)
_IO_DTYPES = IO_DTYPES  # vimbench.kernels.dtypes, the one table


@functools.cache
def load_extension() -> ModuleType | None:
    """Compile (or load torch's cached build of) the extension; None, after one log line, if that fails."""
    try:
        from torch.utils.cpp_extension import load

        return load(
            name="vimbench_selective_scan_cuda",
            sources=[str(CSRC / s) for s in SOURCES],
            extra_include_paths=[str(CSRC)],
            extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "-lineinfo"],
            verbose=False,
        )
    except Exception as exc:  # no nvcc, wrong toolkit, compiler error: the backend is just unavailable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("cuda scan backend unavailable: build failed: %s", first)
        return None


def is_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and load_extension() is not None


def as_4d(X: Tensor, batch: int, length: int) -> Tensor:
    """B or C as a (batch, groups, N, L) view: (B, N, L) -> 1 group; constant (E, N) -> E groups, stride 0."""
    if X.dim() == 4:
        return X
    if X.dim() == 3:
        return X.unsqueeze(1)
    if X.dim() == 2:
        return X[None, :, :, None].expand(batch, X.shape[0], X.shape[1], length)
    raise ValueError(f"B/C must be 2-D, 3-D or 4-D, got shape {tuple(X.shape)}")


def prepare(u, delta, A, B, C, D, z, delta_bias):
    """Inputs in the layout and dtypes the kernel reads (casts only where the kernel cannot read as is)."""
    if u.dtype not in _IO_DTYPES:
        raise TypeError(f"cuda scan backend: u dtype {u.dtype} not supported (float32, float16, bfloat16)")
    if A.shape[1] > MAX_DSTATE:
        raise ValueError(f"cuda scan backend: d_state {A.shape[1]} > {MAX_DSTATE}")
    io = u.dtype
    delta = delta.to(io)
    z = z.to(io) if z is not None else None
    batch, _, length = u.shape
    B4 = as_4d(B.to(io), batch, length)  # the kernel reads B/C in the I/O dtype (Vim's are anyway)
    C4 = as_4d(C.to(io), batch, length)
    A = A.float()
    D = D.float() if D is not None else None
    delta_bias = delta_bias.float() if delta_bias is not None else None
    return u, delta, A, B4, C4, D, z, delta_bias


def _extension() -> ModuleType:
    ext = load_extension()
    if ext is None:
        raise RuntimeError("cuda scan backend: the extension failed to build (see the log)")
    return ext


def launch_config(batch: int, dim: int, length: int, d_state: int) -> ScanConfig:
    """The Triton backend's rule (one channel per thread, 1 or 4 warps per block, chunk-parallel spans when
    B*E cannot fill an H100); our kernels take it as is, d_state unpadded."""
    return pick_config(batch, dim, length, d_state)


def _config_args(u: Tensor, A: Tensor) -> tuple[int, int, int, int, int]:
    cfg = launch_config(u.shape[0], u.shape[1], u.shape[2], A.shape[1])
    return cfg.chunk, cfg.n_chunks, cfg.span, cfg.n_par, cfg.block_e


def saved_shape(u: Tensor, A: Tensor) -> tuple[int, int, int, int]:
    """The forward's saved tile start states: (batch, n_chunks, E, d_state) float32."""
    batch, dim, length = u.shape
    return (batch, launch_config(batch, dim, length, A.shape[1]).n_chunks, dim, A.shape[1])


def saved_like(u: Tensor, A: Tensor) -> Tensor:
    """An empty tensor shaped like the forward's saved tile states (the custom op's fake returns it)."""
    return u.new_empty(saved_shape(u, A), dtype=torch.float32)


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, save=False):
    args = prepare(u, delta, A, B, C, D, z, delta_bias)
    out, last_state, tiles = _extension().fwd(
        *args, bool(delta_softplus), bool(reverse), *_config_args(u, A)
    )
    return (out, last_state, tiles) if save else (out, last_state)


def _reduce_like(grad4: Tensor, X: Tensor) -> Tensor:
    """The kernel's float32 (batch, groups, N, L) gradient back to X's own shape and dtype."""
    if X.dim() == 3:
        grad = grad4.squeeze(1)
    elif X.dim() == 2:
        grad = grad4.sum(dim=(0, 3))
    else:
        grad = grad4
    return grad.to(X.dtype)


def _backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, saved=None):
    """Gradients from the forward's saved tile states (`saved`); without them the forward runs once more."""
    if saved is None or tuple(saved.shape) != saved_shape(u, A):
        saved = _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, save=True)[2]
    args = prepare(u, delta, A, B, C, D, z, delta_bias)
    du, ddelta, dA, dB, dC, dD, dz, dbias = _extension().bwd(
        dout.to(args[0].dtype), *args, bool(delta_softplus), bool(reverse), saved, *_config_args(u, A)[:4]
    )
    return (
        du.to(u.dtype),
        ddelta.to(delta.dtype),
        dA.to(A.dtype),
        _reduce_like(dB, B),
        _reduce_like(dC, C),
        dD.to(D.dtype) if D is not None else None,
        dz.to(z.dtype) if z is not None else None,
        dbias.to(delta_bias.dtype) if delta_bias is not None else None,
    )


register_backend(
    ScanBackend(
        name="cuda",
        description="our CUDA C++ kernels: a channel per thread with fp32 states in registers, "
        "chunk-parallel over L when the batch is small; backward from saved tile states",
        forward=_forward,
        backward=_backward,
        is_available=is_available,
        priority=30,
        saves_for_backward=True,
        saved_like=saved_like,
    )
)
