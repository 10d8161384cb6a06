"""The "triton" scan backend: launchers for the forward/backward kernels, registered on import.

Runs on CUDA (compiled) and, with TRITON_INTERPRET=1, on CPU tensors in Triton's interpreter (how the tests
check it without a GPU). Inputs in fp32/fp16/bf16 with any strides (no copies of u/delta/z/B/C), fp32
state, B/C shared (B, N, L), grouped (B, G, N, L) or constant (E, N), reverse, any L. Importing this module
also registers the fused bidirectional scan and the Triton conv1d/RMSNorm ops.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from . import triton_common, triton_scan_bwd
from .registry import ScanBackend, register_backend
from .triton_scan_fwd import (
    MODE_CHUNK,
    MODE_FULL,
    MODE_SUMMARY,
    SCAN_DTYPES,
    combine_kernel,
    pick_config,
    scan_fwd_kernel,
    triton_available,
)


def _check_dtypes(u: Tensor) -> None:
    if u.dtype not in SCAN_DTYPES:
        raise ValueError(f"triton scan takes float32/float16/bfloat16 inputs, got {u.dtype}")


def _state_input(X: Tensor, batch: int, dim: int, length: int) -> Tensor:
    """B or C as a (batch, groups, N, L) view: shared, grouped, or constant (E, N) as E groups of one."""
    if X.dim() == 2:
        return X.unsqueeze(0).unsqueeze(-1).expand(batch, dim, X.shape[1], length)
    if X.dim() == 3:
        return X.unsqueeze(1)
    if dim % X.shape[1]:
        raise ValueError(f"{dim} channels cannot be split into {X.shape[1]} groups of B/C")
    return X


def _vector_or_zeros(x: Tensor | None, like: Tensor, dim: int) -> Tensor:
    return torch.zeros(dim, device=like.device, dtype=torch.float32) if x is None else x.contiguous()


# the kernels' sums are written as multiply-add chains: fused multiply-adds asked for explicitly (triton 3.9
# fuses by default and warns that 3.10 will not)
FP_FUSION = {"enable_fp_fusion": True}


def _bc_aligned(*views: Tensor) -> bool:
    """B/C states contiguous and every B/C stride and offset a multiple of 4 elements: a thread may then read
    4 states with one vector access (the kernels tell the compiler so: `aligned_stride`)."""
    for X in views:
        strides = [s if size > 1 else 0 for s, size in zip(X.stride(), X.shape, strict=True)]
        if (X.shape[2] > 1 and strides[2] != 1) or any(s % 4 for s in (strides[0], strides[1], strides[3])):
            return False
        if X.device.type != "meta" and X.data_ptr() % 16:
            return False
        if X.storage_offset() % 4:
            return False
    return True


class _Prepared:
    """Shapes, views and the launch config shared by the forward and backward launchers."""

    def __init__(self, u, delta, A, B, C, D, delta_bias):
        _check_dtypes(u)
        self.batch, self.dim, self.length = u.shape
        self.d_state = A.shape[1]
        self.B4 = _state_input(B, self.batch, self.dim, self.length)
        self.C4 = _state_input(C, self.batch, self.dim, self.length)
        if self.B4.shape[1] != self.C4.shape[1]:
            raise ValueError("B and C must have the same number of groups")
        self.groups = self.B4.shape[1]
        self.ch_per_group = self.dim // self.groups
        self.cfg = pick_config(self.batch, self.dim, self.length, self.d_state)
        self.n_eblk = triton.cdiv(self.dim, self.cfg.block_e)
        # the backward reduces dB/dC over a block's channels: with grouped B/C no block straddles groups;
        # one warp: the dB/dC reduction over the block's 32 channels stays inside each thread
        self.bwd_block_e = 32
        if self.groups > 1:
            self.bwd_block_e = min(32, self.ch_per_group & -self.ch_per_group)
        self.bwd_n_eblk = triton.cdiv(self.dim, self.bwd_block_e)
        self.A = A.contiguous()
        self.D = _vector_or_zeros(D, u, self.dim)
        self.bias = _vector_or_zeros(delta_bias, u, self.dim)
        vec = self.cfg.vec
        self.bc_aligned = vec == 4 and _bc_aligned(self.B4, self.C4)
        # (states per thread, groups) of each kernel: groups > 1 only past what a thread holds without spills
        self.fwd_group, self.fwd_groups = triton_common.state_groups(self.d_state, "fwd")
        self.bwd_group, self.bwd_groups = triton_common.state_groups(self.d_state, "bwd")
        self.sum_group, self.sum_groups = triton_common.state_groups(self.d_state, "bwd_summary")

    def grid(self, chunks: int = 1, groups: int = 1) -> tuple[int, int, int]:
        return (self.n_eblk * groups, self.batch, chunks)

    def bc_strides(self) -> tuple[int, ...]:
        return (*self.B4.stride(), *self.C4.stride())

    def saved_shape(self) -> tuple[int, int, int, int]:
        """Tile start states, (batch, n_chunks, E, N_PAD) float32: what the forward hands the backward."""
        return (self.batch, self.cfg.n_chunks, self.dim, self.cfg.n_pad)

    def carry_shape(self) -> tuple[int, int, int, int]:
        """Span carries, (batch, n_spans, E, N_PAD) float32: all a chunk-parallel forward that does not save
        (inference) allocates in place of the tile states."""
        return (self.batch, self.cfg.n_par, self.dim, self.cfg.n_pad)

    def constexprs(self, has_z: bool) -> dict:
        return {"HAS_Z": has_z, "BLOCK_E": self.cfg.block_e, "N_PAD": self.cfg.n_pad,
                "EVEN_N": self.cfg.n_pad == self.d_state, "VEC": self.cfg.vec, "BC_ALIGNED": self.bc_aligned,
                "num_warps": self.cfg.num_warps, "GROUP": self.fwd_group, **FP_FUSION}

    def bwd_constexprs(self, has_z: bool, dirs: int) -> dict:
        return {**self.constexprs(has_z), "BLOCK_E": self.bwd_block_e, "num_warps": 1, "DIRS": dirs,
                "CHUNK": triton.next_power_of_2(triton_common.CHUNK), "GROUP": self.bwd_group}

    def slab_numel(self) -> int:
        """The backward's scratch per direction: a slab [channel][step][2 * GROUP + 4] per program."""
        per_prog = self.bwd_block_e * triton.next_power_of_2(triton_common.CHUNK) * (2 * self.bwd_group + 4)
        return self.batch * self.bwd_n_eblk * self.bwd_groups * self.cfg.n_par * per_prog

    @staticmethod
    def per_group(shape: tuple, like: Tensor, groups: int) -> Tensor:
        """A `shape` tensor in like's dtype, or (groups, *shape) fp32 per-state-group partials."""
        if groups == 1:
            return torch.empty(shape, device=like.device, dtype=like.dtype)
        return torch.empty((groups, *shape), device=like.device, dtype=torch.float32)


def saved_like(u: Tensor, A: Tensor) -> Tensor:
    """An empty tensor shaped like the forward's saved tile states (the custom op's fake needs it)."""
    batch, dim, length = u.shape
    cfg = pick_config(batch, dim, length, A.shape[1])
    return u.new_empty((batch, cfg.n_chunks, dim, cfg.n_pad), dtype=torch.float32)


def _combine(p: _Prepared, H: Tensor, dtsum: Tensor, last: Tensor, n_slots: int, slot_stride: int,
             reverse: bool, dirs: int = 1, flip: int = 0, off_A: int = 0) -> None:
    """Chain the spans' summaries (see triton_scan_fwd._combine_kernel); `dirs=2`: both directions, stacked,
    the second one's A `off_A` elements from p.A and walked the other way when `flip`."""
    block = 128
    combine_kernel.on(H.device)[(triton.cdiv(p.dim * p.cfg.n_pad, block), p.batch, dirs)](
        p.A, H, dtsum, last, p.dim, p.d_state, p.cfg.n_par, n_slots, slot_stride, int(reverse), off_A, flip,
        BLOCK=block, N_PAD=p.cfg.n_pad, num_warps=4, **FP_FUSION)


def triton_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, save=False):
    """(out, last_state[, saved]): out in u's dtype, last_state (B, E, N) float32, saved the tile states.

    Without `save` (inference) no tile state is stored nor allocated: a one-launch scan needs none, a
    chunk-parallel one only its span carries (`carry_shape`)."""
    p = _Prepared(u, delta, A, B, C, D, delta_bias)
    out = torch.empty(u.shape, device=u.device, dtype=u.dtype)
    f32 = torch.float32
    if not (p.length and p.batch and p.dim):
        last = torch.zeros(p.batch, p.dim, p.d_state, device=u.device, dtype=f32)
        return (out, last, torch.empty(p.saved_shape(), device=u.device, dtype=f32)) if save else (out, last)
    last = torch.empty(p.batch, p.dim, p.d_state, device=u.device, dtype=f32)  # fully written
    cfg = p.cfg
    zz = z if z is not None else u
    if save:
        H = torch.empty(p.saved_shape(), device=u.device, dtype=f32)
    elif cfg.parallel:
        H = torch.empty(p.carry_shape(), device=u.device, dtype=f32)
    else:
        H = last  # never written (SAVE=0): any fp32 pointer will do
    dtsum = H
    if cfg.parallel:
        dtsum = torch.empty(p.batch, cfg.n_par, p.dim, device=u.device, dtype=f32)
    out_k = out if p.fwd_groups == 1 else p.per_group(out.shape, out, p.fwd_groups)  # fp32 partials
    args = (u, delta, p.A, p.B4, p.C4, p.D, zz, p.bias, out_k, last, H, dtsum,
            p.dim, p.length, p.d_state, max(p.ch_per_group, 1), int(delta_softplus), int(reverse),
            cfg.chunk, cfg.n_chunks, cfg.span,
            *u.stride(), *delta.stride(), *p.bc_strides(), *zz.stride(), *out_k.stride()[-3:])
    kernel = scan_fwd_kernel.on(u.device)
    groups = p.fwd_groups
    consts = {**p.constexprs(z is not None), "SAVE": bool(save)}
    if not cfg.parallel:
        kernel[p.grid(1, groups)](*args, **consts, MODE=MODE_FULL)
    else:
        kernel[p.grid(cfg.n_par, groups)](*args, **consts, MODE=MODE_SUMMARY)
        slots, stride = (cfg.n_chunks, cfg.span) if save else (cfg.n_par, 1)
        _combine(p, H, dtsum, last, slots, stride, False)
        kernel[p.grid(cfg.n_par, groups)](*args, **consts, MODE=MODE_CHUNK)
    if groups > 1:
        out.copy_(out_k.sum(0))
    return (out, last, H) if save else (out, last)


def _reduce_state_grad(part: Tensor, p: _Prepared, X: Tensor) -> Tensor:
    """Sum the per-channel-block dB or dC partials (batch, n_eblk, N, L) into X's shape, deterministically."""
    if p.groups == 1:
        full = part.sum(1, keepdim=True)
    else:
        full = part.reshape(p.batch, p.groups, -1, p.d_state, p.length).sum(2)
    if X.dim() == 2:
        return full.sum((0, 3)).to(X.dtype)
    if X.dim() == 3:
        return full.squeeze(1).to(X.dtype)
    return full.to(X.dtype)


def adjoint_carries(p: _Prepared, dout, u, delta, z, delta_softplus: bool, reverse: bool, dirs: int = 1,
                    offsets: tuple[int, ...] = (0,) * 5) -> Tensor:
    """Chunk-parallel backward: the adjoint carry entering each span from the later ones (dirs, batch, n_par,
    E, N_PAD); summary kernel per span, then the combine walks the spans from the last. `dirs=2`: both of
    Vim's directions in one launch of each, the reverse one's delta, A, C, D, bias `offsets` elements away."""
    dev, cfg = u.device, p.cfg
    Gs = torch.empty(dirs, p.batch, cfg.n_par, p.dim, cfg.n_pad, device=dev, dtype=torch.float32)
    if not cfg.parallel:
        return Gs
    dtsum = torch.empty(dirs, p.batch, cfg.n_par, p.dim, device=dev, dtype=torch.float32)
    zz = z if z is not None else u
    consts = {k: v for k, v in p.bwd_constexprs(z is not None, dirs).items() if k != "CHUNK"}
    consts["GROUP"] = p.sum_group
    triton_scan_bwd.bwd_summary_kernel.on(dev)[(p.bwd_n_eblk * p.sum_groups, p.batch, dirs * cfg.n_par)](
        u, delta, p.A, p.C4, p.D, zz, p.bias, dout, Gs, dtsum,
        p.dim, p.length, p.d_state, max(p.ch_per_group, 1), int(delta_softplus), int(reverse),
        cfg.chunk, cfg.n_chunks, cfg.span, cfg.n_par, *offsets,
        *u.stride(), *delta.stride(), *p.C4.stride(), *zz.stride(), *dout.stride(), **consts)
    spare = torch.empty(dirs, p.batch, p.dim, p.d_state, device=dev, dtype=torch.float32)
    _combine(p, Gs, dtsum, spare, cfg.n_par, 1, True, dirs=dirs, off_A=offsets[1])
    return Gs


def triton_scan_backward(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, saved=None):
    """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), None where the input was None.

    `saved`: the forward's tile start states (`triton_scan_forward(..., save=True)`); without them the
    forward runs once more to produce them.
    """
    p = _Prepared(u, delta, A, B, C, D, delta_bias)
    if saved is None or tuple(saved.shape) != p.saved_shape():
        saved = triton_scan_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, True)[2]
    dev, f32 = u.device, torch.float32
    bsz, dim, length, n = p.batch, p.dim, p.length, p.d_state
    cfg = p.cfg
    groups = p.bwd_groups  # > 1: du, ddelta, dz and the d(delta_bias) partials per state group, in fp32
    du = p.per_group(u.shape, u, groups)
    ddelta = p.per_group(delta.shape, delta, groups)
    dz = p.per_group(z.shape, z, groups) if z is not None else None
    dA_part = torch.empty(bsz, cfg.n_par, dim, n, device=dev, dtype=f32)
    dD_part = torch.empty(bsz, cfg.n_par, dim, device=dev, dtype=f32)
    dbias_part = torch.empty(groups, bsz, cfg.n_par, dim, device=dev, dtype=f32)
    dCB_part = torch.empty(bsz, p.bwd_n_eblk, 2, n, length, device=dev, dtype=f32)
    if length and bsz and dim:
        Gin = adjoint_carries(p, dout, u, delta, z, delta_softplus, reverse)
        slab = torch.empty(p.slab_numel(), device=dev, dtype=f32)
        zz = z if z is not None else u
        triton_scan_bwd.scan_bwd_kernel.on(dev)[(p.bwd_n_eblk * groups, bsz, cfg.n_par)](
            u, delta, p.A, p.B4, p.C4, p.D, zz, p.bias, dout, saved, Gin,
            du, ddelta, dz if dz is not None else du, dA_part, dD_part, dbias_part, dCB_part,
            slab, dim, length, n, max(p.ch_per_group, 1), int(delta_softplus), int(reverse),
            cfg.chunk, cfg.n_chunks, cfg.span, cfg.n_par,
            0, 0, 0, 0, 0, 0, 0,
            *u.stride(), *delta.stride(), *p.bc_strides(), *zz.stride(), *dout.stride(),
            **p.bwd_constexprs(z is not None, 1),
        )
    else:
        for t in (du, ddelta, dz, dA_part, dD_part, dbias_part, dCB_part):
            if t is not None:
                t.zero_()
    if groups > 1:
        du, ddelta = du.sum(0).to(u.dtype), ddelta.sum(0).to(delta.dtype)
        dz = dz.sum(0).to(z.dtype) if dz is not None else None
    dA = dA_part.sum((0, 1)).to(A.dtype)
    dB = _reduce_state_grad(dCB_part[:, :, 1], p, B)
    dC = _reduce_state_grad(dCB_part[:, :, 0], p, C)
    dD = dD_part.sum((0, 1)).to(D.dtype) if D is not None else None
    dbias = dbias_part.sum((0, 1, 2)).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB, dC, dD, dz, dbias


def _available(device: torch.device) -> bool:
    return triton_available(torch.device(device))


BACKEND = register_backend(
    ScanBackend(
        name="triton",
        description="Triton kernels: a channel per thread with all states in registers, chunk-parallel "
        "over L when the batch is small; backward from saved chunk states, without atomics",
        forward=triton_scan_forward,
        backward=triton_scan_backward,
        is_available=_available,
        priority=20,
        saves_for_backward=True,
        saved_like=saved_like,
    )
)

from . import triton_bidirectional as _bidirectional  # noqa: E402, F401  (registers the fused scan)
from . import triton_ops as _ops  # noqa: E402, F401  (registers conv1d + SiLU and add + RMSNorm)
