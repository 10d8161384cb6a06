"""Vim's two scan directions in one Triton launch, read in place (no flipped copies).

One program per (batch, channel block) runs both recurrences interleaved: step i advances the forward scan
at position i and the backward scan at position L-1-i, two independent dependency chains that hide each
other's latency. In the first half of the sequence each direction stores its ungated output (y + D*u); in
the second half a position's other half is already in `out`, so the program adds it, applies silu(z) once
and stores the final `y_fwd + y_bwd`. z is read once per position and `out` is written once per direction.

`vimbench::bidirectional_selective_scan` is a custom op (torch.compile / FlopCounterMode see one op, counted
as two scan directions); its backward runs the per-direction backward kernel twice and adds the dz halves.
"""

from __future__ import annotations

import torch
import triton.language as tl
from torch import Tensor
from torch.utils.flop_counter import register_flop_formula

from .bidirectional import ScanDirection, register_fused_bidirectional
from .triton_scan_fwd import TritonKernel, triton_available


def _bidir_fwd_kernel(
    uf_ptr, df_ptr, Af_ptr, Bf_ptr, Cf_ptr, Df_ptr, biasf_ptr,
    ub_ptr, db_ptr, Ab_ptr, Bb_ptr, Cb_ptr, Db_ptr, biasb_ptr, z_ptr, out_ptr,
    E, L, N, ch_per_group, softplus,
    suf_b, suf_e, suf_l, sdf_b, sdf_e, sdf_l, sBf_b, sBf_g, sBf_n, sBf_l, sCf_b, sCf_g, sCf_n, sCf_l,
    sub_b, sub_e, sub_l, sdb_b, sdb_e, sdb_l, sBb_b, sBb_g, sBb_n, sBb_l, sCb_b, sCb_g, sCb_n, sCb_l,
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
    a_idx = offs_e[:, None] * N + offs_n[None, :]
    A2f = tl.load(Af_ptr + a_idx, mask=mask_en, other=0.0).to(tl.float32) * 1.4426950408889634
    A2b = tl.load(Ab_ptr + a_idx, mask=mask_en, other=0.0).to(tl.float32) * 1.4426950408889634
    Dvf = tl.load(Df_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    Dvb = tl.load(Db_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    biasf = tl.load(biasf_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    biasb = tl.load(biasb_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    group = (pid_e * BLOCK_E) // ch_per_group
    uf_row = uf_ptr + pid_b * suf_b + offs_e * suf_e
    df_row = df_ptr + pid_b * sdf_b + offs_e * sdf_e
    ub_row = ub_ptr + pid_b * sub_b + offs_e * sub_e
    db_row = db_ptr + pid_b * sdb_b + offs_e * sdb_e
    z_row = z_ptr + pid_b * sz_b + offs_e * sz_e
    o_row = out_ptr + pid_b * so_b + offs_e * so_e
    Bf_col = Bf_ptr + pid_b * sBf_b + group * sBf_g + offs_n * sBf_n
    Cf_col = Cf_ptr + pid_b * sCf_b + group * sCf_g + offs_n * sCf_n
    Bb_col = Bb_ptr + pid_b * sBb_b + group * sBb_g + offs_n * sBb_n
    Cb_col = Cb_ptr + pid_b * sCb_b + group * sCb_g + offs_n * sCb_n
    hf = tl.zeros((BLOCK_E, N_PAD), dtype=tl.float32)
    hb = tl.zeros((BLOCK_E, N_PAD), dtype=tl.float32)
    half = L // 2
    for i in range(L):
        p = i  # forward direction's position
        q = L - 1 - i  # backward direction's position
        uf = tl.load(uf_row + p * suf_l, mask=mask_e, other=0.0).to(tl.float32)
        dtf = tl.load(df_row + p * sdf_l, mask=mask_e, other=0.0).to(tl.float32) + biasf
        Bf = tl.load(Bf_col + p * sBf_l, mask=mask_n, other=0.0).to(tl.float32)
        Cf = tl.load(Cf_col + p * sCf_l, mask=mask_n, other=0.0).to(tl.float32)
        ub = tl.load(ub_row + q * sub_l, mask=mask_e, other=0.0).to(tl.float32)
        dtb = tl.load(db_row + q * sdb_l, mask=mask_e, other=0.0).to(tl.float32) + biasb
        Bb = tl.load(Bb_col + q * sBb_l, mask=mask_n, other=0.0).to(tl.float32)
        Cb = tl.load(Cb_col + q * sCb_l, mask=mask_n, other=0.0).to(tl.float32)
        if softplus:
            dtf = tl.where(dtf <= 20.0, tl.log(1.0 + tl.exp(dtf)), dtf)
            dtb = tl.where(dtb <= 20.0, tl.log(1.0 + tl.exp(dtb)), dtb)
        hf = tl.exp2(dtf[:, None] * A2f) * hf + (dtf * uf)[:, None] * Bf[None, :]
        hb = tl.exp2(dtb[:, None] * A2b) * hb + (dtb * ub)[:, None] * Bb[None, :]
        yf = tl.sum(hf * Cf[None, :], axis=1) + Dvf * uf
        yb = tl.sum(hb * Cb[None, :], axis=1) + Dvb * ub
        if i < half:  # first half: each direction parks its ungated output
            tl.store(o_row + p * so_l, yf.to(out_ptr.dtype.element_ty), mask=mask_e)
            tl.store(o_row + q * so_l, yb.to(out_ptr.dtype.element_ty), mask=mask_e)
        else:
            if i == half:  # the parked halves were written by other threads of this program
                tl.debug_barrier()
            if HAS_Z:
                zp = tl.load(z_row + p * sz_l, mask=mask_e, other=0.0).to(tl.float32)
                zq = tl.load(z_row + q * sz_l, mask=mask_e, other=0.0).to(tl.float32)
                gate_p = zp * tl.sigmoid(zp)
                gate_q = zq * tl.sigmoid(zq)
            else:
                gate_p = 1.0
                gate_q = 1.0
            if p == q:  # odd L: both directions meet in the middle
                tl.store(o_row + p * so_l, ((yf + yb) * gate_p).to(out_ptr.dtype.element_ty), mask=mask_e)
            else:
                parked_p = tl.load(o_row + p * so_l, mask=mask_e, other=0.0).to(tl.float32)
                parked_q = tl.load(o_row + q * so_l, mask=mask_e, other=0.0).to(tl.float32)
                out_p = (yf + parked_p) * gate_p
                out_q = (yb + parked_q) * gate_q
                tl.store(o_row + p * so_l, out_p.to(out_ptr.dtype.element_ty), mask=mask_e)
                tl.store(o_row + q * so_l, out_q.to(out_ptr.dtype.element_ty), mask=mask_e)


bidir_fwd_kernel = TritonKernel(_bidir_fwd_kernel)


def _launch_bidirectional(
    uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z, delta_softplus
) -> Tensor:
    from .triton_scan import _Prepared

    pf = _Prepared(uf, df, Af, Bf, Cf, Df, biasf)
    pb = _Prepared(ub, db, Ab, Bb, Cb, Db, biasb)
    def shape(p):
        return (p.batch, p.dim, p.length, p.d_state, p.groups)

    if shape(pf) != shape(pb):
        raise ValueError("both scan directions must have the same shapes")
    out = torch.empty(uf.shape, device=uf.device, dtype=uf.dtype)
    if out.numel() == 0:
        return out
    zz = z if z is not None else uf
    bidir_fwd_kernel.on(uf.device)[pf.grid](
        uf, df, pf.A, pf.B4, pf.C4, pf.D, pf.bias, ub, db, pb.A, pb.B4, pb.C4, pb.D, pb.bias, zz, out,
        pf.dim, pf.length, pf.d_state, max(pf.ch_per_group, 1), int(delta_softplus),
        *uf.stride(), *df.stride(), *pf.bc_strides(), *ub.stride(), *db.stride(), *pb.bc_strides(),
        *zz.stride(), *out.stride(),
        HAS_Z=z is not None, BLOCK_E=pf.cfg.block_e, N_PAD=pf.cfg.n_pad, num_warps=pf.cfg.num_warps,
    )
    return out


@torch.library.custom_op("vimbench::bidirectional_selective_scan", mutates_args=())
def _bidirectional_op(
    uf: Tensor, df: Tensor, Af: Tensor, Bf: Tensor, Cf: Tensor, Df: Tensor | None, biasf: Tensor | None,
    ub: Tensor, db: Tensor, Ab: Tensor, Bb: Tensor, Cb: Tensor, Db: Tensor | None, biasb: Tensor | None,
    z: Tensor | None, delta_softplus: bool,
) -> Tensor:
    return _launch_bidirectional(
        uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z, delta_softplus
    )


@_bidirectional_op.register_fake
def _(uf, df, Af, Bf, Cf, Df, biasf, ub, db, Ab, Bb, Cb, Db, biasb, z, delta_softplus):
    return torch.empty_like(uf)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:15])
    ctx.delta_softplus = inputs[15]


def _backward(ctx, dout):
    from .triton_scan import triton_scan_backward

    saved = ctx.saved_tensors
    z = saved[14]
    dout = dout.contiguous()
    grads_f = triton_scan_backward(dout, *saved[0:5], saved[5], z, saved[6], ctx.delta_softplus, False)
    grads_b = triton_scan_backward(dout, *saved[7:12], saved[12], z, saved[13], ctx.delta_softplus, True)
    # (du, ddelta, dA, dB, dC, dD, dz, dbias) -> the op's argument order
    per_direction = [(g[0], g[1], g[2], g[3], g[4], g[5], g[7]) for g in (grads_f, grads_b)]
    dz = grads_f[6] + grads_b[6] if z is not None else None
    return (*per_direction[0], *per_direction[1], dz, None)


_bidirectional_op.register_autograd(_backward, setup_context=_setup_context)


@register_flop_formula(torch.ops.vimbench.bidirectional_selective_scan)
def _bidirectional_flops(uf_shape, df_shape, Af_shape, *args, out_shape=None, **kwargs) -> int:
    from .flops import scan_flops

    batch, channels, length = uf_shape
    return 2 * scan_flops(batch, length, channels, Af_shape[1])


def triton_bidirectional(
    fwd: ScanDirection, bwd: ScanDirection, z: Tensor | None, delta_softplus: bool
) -> Tensor:
    """The `register_fused_bidirectional` entry: y_fwd + y_bwd, both gated by silu(z)."""
    return _bidirectional_op(
        fwd.u, fwd.delta, fwd.A, fwd.B, fwd.C, fwd.D, fwd.delta_bias,
        bwd.u, bwd.delta, bwd.A, bwd.B, bwd.C, bwd.D, bwd.delta_bias, z, bool(delta_softplus),
    )


def _available(device: torch.device) -> bool:
    return triton_available(torch.device(device))


register_fused_bidirectional("triton", triton_bidirectional, _available)
