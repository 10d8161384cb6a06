"""The pieces every Triton scan kernel shares, as `@triton.jit` helpers (inlined: they cost no instructions).

A scan kernel holds its state as an (N_PAD, BLOCK_E) tile, one channel per thread (a column) with all N
states of that channel in the thread's registers. Anything per (state, channel) is moved in and out of that
tile as an (N_PAD // VEC, VEC, BLOCK_E) block whose VEC states are contiguous in memory: Triton then gives
each thread VEC consecutive states of its own channel (one 128-bit access) and the reshape back to the tile is
free (the same registers), so no tensor ever changes layout through shared memory. When the states are not
contiguous (generic strides) the same code simply issues scalar accesses.

`HelperFunction` makes a helper callable from both forms of a kernel: the compiler inlines it as a
`JITFunction`, and Triton's interpreter (CPU tensors, TRITON_INTERPRET=1 set at call time) runs it as an
`InterpretedFunction`.
"""

from __future__ import annotations

import triton.language as tl
from triton.runtime.jit import JITFunction

LOG2E = tl.constexpr(1.4426950408889634)


class HelperFunction(JITFunction):
    """A device function: a `JITFunction` for the compiler, interpreted when called from Python."""

    _interpreted = None

    def __call__(self, *args, **kwargs):
        if self._interpreted is None:
            from triton.runtime.interpreter import InterpretedFunction

            self._interpreted = InterpretedFunction(self.fn)
        return self._interpreted(*args, **kwargs)


def helper(fn) -> HelperFunction:
    return HelperFunction(fn)


@helper
def state_index(N_PAD: tl.constexpr, VEC: tl.constexpr):
    """(N_PAD // VEC, VEC, 1) state numbers: n = q * VEC + r."""
    q = tl.arange(0, N_PAD // VEC)[:, None, None]
    r = tl.arange(0, VEC)[None, :, None]
    return q * VEC + r


@helper
def load_states(ptrs, N, N_PAD: tl.constexpr, BLOCK_E: tl.constexpr, VEC: tl.constexpr,
                EVEN_N: tl.constexpr):
    """An (N_PAD, BLOCK_E) float32 tile from per-state pointers shaped (N_PAD // VEC, VEC, BLOCK_E).

    Padded states (n >= N) read as 0.
    """
    if EVEN_N:
        block = tl.load(ptrs)
    else:
        block = tl.load(ptrs, mask=state_index(N_PAD, VEC) < N, other=0.0)
    return tl.reshape(block.to(tl.float32), (N_PAD, BLOCK_E))


@helper
def store_states(ptrs, tile, N_PAD: tl.constexpr, BLOCK_E: tl.constexpr, VEC: tl.constexpr):
    """Store an (N_PAD, BLOCK_E) tile through pointers shaped (N_PAD // VEC, VEC, BLOCK_E)."""
    tl.store(ptrs, tl.reshape(tile, (N_PAD // VEC, VEC, BLOCK_E)))


@helper
def channel_block(pid_e, E, ch_per_group, A_ptr, D_ptr, bias_ptr, N,
                  N_PAD: tl.constexpr, BLOCK_E: tl.constexpr, VEC: tl.constexpr, EVEN_N: tl.constexpr):
    """The per-channel prologue of every scan kernel.

    Returns (offs_e, mask_e, e_ld, grp, A2, Dv, bias): e_ld clamps channels past E onto the last one so loads
    need no predicates (stores are masked), A2 = A * log2(e) so that exp(dt*A) == exp2(dt*A2).
    """
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    e_ld = tl.minimum(offs_e, E - 1)
    n_idx = state_index(N_PAD, VEC)
    A2 = load_states(A_ptr + e_ld[None, None, :] * N + n_idx, N, N_PAD, BLOCK_E, VEC, EVEN_N) * LOG2E
    Dv = tl.load(D_ptr + e_ld).to(tl.float32)
    bias = tl.load(bias_ptr + e_ld).to(tl.float32)
    grp = e_ld // ch_per_group
    return offs_e, mask_e, e_ld, grp, A2, Dv, bias


@helper
def group_A2(A_ptr, e_ld, N, n0, GROUP: tl.constexpr, BLOCK_E: tl.constexpr, VEC: tl.constexpr,
             EVEN_N: tl.constexpr):
    """A * log2(e) of states n0 .. n0 + GROUP - 1 (a state group's; `channel_block` loads the first group)."""
    n_idx = state_index(GROUP, VEC)
    ptrs = A_ptr + e_ld[None, None, :] * N + n0 + n_idx
    return load_states(ptrs, N - n0, GROUP, BLOCK_E, VEC, EVEN_N) * LOG2E


@helper
def aligned_stride(stride, ALIGNED: tl.constexpr):
    """`stride`, known to the compiler as a multiple of 4 when the launcher checked that it is (ALIGNED)."""
    if ALIGNED:
        stride = (stride // 4) * 4
    return stride


@helper
def softplus_dt(raw, softplus):
    """delta after its bias, through softplus when asked (linear above 20, as the reference)."""
    if softplus:
        return tl.where(raw <= 20.0, tl.log(1.0 + tl.exp(raw)), raw)
    return raw


@helper
def softplus_slope(raw, softplus):
    """(dt, d(dt)/d(raw)): softplus and its slope sigmoid(raw) from one exp, or (raw, 1)."""
    if softplus:
        e = tl.exp(tl.minimum(raw, 20.0))
        return tl.where(raw <= 20.0, tl.log(1.0 + e), raw), tl.where(raw <= 20.0, e / (1.0 + e), 1.0)
    return raw, raw * 0.0 + 1.0


@helper
def state(tile, n: tl.constexpr, N_PAD: tl.constexpr):
    """Row n of an (N_PAD, BLOCK_E) tile as a (BLOCK_E,) vector: the select-and-sum folds to that one
    register per thread (-0.0 is the exact additive identity)."""
    rows = tl.arange(0, N_PAD)[:, None]
    return tl.sum(tl.where(rows == n, tile, -0.0), axis=0)


@helper
def sum_products(a, b, N_PAD: tl.constexpr):
    """sum_n a[n] * b[n] per channel as one chain of fused multiply-adds (tl.sum would add a tree of
    products: about 1.4 instructions per state instead of 1)."""
    acc = state(a, 0, N_PAD) * state(b, 0, N_PAD)
    for n in tl.static_range(1, N_PAD):
        acc += state(a, n, N_PAD) * state(b, n, N_PAD)
    return acc


@helper
def state_rows(X_ptr, pid_b, s_b, s_g, s_n, grp, N_PAD: tl.constexpr, VEC: tl.constexpr,
               ALIGNED: tl.constexpr):
    """(base, offsets) of B or C at position 0, for `load_states(base + (offsets + t * s_l))`.

    ALIGNED (the launcher checked: states contiguous, strides multiples of 4): per-state pointers that the
    compiler sees as VEC-contiguous and 16-byte aligned (vector loads). Otherwise a scalar base and 32-bit
    per-state offsets: per-state 64-bit pointers would hold two registers each for the whole loop.
    """
    n_idx = state_index(N_PAD, VEC)
    if ALIGNED:
        base = X_ptr + pid_b * aligned_stride(s_b, True)
        base = base + grp[None, None, :] * aligned_stride(s_g, True) + n_idx
        offsets = 0
    else:
        base = X_ptr + pid_b * s_b
        offsets = grp[None, None, :] * s_g + n_idx * s_n
    return base, offsets


@helper
def step_inputs(u_row, su_l, d_row, sd_l, bias, softplus, t):
    """(u_t, dt_t) of one channel per thread at position t, in float32 (dt after its bias and softplus): the
    per-step scalar loads of the forward passes (the fused ones once per direction)."""
    u = tl.load(u_row + t * su_l).to(tl.float32)
    return u, softplus_dt(tl.load(d_row + t * sd_l).to(tl.float32) + bias, softplus)


@helper
def state_group(pid_e, N, GROUP: tl.constexpr, N_PAD: tl.constexpr):
    """(channel block, state group, groups, states from the group's first one) of a program whose grid axis 0
    is channel block x state group (`triton_common.state_groups`); (pid_e, 0, 1, N) when not grouped."""
    if GROUP < N_PAD:
        n_grp = tl.cdiv(N, GROUP)
        sgrp = pid_e % n_grp
        return pid_e // n_grp, sgrp, n_grp, N - sgrp * GROUP
    else:
        return pid_e, pid_e * 0, 1, N
