"""What every Triton scan kernel shares: the compiled/interpreted kernel wrapper and the launch configs.

Kernels are plain functions wrapped by `TritonKernel`, which builds the compiled (`JITFunction`) or the
interpreted (`InterpretedFunction`) form on demand: CUDA tensors always get the compiled kernel, CPU tensors
run in Triton's interpreter when TRITON_INTERPRET=1 is set at call time, and `aot.py` / `kernels inspect`
compile every kernel for sm_80/sm_90 even in a process where the interpreter is on.

Launch configs are keyed on (L, B*E): one channel per thread (BLOCK_E = 32 * warps) with all N states in its
registers; 4 warps per program when that still fills an H100 with >= TARGET_WARPS warps, else 1; and when even
that cannot fill it (batch 1 at high resolution), the sequence is cut into spans of whole tiles scanned in
parallel (forward and backward alike).

State groups (d_state past what one thread holds without spilling, `GROUP_STATES`): a channel's states are
split into groups of GROUP, each group its own program (grid axis 0 = channel block x group), every group
writing fp32 partials of the per-position sums over states (out; du, ddelta, dz) that the launcher sums
(one torch reduction, (groups - 1) x 4 extra bytes written and read per position and channel, each direction).
Chosen over an in-program loop over groups because it adds no instructions to the time loops (no
per-step read-modify-write of a scratch row), keeps each kernel's loop nest as it is (the backward's adjoint
of a group would otherwise need the group loop outside the tile loop), and multiplies the programs, which is
what small batches need. Vim's 16 states are never split: its launches are unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton

from .dtypes import IO_DTYPES

MAX_D_STATE = 256
SCAN_DTYPES = IO_DTYPES  # vimbench.kernels.dtypes, the one table
# 8 warps per SM on a 132-SM H100: below this the GPU idles whatever the per-update cost
TARGET_WARPS = 8 * 132
# positions per tile: the forward saves every tile's start state, the backward works tile by tile
CHUNK = 16
# the shortest span (positions, rounded up to whole tiles) of the chunk-parallel scan
MIN_PARALLEL_CHUNK = 32
# states one thread holds without spilling, per kernel (sm_90, fp32 and bf16, `vimbench kernels compile`
# and `inspect`): forward 16 (at 32 states ptxas spilled 8 B in the reverse direction's specialisation as the
# Vim-S mixer launches it, though not in the forward direction's; 64 compiled to 211 regs without spills),
# backward 16 (174 regs, spills from 32), the backward's carry summary 64. Above that the states are split
# into groups of this many, one group per program (see `state_groups`).
GROUP_STATES = {"fwd": 16, "bwd": 16, "bwd_summary": 64}
# the fused bidirectional kernels run both directions' states in one thread (up to 16 without spills; at 32
# its forward spills 16 B as Vim launches it); past this many states Vim's two directions run as two grouped
# single-direction scans instead
FUSED_MAX_STATES = 16


def interpreter_enabled() -> bool:
    """TRITON_INTERPRET=1 (read at call time, so a test fixture can set and unset it)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(device: torch.device) -> bool:
    """Compiled kernels on CUDA; the interpreter on any device when TRITON_INTERPRET=1."""
    return device.type == "cuda" or interpreter_enabled()


class TritonKernel:
    """A kernel body with both a compiled and an interpreted form, chosen by the tensors' device.

    `state_elems(constexprs)`: state updates one program performs per time step (for `kernels inspect`);
    `tile_passes(constexprs)`: how often the code around its time loop runs per tile of positions (default 1).
    """

    def __init__(self, fn, state_elems: Callable[[dict], int] | None = None,
                 tile_passes: Callable[[dict], int] | None = None):
        self.fn = fn
        self.__name__ = fn.__name__
        self.state_elems = state_elems
        self.tile_passes = tile_passes
        self._compiled = None
        self._interpreted = None

    @property
    def compiled(self):
        """The `JITFunction` (also what `triton.compile(ASTSource(...))` needs), whatever the env says."""
        if self._compiled is None:
            from triton.runtime.jit import JITFunction

            self._compiled = JITFunction(self.fn)
        return self._compiled

    @property
    def interpreted(self):
        if self._interpreted is None:
            from triton.runtime.interpreter import InterpretedFunction

            self._interpreted = InterpretedFunction(self.fn)
        return self._interpreted

    def on(self, device: torch.device):
        return self.compiled if device.type == "cuda" else self.interpreted


@dataclass(frozen=True)
class ScanConfig:
    """How one scan direction is launched: programs of BLOCK_E channels x all states, over spans of tiles.

    A tile is `chunk` positions (every tile's start state is saved for the backward); a program scans a span
    of `span` tiles, `n_par` spans side by side (1 unless `parallel`).
    """

    n_pad: int
    num_warps: int
    chunk: int  # positions per tile (checkpoint interval for the backward)
    n_chunks: int  # tiles
    parallel: bool  # spans scanned in parallel (summary, combine, then the span scans)
    span: int = 0  # tiles per program (all of them unless parallel)
    n_par: int = 1

    @property
    def block_e(self) -> int:
        return 32 * self.num_warps

    @property
    def vec(self) -> int:
        """States per vector access (a thread's 128-bit block of its channel's states)."""
        return min(4, self.n_pad)


def n_pad_for(d_state: int) -> int:
    if not 1 <= d_state <= MAX_D_STATE:
        raise ValueError(f"triton scan supports 1..{MAX_D_STATE} states, got {d_state}")
    return triton.next_power_of_2(d_state)


def state_groups(d_state: int, kernel: str) -> tuple[int, int]:
    """(GROUP, groups) for `kernel` at `d_state` states: a thread's state tile holds GROUP of its channel's
    states; `groups` > 1 programs (grid axis 0: channel block x group) share a channel's states.

    The states are independent given (dt, u, B, C); what couples them (y = sum_n C_n h_n, du, ddelta, dz,
    d(delta_bias): sums over n) is linear in each group's part, so every group writes an fp32 partial and the
    launcher sums them. Vim's d_state 16 is never grouped (its kernels are unchanged).
    """
    n_pad = n_pad_for(d_state)
    group = min(n_pad, max(4, GROUP_STATES[kernel]))  # whole 128-bit blocks of states (VEC = 4)
    return group, triton.cdiv(d_state, group)


def pick_config(batch: int, dim: int, length: int, d_state: int) -> ScanConfig:
    """Launch config keyed on (L, B*E) (see the module docstring)."""
    n_pad = n_pad_for(d_state)
    length = max(length, 1)
    warps4 = triton.cdiv(dim, 128) * batch * 4
    num_warps = 4 if warps4 >= TARGET_WARPS else 1
    warps = triton.cdiv(dim, 32 * num_warps) * batch * num_warps
    chunk = min(CHUNK, length)
    n_tiles = triton.cdiv(length, chunk)
    if warps >= TARGET_WARPS or length < 2 * MIN_PARALLEL_CHUNK:
        return ScanConfig(n_pad, num_warps, chunk, n_tiles, False, n_tiles, 1)
    wanted = triton.cdiv(TARGET_WARPS, warps)
    span = max(triton.cdiv(MIN_PARALLEL_CHUNK, chunk), n_tiles // wanted)
    return ScanConfig(n_pad, num_warps, chunk, n_tiles, True, span, triton.cdiv(n_tiles, span))
