"""Triton selective-scan backward: recompute forward states chunk by chunk, then a reverse-time adjoint.

Per program (batch, block of channels): pass 1 runs the forward recurrence once, keeping only the states at
chunk boundaries (CHUNK positions apart); pass 2 walks the chunks from last to first, recomputes the chunk's
states into a per-program scratch slab (L2-resident: it is rewritten by every chunk), and runs the adjoint
g_t = dy_t C_t + exp(dt_{t+1} A) g_{t+1} backwards through it. dA, dD and d(delta_bias) are summed in
registers; dB and dC (sums over a group's channels) are written per channel block and reduced afterwards by
a deterministic `.sum` (no atomics anywhere, so the backward is bitwise reproducible).
"""

from __future__ import annotations

import triton.language as tl

from .triton_scan_fwd import TritonKernel

CHUNK = 32


def _scan_bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, ckpt_ptr, hbuf_ptr,
    E, L, N, ch_per_group, softplus, reverse, n_chunks,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_e, sz_l, sg_b, sg_e, sg_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr, CHUNK: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    n_eblk = tl.num_programs(0)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    offs_n = tl.arange(0, N_PAD)
    mask_e = offs_e < E
    mask_n = offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_e[:, None] * N + offs_n[None, :], mask=mask_en, other=0.0).to(tl.float32)
    A2 = A * 1.4426950408889634
    Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    group = (pid_e * BLOCK_E) // ch_per_group
    u_row = u_ptr + pid_b * su_b + offs_e * su_e
    d_row = delta_ptr + pid_b * sd_b + offs_e * sd_e
    z_row = z_ptr + pid_b * sz_b + offs_e * sz_e
    g_row = dout_ptr + pid_b * sg_b + offs_e * sg_e
    # gradients of (B, E, L) inputs are written contiguous
    dst_row = pid_b * E * L + offs_e * L
    B_col = B_ptr + pid_b * sB_b + group * sB_g + offs_n * sB_n
    C_col = C_ptr + pid_b * sC_b + group * sC_g + offs_n * sC_n
    # partial dB/dC of this channel block: (batch, n_eblk, N, L)
    part_col = (pid_b * n_eblk + pid_e) * N * L + offs_n * L
    prog = pid_b * n_eblk + pid_e
    tile = tl.arange(0, BLOCK_E)[:, None] * N_PAD + offs_n[None, :]
    ckpt = ckpt_ptr + prog * n_chunks * BLOCK_E * N_PAD + tile
    hbuf = hbuf_ptr + prog * CHUNK * BLOCK_E * N_PAD + tile
    step = 1 - 2 * reverse
    t_first = reverse * (L - 1)

    # pass 1: states at the chunk boundaries
    h = tl.zeros((BLOCK_E, N_PAD), dtype=tl.float32)
    tl.store(ckpt, h)
    for c in range(n_chunks - 1):
        for i in range(c * CHUNK, (c + 1) * CHUNK):
            t = t_first + i * step
            u = tl.load(u_row + t * su_l, mask=mask_e, other=0.0).to(tl.float32)
            dt = tl.load(d_row + t * sd_l, mask=mask_e, other=0.0).to(tl.float32) + bias
            Bt = tl.load(B_col + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)
            if softplus:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bt[None, :]
        tl.store(ckpt + (c + 1) * BLOCK_E * N_PAD, h)

    # pass 2: chunks from last to first
    G = tl.zeros((BLOCK_E, N_PAD), dtype=tl.float32)  # exp(dt_{t+1} A) * g_{t+1}
    dA_acc = tl.zeros((BLOCK_E, N_PAD), dtype=tl.float32)
    dD_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    dbias_acc = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        i0 = c * CHUNK
        i1 = tl.minimum(L, i0 + CHUNK)
        tl.debug_barrier()
        h = tl.load(ckpt + c * BLOCK_E * N_PAD)
        for i in range(i0, i1):
            t = t_first + i * step
            tl.store(hbuf + (i - i0) * BLOCK_E * N_PAD, h)
            u = tl.load(u_row + t * su_l, mask=mask_e, other=0.0).to(tl.float32)
            dt = tl.load(d_row + t * sd_l, mask=mask_e, other=0.0).to(tl.float32) + bias
            Bt = tl.load(B_col + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)
            if softplus:
                dt = tl.where(dt <= 20.0, tl.log(1.0 + tl.exp(dt)), dt)
            h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bt[None, :]
        tl.debug_barrier()
        for j in range(i1 - i0):
            i = i1 - 1 - j
            t = t_first + i * step
            h_prev = tl.load(hbuf + (i - i0) * BLOCK_E * N_PAD)
            u = tl.load(u_row + t * su_l, mask=mask_e, other=0.0).to(tl.float32)
            d_raw = tl.load(d_row + t * sd_l, mask=mask_e, other=0.0).to(tl.float32) + bias
            Bt = tl.load(B_col + t * sB_l, mask=mask_n, other=0.0).to(tl.float32)
            Ct = tl.load(C_col + t * sC_l, mask=mask_n, other=0.0).to(tl.float32)
            dy = tl.load(g_row + t * sg_l, mask=mask_e, other=0.0).to(tl.float32)
            if softplus:
                dt = tl.where(d_raw <= 20.0, tl.log(1.0 + tl.exp(d_raw)), d_raw)
            else:
                dt = d_raw
            decay = tl.exp2(dt[:, None] * A2)
            h_t = decay * h_prev + (dt * u)[:, None] * Bt[None, :]
            if HAS_Z:
                zt = tl.load(z_row + t * sz_l, mask=mask_e, other=0.0).to(tl.float32)
                sig_z = tl.sigmoid(zt)
                y = tl.sum(h_t * Ct[None, :], axis=1) + Dv * u
                dz = dy * y * sig_z * (1.0 + zt * (1.0 - sig_z))
                tl.store(dz_ptr + dst_row + t, dz.to(dz_ptr.dtype.element_ty), mask=mask_e)
                dy = dy * zt * sig_z
            tl.store(dC_ptr + part_col + t, tl.sum(dy[:, None] * h_t, axis=0), mask=mask_n)
            g = dy[:, None] * Ct[None, :] + G
            dtu = dt * u
            tl.store(dB_ptr + part_col + t, tl.sum(g * dtu[:, None], axis=0), mask=mask_n)
            g_decay_h = g * decay * h_prev
            gB = tl.sum(g * Bt[None, :], axis=1)
            du = dy * Dv + gB * dt
            ddt = gB * u + tl.sum(g_decay_h * A, axis=1)
            dA_acc += g_decay_h * dt[:, None]
            dD_acc += dy * u
            G = g * decay
            if softplus:
                ddt = ddt * tl.sigmoid(d_raw)
            dbias_acc += ddt
            tl.store(du_ptr + dst_row + t, du.to(du_ptr.dtype.element_ty), mask=mask_e)
            tl.store(ddelta_ptr + dst_row + t, ddt.to(ddelta_ptr.dtype.element_ty), mask=mask_e)
    # per-batch partials of the parameter gradients (summed over the batch by the launcher)
    tl.store(dA_ptr + pid_b * E * N + offs_e[:, None] * N + offs_n[None, :], dA_acc, mask=mask_en)
    tl.store(dD_ptr + pid_b * E + offs_e, dD_acc, mask=mask_e)
    tl.store(dbias_ptr + pid_b * E + offs_e, dbias_acc, mask=mask_e)


scan_bwd_kernel = TritonKernel(_scan_bwd_kernel)
