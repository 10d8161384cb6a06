"""Triton selective-scan backward from the forward's saved chunk states (no forward recompute pass).

Same layout as the forward: one channel per thread, all N states (and their adjoints) in its registers. Per
program (batch, block of channels) the chunks are walked from the last scanned to the first. For each chunk
the recurrence is re-run from the chunk's saved start state, writing the chunk's states h_t and decays
exp(dt_t A) to a per-program slab (each exp computed once and reused by the adjoint); then the adjoint
g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1} walks the chunk backwards through the slab. dA, dD and d(delta_bias)
are summed in registers. dB and dC are sums over a group's channels: the adjoint writes each channel's
contributions for the chunk to a per-program buffer, and after the chunk one pass reduces them over the
block's channels (in-thread: each lane owns one (dB|dC, n) pair), so the time loops hold no shuffles or
barriers. The per-block partials are summed by a deterministic `.sum` (no atomics: bitwise reproducible).
Every output element is written exactly once, so nothing is zero-filled first.
"""

from __future__ import annotations

import triton.language as tl

from .triton_common import TritonKernel


def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, H_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, slab_ptr, contrib_ptr,
    E, L, N, ch_per_group, softplus, reverse, chunk_len, n_chunks,
    off_u, off_d, off_A, off_B, off_C, off_D, off_bias,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_e, sz_l, sg_b, sg_e, sg_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
    DIRS: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    n_eblk = tl.num_programs(0)
    if DIRS == 2:
        # Vim's reverse direction: its inputs sit off_* elements from the forward direction's (same strides),
        # its outputs, partials and scratch in the second half of every stacked buffer
        d1 = tl.program_id(2).to(tl.int64)
        reverse = d1
        u_ptr += d1 * off_u
        delta_ptr += d1 * off_d
        A_ptr += d1 * off_A
        B_ptr += d1 * off_B
        C_ptr += d1 * off_C
        D_ptr += d1 * off_D
        bias_ptr += d1 * off_bias
        H_ptr += d1 * tl.num_programs(1) * n_chunks * E * N_PAD
        plane = d1 * tl.num_programs(1) * E * L
        du_ptr += plane
        ddelta_ptr += plane
        dz_ptr += plane
        dA_ptr += d1 * tl.num_programs(1) * E * N
        dD_ptr += d1 * tl.num_programs(1) * E
        dbias_ptr += d1 * tl.num_programs(1) * E
        dB_ptr += d1 * tl.num_programs(1) * n_eblk * N * L
        dC_ptr += d1 * tl.num_programs(1) * n_eblk * N * L
        slab_ptr += d1 * tl.num_programs(1) * n_eblk * chunk_len * 2 * N_PAD * BLOCK_E
        contrib_ptr += d1 * tl.num_programs(1) * n_eblk * chunk_len * 2 * N_PAD * BLOCK_E
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    e_ld = tl.minimum(offs_e, E - 1)
    offs_n = tl.arange(0, N_PAD)
    rows_n = offs_n[:, None]
    A2 = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
    for n in tl.static_range(N_PAD):
        if EVEN_N:
            a_n = tl.load(A_ptr + e_ld * N + n).to(tl.float32)
        else:
            a_n = tl.load(A_ptr + e_ld * N + n, mask=e_ld * 0 + n < N, other=0.0).to(tl.float32)
        A2 = tl.where(rows_n == n, a_n[None, :] * 1.4426950408889634, A2)
    Dv = tl.load(D_ptr + e_ld).to(tl.float32)
    bias = tl.load(bias_ptr + e_ld).to(tl.float32)
    grp = e_ld // ch_per_group
    u_row = u_ptr + pid_b * su_b + e_ld * su_e
    d_row = delta_ptr + pid_b * sd_b + e_ld * sd_e
    z_row = z_ptr + pid_b * sz_b + e_ld * sz_e
    g_row = dout_ptr + pid_b * sg_b + e_ld * sg_e
    dst_row = pid_b * E * L + offs_e * L  # du, ddelta, dz: contiguous (B, E, L)
    B_row = B_ptr + pid_b * sB_b + grp * sB_g
    C_row = C_ptr + pid_b * sC_b + grp * sC_g
    # dB/dC partials (batch, n_eblk, N, L); per-channel contributions of a chunk, [channel][step][dC|dB][n]
    pairs = tl.arange(0, 2 * N_PAD)
    part_c = dC_ptr + (pid_b * n_eblk + pid_e) * N * L + pairs * L
    part_b = dB_ptr + (pid_b * n_eblk + pid_e) * N * L + (pairs - N_PAD) * L
    ct_stride = chunk_len * 2 * N_PAD
    contrib = contrib_ptr + (pid_b * n_eblk + pid_e) * (BLOCK_E * ct_stride)
    ct_row = contrib + tl.arange(0, BLOCK_E) * ct_stride
    ct_tile = contrib + tl.arange(0, BLOCK_E)[:, None] * ct_stride + pairs[None, :]
    H_ld = H_ptr + (pid_b * n_chunks * E + e_ld) * N_PAD
    # slab: [step in chunk][h or decay][n][channel of the block], coalesced across the block's channels
    slab = slab_ptr + (pid_b * n_eblk + pid_e) * (chunk_len * 2 * N_PAD * BLOCK_E) + tl.arange(0, BLOCK_E)
    step = 1 - 2 * reverse
    t_first = reverse * (L - 1)
    G = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)  # exp(dt_{t+1} A) * g_{t+1}
    dA_acc = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        i0 = c * chunk_len
        i1 = tl.minimum(L, i0 + chunk_len)
        h = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
        for n in tl.static_range(N_PAD):
            h = tl.where(rows_n == n, tl.load(H_ld + c * E * N_PAD + n)[None, :], h)
        tl.debug_barrier()  # the slab's previous chunk has been read by every thread
        for i in range(i0, i1):
            t = t_first + i * step
            u = tl.load(u_row + t * su_l).to(tl.float32)
            dt = tl.load(d_row + t * sd_l).to(tl.float32) + bias
            if softplus:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            Bt = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
            for n in tl.static_range(N_PAD):
                if EVEN_N:
                    b_n = tl.load(B_row + n * sB_n + t * sB_l).to(tl.float32)
                else:
                    n_ok = e_ld * 0 + n < N
                    b_n = tl.load(B_row + n * sB_n + t * sB_l, mask=n_ok, other=0.0).to(tl.float32)
                Bt = tl.where(rows_n == n, b_n[None, :], Bt)
            decay = tl.exp2(dt[None, :] * A2)
            h = decay * h + (dt * u)[None, :] * Bt
            at = slab + (i - i0) * (2 * N_PAD * BLOCK_E)
            for n in tl.static_range(N_PAD):  # -0.0: the select-and-sum folds to the one element
                tl.store(at + n * BLOCK_E, tl.sum(tl.where(rows_n == n, h, -0.0), axis=0))
                tl.store(at + (N_PAD + n) * BLOCK_E, tl.sum(tl.where(rows_n == n, decay, -0.0), axis=0))
        tl.debug_barrier()
        for j in range(i1 - i0):
            i = i1 - 1 - j
            t = t_first + i * step
            at = slab + (i - i0) * (2 * N_PAD * BLOCK_E)
            h_t = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
            decay = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
            Bt = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
            Ct = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
            for n in tl.static_range(N_PAD):
                h_t = tl.where(rows_n == n, tl.load(at + n * BLOCK_E)[None, :], h_t)
                decay = tl.where(rows_n == n, tl.load(at + (N_PAD + n) * BLOCK_E)[None, :], decay)
                if EVEN_N:
                    b_n = tl.load(B_row + n * sB_n + t * sB_l).to(tl.float32)
                    c_n = tl.load(C_row + n * sC_n + t * sC_l).to(tl.float32)
                else:
                    n_ok = e_ld * 0 + n < N
                    b_n = tl.load(B_row + n * sB_n + t * sB_l, mask=n_ok, other=0.0).to(tl.float32)
                    c_n = tl.load(C_row + n * sC_n + t * sC_l, mask=n_ok, other=0.0).to(tl.float32)
                Bt = tl.where(rows_n == n, b_n[None, :], Bt)
                Ct = tl.where(rows_n == n, c_n[None, :], Ct)
            u = tl.load(u_row + t * su_l).to(tl.float32)
            d_raw = tl.load(d_row + t * sd_l).to(tl.float32) + bias
            dy = tl.load(g_row + t * sg_l).to(tl.float32)
            if softplus:
                dt = tl.where(d_raw <= 20.0, tl.log(1.0 + tl.exp(d_raw)), d_raw)
            else:
                dt = d_raw
            dtu = dt * u
            if HAS_Z:
                zt = tl.load(z_row + t * sz_l).to(tl.float32)
                sig_z = tl.sigmoid(zt)
                y = tl.sum(h_t * Ct, axis=0) + Dv * u
                dz = dy * y * sig_z * (1.0 + zt * (1.0 - sig_z))
                tl.store(dz_ptr + dst_row + t, dz.to(dz_ptr.dtype.element_ty), mask=mask_e)
                dy = dy * zt * sig_z
            g = dy[None, :] * Ct + G
            # channels past E (clamped duplicates of the last one) must not enter the sums over channels
            dy_in = tl.where(mask_e, dy, 0.0)
            dtu_in = tl.where(mask_e, dtu, 0.0)
            dC_t = dy_in[None, :] * h_t
            dB_t = g * dtu_in[None, :]
            ct = ct_row + (i - i0) * (2 * N_PAD)
            for n in tl.static_range(N_PAD):  # -0.0: the select-and-sum folds to the one element
                tl.store(ct + n, tl.sum(tl.where(rows_n == n, dC_t, -0.0), axis=0))
                tl.store(ct + N_PAD + n, tl.sum(tl.where(rows_n == n, dB_t, -0.0), axis=0))
            g_dh = g * (h_t - dtu[None, :] * Bt)  # g * exp(dt A) * h_{t-1}
            du = dy * Dv + tl.sum(g * Bt, axis=0) * dt
            ddt = tl.sum(g * Bt, axis=0) * u + tl.sum(g_dh * A2, axis=0) * 0.6931471805599453
            dA_acc += g_dh * dt[None, :]
            dD_acc += dy * u
            G = g * decay
            if softplus:
                ddt = ddt * tl.sigmoid(d_raw)
            dbias_acc += ddt
            tl.store(du_ptr + dst_row + t, du.to(du_ptr.dtype.element_ty), mask=mask_e)
            tl.store(ddelta_ptr + dst_row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_e)
        tl.debug_barrier()
        # dB/dC: one reduction over the block's channels per step of the chunk, all (dC|dB, n) pairs at once
        for i in range(i0, i1):
            t = t_first + i * step
            total = tl.sum(tl.load(ct_tile + (i - i0) * (2 * N_PAD)), axis=0)
            tl.store(part_c + t, total, mask=pairs < N)
            tl.store(part_b + t, total, mask=(pairs >= N_PAD) & (pairs - N_PAD < N))
    # per-batch partials of the parameter gradients (summed over the batch by the launcher)
    dA_mask = mask_e[None, :] & (rows_n < N)
    tl.store(dA_ptr + pid_b * E * N + offs_e[None, :] * N + rows_n, dA_acc, mask=dA_mask)
    tl.store(dD_ptr + pid_b * E + offs_e, dD_acc, mask=mask_e)
    tl.store(dbias_ptr + pid_b * E + offs_e, dbias_acc, mask=mask_e)


scan_bwd_kernel = TritonKernel(_scan_bwd_kernel, state_elems=lambda c: c["BLOCK_E"] * c["N_PAD"])
