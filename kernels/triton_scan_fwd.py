"""Triton selective-scan forward: one channel per thread, all N states of that channel in its registers.

The state tile is (N_PAD, BLOCK_E) with BLOCK_E = 32 * warps, so a thread holds one column: the C-reduction
`y = sum_n h*C` stays inside the thread (no shuffles) and no tensor ever changes layout (no barriers). A, B_t,
C_t and the saved states move as per-thread blocks of VEC contiguous states (`triton_scan_parts`): with Vim's
B/C (views of x_dbl, states contiguous) B_t is N/4 128-bit loads per thread, the same address across a warp
when B/C are shared (one broadcast transaction). Each update is one exp2(dt * A*log2(e)), the D-skip and the
silu(z) gate are fused, and a reverse scan is the same loop walking positions backwards.

The sequence is cut into tiles of `chunk_len` positions; when the forward saves for a backward (constexpr
SAVE, training) every tile's start state is stored (the backward's checkpoints, (batch, n_chunks, E, N_PAD)).
The same body runs in three modes (constexpr MODE):
- 0 FULL: a program walks all of L;
- 1 SUMMARY: a program scans one span of `span` tiles from a zero state and stores its end state and sum(dt);
- 2 CHUNK: a program scans one span from its start state (written by `_combine_kernel`) and stores `out`.
SUMMARY -> combine -> CHUNK is the chunk-parallel scan used when B*E/BLOCK_E programs cannot fill the GPU.
Without SAVE (inference) no tile state is stored: FULL needs none (H_ptr is a dummy), and the chunk-parallel
passes keep only the span carries, one slot per span ((batch, n_spans, E, N_PAD)) instead of one per tile.
"""

from __future__ import annotations

import triton.language as tl

from .triton_common import (  # noqa: F401  (re-exported: other kernel modules import them from here)
    SCAN_DTYPES,
    TritonKernel,
    interpreter_enabled,
    n_pad_for,
    pick_config,
    triton_available,
)
from .triton_scan_parts import (
    aligned_stride,
    channel_block,
    group_A2,
    load_states,
    state_group,
    state_index,
    state_rows,
    step_inputs,
    sum_products,
)

MODE_FULL, MODE_SUMMARY, MODE_CHUNK = 0, 1, 2


def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, H_ptr, dtsum_ptr,
    E, L, N, ch_per_group, softplus, reverse, chunk_len, n_chunks, span,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_e, sz_l, so_b, so_e, so_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
    MODE: tl.constexpr, VEC: tl.constexpr, BC_ALIGNED: tl.constexpr, GROUP: tl.constexpr,
    SAVE: tl.constexpr,
):
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    # n_left: states from the program's first one (all of them unless grouped)
    pid_e, sgrp, _, n_left = state_group(tl.program_id(0), N, GROUP, N_PAD)
    if GROUP < N_PAD:  # one group of GROUP states per program: its own states, its own fp32 output plane
        B_ptr += sgrp * GROUP * sB_n
        C_ptr += sgrp * GROUP * sC_n
        H_ptr += sgrp * GROUP
        last_ptr += sgrp * GROUP
        out_ptr += sgrp.to(tl.int64) * tl.num_programs(1) * E * L
    sB_l = aligned_stride(sB_l, BC_ALIGNED)
    sC_l = aligned_stride(sC_l, BC_ALIGNED)
    offs_e, mask_e, e_ld, grp, A2, Dv, bias = channel_block(
        pid_e, E, ch_per_group, A_ptr, D_ptr, bias_ptr, N, GROUP, BLOCK_E, VEC, EVEN_N)
    first_group = mask_e
    if GROUP < N_PAD:
        A2 = group_A2(A_ptr, e_ld, N, sgrp * GROUP, GROUP, BLOCK_E, VEC, EVEN_N)
        Dv = tl.where(sgrp == 0, Dv, 0.0)  # the D-skip enters the first group's partial only
        first_group = offs_e < tl.where(sgrp == 0, E, 0)
    n_idx = state_index(GROUP, VEC)  # (GROUP // VEC, VEC, 1)
    u_row = u_ptr + pid_b * su_b + e_ld * su_e
    d_row = delta_ptr + pid_b * sd_b + e_ld * sd_e
    z_row = z_ptr + pid_b * sz_b + e_ld * sz_e
    o_row = out_ptr + pid_b * so_b + offs_e * so_e
    B_base, B_off = state_rows(B_ptr, pid_b, sB_b, sB_g, sB_n, grp, GROUP, VEC, BC_ALIGNED)
    C_base, C_off = state_rows(C_ptr, pid_b, sC_b, sC_g, sC_n, grp, GROUP, VEC, BC_ALIGNED)
    # SAVE: tile start states (batch, n_chunks, E, N_PAD), the backward's checkpoints, one per chunk_len
    # positions, a span's carry in its first tile's slot; else only the carries, (batch, n_spans, E, N_PAD)
    n_slots = n_chunks if SAVE else tl.num_programs(2)
    H_st = H_ptr + (pid_b * n_slots * E + offs_e[None, None, :]) * N_PAD + n_idx
    H_mask = offs_e[None, None, :] < E
    step = 1 - 2 * reverse
    t_first = reverse * (L - 1)
    if MODE == 0:
        c_lo = 0
        c_hi = n_chunks
    else:  # one span of `span` tiles per program
        c_lo = pid_c * span
        c_hi = tl.minimum(n_chunks, c_lo + span)
    carry = H_st + (c_lo if SAVE else pid_c) * E * N_PAD  # the span's slot (SUMMARY, CHUNK)
    h = tl.zeros((GROUP, BLOCK_E), dtype=tl.float32)
    if MODE == 2:  # the span's start state, written by the combine kernel
        # channels past E read the last channel's state (never stored): no read past the buffer's end
        h = load_states(carry + (e_ld - offs_e)[None, None, :] * N_PAD, N, GROUP, BLOCK_E, VEC, True)
    dt_sum = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for c in range(c_lo, c_hi):
        if MODE != 1 and SAVE:
            tl.store(H_st + c * E * N_PAD, tl.reshape(h, (GROUP // VEC, VEC, BLOCK_E)), mask=H_mask)
        i_end = tl.minimum(L, (c + 1) * chunk_len)
        for i in range(c * chunk_len, i_end):
            t = t_first + i * step
            u, dt = step_inputs(u_row, su_l, d_row, sd_l, bias, softplus, t)
            Bt = load_states(B_base + (B_off + t * sB_l), n_left, GROUP, BLOCK_E, VEC, EVEN_N)
            h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt
            if MODE == 1:
                dt_sum += dt
            else:
                Ct = load_states(C_base + (C_off + t * sC_l), n_left, GROUP, BLOCK_E, VEC, EVEN_N)
                y = sum_products(h, Ct, GROUP) + Dv * u
                if HAS_Z:
                    zt = tl.load(z_row + t * sz_l).to(tl.float32)
                    y = y * zt * tl.sigmoid(zt)
                tl.store(o_row + t * so_l, y.to(out_ptr.dtype.element_ty), mask=mask_e)
    if MODE == 0:
        last = last_ptr + pid_b * E * N + offs_e[None, None, :] * N + n_idx
        tl.store(last, tl.reshape(h, (GROUP // VEC, VEC, BLOCK_E)), mask=H_mask & (n_idx < n_left))
    if MODE == 1:  # the span's end state from zero, in the span's slot (the combine reads it there)
        tl.store(carry, tl.reshape(h, (GROUP // VEC, VEC, BLOCK_E)), mask=H_mask)
        tl.store(dtsum_ptr + (pid_b * tl.num_programs(2) + pid_c) * E + offs_e, dt_sum, mask=first_group)


def _combine_kernel(A_ptr, H_ptr, dtsum_ptr, last_ptr, E, N, n_spans, n_slots, slot_stride, reverse,
                    off_A, flip, BLOCK: tl.constexpr, N_PAD: tl.constexpr):
    """Span end states (from zero) -> span start states, in place; the state after the last span to last_ptr.

    One thread per (channel, state): x_{next} = exp(A * sum(dt over the span)) * x + S_span, a walk over the
    spans (first to last, or last to first with `reverse`: the backward's adjoint carry). Span k's value sits
    in slot k * slot_stride of the batch's (n_slots, E, N_PAD) states. Grid axis 2 is the direction (both of
    Vim's in one launch): direction d reads A at d * off_A elements, walks the other way when `flip`, and its
    states, sums and last state sit in the d-th block of stacked buffers.
    """
    pid = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    d = tl.program_id(2)
    d64 = d.to(tl.int64)
    n_batch = tl.num_programs(1)
    A_ptr += d64 * off_A
    H_ptr += d64 * n_batch * n_slots * E * N_PAD
    dtsum_ptr += d64 * n_batch * n_spans * E
    last_ptr += d64 * n_batch * E * N
    reverse = reverse ^ (d * flip)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # flat (e, n_pad) index
    e = offs // N_PAD
    n = offs % N_PAD
    mask = (e < E) & (n < N)
    A2 = tl.load(A_ptr + e * N + n, mask=mask, other=0.0) * 1.4426950408889634
    h = tl.zeros((BLOCK,), dtype=tl.float32)
    for k in range(n_spans):
        c = k + reverse * (n_spans - 1 - 2 * k)
        slot = H_ptr + (pid_b * n_slots + c * slot_stride) * E * N_PAD + offs
        s = tl.load(slot, mask=e < E, other=0.0)
        tl.store(slot, h, mask=e < E)
        dsum = tl.load(dtsum_ptr + (pid_b * n_spans + c) * E + e, mask=e < E, other=0.0)
        h = tl.exp2(dsum * A2) * h + s
    tl.store(last_ptr + pid_b * E * N + e * N + n, h, mask=mask)


scan_fwd_kernel = TritonKernel(_scan_fwd_kernel, state_elems=lambda c: c["BLOCK_E"] * c["GROUP"])
combine_kernel = TritonKernel(_combine_kernel, state_elems=lambda c: c["BLOCK"])
