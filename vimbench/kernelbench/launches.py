"""The scan kernels' launches exactly as the model makes them, captured without a GPU and without running
them.

A Vim mixer is built on the meta device and run up to its scan call: the scan inputs then carry the model's
real shapes and strides (u from the conv, delta and z as transposed views, B and C as strided views of
`x_dbl`). The Triton launchers are then called with those tensors while `TritonKernel.on` hands out a
recorder instead of a kernel, so each launch is captured with its grid, arguments and constexprs. Triton's own
binder turns the arguments into the signature, constexprs and divisibility attributes a GPU launch would
compile with (pointers are assumed 256-byte aligned at their storage start, as CUDA allocations are).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from vimbench.dtypes import torch_dtypes

DTYPES = torch_dtypes()  # vimbench.dtypes, the one table
_SHAPE = re.compile(r"^([a-z0-9-]+)@(\d+)(?::b(\d+))?(?::n(\d+))?$")
DEFAULT_BATCH = 128


@dataclass(frozen=True)
class Shape:
    """`vim-s@224` (batch 128), `vim-s@1248:b1`, or `vim-s@224:b128:n64` (the model with 64 states)."""

    model: str
    img_size: int
    batch: int
    d_state: int = 16  # Vim's; others compile the kernels as a wider-state model would launch them

    @property
    def label(self) -> str:
        suffix = f":n{self.d_state}" if self.d_state != 16 else ""
        return f"{self.model}@{self.img_size}:b{self.batch}{suffix}"

    @staticmethod
    def parse(text: str) -> Shape:
        from vimbench.models.registry import get_spec

        match = _SHAPE.match(text.strip().lower())
        if not match:
            raise ValueError(f"bad shape {text!r}: expected MODEL@RES[:bBATCH][:nSTATES], e.g. vim-s@1248:b1")
        try:
            spec = get_spec(match.group(1))
        except (KeyError, ValueError):
            raise ValueError(f"unknown model {match.group(1)!r} in shape {text!r}") from None
        if "scan_backend" not in {opt.name for opt in spec.options}:  # the families that run the scan
            raise ValueError(f"{text!r}: only Vim models have scan kernels")
        img = int(match.group(2))
        if not spec.valid_img_size(img):
            raise ValueError(f"{text!r}: {img} px is not on the patch grid of {spec.name}")
        batch = int(match.group(3)) if match.group(3) else DEFAULT_BATCH
        if batch < 1:
            raise ValueError(f"{text!r}: batch must be >= 1")
        from vimbench.kernels.triton_common import MAX_D_STATE

        d_state = int(match.group(4)) if match.group(4) else 16
        if not 1 <= d_state <= MAX_D_STATE:
            raise ValueError(f"{text!r}: states must be 1..{MAX_D_STATE}")
        return Shape(spec.name, img, batch, d_state)


@dataclass
class ScanInputs:
    """One Vim mixer's scan inputs (meta tensors with the model's strides), both directions."""

    fwd: object  # vimbench.kernels.ScanDirection
    bwd: object
    z: torch.Tensor
    length: int
    d_inner: int
    d_state: int


def model_scan_inputs(shape: Shape, dtype: str) -> ScanInputs:
    """Run a Vim mixer of `shape` on the meta device up to its scan call and return what it passes there."""
    from vimbench.models import vim
    from vimbench.models.registry import get_spec

    spec = get_spec(shape.model)
    cfg = vim.VimConfig(embed_dim=spec.embed_dim, stride=spec.stride, d_state=shape.d_state)
    length = spec.tokens(shape.img_size)
    caught: dict = {}

    class _Caught(Exception):
        pass

    def fake_scan(fwd, bwd, z, **kwargs):
        caught.update(fwd=fwd, bwd=bwd, z=z)
        raise _Caught

    def fake_conv(x, weight, bias, **kwargs):  # the Triton conv writes a fresh contiguous (B, E, L) tensor
        return torch.empty(x.shape, device=x.device, dtype=x.dtype)

    torch_dtype = DTYPES[dtype]
    with torch.device("meta"):
        mixer = vim.VimMixer(cfg).to(torch_dtype)
        hidden = torch.empty(shape.batch, length, spec.embed_dim, dtype=torch_dtype)
    saved = vim.bidirectional_selective_scan, vim.causal_conv1d_silu
    vim.bidirectional_selective_scan, vim.causal_conv1d_silu = fake_scan, fake_conv
    try:
        mixer(hidden)
    except _Caught:
        pass
    finally:
        vim.bidirectional_selective_scan, vim.causal_conv1d_silu = saved
    if not caught:
        raise RuntimeError("the Vim mixer did not reach its scan call")
    return ScanInputs(caught["fwd"], caught["bwd"], caught["z"], length, mixer.d_inner, mixer.d_state)


@dataclass
class Launch:
    """One captured kernel launch: which kernel, in which phase, with what grid and arguments."""

    phase: str
    kernel: object  # TritonKernel
    grid: tuple[int, int, int]
    args: tuple
    kwargs: dict = field(default_factory=dict)

    @property
    def num_warps(self) -> int:
        return int(self.kwargs.get("num_warps", 4))

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def warps(self) -> int:
        return self.programs * self.num_warps

    @property
    def constexprs(self) -> dict:
        jit = self.kernel.compiled
        return {p.name: self.kwargs[p.name] for p in jit.params if p.is_constexpr and p.name in self.kwargs}


class _Recorder:
    def __init__(self, kernel, sink: list[Launch], phase: list[str]):
        self.kernel, self.sink, self.phase = kernel, sink, phase

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            full = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
            self.sink.append(Launch(self.phase[0], self.kernel, full, args, kwargs))

        return launch


class Capture:
    """`with Capture() as cap: cap.phase = "forward"; launcher(...)` records instead of running."""

    def __init__(self):
        self.launches: list[Launch] = []
        self._phase = ["?"]

    @property
    def phase(self) -> str:
        return self._phase[0]

    @phase.setter
    def phase(self, value: str) -> None:
        self._phase[0] = value

    def __enter__(self) -> Capture:
        from vimbench.kernels.triton_scan_fwd import TritonKernel

        self._saved = TritonKernel.on
        sink, phase = self.launches, self._phase
        TritonKernel.on = lambda kernel, device: _Recorder(kernel, sink, phase)
        return self

    def __exit__(self, *exc) -> None:
        from vimbench.kernels.triton_scan_fwd import TritonKernel

        TritonKernel.on = self._saved


class _AlignedPointer:
    """Stands in for a tensor argument in Triton's binder: dtype and a data_ptr with the view's alignment."""

    BASE = 1 << 20  # allocations are (at least) 256-byte aligned

    def __init__(self, tensor: torch.Tensor):
        self.dtype = tensor.dtype
        self._ptr = self.BASE + tensor.storage_offset() * tensor.element_size()

    def data_ptr(self) -> int:
        return self._ptr

    @staticmethod
    def ptr_range() -> int:
        return 0


def specialise(launch: Launch, backend) -> tuple[dict, dict, dict, object]:
    """(signature, constexprs, attrs, options) of `launch` as Triton's binder computes them for `backend`."""
    from triton.runtime.jit import create_function_from_signature

    jit = launch.kernel.compiled
    binder = create_function_from_signature(jit.signature, jit.params, backend)
    args = [_AlignedPointer(a) if isinstance(a, torch.Tensor) else a for a in launch.args]
    bound, specialization, options = binder(*args, **launch.kwargs)
    packed = jit._pack_args(backend, launch.kwargs, bound, specialization, options)
    options, signature, constexprs, attrs = packed
    return signature, constexprs, attrs, options


@contextlib.contextmanager
def _no_grad() -> Iterator[None]:
    with torch.no_grad():
        yield
