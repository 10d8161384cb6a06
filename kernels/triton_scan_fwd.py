"""Triton selective-scan forward: one channel per thread, all N states of that channel in its registers.

The state tile is (N_PAD, BLOCK_E) with BLOCK_E = 32 * warps, so a thread holds one column: the C-reduction
`y = sum_n h*C` stays inside the thread (no shuffles) and no tensor ever changes layout (no barriers). Nothing
2-D is loaded inside the time loop: A is loaded once as N 1-D vectors, and at every step B_t and C_t are N
per-channel loads (the same address across a warp when B/C are shared: one broadcast transaction) assembled
into the tile by selects that fold away at compile time. Each update is one exp2(dt * A*log2(e)), the
D-skip and the silu(z) gate are fused, and a reverse scan is the same loop walking positions backwards.

The same body runs in three modes (constexpr MODE):
- 0 FULL: a program walks all of L, storing its state at every chunk start (the backward's checkpoints);
- 1 SUMMARY: a program scans one chunk from a zero state and stores the end state and sum(dt) of the chunk;
- 2 CHUNK: a program scans one chunk from its start state (written by `_combine_kernel`) and stores `out`.
SUMMARY -> combine -> CHUNK is the chunk-parallel scan used when B*E/BLOCK_E programs cannot fill the GPU.
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

MODE_FULL, MODE_SUMMARY, MODE_CHUNK = 0, 1, 2


def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, out_ptr, last_ptr, H_ptr, dtsum_ptr,
    E, L, N, ch_per_group, softplus, reverse, chunk_len, n_chunks,
    su_b, su_e, su_l, sd_b, sd_e, sd_l, sB_b, sB_g, sB_n, sB_l, sC_b, sC_g, sC_n, sC_l,
    sz_b, sz_e, sz_l, so_b, so_e, so_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
    MODE: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_e = offs_e < E
    e_ld = tl.minimum(offs_e, E - 1)  # loads stay in bounds without predicates; stores are masked
    offs_n = tl.arange(0, N_PAD)
    rows_n = offs_n[:, None]
    # A once, as N 1-D loads placed into the tile (log2(e) folded in: exp(dt*A) == exp2(dt*A2))
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
    o_row = out_ptr + pid_b * so_b + offs_e * so_e
    B_row = B_ptr + pid_b * sB_b + grp * sB_g
    C_row = C_ptr + pid_b * sC_b + grp * sC_g
    # chunk states (batch, n_chunks, E, N_PAD), moved as N 1-D vectors so the state tile never changes layout
    H_row = H_ptr + (pid_b * n_chunks * E + offs_e) * N_PAD
    H_ld = H_ptr + (pid_b * n_chunks * E + e_ld) * N_PAD
    step = 1 - 2 * reverse
    t_first = reverse * (L - 1)
    if MODE == 0:
        c_lo = 0
        c_hi = n_chunks
    else:
        c_lo = pid_c
        c_hi = pid_c + 1
    h = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
    if MODE == 2:
        for n in tl.static_range(N_PAD):
            h = tl.where(rows_n == n, tl.load(H_ld + pid_c * E * N_PAD + n)[None, :], h)
    dt_sum = tl.zeros((BLOCK_E,), dtype=tl.float32)
    for c in range(c_lo, c_hi):
        if MODE == 0:
            for n in tl.static_range(N_PAD):  # -0.0: the select-and-sum folds to the one element
                h_n = tl.sum(tl.where(rows_n == n, h, -0.0), axis=0)
                tl.store(H_row + c * E * N_PAD + n, h_n, mask=mask_e)
        i_end = tl.minimum(L, (c + 1) * chunk_len)
        for i in range(c * chunk_len, i_end):
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
            h = tl.exp2(dt[None, :] * A2) * h + (dt * u)[None, :] * Bt
            if MODE == 1:
                dt_sum += dt
            else:
                Ct = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
                for n in tl.static_range(N_PAD):
                    if EVEN_N:
                        c_n = tl.load(C_row + n * sC_n + t * sC_l).to(tl.float32)
                    else:
                        n_ok = e_ld * 0 + n < N
                        c_n = tl.load(C_row + n * sC_n + t * sC_l, mask=n_ok, other=0.0).to(tl.float32)
                    Ct = tl.where(rows_n == n, c_n[None, :], Ct)
                y = tl.sum(h * Ct, axis=0) + Dv * u
                if HAS_Z:
                    zt = tl.load(z_row + t * sz_l).to(tl.float32)
                    y = y * zt * tl.sigmoid(zt)
                tl.store(o_row + t * so_l, y.to(out_ptr.dtype.element_ty), mask=mask_e)
    if MODE == 0:
        last = last_ptr + pid_b * E * N + offs_e[None, :] * N + rows_n
        tl.store(last, h, mask=mask_e[None, :] & (rows_n < N))
    if MODE == 1:
        for n in tl.static_range(N_PAD):
            h_n = tl.sum(tl.where(rows_n == n, h, -0.0), axis=0)
            tl.store(H_row + pid_c * E * N_PAD + n, h_n, mask=mask_e)
        tl.store(dtsum_ptr + (pid_b * n_chunks + pid_c) * E + offs_e, dt_sum, mask=mask_e)


def _combine_kernel(A_ptr, H_ptr, dtsum_ptr, last_ptr, E, N, n_chunks,
                    BLOCK: tl.constexpr, N_PAD: tl.constexpr):
    """Chunk end states (from zero) -> chunk start states, in place; the last state after the last chunk.

    One thread per (channel, state): h_{c+1} = exp(A * sum(dt over chunk c)) * h_c + S_c, a walk over chunks.
    """
    pid = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # flat (e, n_pad) index
    e = offs // N_PAD
    n = offs % N_PAD
    mask = (e < E) & (n < N)
    A2 = tl.load(A_ptr + e * N + n, mask=mask, other=0.0) * 1.4426950408889634
    h = tl.zeros((BLOCK,), dtype=tl.float32)
    for c in range(n_chunks):
        slot = H_ptr + (pid_b * n_chunks + c) * E * N_PAD + offs
        s = tl.load(slot, mask=e < E, other=0.0)
        tl.store(slot, h, mask=e < E)
        dsum = tl.load(dtsum_ptr + (pid_b * n_chunks + c) * E + e, mask=e < E, other=0.0)
        h = tl.exp2(dsum * A2) * h + s
    tl.store(last_ptr + pid_b * E * N + e * N + n, h, mask=mask)


scan_fwd_kernel = TritonKernel(_scan_fwd_kernel, state_elems=lambda c: c["BLOCK_E"] * c["N_PAD"])
combine_kernel = TritonKernel(_combine_kernel, state_elems=lambda c: c["BLOCK"])
