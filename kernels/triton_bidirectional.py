"""Vim's two scan directions in one Triton launch, read in place (no flipped copies).

One program per (batch, channel block) runs both recurrences interleaved: step i advances the forward scan
at position i and the backward scan at position L-1-i, two independent dependency chains that hide each
other's latency. In the first half of the sequence each direction stores its ungated output (y + D*u); in
the second half a position's other half is already in `out` (written by the same thread: one channel per
thread, so no barrier), so the program adds it, applies silu(z) once and stores the final `y_fwd + y_bwd`.
Per step the out/z addresses are carried pointers (advanced by a stride, not recomputed as 64-bit offsets),
the odd-length meeting point is a select, not a branch, and the tile loop's trip count is the `span` argument
(no register held through the time loop): at Vim-S sm_90 this makes the fused loop cheaper per update than one
direction's in fp32 and bf16 (before it: bf16 13.9 vs 13.86 instr/update) without spills (see README).
When the op saves for a backward (training; constexpr SAVE) both directions' tile start states are stored
(the reverse one's in its own index space: tile c starts at position L-1-c*chunk); in inference (SAVE=0) no
tile state is stored or allocated (the span pass keeps only its span states). One MODE of the kernel per pass:
- 0 FULL: a program walks all of L, as above;
- 1 SUMMARY (small batches, chunk-parallel): a program takes one span of positions [k*W, (k+1)*W) (W = span
  tiles * chunk) and runs both directions over it from zero, the forward one upwards, the reverse one
  downwards, storing their end states and sum(dt); ONE combine launch chains both directions' spans (the
  forward's first to last, the reverse's last to first: the state entering position (k+1)*W-1 from above);
- 2 SPANS: the same program runs both directions over the same span again from those states, interleaved and
  gated exactly as FULL (first half parks, second half adds and gates once; odd spans meet in the middle), so
  `out` is written once per position and nothing is added after. The walk is cut into two segments per tile,
  one from each direction's tile start (they differ unless L is a multiple of the tile), and a tile's state
  is saved by the one program in which the tile starts (SAVE=0: one segment per tile, nothing saved).
So the fused forward is 1 launch, or 3 at batch 1 and high resolution (summary, combine, span pass).

`vimbench::bidirectional_selective_scan` is a custom op (torch.compile / FlopCounterMode see one op, counted
as two scan directions); its backward is ONE launch of the backward kernel with a direction grid axis: the
reverse direction's inputs are reached by element offsets from the forward direction's (same strides); at
small batches 3 (one summary of both directions' adjoint carries per span, one combine, the backward over
(direction, span)). Two single-direction backwards only when the directions' strides differ.

Past FUSED_MAX_STATES states (16: both directions' states no longer fit one thread's registers without
spills) the op runs two single-direction scans instead, each splitting its states into groups
(triton_common.state_groups), forward and backward.
"""

from __future__ import annotations

import torch
import triton.language as tl
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from . import triton_scan_bwd
from .bidirectional import ScanDirection, register_fused_bidirectional
from .triton_common import FUSED_MAX_STATES
from .triton_scan_fwd import TritonKernel, triton_available
from .triton_scan_parts import (
    aligned_stride,
    channel_block,
    load_states,
    state_index,
    state_rows,
    step_inputs,
    sum_products,
)


def _bidir_fwd_kernel(
    uf_ptr, df_ptr, Af_ptr, Bf_ptr, Cf_ptr, Df_ptr, biasf_ptr,
    ub_ptr, db_ptr, Ab_ptr, Bb_ptr, Cb_ptr, Db_ptr, biasb_ptr, z_ptr, out_ptr, Hf_ptr, Hb_ptr,
    S_ptr, dtsum_ptr,
    E, L, N, ch_per_group, softplus, chunk_len, n_chunks, span,
    suf_b, suf_e, suf_l, sdf_b, sdf_e, sdf_l, sBf_b, sBf_g, sBf_n, sBf_l, sCf_b, sCf_g, sCf_n, sCf_l,
    sub_b, sub_e, sub_l, sdb_b, sdb_e, sdb_l, sBb_b, sBb_g, sBb_n, sBb_l, sCb_b, sCb_g, sCb_n, sCb_l,
    sz_b, sz_e, sz_l, so_b, so_e, so_l,
    HAS_Z: tl.constexpr, BLOCK_E: tl.constexpr, N_PAD: tl.constexpr, EVEN_N: tl.constexpr,
    VEC: tl.constexpr, BC_ALIGNED: tl.constexpr, MODE: tl.constexpr, SAVE: tl.constexpr,
):
    pid_e = tl.program_id(0)
    pid_b = tl.program_id(1).to(tl.int64)
    pid_c = tl.program_id(2)
    offs_e, mask_e, e_ld, grp, A2f, Dvf, biasf = channel_block(
        pid_e, E, ch_per_group, Af_ptr, Df_ptr, biasf_ptr, N, N_PAD, BLOCK_E, VEC, EVEN_N)
    _, _, _, _, A2b, Dvb, biasb = channel_block(
        pid_e, E, ch_per_group, Ab_ptr, Db_ptr, biasb_ptr, N, N_PAD, BLOCK_E, VEC, EVEN_N)
    n_idx = state_index(N_PAD, VEC)
    uf_row = uf_ptr + pid_b * suf_b + e_ld * suf_e
    df_row = df_ptr + pid_b * sdf_b + e_ld * sdf_e
    ub_row = ub_ptr + pid_b * sub_b + e_ld * sub_e
    db_row = db_ptr + pid_b * sdb_b + e_ld * sdb_e
    z_row = z_ptr + pid_b * sz_b + e_ld * sz_e
    o_row = out_ptr + pid_b * so_b + offs_e * so_e
    Bf_base, Bf_off = state_rows(Bf_ptr, pid_b, sBf_b, sBf_g, sBf_n, grp, N_PAD, VEC, BC_ALIGNED)
    Cf_base, Cf_off = state_rows(Cf_ptr, pid_b, sCf_b, sCf_g, sCf_n, grp, N_PAD, VEC, BC_ALIGNED)
    Bb_base, Bb_off = state_rows(Bb_ptr, pid_b, sBb_b, sBb_g, sBb_n, grp, N_PAD, VEC, BC_ALIGNED)
    Cb_base, Cb_off = state_rows(Cb_ptr, pid_b, sCb_b, sCb_g, sCb_n, grp, N_PAD, VEC, BC_ALIGNED)
    sBf_l = aligned_stride(sBf_l, BC_ALIGNED)
    sCf_l = aligned_stride(sCf_l, BC_ALIGNED)
    sBb_l = aligned_stride(sBb_l, BC_ALIGNED)
    sCb_l = aligned_stride(sCb_l, BC_ALIGNED)
    H_off = (pid_b * n_chunks * E + offs_e[None, None, :]) * N_PAD + n_idx
    H_mask = offs_e[None, None, :] < E
    # the positions this program covers: all of L (FULL), or span pid_c's [lo, hi) for BOTH directions
    lo = pid_c * span * chunk_len
    hi = tl.minimum(L, lo + span * chunk_len)
    n_pos = hi - lo
    # span states (2 directions, batch, spans, E, N_PAD): the summary's end states, then (after the combine)
    # the state entering the span: the forward one at lo, the reverse one at hi - 1 (from above)
    n_par = tl.num_programs(2)
    S_f = ((pid_b * n_par + pid_c) * E + e_ld[None, None, :]) * N_PAD + n_idx
    S_b = S_f + tl.num_programs(1) * n_par * E * N_PAD
    hf = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
    hb = tl.zeros((N_PAD, BLOCK_E), dtype=tl.float32)
    if MODE == 2:
        hf = load_states(S_ptr + S_f, N, N_PAD, BLOCK_E, VEC, True)
        hb = load_states(S_ptr + S_b, N, N_PAD, BLOCK_E, VEC, True)
    if MODE == 1:  # span summary: both directions from zero over the same positions, end states and sum(dt)
        dtf_sum = tl.zeros((BLOCK_E,), dtype=tl.float32)
        dtb_sum = tl.zeros((BLOCK_E,), dtype=tl.float32)
        for i in range(n_pos):
            p = lo + i
            q = hi - 1 - i
            uf, dtf = step_inputs(uf_row, suf_l, df_row, sdf_l, biasf, softplus, p)
            ub, dtb = step_inputs(ub_row, sub_l, db_row, sdb_l, biasb, softplus, q)
            Bf = load_states(Bf_base + (Bf_off + p * sBf_l), N, N_PAD, BLOCK_E, VEC, EVEN_N)
            Bb = load_states(Bb_base + (Bb_off + q * sBb_l), N, N_PAD, BLOCK_E, VEC, EVEN_N)
            hf = tl.exp2(dtf[None, :] * A2f) * hf + (dtf * uf)[None, :] * Bf
            hb = tl.exp2(dtb[None, :] * A2b) * hb + (dtb * ub)[None, :] * Bb
            dtf_sum += dtf
            dtb_sum += dtb
        S_st = (pid_b * n_par + pid_c) * E * N_PAD + offs_e[None, None, :] * N_PAD + n_idx
        S_bst = S_st + tl.num_programs(1) * n_par * E * N_PAD
        tl.store(S_ptr + S_st, tl.reshape(hf, (N_PAD // VEC, VEC, BLOCK_E)), mask=H_mask)
        tl.store(S_ptr + S_bst, tl.reshape(hb, (N_PAD // VEC, VEC, BLOCK_E)), mask=H_mask)
        dts = dtsum_ptr + (pid_b * n_par + pid_c) * E + offs_e
        tl.store(dts, dtf_sum, mask=mask_e)
        tl.store(dts + tl.num_programs(1) * n_par * E, dtb_sum, mask=mask_e)
    else:
        half = n_pos // 2
        SEGMENTS: tl.constexpr = 2 if MODE == 2 and SAVE else 1
        # tile starts: the forward direction's at i = 0 mod chunk_len (spans are whole tiles), the reverse
        # direction's (reverse index L-1-q a multiple of chunk_len) at i = off mod chunk_len; the walk is cut
        # at both into segments (even: from a forward tile start, odd: from a reverse one), and a tile is
        # saved by the one program in which it starts
        off = (chunk_len - (L - hi) % chunk_len) % chunk_len
        c_f = pid_c * span  # the next forward tile to start here, and the next reverse one
        c_b = (L - hi + off) // chunk_len
        a = 0
        # out and z at both directions' positions, advanced by their strides each step (no 64-bit address
        # arithmetic per access)
        o_p = o_row + lo * so_l
        o_q = o_row + (hi - 1) * so_l
        z_p = z_row + lo * sz_l
        # segments: two per tile when the span pass saves, else one per tile; with SAVE the trip count is the
        # `span` argument (whole tiles; the last span's extra segments are empty): a count computed here was
        # held through the time loop and spilled in fp32
        for s in range(SEGMENTS * span if SAVE else tl.cdiv(n_pos, chunk_len)):
            if SEGMENTS == 1:  # all of L (both directions' tiles start together: off = 0), or nothing saved
                seg = chunk_len
                b = tl.minimum(n_pos, a + seg)
                if SAVE:
                    tl.store(Hf_ptr + H_off + c_f * E * N_PAD, tl.reshape(hf, (N_PAD // VEC, VEC, BLOCK_E)),
                             mask=H_mask)
                    tl.store(Hb_ptr + H_off + c_f * E * N_PAD, tl.reshape(hb, (N_PAD // VEC, VEC, BLOCK_E)),
                             mask=H_mask)
                c_f += 1
            else:
                odd = s & 1
                seg = off + odd * (chunk_len - 2 * off)  # even segments: off steps, odd ones: chunk_len - off
                b = tl.minimum(n_pos, a + seg)
                # predicated stores, not a branch (the compiler would merge the two with selects of h)
                # (a and odd splat: the interpreter's scalar compares give no tensor masks)
                live = H_mask & (n_idx * 0 + a < n_pos)
                tl.store(Hf_ptr + H_off + c_f * E * N_PAD, tl.reshape(hf, (N_PAD // VEC, VEC, BLOCK_E)),
                         mask=live & (n_idx * 0 + odd == 0))
                tl.store(Hb_ptr + H_off + c_b * E * N_PAD, tl.reshape(hb, (N_PAD // VEC, VEC, BLOCK_E)),
                         mask=live & (n_idx * 0 + odd == 1))
                c_f += 1 - odd
                c_b += odd
            for i in range(a, b):
                p = lo + i  # the forward direction's position
                q = hi - 1 - i  # the reverse direction's position
                uf, dtf = step_inputs(uf_row, suf_l, df_row, sdf_l, biasf, softplus, p)
                ub, dtb = step_inputs(ub_row, sub_l, db_row, sdb_l, biasb, softplus, q)
                Bf = load_states(Bf_base + (Bf_off + p * sBf_l), N, N_PAD, BLOCK_E, VEC, EVEN_N)
                Cf = load_states(Cf_base + (Cf_off + p * sCf_l), N, N_PAD, BLOCK_E, VEC, EVEN_N)
                Bb = load_states(Bb_base + (Bb_off + q * sBb_l), N, N_PAD, BLOCK_E, VEC, EVEN_N)
                Cb = load_states(Cb_base + (Cb_off + q * sCb_l), N, N_PAD, BLOCK_E, VEC, EVEN_N)
                hf = tl.exp2(dtf[None, :] * A2f) * hf + (dtf * uf)[None, :] * Bf
                hb = tl.exp2(dtb[None, :] * A2b) * hb + (dtb * ub)[None, :] * Bb
                yf = sum_products(hf, Cf, N_PAD) + Dvf * uf
                yb = sum_products(hb, Cb, N_PAD) + Dvb * ub
                if i < half:  # first half: each direction parks its ungated output (its own thread reads it)
                    tl.store(o_p, yf.to(out_ptr.dtype.element_ty), mask=mask_e)
                    tl.store(o_q, yb.to(out_ptr.dtype.element_ty), mask=mask_e)
                else:  # second half: the other direction's output is parked there; sum, gate once, store
                    # odd length: both directions meet in the middle (p == q), nothing parked there
                    apart = mask_e & (offs_e * 0 + p != q)
                    parked_p = tl.load(o_p, mask=apart, other=0.0).to(tl.float32)
                    parked_q = tl.load(o_q, mask=apart, other=0.0).to(tl.float32)
                    yf, yb = yf + tl.where(apart, parked_p, yb), yb + tl.where(apart, parked_q, yf)
                    if HAS_Z:
                        zp = tl.load(z_p).to(tl.float32)
                        zq = tl.load(z_p + (q - p) * sz_l).to(tl.float32)
                        yf = yf * zp * tl.sigmoid(zp)
                        yb = yb * zq * tl.sigmoid(zq)
                    tl.store(o_p, yf.to(out_ptr.dtype.element_ty), mask=mask_e)
                    tl.store(o_q, yb.to(out_ptr.dtype.element_ty), mask=mask_e)
                o_p += so_l
                o_q -= so_l
                z_p += sz_l
            a += seg


MODE_FULL, MODE_SUMMARY, MODE_SPANS = 0, 1, 2
# the span pass runs its per-tile code twice per tile (a segment from each direction's tile start)
bidir_fwd_kernel = TritonKernel(_bidir_fwd_kernel, state_elems=lambda c: 2 * c["BLOCK_E"] * c["N_PAD"],
                                tile_passes=lambda c: 2 if c.get("MODE") == MODE_SPANS else 1)


def _prepare_pair(uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb):
    from .triton_scan import _Prepared

    pf = _Prepared(uf, df, Af, Bf, Cf, Df, biasf)
    pb = _Prepared(ub, db, Ab, Bb, Cb, Db, biasb)

    def shape(p):
        return (p.batch, p.dim, p.length, p.d_state, p.groups)

    if shape(pf) != shape(pb):
        raise ValueError("both scan directions must have the same shapes")
    return pf, pb


def _launch_bidirectional(
    uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z, delta_softplus, save=True
) -> tuple[Tensor, Tensor]:
    """(y_fwd + y_bwd gated by silu(z), both directions' chunk start states stacked (2, B, chunks, E, N_PAD),
    or an empty tensor when not `save`: inference stores and allocates no tile state).

    One launch; when the batch is too small to fill the GPU, three: a summary of both directions per span of
    positions, one combine for both, and the span pass (both directions over the same positions again).
    """
    from .triton_scan import _combine

    pf, pb = _prepare_pair(uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb)
    f32 = torch.float32
    H = torch.empty((2, *pf.saved_shape()) if save else (0,), device=uf.device, dtype=f32)
    if pf.d_state > FUSED_MAX_STATES:  # two grouped single-direction scans (see FUSED_MAX_STATES)
        from .triton_scan import triton_scan_forward

        fwd = triton_scan_forward(uf, df, Af, Bf, Cf, Df, z, biasf, delta_softplus, False, save)
        bwd = triton_scan_forward(ub, db, Ab, Bb, Cb, Db, z, biasb, delta_softplus, True, save)
        if save:
            H[0], H[1] = fwd[2], bwd[2]
        return fwd[0] + bwd[0], H
    out = torch.empty(uf.shape, device=uf.device, dtype=uf.dtype)
    if out.numel() == 0:
        return out, H
    cfg = pf.cfg
    spans = (2, pf.batch, cfg.n_par, pf.dim)
    # without save, the tile-state pointers are never written (SAVE=0): an fp32 input stands in for them
    Hf, Hb = (H[0], H[1]) if save else (pf.A, pf.A)
    S = torch.empty((*spans, cfg.n_pad), device=uf.device, dtype=f32) if cfg.parallel else Hf
    dtsum = torch.empty(spans, device=uf.device, dtype=f32) if cfg.parallel else Hf
    zz = z if z is not None else uf
    consts = {**pf.constexprs(z is not None), "BC_ALIGNED": pf.bc_aligned and pb.bc_aligned,
              "SAVE": bool(save)}
    del consts["GROUP"]  # never grouped: all states of both directions in one thread
    args = (uf, df, pf.A, pf.B4, pf.C4, pf.D, pf.bias, ub, db, pb.A, pb.B4, pb.C4, pb.D, pb.bias, zz, out,
            Hf, Hb, S, dtsum,
            pf.dim, pf.length, pf.d_state, max(pf.ch_per_group, 1), int(delta_softplus), cfg.chunk,
            cfg.n_chunks, cfg.span,
            *uf.stride(), *df.stride(), *pf.bc_strides(), *ub.stride(), *db.stride(), *pb.bc_strides(),
            *zz.stride(), *out.stride())
    kernel = bidir_fwd_kernel.on(uf.device)
    if not cfg.parallel:
        kernel[pf.grid()](*args, **consts, MODE=MODE_FULL)
        return out, H
    kernel[pf.grid(cfg.n_par)](*args, **consts, MODE=MODE_SUMMARY)
    # forward direction's spans chained first to last, the reverse direction's last to first
    spare = torch.empty(2, pf.batch, pf.dim, pf.d_state, device=uf.device, dtype=torch.float32)
    _combine(pf, S, dtsum, spare, cfg.n_par, 1, False, dirs=2, flip=1, off_A=_offset(pb.A, pf.A))
    kernel[pf.grid(cfg.n_par)](*args, **consts, MODE=MODE_SPANS)
    return out, H


def _offset(b: Tensor, f: Tensor) -> int:
    """Elements from f's first element to b's: how the fused backward reaches the reverse direction."""
    if b.device.type == "meta":
        return b.storage_offset() - f.storage_offset() + (1 << 20)
    return (b.data_ptr() - f.data_ptr()) // b.element_size()


def _backward_bidirectional(dout, uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z,
                            delta_softplus, H):
    """Both directions' gradients from one launch of the backward kernel (grid axis 2 = direction); when the
    batch is small, chunk-parallel: one summary launch and one combine for both directions' adjoint carries,
    then that one launch over (direction, span). `H` None or empty (a forward that did not save): the tile
    states are recomputed first, by the forward."""
    from .triton_scan import _reduce_state_grad, adjoint_carries, triton_scan_backward

    pf, pb = _prepare_pair(uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb)
    if H is None or tuple(H.shape) != (2, *pf.saved_shape()):
        H = _launch_bidirectional(uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z,
                                  delta_softplus, True)[1]
    same = (uf.stride() == ub.stride() and df.stride() == db.stride() and pf.bc_strides() == pb.bc_strides()
            and uf.dtype == ub.dtype and df.dtype == db.dtype and pf.B4.dtype == pb.B4.dtype
            and pf.bc_aligned == pb.bc_aligned)
    # two launchers when the strides differ (the reverse direction is reached by offsets at the same strides)
    # and when the backward splits the states into groups (past FUSED_MAX_STATES)
    if not same or pf.length * pf.batch * pf.dim == 0 or pf.bwd_groups > 1 or pf.sum_groups > 1:
        gf = triton_scan_backward(dout, uf, df, Af, Bf, Cf, Df, z, biasf, delta_softplus, False, H[0])
        gb = triton_scan_backward(dout, ub, db, Ab, Bb, Cb, Db, z, biasb, delta_softplus, True, H[1])
        return gf, gb
    dev, f32 = uf.device, torch.float32
    bsz, dim, length, n = pf.batch, pf.dim, pf.length, pf.d_state
    cfg = pf.cfg
    du = torch.empty((2, *uf.shape), device=dev, dtype=uf.dtype)
    ddelta = torch.empty((2, *df.shape), device=dev, dtype=df.dtype)
    dz = torch.empty((2, *z.shape), device=dev, dtype=z.dtype) if z is not None else None
    dA_part = torch.empty(2, bsz, cfg.n_par, dim, n, device=dev, dtype=f32)
    dD_part = torch.empty(2, bsz, cfg.n_par, dim, device=dev, dtype=f32)
    dbias_part = torch.empty(2, bsz, cfg.n_par, dim, device=dev, dtype=f32)
    dCB_part = torch.empty(2, bsz, pf.bwd_n_eblk, 2, n, length, device=dev, dtype=f32)
    slab = torch.empty(2 * pf.slab_numel(), device=dev, dtype=f32)
    zz = z if z is not None else uf
    offsets = [_offset(b, f) for b, f in ((ub, uf), (db, df), (pb.A, pf.A), (pb.B4, pf.B4), (pb.C4, pf.C4),
                                          (pb.D, pf.D), (pb.bias, pf.bias))]
    Gin = adjoint_carries(pf, dout, uf, df, z, delta_softplus, False, 2,
                          (offsets[1], offsets[2], offsets[4], offsets[5], offsets[6]))
    triton_scan_bwd.scan_bwd_kernel.on(dev)[(pf.bwd_n_eblk, bsz, 2 * cfg.n_par)](
        uf, df, pf.A, pf.B4, pf.C4, pf.D, zz, pf.bias, dout, H, Gin,
        du, ddelta, dz if dz is not None else du, dA_part, dD_part, dbias_part, dCB_part,
        slab, dim, length, n, max(pf.ch_per_group, 1), int(delta_softplus), 0, cfg.chunk,
        cfg.n_chunks, cfg.span, cfg.n_par, *offsets,
        *uf.stride(), *df.stride(), *pf.bc_strides(), *zz.stride(), *dout.stride(),
        **pf.bwd_constexprs(z is not None, 2),
    )

    def grads(k, p, A, B, C, D, bias):
        return (du[k], ddelta[k], dA_part[k].sum((0, 1)).to(A.dtype),
                _reduce_state_grad(dCB_part[k][:, :, 1], p, B),
                _reduce_state_grad(dCB_part[k][:, :, 0], p, C),
                dD_part[k].sum((0, 1)).to(D.dtype) if D is not None else None,
                dz[k] if dz is not None else None,
                dbias_part[k].sum((0, 1)).to(bias.dtype) if bias is not None else None)

    return grads(0, pf, Af, Bf, Cf, Df, biasf), grads(1, pb, Ab, Bb, Cb, Db, biasb)


@torch.library.custom_op("vimbench::bidirectional_selective_scan", mutates_args=())
def _bidirectional_op(
    uf: Tensor, df: Tensor, Af: Tensor, Bf: Tensor, Cf: Tensor, Df: Tensor | None, biasf: Tensor | None,
    ub: Tensor, db: Tensor, Ab: Tensor, Bb: Tensor, Cb: Tensor, Db: Tensor | None, biasb: Tensor | None,
    z: Tensor | None, delta_softplus: bool, save: bool,
) -> tuple[Tensor, Tensor]:
    return _launch_bidirectional(
        uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z, delta_softplus, save
    )


@_bidirectional_op.register_fake
def _(uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z, delta_softplus, save):
    from .triton_scan import saved_like

    shape = (2, *saved_like(uf, Af).shape) if save else (0,)
    return torch.empty_like(uf), uf.new_empty(shape, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:15], output[1])  # output[1] empty when the forward did not save
    ctx.delta_softplus = inputs[15]
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, dout, _dsaved):
    *saved, H = ctx.saved_tensors
    z = saved[14]
    grads_f, grads_b = _backward_bidirectional(dout.contiguous(), *saved, ctx.delta_softplus,
                                               H if H.numel() else None)
    # (du, ddelta, dA, dB, dC, dD, dz, dbias) -> the op's argument order
    per_direction = [(g[0], g[1], g[2], g[3], g[4], g[5], g[7]) for g in (grads_f, grads_b)]
    dz = grads_f[6] + grads_b[6] if z is not None else None
    return (*per_direction[0], *per_direction[1], dz, None, None)


_bidirectional_op.register_autograd(_backward, setup_context=_setup_context)


def launch_for_inspect(f: ScanDirection, b: ScanDirection, z: Tensor | None, backward: bool,
                       save: bool = True) -> None:
    """The fused launches as the model makes them (used by `vimbench kernels inspect` on meta tensors);
    `save`: the forward as training runs it (tile states stored), else as inference does."""
    args = (f.u, f.delta, f.A, f.B, f.C, f.D, f.delta_bias, b.u, b.delta, b.A, b.B, b.C, b.D, b.delta_bias, z)
    if not backward:
        _launch_bidirectional(*args, True, save)
        return
    from .triton_scan import saved_like

    H = f.u.new_empty((2, *saved_like(f.u, f.A).shape), dtype=torch.float32)
    _backward_bidirectional(torch.empty(f.u.shape, device=f.u.device, dtype=f.u.dtype), *args, True, H)


@register_flop_formula(torch.ops.vimbench.bidirectional_selective_scan)
def _bidirectional_flops(uf_shape, df_shape, Af_shape, *args, out_shape=None, **kwargs) -> int:
    from .flops import scan_flops

    batch, channels, length = uf_shape
    return 2 * scan_flops(batch, length, channels, Af_shape[1])


def triton_bidirectional(
    fwd: ScanDirection, bwd: ScanDirection, z: Tensor | None, delta_softplus: bool
) -> Tensor:
    """The `register_fused_bidirectional` entry: y_fwd + y_bwd, both gated by silu(z). Tile states are saved
    (for the backward) only when autograd will need them, as `selective_scan` decides."""
    inputs = (fwd.u, fwd.delta, fwd.A, fwd.B, fwd.C, fwd.D, fwd.delta_bias,
              bwd.u, bwd.delta, bwd.A, bwd.B, bwd.C, bwd.D, bwd.delta_bias, z)
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    return _bidirectional_op(*inputs, bool(delta_softplus), save)[0]


def _available(device: torch.device) -> bool:
    return triton_available(torch.device(device))


register_fused_bidirectional("triton", triton_bidirectional, _available)
