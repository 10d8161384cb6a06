"""Triton selective-scan backward from the forward's saved tile states (no forward recompute pass).

Same layout as the forward: one channel per thread, all N states (and their adjoints) in its registers. A
program (batch, block of channels, span of tiles) walks its tiles of CHUNK positions from the last to the
first. Per tile:
1. recompute: the recurrence re-runs from the tile's saved start state; each step's state h_t and decay
   exp(dt_t A) (its only exp) go to the program's slab, [channel][step][h | decay], 128-bit per thread;
2. adjoint: g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1} walks the tile backwards through the slab; dA, dD and
   d(delta_bias) are summed in registers, du/ddelta/dz stored; g_t overwrites the spent decay, and the
   channel's weights of dC and dB at that step (dy_t, dt_t u_t; 0 past E) go to a small per-step buffer;
3. reduce, once per tile: dC[s, n] = sum_e dy[s, e] h[s, n, e] and dB[s, n] = sum_e dtu[s, e] g[s, n, e] over
   the block's channels, each thread summing whole columns of channels in registers (no shuffles).
The per-block dB/dC partials and per-program dA/dD/dbias partials are summed by a deterministic `.sum` (no
atomics: bitwise reproducible). Every output element is written exactly once: nothing is zero-filled.

Chunk-parallel (small batches): `_bwd_summary_kernel` runs the adjoint carry of each span from zero (its own
exp per update), the forward's combine kernel chains the spans from the last, and each program of the main
kernel starts from its span's incoming carry. Both kernels take DIRS=2 (Vim's two directions in one launch,
the reverse one's inputs by element offsets).
"""

from __future__ import annotations

import triton.language as tl

from .triton_common import TritonKernel
from .triton_scan_parts import (
    aligned_stride,
    channel_block,
    group_A2,
    load_states,
    softplus_dt,
    softplus_slope,
    state_group,
    state_index,
    state_rows,
    store_states,
    sum_products,
)


def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, H_ptr, Gin_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dCB_ptr, slab_ptr,
    E, L, N, ch_per_group, softplus, reverse, chunk_len, n_chunks, span, n_par,
    off_u, off_d, off_A, off_B, off_C, off_D, off_bias,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_e, sz_l, sg_b, sg_e, sg_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
    DIRS: tl.constexpr, VEC: tl.constexpr, BC_ALIGNED: tl.constexpr, CHUNK: tl.constexpr, GROUP: tl.constexpr,
):
    pid_b = tl.program_id(1).to(tl.int64)
    n_batch = tl.num_programs(1)
    par = tl.program_id(2) % n_par
    # one group of GROUP states per program (grid axis 0: channel block x group); n_left: states from the
    # program's first one (all of them unless grouped)
    pid_e, sgrp, n_grp, n_left = state_group(tl.program_id(0), N, GROUP, N_PAD)
    n_prog0 = tl.num_programs(0)
    n_eblk = n_prog0 // n_grp  # channel blocks
    if DIRS == 2:
        # Vim's reverse direction: its inputs sit off_* elements from the forward direction's (same strides),
        # its outputs, partials and scratch in the second half of every stacked buffer
        reverse = tl.program_id(2) // n_par  # int32: positions stay 32-bit in the loops
        d1 = reverse.to(tl.int64)
        u_ptr += d1 * off_u
        delta_ptr += d1 * off_d
        A_ptr += d1 * off_A
        B_ptr += d1 * off_B
        C_ptr += d1 * off_C
        D_ptr += d1 * off_D
        bias_ptr += d1 * off_bias
        H_ptr += d1 * n_batch * n_chunks * E * N_PAD
        Gin_ptr += d1 * n_batch * n_par * E * N_PAD
        plane = d1 * n_batch * E * L
        du_ptr += plane
        ddelta_ptr += plane
        dz_ptr += plane
        dA_ptr += d1 * n_batch * n_par * E * N
        dD_ptr += d1 * n_batch * n_par * E
        dbias_ptr += d1 * n_batch * n_par * E
        dCB_ptr += d1 * n_batch * n_eblk * 2 * N * L
        slab_ptr += d1 * n_batch * n_prog0 * n_par * (BLOCK_E * CHUNK * (2 * GROUP + 4))
    if GROUP < N_PAD:
        # the group's states of every per-state tensor; its own fp32 planes of du, ddelta, dz, d(delta_bias)
        # (summed over groups by the launcher: linear in each group's part)
        B_ptr += sgrp * GROUP * sB_n
        C_ptr += sgrp * GROUP * sC_n
        H_ptr += sgrp * GROUP
        Gin_ptr += sgrp * GROUP
        dA_ptr += sgrp * GROUP
        dCB_ptr += sgrp * GROUP * L
        plane_g = sgrp.to(tl.int64) * DIRS * n_batch * E * L
        du_ptr += plane_g
        ddelta_ptr += plane_g
        dz_ptr += plane_g
        dbias_ptr += sgrp.to(tl.int64) * DIRS * n_batch * n_par * E
    sB_l = aligned_stride(sB_l, BC_ALIGNED)
    sC_l = aligned_stride(sC_l, BC_ALIGNED)
    offs_e, mask_e, e_ld, grp, A2, Dv, bias = channel_block(
        pid_e, E, ch_per_group, A_ptr, D_ptr, bias_ptr, N, GROUP, BLOCK_E, VEC, EVEN_N)
    first_group = mask_e
    if GROUP < N_PAD:
        A2 = group_A2(A_ptr, e_ld, N, sgrp * GROUP, GROUP, BLOCK_E, VEC, EVEN_N)
        Dv = tl.where(sgrp == 0, Dv, 0.0)  # the D-skip enters the first group's du and dz only
        first_group = offs_e < tl.where(sgrp == 0, E, 0)
    n_idx = state_index(GROUP, VEC)  # (GROUP // VEC, VEC, 1)
    ch3 = tl.arange(0, BLOCK_E)[None, None, :]
    u_row = u_ptr + pid_b * su_b + e_ld * su_e
    d_row = delta_ptr + pid_b * sd_b + e_ld * sd_e
    z_row = z_ptr + pid_b * sz_b + e_ld * sz_e
    g_row = dout_ptr + pid_b * sg_b + e_ld * sg_e
    dst_row = pid_b * E * L + offs_e * L  # du, ddelta, dz: contiguous (B, E, L)
    B_base, B_off = state_rows(B_ptr, pid_b, sB_b, sB_g, sB_n, grp, GROUP, VEC, BC_ALIGNED)
    C_base, C_off = state_rows(C_ptr, pid_b, sC_b, sC_g, sC_n, grp, GROUP, VEC, BC_ALIGNED)
    H_st = H_ptr + (pid_b * n_chunks * E + e_ld[None, None, :]) * N_PAD + n_idx
    # the program's scratch: slab [channel][step][h, then dy h | decay, then dtu g]
    prog = (pid_b * n_prog0 + tl.program_id(0)) * n_par + par
    slab = slab_ptr + prog * (BLOCK_E * CHUNK * (2 * GROUP + 4))
    wts_base = slab + BLOCK_E * CHUNK * 2 * GROUP  # [channel][step][dy | dtu | dt | d(dt)/d(raw delta)]
    wts = wts_base + tl.arange(0, BLOCK_E) * (CHUNK * 4)
    slab_h = slab + ch3 * (CHUNK * 2 * GROUP) + n_idx
    slab_d = slab_h + GROUP
    step = 1 - 2 * reverse
    t_first = reverse * (L - 1)
    c_lo = par * span
    c_hi = tl.minimum(n_chunks, c_lo + span)
    # exp(dt_{t+1} A) * g_{t+1}: from the next span's programs (through the combine), else zero
    G = tl.zeros((GROUP, BLOCK_E), dtype=tl.float32)
    if par + 1 < n_par:
        G_st = Gin_ptr + ((pid_b * n_par + par) * E + e_ld[None, None, :]) * N_PAD + n_idx
        G = load_states(G_st, N, GROUP, BLOCK_E, VEC, True)
    dA_acc = tl.zeros((GROUP, BLOCK_E), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    # the tile's reduction: (step, dC|dB term) rows of one channel at a time
    r_s = tl.arange(0, CHUNK)[:, None]
    r_p = tl.arange(0, 2 * GROUP)[None, :]
    red = slab + r_s * (2 * GROUP) + r_p
    red_w = wts_base + r_s * 4 + (r_p >= GROUP).to(tl.int32)
    # dC/dB partials (batch, n_eblk, dC|dB, N, L): column r_p is dC (r_p < GROUP) or dB of state r_p % GROUP
    part = (pid_b * n_eblk + pid_e) * 2 * N * L + (r_p // GROUP) * (N * L) + (r_p % GROUP) * L
    for cc in range(c_hi - c_lo):
        c = c_hi - 1 - cc
        i0 = c * chunk_len
        i1 = tl.minimum(L, i0 + chunk_len)
        h = load_states(H_st + c * E * N_PAD, N, GROUP, BLOCK_E, VEC, True)
        tl.debug_barrier()  # the previous tile's slab has been reduced by every thread
        for i in range(i0, i1):
            t = t_first + i * step
            u = tl.load(u_row + t * su_l).to(tl.float32)
            dt, slope = softplus_slope(tl.load(d_row + t * sd_l).to(tl.float32) + bias, softplus)
            Bt = load_states(B_base + (B_off + t * sB_l), n_left, GROUP, BLOCK_E, VEC, EVEN_N)
            decay = tl.exp2(dt[None, :] * A2)
            h = decay * h + (dt * u)[None, :] * Bt
            at = (i - i0) * (2 * GROUP)
            tl.store(wts + (i - i0) * 4 + 2, dt)
            tl.store(wts + (i - i0) * 4 + 3, slope)
            store_states(slab_h + at, h, GROUP, BLOCK_E, VEC)
            store_states(slab_d + at, decay, GROUP, BLOCK_E, VEC)
        for j in range(i1 - i0):
            i = i1 - 1 - j
            t = t_first + i * step
            at = (i - i0) * (2 * GROUP)
            h_t = load_states(slab_h + at, N, GROUP, BLOCK_E, VEC, True)
            decay = load_states(slab_d + at, N, GROUP, BLOCK_E, VEC, True)
            Bt = load_states(B_base + (B_off + t * sB_l), n_left, GROUP, BLOCK_E, VEC, EVEN_N)
            Ct = load_states(C_base + (C_off + t * sC_l), n_left, GROUP, BLOCK_E, VEC, EVEN_N)
            u = tl.load(u_row + t * su_l).to(tl.float32)
            w_at = wts + (i - i0) * 4
            dt = tl.load(w_at + 2)
            dy = tl.load(g_row + t * sg_l).to(tl.float32)
            dtu = dt * u
            if HAS_Z:
                zt = tl.load(z_row + t * sz_l).to(tl.float32)
                sig_z = tl.sigmoid(zt)
                y = sum_products(h_t, Ct, GROUP) + Dv * u
                dz = dy * y * sig_z * (1.0 + zt * (1.0 - sig_z))
                tl.store(dz_ptr + dst_row + t, dz.to(dz_ptr.dtype.element_ty), mask=mask_e)
                dy = dy * zt * sig_z
            g = dy[None, :] * Ct + G
            # g replaces the spent decay; the channel's dC and dB weights (0 past E: clamped duplicates of the
            # last channel must not enter the sums over channels)
            store_states(slab_d + at, g, GROUP, BLOCK_E, VEC)
            tl.store(w_at, tl.where(mask_e, dy, 0.0))
            tl.store(w_at + 1, tl.where(mask_e, dtu, 0.0))
            g_dh = g * (h_t - dtu[None, :] * Bt)  # g * exp(dt A) * h_{t-1}
            gB = sum_products(g, Bt, GROUP)
            du = dy * Dv + gB * dt
            ddt = gB * u + sum_products(g_dh, A2, GROUP) * 0.6931471805599453
            dA_acc += g_dh * dt[None, :]
            dD_acc += dy * u
            G = g * decay
            if softplus:
                ddt = ddt * tl.load(w_at + 3)
            dbias_acc += ddt
            tl.store(du_ptr + dst_row + t, du.to(du_ptr.dtype.element_ty), mask=mask_e)
            tl.store(ddelta_ptr + dst_row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_e)
        tl.debug_barrier()
        # dC/dB of the tile's steps: sums over the block's channels, one channel's rows at a time
        acc = tl.zeros((CHUNK, 2 * GROUP), dtype=tl.float32)
        for ch in tl.static_range(BLOCK_E):
            acc += tl.load(red + ch * (CHUNK * 2 * GROUP)) * tl.load(red_w + ch * (CHUNK * 4))
        t_tile = t_first + (i0 + r_s) * step
        tl.store(dCB_ptr + part + t_tile, acc, mask=(i0 + r_s < i1) & (r_p % GROUP < n_left))
    # per-(batch, span) partials of the parameter gradients (summed by the launcher)
    pp = pid_b * n_par + par
    dA_st = dA_ptr + (pp * E + offs_e[None, None, :]) * N + n_idx
    dA_mask = (offs_e[None, None, :] < E) & (n_idx < n_left)
    tl.store(dA_st, tl.reshape(dA_acc, (GROUP // VEC, VEC, BLOCK_E)), mask=dA_mask)
    tl.store(dD_ptr + pp * E + offs_e, dD_acc, mask=first_group)
    tl.store(dbias_ptr + pp * E + offs_e, dbias_acc, mask=mask_e)


def _bwd_summary_kernel(
    u_ptr, delta_ptr, A_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, Gs_ptr, dtsum_ptr,
    E, L, N, ch_per_group, softplus, reverse, chunk_len, n_chunks, span, n_par,
    off_d, off_A, off_C, off_D, off_bias,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sC_b, sC_g, sC_n, sC_l, sz_b, sz_e, sz_l, sg_b, sg_e, sg_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
    VEC: tl.constexpr, BC_ALIGNED: tl.constexpr, DIRS: tl.constexpr, GROUP: tl.constexpr,
):
    """The adjoint carry of one span from zero, exp(dt A) * g at the span's first position, and sum(dt).

    The adjoint carry does not depend on the states, so this needs neither h nor the saved tile states; the
    combine kernel then chains the spans from the last one (see triton_scan_fwd._combine_kernel). DIRS=2:
    both of Vim's directions in one launch, as `_scan_bwd_kernel` (grid axis 2 = direction * n_par + span).
    """
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    par = tl.program_id(2) % n_par
    if DIRS == 2:
        reverse = tl.program_id(2) // n_par
        d1 = reverse.to(tl.int64)
        delta_ptr += d1 * off_d
        A_ptr += d1 * off_A
        C_ptr += d1 * off_C
        D_ptr += d1 * off_D
        bias_ptr += d1 * off_bias
        Gs_ptr += d1 * tl.num_programs(1) * n_par * E * N_PAD
        dtsum_ptr += d1 * tl.num_programs(1) * n_par * E
    pid_e, sgrp, _, n_left = state_group(pid_e, N, GROUP, N_PAD)  # grid axis 0: channel block x group
    if GROUP < N_PAD:
        C_ptr += sgrp * GROUP * sC_n
        Gs_ptr += sgrp * GROUP
    sC_l = aligned_stride(sC_l, BC_ALIGNED)
    offs_e, mask_e, e_ld, grp, A2, _, bias = channel_block(
        pid_e, E, ch_per_group, A_ptr, D_ptr, bias_ptr, N, GROUP, BLOCK_E, VEC, EVEN_N)
    first_group = mask_e
    if GROUP < N_PAD:
        A2 = group_A2(A_ptr, e_ld, N, sgrp * GROUP, GROUP, BLOCK_E, VEC, EVEN_N)
        first_group = offs_e < tl.where(sgrp == 0, E, 0)
    n_idx = state_index(GROUP, VEC)
    d_row = delta_ptr + pid_b * sd_b + e_ld * sd_e
    z_row = z_ptr + pid_b * sz_b + e_ld * sz_e
    g_row = dout_ptr + pid_b * sg_b + e_ld * sg_e
    C_base, C_off = state_rows(C_ptr, pid_b, sC_b, sC_g, sC_n, grp, GROUP, VEC, BC_ALIGNED)
    step = 1 - 2 * reverse
    t_first = reverse * (L - 1)
    i_lo = par * span * chunk_len
    i_hi = tl.minimum(L, i_lo + span * chunk_len)
    G = tl.zeros((GROUP, BLOCK_E), dtype=tl.float32)
    dt_sum = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for j in range(i_hi - i_lo):
        t = t_first + (i_hi - 1 - j) * step
        dt = softplus_dt(tl.load(d_row + t * sd_l).to(tl.float32) + bias, softplus)
        dy = tl.load(g_row + t * sg_l).to(tl.float32)
        if HAS_Z:
            zt = tl.load(z_row + t * sz_l).to(tl.float32)
            dy = dy * zt * tl.sigmoid(zt)
        Ct = load_states(C_base + (C_off + t * sC_l), n_left, GROUP, BLOCK_E, VEC, EVEN_N)
        G = (dy[None, :] * Ct + G) * tl.exp2(dt[None, :] * A2)
        dt_sum += dt
    G_st = Gs_ptr + ((pid_b * n_par + par) * E + offs_e[None, None, :]) * N_PAD + n_idx
    tl.store(G_st, tl.reshape(G, (GROUP // VEC, VEC, BLOCK_E)), mask=offs_e[None, None, :] < E)
    tl.store(dtsum_ptr + (pid_b * n_par + par) * E + offs_e, dt_sum, mask=first_group)


scan_bwd_kernel = TritonKernel(_scan_bwd_kernel, state_elems=lambda c: c["BLOCK_E"] * c["GROUP"])
bwd_summary_kernel = TritonKernel(_bwd_summary_kernel, state_elems=lambda c: c["BLOCK_E"] * c["GROUP"])
