"""What each GPU scan backend's Python wrapper and launch allocate, as torch ops a tracker can see.

One model per backend, read from the wrappers on main (kernels/triton_scan.py, triton_bidirectional.py,
cuda_scan.py + csrc/selective_scan_cuda_binding.cpp, mamba_ssm_adapter.py). Shapes come from the kernels' own
helpers (`triton_scan._Prepared`: launch config, saved tile shape, backward slab, state groups, `per_group`;
`cuda_scan.saved_shape`, `launch_config`), so when a kernel's config changes the model follows. Each forward
returns `(out, saved)`: `saved` is what the real op hands its backward (tile start states), None when the
forward was not asked to save (inference).

Tile states when not saving (issue 13's binding spec, kernels changed on a parallel branch): a Triton
forward (per direction and fused) that is not asked to save allocates no tile-state tensor at all, only, when
it runs chunk-parallel, one fp32 carry state per span and direction; saving (training) is unchanged. Every
state shape a Triton forward allocates comes from ONE function, `triton_forward_states`. Our CUDA forward
still writes its tile states in inference too (freed at once); mamba_ssm has none.

Triton paths modelled: per direction (1 launch, or 3 chunk-parallel: summary, combine, span pass; past 16
states fp32 per-state-group output partials summed by the launcher), the fused pair (1 launch, or 3
chunk-parallel with both directions' span states; past FUSED_MAX_STATES two grouped single-direction scans),
their backwards (per-group du/ddelta/dz/d(delta_bias) partials; the fused one one launch over (direction,
span), two single-direction backwards when the strides differ or the states are grouped).

Our CUDA scan, as csrc/selective_scan_cuda_binding.cpp allocates it: every reduction as fp32 partials
summed by torch (dA per span, dB/dC per 32-row block slot, dD, d(delta_bias) per span and state group; past
16 states out/du/ddelta/dz per state group), sized by the header's `state_groups`, `bc_partial_slots` and
`scan_bwd_scratch_floats` from its constants.

Not modelled: allocations inside `mamba_ssm`'s own C++ beyond its documented outputs (read from upstream's
selective_scan.cpp / selective_scan_interface.py as of mamba-ssm 2.x, not from a copy here), cuBLAS/attention
workspaces, the CUDA scan's shared memory (not a global allocation).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

F32 = torch.float32
# mamba_ssm's selective_scan_cuda.fwd: chunk states x (B, E, ceil(L / 2048), 2N) fp32 (upstream constant)
MAMBA_SCAN_CHUNK = 2048


def _empty(like: Tensor, *shape, dtype: torch.dtype = F32) -> Tensor:
    return torch.empty(shape, dtype=dtype, device=like.device)


def _maybe(like: Tensor, shape: tuple[int, ...] | None) -> Tensor | None:
    return _empty(like, *shape) if shape is not None else None


# ------------------------------------------------------------------------------------------------ Triton


@functools.lru_cache(maxsize=64)
def _prepared_cached(batch: int, dim: int, length: int, d_state: int, bc_shape: tuple, dtype: torch.dtype):
    from torch.utils._python_dispatch import _disable_current_modes

    from vimbench.kernels.triton_scan import _Prepared

    with _disable_current_modes():  # real meta tensors, outside the fake mode and the tracker
        u = torch.empty((batch, dim, length), device="meta", dtype=dtype)
        A = torch.empty((dim, d_state), device="meta")
        bc = torch.empty(bc_shape, device="meta", dtype=dtype)
        vec = torch.empty((dim,), device="meta")
        return _Prepared(u, u, A, bc, bc, vec, vec)


def triton_prepared(u: Tensor, A: Tensor, B: Tensor):
    """The Triton wrapper's `_Prepared` for these shapes (launch config, saved shape, slab size, groups)."""
    return _prepared_cached(*u.shape, A.shape[1], tuple(B.shape), u.dtype)


@dataclass(frozen=True)
class ForwardStates:
    """The fp32 state tensors a Triton forward allocates beside its output; None: not allocated."""

    tiles: tuple[int, ...] | None  # tile start states, handed to the backward when saving
    carries: tuple[int, ...] | None  # chunk-parallel span carries, a tensor of their own


def triton_forward_states(p, save: bool, dirs: int = 1) -> ForwardStates:
    """What a Triton forward allocates for its states, `dirs` = 1 (per direction) or 2 (the fused pair).

    Saving (training), as on main: tile start states (B, n_tiles, E, N_PAD) per direction (the fused op:
    (2, ...)); the per-direction chunk-parallel scan chains its span carries inside them (the combine writes
    tile slot k*span), the fused one has separate span states (2, B, n_par, E, N_PAD).
    Not saving (inference; issue 13's binding spec for the Triton kernels): no tile states; chunk-parallel,
    only the span carries, one fp32 state per span per direction: (B, n_par, E, N_PAD) ((2, ...) fused).
    The one place to adjust when the kernels' allocation changes (N_PAD, n_par, n_tiles from `_Prepared`).
    """
    lead = (2,) if dirs == 2 else ()
    cfg = p.cfg
    carries = (*lead, p.batch, cfg.n_par, p.dim, cfg.n_pad) if cfg.parallel else None
    if save:
        return ForwardStates((*lead, *p.saved_shape()), carries if dirs == 2 else None)
    return ForwardStates(None, carries)


def triton_forward(u, delta, A, B, C, D, z, bias, save: bool, reverse: bool = False):
    """`triton_scan_forward`: out, states (`triton_forward_states`), last state, span sums of dt; past
    GROUP_STATES fp32 per-group output partials (groups, B, E, L), summed into out."""
    p = triton_prepared(u, A, B)
    states = triton_forward_states(p, save)
    out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    last = _empty(u, p.batch, p.dim, p.d_state)  # returned by the op, dropped by its callers
    H = _maybe(u, states.tiles)
    carries = _maybe(u, states.carries)
    dtsum = _empty(u, p.batch, p.cfg.n_par, p.dim) if p.cfg.parallel else None
    if p.fwd_groups > 1:
        out_k = p.per_group(out.shape, out, p.fwd_groups)
        out.copy_(out_k.sum(0))
        del out_k
    del carries, last, dtsum
    return out, (H if save else None)


def _adjoint_carries(p, like: Tensor, dirs: int = 1) -> Tensor:
    """`adjoint_carries`: the carries (dirs, B, n_par, E, N_PAD) (allocated even when not chunk-parallel);
    chunk-parallel, span sums of dt and a spare last state for the combine, freed on return."""
    Gs = _empty(like, dirs, p.batch, p.cfg.n_par, p.dim, p.cfg.n_pad)
    if p.cfg.parallel:
        dtsum = _empty(like, dirs, p.batch, p.cfg.n_par, p.dim)
        spare = _empty(like, dirs, p.batch, p.dim, p.d_state)
        del dtsum, spare
    return Gs


def triton_backward(dout, u, delta, A, B, C, D, z, bias, saved, reverse: bool = False):
    """`triton_scan_backward`: grads (per state group fp32 partials of du/ddelta/dz past GROUP_STATES),
    fp32 partials per span / channel block, adjoint carries, slab."""
    from vimbench.kernels.triton_scan import _reduce_state_grad

    p = triton_prepared(u, A, B)
    cfg, groups = p.cfg, p.bwd_groups
    if saved is None or tuple(saved.shape) != p.saved_shape():  # the wrapper re-runs the forward
        saved = triton_forward(u, delta, A, B, C, D, z, bias, True)[1]
    du = p.per_group(u.shape, u, groups)
    ddelta = p.per_group(delta.shape, delta, groups)
    dz = p.per_group(z.shape, z, groups) if z is not None else None
    dA_part = _empty(u, p.batch, cfg.n_par, p.dim, p.d_state)
    dD_part = _empty(u, p.batch, cfg.n_par, p.dim)
    dbias_part = _empty(u, groups, p.batch, cfg.n_par, p.dim)
    dCB_part = _empty(u, p.batch, p.bwd_n_eblk, 2, p.d_state, p.length)
    carries = _adjoint_carries(p, u)
    slab = _empty(u, p.slab_numel())
    if groups > 1:
        du, ddelta = du.sum(0).to(u.dtype), ddelta.sum(0).to(delta.dtype)
        dz = dz.sum(0).to(z.dtype) if dz is not None else None
    grads = (
        du, ddelta, dA_part.sum((0, 1)).to(A.dtype),
        _reduce_state_grad(dCB_part[:, :, 1], p, B), _reduce_state_grad(dCB_part[:, :, 0], p, C),
        dD_part.sum((0, 1)).to(D.dtype) if D is not None else None, dz,
        dbias_part.sum((0, 1, 2)).to(bias.dtype) if bias is not None else None,
    )  # fmt: skip
    del carries, slab, saved
    return grads


def fused_forward(fwd: tuple, bwd: tuple, z, save: bool):
    """The fused forward as `_FusedScan` runs it (a test swaps it for one that never saves)."""
    return _fused_forward(fwd, bwd, z, save)


def _fused_forward(fwd: tuple, bwd: tuple, z, save: bool):
    """`_launch_bidirectional` (directions as (u, delta, A, B, C, D, delta_bias)): one output and the states
    of `triton_forward_states(p, save, 2)`; chunk-parallel (3 launches) the span states, span sums of dt and
    a spare last state for the one combine of both directions; past FUSED_MAX_STATES two grouped
    single-direction forwards whose tile states are copied into the (2, ...) tensor, outputs summed."""
    from vimbench.kernels.triton_common import FUSED_MAX_STATES

    u = fwd[0]
    p = triton_prepared(u, fwd[2], fwd[3])
    states = triton_forward_states(p, save, 2)
    H = _maybe(u, states.tiles) if save else _empty(u, 0)  # not saving: an empty (0,) stands in
    if p.d_state > FUSED_MAX_STATES:
        outs = []
        for k, (d, reverse) in enumerate(((fwd, False), (bwd, True))):
            out_k, H_k = triton_forward(*d[:6], z, d[6], save, reverse)
            if save:
                H[k] = H_k
            outs.append(out_k)
            del H_k
        return outs[0] + outs[1], (H if save else None)
    out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    if p.cfg.parallel:
        S = _maybe(u, states.carries)
        dtsum = _empty(u, 2, p.batch, p.cfg.n_par, p.dim)
        spare = _empty(u, 2, p.batch, p.dim, p.d_state)
        del S, dtsum, spare
    return out, (H if save else None)


def _same_layout(fwd: tuple, bwd: tuple) -> bool:
    """`_backward_bidirectional`'s test for one launch: both directions' strides and dtypes alike."""
    return all(f.stride() == b.stride() and f.dtype == b.dtype for f, b in zip(fwd[:5], bwd[:5], strict=True)
               if f.dim() > 0)  # fmt: skip


def fused_backward(dout, fwd: tuple, bwd: tuple, z, H):
    """`_backward_bidirectional`: one launch over (direction, span) with both directions' grads stacked
    (chunk-parallel: after one carry summary and one combine for both); two single-direction backwards
    when the strides differ or the backward groups its states. Returns (grads_f, grads_b) as (du, ddelta,
    dA, dB, dC, dD, dz, dbias)."""
    from vimbench.kernels.triton_scan import _reduce_state_grad

    uf, df = fwd[0], fwd[1]
    p = triton_prepared(uf, fwd[2], fwd[3])
    if H is None:  # the op saves H whenever autograd needs it: a forward without them re-runs
        H = _fused_forward(fwd, bwd, z, True)[1]
    if not _same_layout(fwd, bwd) or p.bwd_groups > 1 or p.sum_groups > 1:
        return (triton_backward(dout, *fwd[:6], z, fwd[6], H[0]),
                triton_backward(dout, *bwd[:6], z, bwd[6], H[1], reverse=True))
    cfg = p.cfg
    du = torch.empty((2, *uf.shape), dtype=uf.dtype, device=uf.device)
    ddelta = torch.empty((2, *df.shape), dtype=df.dtype, device=uf.device)
    dz = torch.empty((2, *z.shape), dtype=z.dtype, device=uf.device) if z is not None else None
    dA_part = _empty(uf, 2, p.batch, cfg.n_par, p.dim, p.d_state)
    dD_part = _empty(uf, 2, p.batch, cfg.n_par, p.dim)
    dbias_part = _empty(uf, 2, p.batch, cfg.n_par, p.dim)
    dCB_part = _empty(uf, 2, p.batch, p.bwd_n_eblk, 2, p.d_state, p.length)
    slab = _empty(uf, 2 * p.slab_numel())
    carries = _adjoint_carries(p, uf, dirs=2)

    def grads(k: int, A, B, C, D, bias):
        return (du[k], ddelta[k], dA_part[k].sum((0, 1)).to(A.dtype),
                _reduce_state_grad(dCB_part[k][:, :, 1], p, B),
                _reduce_state_grad(dCB_part[k][:, :, 0], p, C),
                dD_part[k].sum((0, 1)).to(D.dtype) if D is not None else None,
                dz[k] if dz is not None else None,
                dbias_part[k].sum((0, 1)).to(bias.dtype) if bias is not None else None)  # fmt: skip

    result = grads(0, *fwd[2:7]), grads(1, *bwd[2:7])
    del slab, carries
    return result


# ------------------------------------------------------------------------------------------ our CUDA scan


@functools.lru_cache(maxsize=1)
def cuda_header_constants() -> dict[str, int]:
    """kTile, kGroupStates, kBwdThreads, kMaxDState read from csrc/selective_scan_cuda.h: the header's
    `state_groups`, `scan_bwd_scratch_floats` and `bc_partial_slots` size the binding's buffers from them
    (no Python twin in cuda_scan), so the model reads the constants, not copies of them."""
    from vimbench.kernels import cuda_scan

    text = Path(cuda_scan.CSRC / "selective_scan_cuda.h").read_text()
    return {name: int(re.search(rf"constexpr int {name} = (\d+);", text).group(1))  # type: ignore[union-attr]
            for name in ("kTile", "kGroupStates", "kBwdThreads", "kMaxDState")}  # fmt: skip


def cuda_state_groups(nstate: int) -> int:
    """The header's `state_groups`: groups of kGroupStates states, one thread per (row, group)."""
    per_group = cuda_header_constants()["kGroupStates"]
    return -(-nstate // per_group)


def cuda_scratch_floats(batch: int, dim: int, nstate: int, n_par: int) -> int:
    """The header's `scan_bwd_scratch_floats`: per (state group, span, row) kTile steps x 2 x kGroupStates."""
    k = cuda_header_constants()
    return batch * dim * n_par * cuda_state_groups(nstate) * k["kTile"] * 2 * k["kGroupStates"]


def cuda_bc_slots(channels_per_group: int) -> int:
    """The header's `bc_partial_slots`: the most kBwdThreads-row blocks touching one (batch, B/C group)
    (Vim-S: 768 channels per group -> 24)."""
    warp = cuda_header_constants()["kBwdThreads"]
    return (warp - math.gcd(channels_per_group, warp) + channels_per_group - 1) // warp + 1


def _cuda_inputs(u, delta, A, B, C, D, z, bias):
    """`cuda_scan.prepare`: casts only where a dtype differs from u's (no-ops for Vim)."""
    from vimbench.kernels import cuda_scan

    io = u.dtype
    batch, _, length = u.shape
    B4, C4 = (cuda_scan.as_4d(X.to(io), batch, length) for X in (B, C))
    return (u, delta.to(io), A.float(), B4, C4, D.float() if D is not None else None,
            z.to(io) if z is not None else None, bias.float() if bias is not None else None)  # fmt: skip


def cuda_forward(u, delta, A, B, C, D, z, bias, save: bool, reverse: bool = False):
    """The binding's `fwd`: out (u's dtype), last state, tile states (batch, n_tiles, E, N) fp32, span
    sums; past kGroupStates states fp32 output partials (groups, batch, E, L), summed by the finish kernel
    into out (no torch op) and freed on return."""
    from vimbench.kernels import cuda_scan

    args = _cuda_inputs(u, delta, A, B, C, D, z, bias)
    batch, dim, length = u.shape
    groups = cuda_state_groups(A.shape[1])
    cfg = cuda_scan.launch_config(batch, dim, length, A.shape[1])
    out = torch.empty(u.shape, dtype=u.dtype, device=u.device)
    last = _empty(u, batch, dim, A.shape[1])
    tiles = _empty(u, *cuda_scan.saved_shape(u, A))
    dt_sum = _empty(u, batch, cfg.n_par, dim) if cfg.n_par > 1 else None
    y_part = _empty(u, groups, batch, dim, length) if groups > 1 else None
    del args, last, dt_sum, y_part
    return out, (tiles if save else None)


def cuda_backward(dout, u, delta, A, B, C, D, z, bias, saved, reverse: bool = False):
    """`cuda_scan._backward` + the binding's `bwd`, in its order: du/ddelta/dz (past kGroupStates states
    fp32 per-group partials (groups, batch, E, L) instead, summed into the outputs), fp32 partials of dA
    (batch, n_par, E, N), dB/dC (slots, *B's 4-D shape) each, dD (batch, n_par, E), d(delta_bias)
    (groups, batch, n_par, E), scratch slab, span carries and sums of dt; then the torch sums (dB/dC a view
    of slot 0 when there is one slot)."""
    from vimbench.kernels import cuda_scan

    if saved is None or tuple(saved.shape) != cuda_scan.saved_shape(u, A):
        saved = cuda_forward(u, delta, A, B, C, D, z, bias, True)[1]
    args = _cuda_inputs(u, delta, A, B, C, D, z, bias)
    batch, dim, length = u.shape
    nstate = A.shape[1]
    n_par = cuda_scan.launch_config(batch, dim, length, nstate).n_par
    groups = cuda_state_groups(nstate)
    dout = dout.to(u.dtype)
    if groups > 1:
        du_part, ddelta_part = _empty(u, groups, *u.shape), _empty(u, groups, *u.shape)
        dz_part = _empty(u, groups, *u.shape) if z is not None else None
    else:
        du = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        ddelta = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        dz = torch.empty(u.shape, dtype=u.dtype, device=u.device) if z is not None else None
    dA_part = _empty(u, batch, n_par, dim, nstate)
    B4 = args[3]
    slots = cuda_bc_slots(dim // B4.shape[1])
    dB_part, dC_part = _empty(u, slots, *B4.shape), _empty(u, slots, *B4.shape)
    dD_part = _empty(u, batch, n_par, dim) if D is not None else None
    dbias_part = _empty(u, groups, batch, n_par, dim) if bias is not None else None
    scratch = _empty(u, cuda_scratch_floats(batch, dim, nstate, n_par))
    carries = _empty(u, batch, n_par, dim, nstate) if n_par > 1 else None
    dt_sum = _empty(u, batch, n_par, dim) if n_par > 1 else None
    if groups > 1:
        du, ddelta = du_part.sum(0).to(u.dtype), ddelta_part.sum(0).to(u.dtype)
        dz = dz_part.sum(0).to(u.dtype) if dz_part is not None else None
        del du_part, ddelta_part, dz_part
    dA = dA_part.view(-1, dim, nstate).sum(0)
    dB = dB_part.sum(0) if slots > 1 else dB_part[0]
    dC = dC_part.sum(0) if slots > 1 else dC_part[0]
    dD = dD_part.view(-1, dim).sum(0) if dD_part is not None else None
    dbias = dbias_part.view(-1, dim).sum(0) if dbias_part is not None else None
    del dA_part, dB_part, dC_part, dD_part, dbias_part, scratch, carries, dt_sum, args, saved
    return (
        du, ddelta.to(delta.dtype), dA.to(A.dtype),
        cuda_scan._reduce_like(dB, B), cuda_scan._reduce_like(dC, C),
        dD.to(D.dtype) if dD is not None else None, dz.to(z.dtype) if dz is not None else None,
        dbias.to(bias.dtype) if dbias is not None else None,
    )  # fmt: skip


# -------------------------------------------------------------------------------------------- mamba_ssm


def _mamba_fn_forward(u, delta, A, B, C, D, z, bias, reverse: bool) -> tuple[list[Tensor], Tensor]:
    """`mamba_ssm_adapter._run` + upstream `SelectiveScanFn.forward`: flip copies (reverse), contiguous
    copies of inputs whose last stride is not 1 (Vim's B/C), out, chunk states x, out_z. Returns what the
    autograd Function keeps (its saved tensors) and the result (flipped back when reverse)."""
    if reverse:
        u, delta = u.flip(-1), delta.flip(-1)
        z = z.flip(-1) if z is not None else None
        B, C = (X.flip(-1) if X.dim() >= 3 else X for X in (B, C))
    u, delta, B, C = (X.contiguous() if X.stride(-1) != 1 else X for X in (u, delta, B, C))
    if z is not None and z.stride(-1) != 1:
        z = z.contiguous()
    batch, dim, length = u.shape
    out = torch.empty(delta.shape, dtype=delta.dtype, device=u.device)
    x = _empty(u, batch, dim, -(-length // MAMBA_SCAN_CHUNK), 2 * A.shape[1])
    out_z = torch.empty(z.shape, dtype=z.dtype, device=u.device) if z is not None else out
    result = out_z.flip(-1) if reverse else out_z
    return [u, delta, B, C, z, x, out], result


def mamba_forward(u, delta, A, B, C, D, z, bias, save: bool, reverse: bool = False):
    """Inside the custom op the Function saves nothing; its last state is a view of x (dropped)."""
    _kept, out = _mamba_fn_forward(u, delta, A, B, C, D, z, bias, reverse)
    return out, None


def mamba_backward(dout, u, delta, A, B, C, D, z, bias, saved, reverse: bool = False):
    """`backward_by_autograd`: the forward once more under autograd, upstream's `bwd` (du, ddelta, dz like
    their inputs; dA, dB, dC, dD, ddelta_bias fp32), the grads flipped back through the flip copies."""
    kept, out = _mamba_fn_forward(u, delta, A, B, C, D, z, bias, reverse)
    dout = dout.flip(-1) if reverse else dout
    su, sdelta, sB, sC, sz = kept[:5]
    du = torch.empty(su.shape, dtype=su.dtype, device=u.device)
    ddelta = torch.empty(sdelta.shape, dtype=sdelta.dtype, device=u.device)
    dA = _empty(u, *A.shape)
    dB, dC = _empty(u, *sB.shape), _empty(u, *sC.shape)
    dD = _empty(u, *D.shape) if D is not None else None
    dbias = _empty(u, *bias.shape) if bias is not None else None
    dz = torch.empty(sz.shape, dtype=sz.dtype, device=u.device) if z is not None else None
    del kept, out, dout, su, sdelta, sB, sC, sz  # the Function's saved tensors die after its backward
    if reverse:
        du, ddelta = du.flip(-1), ddelta.flip(-1)
        dz = dz.flip(-1) if dz is not None else None
        dB, dC = (g.flip(-1) if g.dim() >= 3 else g for g in (dB, dC))
    return (
        du, ddelta, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
        dD.to(D.dtype) if dD is not None else None, dz,
        dbias.to(bias.dtype) if dbias is not None else None,
    )  # fmt: skip


FORWARD = {"triton": triton_forward, "cuda": cuda_forward, "mamba_ssm": mamba_forward}
BACKWARD = {"triton": triton_backward, "cuda": cuda_backward, "mamba_ssm": mamba_backward}
