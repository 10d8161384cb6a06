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

import torch
import triton

# the launch rule lives in launch_rules (no triton import: the CUDA backend uses it); names re-exported here
from . import launch_rules
from .dtypes import IO_DTYPES
from .launch_rules import CHUNK, MIN_PARALLEL_CHUNK, TARGET_WARPS, ScanConfig, n_pad_for
from .launch_rules import MAX_D_STATE as MAX_D_STATE

SCAN_DTYPES = IO_DTYPES  # vimbench.kernels.dtypes, the one table
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
    """`launch_rules.pick_config` with this module's constants (tests patch them here)."""
    return launch_rules.pick_config(batch, dim, length, d_state, target_warps=TARGET_WARPS, chunk=CHUNK,
                                    min_parallel_chunk=MIN_PARALLEL_CHUNK)
