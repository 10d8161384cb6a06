"""Fast CPU selective scan: a C++ loop compiled on first use (backend "cpu", picked by "auto" on CPU).

The source is `csrc/cpu_scan.cpp` and its `cpu_scan_*.h` headers. Forward: tiles of 16 channels scan
together, one channel per vector lane, so exp(delta*A) and the state update are plain vector ops; tiles are
spread over torch's threads. Backward recomputes each row's states (L*N floats per thread, never the whole
(B, E, L, N) tensor) and runs the adjoint scan; dB/dC are summed per block of channels in a fixed order, so
gradients are deterministic whatever the thread count.

The same extension holds Vim's conv1d + SiLU and add + RMSNorm (registered as the "cpu" conv/norm backends,
picked by "auto" on CPU; inference in float32 only, the reference otherwise, so training keeps autograd).

Dtypes: float32 and float64 compute in their own precision; float16/bfloat16 inputs are converted to
float32 (as the reference does) and the output converted back. Inputs may have any strides.

Build: `torch.utils.cpp_extension.load` into the torch extensions cache (TORCH_EXTENSIONS_DIR respected),
once per process, on the first `is_available` check or call, never at import. The vector code is explicit
(ATen's `Vectorized`); ISA flags and ATen's CPU_CAPABILITY macros follow
`torch.backends.cpu.get_cpu_capability()` (so `ATEN_CPU_CAPABILITY=default|avx2|avx512` picks the build);
they and a digest of the sources are part of the extension name, so one cache serves machines with
different CPUs and never loads a build of other sources. `compiled_isa()` says what the loaded build
vectorises for. `VIMBENCH_CPU_SCAN_SCALAR=1` builds the same kernels one lane wide with the
auto-vectoriser off: the baseline a guard must tell apart from the vector build. With no compiler (or a
failed build) the backend reports itself unavailable, logs one warning with the reason, and "auto" falls
back to "reference". `VIMBENCH_CPU_SCAN=0` skips the build.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ._build_lock import load_extension
from .conv1d import causal_conv1d_ref, register_conv_backend
from .registry import ScanBackend, register_backend
from .rmsnorm import add_rms_norm_ref, register_norm_backend

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCE = CSRC / "cpu_scan.cpp"  # includes the cpu_scan_*.h headers next to it
# channels whose dB/dC contributions one task sums before the fixed-order reduction across blocks
CHANNEL_BLOCK = 32
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


@dataclass(frozen=True)
class BuildStatus:
    ok: bool
    error: str | None = None


_build_lock = threading.Lock()
_status: BuildStatus | None = None


def _compile() -> None:
    """Build and load the extension (raises on any failure; the caller turns that into a warning)."""
    flavour, isa_flags = build_flavour()
    cflags = ["-O3", *isa_flags]
    ldflags: list[str] = []
    if sys.platform.startswith("linux"):  # torch's own libgomp is already loaded: the .so shares it
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    digest = hashlib.sha256()
    for path in sorted(CSRC.glob("cpu_scan*")):
        digest.update(path.name.encode() + path.read_bytes())
    name = f"vimbench_cpu_scan_{flavour}_{digest.hexdigest()[:10]}"
    load_extension(  # never hangs on the lock of a build that was killed
        name=name,
        sources=[str(SOURCE)],
        extra_cflags=cflags,
        extra_ldflags=ldflags,
        is_python_module=False,
        verbose=False,
    )
    if not hasattr(torch.ops.vimbench_cpu_scan, "fwd"):
        raise RuntimeError("extension built but did not register torch.ops.vimbench_cpu_scan")
    _register_fakes()


def _register_fakes() -> None:
    """Output shapes of the ops that return tensors, so torch.compile can trace a model that calls them."""
    if getattr(_register_fakes, "done", False):
        return
    _register_fakes.done = True

    def vim_block(hidden, residual, norm_weight, eps, in_proj, out_proj, fwd, bwd, dt_rank):
        return hidden.new_empty((*hidden.shape[:2], out_proj.shape[0])), hidden.new_empty(hidden.shape)

    def writes_its_outputs(*args):  # conv1d_silu, add_rms_norm: results go to the out tensors given
        return None

    fakes = {"vim_block": vim_block, "conv1d_silu": writes_its_outputs, "add_rms_norm": writes_its_outputs}
    for name, fake in fakes.items():
        try:
            torch.library.register_fake(f"vimbench_cpu_scan::{name}", fake)
        except Exception as exc:  # only torch.compile needs them: never fail the build over one
            log.debug("no fake kernel for %s: %s", name, exc)


def build_flavour() -> tuple[str, list[str]]:
    """(name part, compiler flags): torch's CPU capability with ATen's Vectorized macros, or scalar."""
    if os.environ.get("VIMBENCH_CPU_SCAN_SCALAR", "0") == "1":
        return "scalar", ["-DVIMBENCH_CPU_SCAN_SCALAR", "-fno-tree-vectorize"]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in _ISA_FLAGS:  # ATen's own DEFAULT vectors (NEON on arm64, portable arrays elsewhere)
        return "default", ["-DCPU_CAPABILITY=DEFAULT"]
    macros = [f"-DCPU_CAPABILITY={capability}", f"-DCPU_CAPABILITY_{capability}"]
    return capability.lower(), [*_ISA_FLAGS[capability], *macros]


def compiled_isa() -> tuple[str, int] | None:
    """(ISA, fp32 lanes per vector) of the loaded build, e.g. ("AVX2", 8); None when unavailable."""
    if not build_status().ok:
        return None
    ops = torch.ops.vimbench_cpu_scan
    return str(ops.isa()), int(ops.float_lanes())


def _short_reason(exc: BaseException) -> str:
    """The informative line of a build failure (the compiler's error, not torch's "Error building")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    markers = ("error:", "not found", "no such file", "required")
    errors = [line for line in lines if any(m in line.lower() for m in markers)]
    reason = (errors or lines or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {reason[:300]}"


def build_status() -> BuildStatus:
    """Compile the extension if this process has not tried yet; thread-safe, one attempt per process."""
    global _status
    if _status is not None:
        return _status
    with _build_lock:
        if _status is None:
            if os.environ.get("VIMBENCH_CPU_SCAN", "1") == "0":
                _status = BuildStatus(False, "disabled by VIMBENCH_CPU_SCAN=0")
            else:
                try:
                    _compile()
                    _status = BuildStatus(True)
                except Exception as exc:  # no compiler, no ninja, compile error, load error
                    log.debug("cpu scan build failed", exc_info=True)
                    _status = BuildStatus(False, _short_reason(exc))
                    log.warning("cpu scan backend unavailable, using 'reference': %s", _status.error)
    return _status


def is_available(device: torch.device) -> bool:
    return device.type == "cpu" and build_status().ok


def _ops():
    status = build_status()
    if not status.ok:
        raise RuntimeError(f"cpu scan backend unavailable: {status.error}")
    return torch.ops.vimbench_cpu_scan


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _as(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def _vector(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype).contiguous()


def _state_layout(X: Tensor, batch: int, dim: int, length: int, dtype: torch.dtype) -> Tensor:
    """B or C as (batch, groups, L, N) with unit N-stride: one state vector per position is contiguous."""
    if X.dim() == 2:  # (dim, N), constant over time: a zero-stride view, one group per channel
        return X.to(dtype).contiguous()[None, :, None, :].expand(batch, dim, length, X.shape[1])
    grouped = X.unsqueeze(1) if X.dim() == 3 else X
    if grouped.dim() != 4 or dim % grouped.shape[1]:
        raise ValueError(f"B/C of shape {tuple(X.shape)} do not fit {dim} channels")
    positions_major = grouped.transpose(2, 3)
    if positions_major.dtype == dtype and (positions_major.stride(3) == 1 or positions_major.shape[3] == 1):
        return positions_major  # already one contiguous state vector per position (e.g. a slice of x_proj)
    out = torch.empty(positions_major.shape, dtype=dtype)
    return out.copy_(positions_major)


def _state_grad(grad: Tensor, X: Tensor) -> Tensor:
    """(batch, groups, L, N) gradient back to the caller's B/C layout and dtype."""
    if X.dim() == 2:
        return grad.sum((0, 2)).to(X.dtype)
    grad = grad.transpose(2, 3)
    return (grad[:, 0] if X.dim() == 3 else grad).to(X.dtype).contiguous()


def _forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    cdt = _compute_dtype(u)
    batch, dim, length = u.shape
    nstate = A.shape[1]
    out = torch.empty(batch, dim, length, dtype=cdt)
    last_state = torch.zeros(batch, dim, nstate, dtype=cdt)
    if length and batch and dim:
        _ops().fwd(
            u.to(cdt), _as(delta, cdt), A.to(cdt).contiguous(),
            _state_layout(B, batch, dim, length, cdt), _state_layout(C, batch, dim, length, cdt),
            _vector(D, cdt), _as(z, cdt), _vector(delta_bias, cdt), bool(delta_softplus), bool(reverse),
            out, last_state,
        )  # fmt: skip
    return out.to(u.dtype), last_state


def _backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    cdt = _compute_dtype(u)
    batch, dim, length = u.shape
    nstate = A.shape[1]
    Bt = _state_layout(B, batch, dim, length, cdt)
    Ct = _state_layout(C, batch, dim, length, cdt)
    groups = Bt.shape[1]
    blocks = -(-(dim // groups) // CHANNEL_BLOCK)
    work = bool(length and batch and dim)
    alloc = torch.empty if work else torch.zeros  # the kernel writes every element it is given
    du = alloc(batch, dim, length, dtype=cdt)
    ddelta = alloc(batch, dim, length, dtype=cdt)
    dz = alloc(batch, dim, length, dtype=cdt) if z is not None else du.new_empty(0)
    dA = alloc(batch, dim, nstate, dtype=cdt)
    dB = alloc(batch, groups, blocks, length, nstate, dtype=cdt)
    dC = alloc(batch, groups, blocks, length, nstate, dtype=cdt)
    dD = alloc(batch, dim, dtype=cdt)
    dbias = alloc(batch, dim, dtype=cdt)
    if work:
        _ops().bwd(
            dout.to(cdt), u.to(cdt), _as(delta, cdt), A.to(cdt).contiguous(), Bt, Ct,
            _vector(D, cdt), _as(z, cdt), _vector(delta_bias, cdt), bool(delta_softplus), bool(reverse),
            CHANNEL_BLOCK, du, ddelta, dA, dB, dC, dD, dz, dbias,
        )  # fmt: skip
    return (
        du.to(u.dtype),
        ddelta.to(delta.dtype),
        dA.sum(0).to(A.dtype),
        _state_grad(dB[:, :, 0], B),
        _state_grad(dC[:, :, 0], C),
        None if D is None else dD.sum(0).to(D.dtype),
        None if z is None else dz.to(z.dtype),
        None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype),
    )


register_backend(
    ScanBackend(
        name="cpu",
        description="C++ loop, rows over torch's threads, vectorised exp (compiled on first use)",
        forward=_forward,
        backward=_backward,
        is_available=is_available,
        priority=10,
    )
)


# ---------------------------------------------------------------- conv1d + SiLU, add + RMSNorm (inference)


def _inference_fp32(*tensors: Tensor | None) -> bool:
    """The C++ block ops have no backward and compute in float32: anything else takes the reference."""
    given = [t for t in tensors if t is not None]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in given)
    return not needs_grad and all(t.dtype == torch.float32 for t in given)


def _conv1d_silu(x: Tensor, weight: Tensor, bias: Tensor | None, reverse: bool, activation: bool) -> Tensor:
    if not _inference_fp32(x, weight, bias):
        return causal_conv1d_ref(x, weight, bias, reverse, activation)
    out = torch.empty(x.shape, dtype=torch.float32)
    w = weight.reshape(weight.shape[0], -1).contiguous()
    _ops().conv1d_silu(x, w, None if bias is None else bias.contiguous(), reverse, activation, out)
    return out


def _add_rms_norm(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float, residual_in_fp32: bool):
    if not _inference_fp32(x, residual, weight):
        return add_rms_norm_ref(x, residual, weight, eps, residual_in_fp32)
    x = x.contiguous()
    residual = None if residual is None else residual.contiguous()
    out, res = torch.empty_like(x), torch.empty_like(x)
    _ops().add_rms_norm(x, residual, weight.contiguous(), eps, out, res)
    return out, res


# after any GPU/interpreter backend (priority 100): on CPU "auto" picks these once the extension builds
register_conv_backend("cpu", _conv1d_silu, is_available, priority=200)
register_norm_backend("cpu", _add_rms_norm, is_available, priority=200)
