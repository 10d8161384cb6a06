"""The fused bidirectional Triton scan in its chunk-parallel form (batch 1 at high resolution: summary, one
combine, and one span pass in which a program runs both directions over the same positions; backward: one
summary, one combine and one backward launch for both directions), forced at tiny shapes.

Checked in Triton's interpreter (one subprocess started with TRITON_INTERPRET=1, as tests/test_triton_scan.py
explains) against the float64 reference run as two separate directions: outputs and every gradient of both
directions; and the saved tile states against the one-launch fused kernel's and the single-direction scan's.
Spans are forced to W positions (tiles of `chunk`): odd and even W, L not a multiple of the tile or the span
(the reverse direction's tiles then straddle span boundaries), L a multiple of the tile (its tiles align).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from vimbench.kernels import ScanDirection, bidirectional_selective_scan, triton_common

from vimbench.testing.interpreter import interpreter_tests
from vimbench.testing.numerics import rel_err

CHECKS: dict = {}
LOW = ("u", "delta", "B", "C")  # in the I/O dtype; A, D, delta_bias stay float32


@contextlib.contextmanager
def spans(chunk: int, min_span: int, parallel: bool = True):
    """Tiles of `chunk` positions; chunk-parallel, spans of cdiv(min_span, chunk) tiles, when `parallel`."""
    saved = triton_common.TARGET_WARPS, triton_common.MIN_PARALLEL_CHUNK, triton_common.CHUNK
    triton_common.CHUNK, triton_common.MIN_PARALLEL_CHUNK = chunk, min_span
    if parallel:
        triton_common.TARGET_WARPS = 10**9
    try:
        yield
    finally:
        triton_common.TARGET_WARPS, triton_common.MIN_PARALLEL_CHUNK, triton_common.CHUNK = saved


def make_pair(length, dtype, groups, extras, has_z, dim=5, d_state=4, batch=2, seed=0):
    """Both directions' float64 inputs, already rounded to `dtype` where the kernels read that dtype."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def rnd(*shape, scale=1.0, low=True):
        x = torch.randn(*shape, generator=g, dtype=f64) * scale
        return x.to(dtype).double() if low else x.float().double()

    bc = (batch, d_state, length) if groups == 0 else (batch, groups, d_state, length)

    def one():
        return {"u": rnd(batch, dim, length), "delta": rnd(batch, dim, length, scale=0.5),
                "A": -(torch.rand(dim, d_state, generator=g, dtype=f64) + 0.5).float().double(),
                "B": rnd(*bc), "C": rnd(*bc),
                "D": rnd(dim, low=False) if extras else None,
                "delta_bias": rnd(dim, scale=0.2, low=False) if extras else None}

    z = rnd(batch, dim, length) if has_z else None
    return one(), one(), z, rnd(batch, dim, length)


def _cast(k, v, dtype):
    return v.to(dtype if k in LOW else (torch.float64 if dtype == torch.float64 else torch.float32))


def run_op(pair, z, dout, dtype, backend, fused):
    """(out, grads of every input of both directions and z) through `bidirectional_selective_scan`."""
    leaves, dirs = [], []
    for p in pair:
        d = {k: _cast(k, v, dtype).requires_grad_(True) if v is not None else None for k, v in p.items()}
        leaves += [v for v in d.values() if v is not None]
        dirs.append(ScanDirection(**d))
    zz = z.to(dtype).requires_grad_(True) if z is not None else None
    leaves += [zz] if zz is not None else []
    out = bidirectional_selective_scan(dirs[0], dirs[1], zz, backend=backend, fused=fused)
    return out, torch.autograd.grad(out, leaves, dout.to(out.dtype))


def saved_states(pair, z, dtype):
    """The fused forward's (out, saved tile states (2, B, tiles, E, N_PAD)) under the current config."""
    from vimbench.kernels import triton_bidirectional

    f, b = ({k: _cast(k, v, dtype) if v is not None else None for k, v in p.items()} for p in pair)
    args = [*f.values(), *b.values()]
    return triton_bidirectional._launch_bidirectional(*args, z.to(dtype) if z is not None else None, True)


def check_parallel_fused(length, chunk, min_span, dtype, groups, extras, has_z):
    from vimbench.kernels import triton_scan
    from vimbench.kernels.triton_common import pick_config

    # batch 1 at the longer lengths (the regime this path is for; the interpreter is slow); grouped B/C: 2
    # channels per group (the backward's channel blocks are then 2 wide)
    batch, dim = (1 if length >= 30 else 2), (2 * groups if groups else 5)
    pair = make_pair(length, dtype, groups, extras, has_z, dim=dim, batch=batch)
    *directions, z, dout = pair
    with spans(chunk, min_span):
        cfg = pick_config(batch, dim, length, 4)
        assert cfg.parallel == (length >= 2 * min_span), cfg
        out, grads = run_op(directions, z, dout, dtype, "triton", True)
        out_par, H_par = saved_states(directions, z, dtype)
        r = {k: _cast(k, v, dtype) if v is not None else None for k, v in directions[1].items()}
        zz = z.to(dtype) if z is not None else None
        H_single = triton_scan.triton_scan_forward(
            r["u"], r["delta"], r["A"], r["B"], r["C"], r["D"], zz, r["delta_bias"], True, True, True)[2]
    with spans(chunk, min_span, parallel=False):
        out_full, H_full = saved_states(directions, z, dtype)
    ref, ref_grads = run_op(directions, z, dout, torch.float64, "reference", False)
    fp32 = dtype == torch.float32
    assert out.dtype == dtype and rel_err(out, ref) < (1e-5 if fp32 else 3e-2)
    assert len(grads) == len(ref_grads)
    for k, (a, r) in enumerate(zip(grads, ref_grads, strict=True)):
        assert a.shape == r.shape and rel_err(a, r) < (1e-4 if fp32 else 5e-2), (k, rel_err(a, r))
    # the saved tile states: as the one-launch fused kernel saves them, the reverse direction's in its own
    # index space (as the single-direction reverse scan saves them)
    assert H_par.shape == H_full.shape
    for d in (0, 1):
        assert rel_err(H_par[d], H_full[d]) < 1e-5, (d, rel_err(H_par[d], H_full[d]))
    assert rel_err(H_par[1], H_single) < 1e-5
    assert rel_err(out_par, out_full) < (1e-5 if fp32 else 2e-2)


CASES = [  # (length, chunk, min_span, dtype, groups, extras, has_z): span W = chunk * cdiv(min_span, chunk)
    (1, 4, 8, torch.float32, 0, True, True),  # too short for spans: the one-launch kernel
    (17, 4, 8, torch.float32, 0, True, True),  # W=8: spans 8, 8, 1; reverse tiles straddle span ends
    (27, 3, 3, torch.float32, 0, True, True),  # W=3 (odd), L a multiple of the tile: tiles align
    (30, 3, 6, torch.float32, 2, True, True),  # grouped B/C, W=6 (two tiles), L a multiple of W
    (97, 4, 12, torch.float32, 0, False, False),  # no z, D, bias; W=12, last span 1
    (33, 4, 12, torch.bfloat16, 0, True, True),  # W=12, last span 9 (odd)
    (70, 4, 8, torch.bfloat16, 2, False, True),  # grouped B/C, z without D / bias, last span 6
]
for _case in CASES:
    _name = "L{}-chunk{}-span{}-{}-G{}-extras{}-z{}".format(*_case[:3], str(_case[3])[6:], *_case[4:])
    CHECKS[_name] = lambda c=_case: check_parallel_fused(*c)

interpreter_results, test_in_triton_interpreter = interpreter_tests(__file__, CHECKS)


def test_launch_counts_when_chunk_parallel():
    """Forward: summary, combine, span pass; backward: summary, combine, backward; each for both
    directions (recorded on meta tensors, nothing runs)."""
    from vimbench.kernels import triton_bidirectional

    from vimbench.kernelbench.launches import Capture

    pair = make_pair(70, torch.float32, 0, True, True)
    meta = [ScanDirection(**{k: _cast(k, v, torch.float32).to("meta") if v is not None else None
                             for k, v in p.items()}) for p in pair[:2]]
    z = pair[2].float().to("meta")
    with spans(4, 8), torch.no_grad():
        for backward, names in ((False, ["_bidir_fwd_kernel", "_combine_kernel", "_bidir_fwd_kernel"]),
                                (True, ["_bwd_summary_kernel", "_combine_kernel", "_scan_bwd_kernel"])):
            with Capture() as cap:
                triton_bidirectional.launch_for_inspect(*meta, z, backward=backward)
            assert [lc.kernel.__name__ for lc in cap.launches] == names
            n_par = 9  # 18 tiles of 4 in spans of 2
            assert [lc.grid[2] for lc in cap.launches] == ([n_par, 2, n_par] if not backward
                                                           else [2 * n_par, 2, 2 * n_par])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_cuda_chunk_parallel_fused_matches_reference(dtype, tol):
    """Compiled on a GPU: batch 1, 96 channels, L=2049 picks the chunk-parallel fused path at the real tile
    and span sizes; outputs and every gradient against the float64 reference run as two directions."""
    from vimbench.kernels.triton_common import pick_config

    assert pick_config(1, 96, 2049, 16).parallel
    pair = make_pair(2049, dtype, 0, True, True, dim=96, d_state=16, batch=1)
    directions = [{k: v.cuda() if v is not None else None for k, v in p.items()} for p in pair[:2]]
    z, dout = pair[2].cuda(), pair[3].cuda()
    out, grads = run_op(directions, z, dout, dtype, "triton", True)
    ref, ref_grads = run_op(directions, z, dout, torch.float64, "reference", False)
    assert rel_err(out, ref) < tol
    for k, (a, r) in enumerate(zip(grads, ref_grads, strict=True)):
        assert rel_err(a, r) < (1e-3 if dtype == torch.float32 else 5e-2), k
