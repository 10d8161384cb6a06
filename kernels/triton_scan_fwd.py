"""Triton selective-scan forward: one program per (batch, block of channels), all N states in registers.

The sequence is walked one position at a time (any L; the state simply stays in registers), so a reverse
scan is the same loop with a negative stride, never `tl.associative_scan(reverse=True)`. Each step loads
u/delta/z for the channel block and B/C for the block's group, with the next step's loads issued before
this step's math (a one-step software pipeline). log2(e) is folded into A so each decay is one `exp2`.

Kernels are plain functions wrapped by `TritonKernel`, which builds the compiled (`JITFunction`) or the
interpreted (`InterpretedFunction`) form on demand: CUDA tensors always get the compiled kernel, CPU tensors
run in Triton's interpreter when TRITON_INTERPRET=1 is set at call time, and `aot.py` can compile every
kernel for sm_80/sm_90 even in a process where the interpreter is on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# (block of channels, warps) by padded state size: BLOCK_E * N_PAD = 512 fp32 states per program
_BLOCK_E_BY_N = {4: 32, 8: 32, 16: 32, 32: 16, 64: 8, 128: 4, 256: 2}
MAX_D_STATE = 256
NUM_WARPS = 4
SCAN_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_enabled() -> bool:
    """TRITON_INTERPRET=1 (read at call time, so a test fixture can set and unset it)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(device: torch.device) -> bool:
    """Compiled kernels on CUDA; the interpreter on any device when TRITON_INTERPRET=1."""
    return device.type == "cuda" or interpreter_enabled()


class TritonKernel:
    """A kernel body with both a compiled and an interpreted form, chosen by the tensors' device."""

    def __init__(self, fn):
        self.fn = fn
        self.__name__ = fn.__name__
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
    block_e: int
    n_pad: int
    num_warps: int = NUM_WARPS


def n_pad_for(d_state: int) -> int:
    if not 1 <= d_state <= MAX_D_STATE:
        raise ValueError(f"triton scan supports 1..{MAX_D_STATE} states, got {d_state}")
    return max(4, triton.next_power_of_2(d_state))


def pick_config(d_state: int, channels_per_group: int) -> ScanConfig:
    """The launch config for a state size. With grouped B/C a block must not straddle two groups: when the
    group size is not a multiple of the table's block, one channel per program (one warp) is used."""
    n_pad = n_pad_for(d_state)
    block_e = _BLOCK_E_BY_N[n_pad]
    if channels_per_group % block_e:
        return ScanConfig(1, n_pad, 1)
    return ScanConfig(block_e, n_pad)


def all_configs() -> list[ScanConfig]:
    """Every config `pick_config` can return: the table, and the one-channel fallback per state size."""
    return [cfg for n_pad, block_e in _BLOCK_E_BY_N.items()
            for cfg in (ScanConfig(block_e, n_pad), ScanConfig(1, n_pad, 1))]


def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr,
    E, L, N, ch_per_group, softplus, reverse,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_e, sz_l, so_b, so_e, so_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, N_PAD)
    mask_e = offs_e < E
    mask_n = offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_e[:, None] * N + offs_n[None, :], mask=mask_en, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634  # exp(dt * A) == exp2(dt * A2)
    Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    group = (pid_e * BLOCK_E) // ch_per_group
    u_row = u_ptr + pid_b * su_b + offs_e * su_e
    d_row = delta_ptr + pid_b * sd_b + offs_e * sd_e
    z_row = z_ptr + pid_b * sz_b + offs_e * sz_e
    o_row = out_ptr + pid_b * so_b + offs_e * so_e
    B_col = B_ptr + pid_b * sB_b + group * sB_g + offs_n * sB_n
    C_col = C_ptr + pid_b * sC_b + group * sC_g + offs_n * sC_n
    step = 1 - 2 * reverse
    t = reverse * (L - 1)
    # one-step software pipeline: the loads for position t are issued during the step before
    u_nx = tl.load(u_row + t * su_l, mask=mask_e, other=0.0)
    d_nx = tl.load(d_row + t * sd_l, mask=mask_e, other=0.0)
    B_nx = tl.load(B_col + t * sB_l, mask=mask_n, other=0.0)
    C_nx = tl.load(C_col + t * sC_l, mask=mask_n, other=0.0)
    if HAS_Z:
        z_nx = tl.load(z_row + t * sz_l, mask=mask_e, other=0.0)
    h = tl.zeros((BLOCK_E, N_PAD), dtype=tl.float32)
    for _ in range(L):
        u = u_nx.to(tl.float32)
        dt = d_nx.to(tl.float32) + bias
        Bt = B_nx.to(tl.float32)
        Ct = C_nx.to(tl.float32)
        if HAS_Z:
            zt = z_nx.to(tl.float32)
        t_nx = t + step
        t_ld = tl.minimum(tl.maximum(t_nx, 0), L - 1)  # the load after the last step stays in bounds
        u_nx = tl.load(u_row + t_ld * su_l, mask=mask_e, other=0.0)
        d_nx = tl.load(d_row + t_ld * sd_l, mask=mask_e, other=0.0)
        B_nx = tl.load(B_col + t_ld * sB_l, mask=mask_n, other=0.0)
        C_nx = tl.load(C_col + t_ld * sC_l, mask=mask_n, other=0.0)
        if HAS_Z:
            z_nx = tl.load(z_row + t_ld * sz_l, mask=mask_e, other=0.0)
        if softplus:
            dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
        decay = tl.exp2(dt[:, None] * A2)
        h = decay * h + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1) + Dv * u
        if HAS_Z:
            y = y * zt * tl.sigmoid(zt)
        tl.store(o_row + t * so_l, y.to(out_ptr.dtype.element_ty), mask=mask_e)
        t = t_nx
    last = last_ptr + pid_b * E * N + offs_e[:, None] * N + offs_n[None, :]
    tl.store(last, h, mask=mask_en)


scan_fwd_kernel = TritonKernel(_scan_fwd_kernel)
