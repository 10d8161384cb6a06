"""The Triton scan kernels (forward, chunk-parallel forward, backward from saved chunk states, fused
bidirectional forward and one-launch backward) against the float64 reference.

On CPU they run in Triton's interpreter. Triton decides at import time whether its own library functions
(tl.sum, tl.sigmoid) are interpretable, so TRITON_INTERPRET=1 must be set before triton is imported: the
checks run in ONE subprocess started with it (nothing leaks into other test files), each reported as its own
test. The chunk is shrunk to 8 so L=33 crosses chunk boundaries; "parallel" cases force the chunk-parallel
scan (summary, combine, span passes; forward and backward) at tiny shapes. Shapes are tiny: the interpreter
is slow.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from vimbench.kernels import (
    ScanDirection,
    available_backends,
    bidirectional_selective_scan,
    fused_bidirectional_backends,
    selective_scan,
    selective_scan_ref,
    triton_common,
)

from vimbench.profile.flops import scan_flops
from vimbench.testing.interpreter import interpreter_tests
from vimbench.testing.numerics import rel_err

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


CHECKS: dict = {}


def check(name: str):
    def add(fn):
        CHECKS[name] = fn
        return fn
    return add


def _chunks_of_8() -> None:
    triton_common.CHUNK = 8


class parallel_scan:
    """Force the chunk-parallel path at tiny shapes (tiles of 4 positions, spans of 2 tiles), restoring the
    config after."""

    def __enter__(self):
        self.saved = triton_common.TARGET_WARPS, triton_common.MIN_PARALLEL_CHUNK, triton_common.CHUNK
        triton_common.TARGET_WARPS, triton_common.MIN_PARALLEL_CHUNK, triton_common.CHUNK = 10**9, 8, 4

    def __exit__(self, *exc):
        triton_common.TARGET_WARPS, triton_common.MIN_PARALLEL_CHUNK, triton_common.CHUNK = self.saved


class small_groups:
    """Split the states into groups of `size` in every scan kernel (the launchers' path past the states a
    thread holds without spilling: 16 in the forward and the backward) at tiny state counts."""

    def __init__(self, size: int = 4):
        self.size = size

    def __enter__(self):
        self.saved = triton_common.GROUP_STATES
        triton_common.GROUP_STATES = {k: self.size for k in self.saved}

    def __exit__(self, *exc):
        triton_common.GROUP_STATES = self.saved


def make_inputs(batch, dim, length, d_state, groups, extras, seed=0, big_decay=False):
    """float64 scan inputs; B/C shared (groups=0 -> (B, N, L)) or grouped; extras: z, D, delta_bias."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g, dtype=f64) * scale

    bc_shape = (batch, d_state, length) if groups == 0 else (batch, groups, d_state, length)
    A = -(torch.rand(dim, d_state, generator=g, dtype=f64) * (8.0 if big_decay else 1.0) + 0.5)
    return {
        "u": rnd(batch, dim, length), "delta": rnd(batch, dim, length, scale=3.0 if big_decay else 0.5),
        "A": A, "B": rnd(*bc_shape), "C": rnd(*bc_shape),
        "D": rnd(dim) if extras else None, "z": rnd(batch, dim, length) if extras else None,
        "delta_bias": rnd(dim, scale=0.2) if extras else None,
    }


def run_with_grads(fn, inputs, dout, dtype=None):
    def leaf(k, v):
        cast = dtype is not None and k not in ("A", "D", "delta_bias")
        return (v.to(dtype) if cast else v).clone().requires_grad_(True)

    leaves = {k: leaf(k, v) if v is not None else None for k, v in inputs.items()}
    out, last = fn(leaves)
    (out.double() * dout).sum().backward()
    return out, last, {k: v.grad for k, v in leaves.items() if v is not None}


CASES = [  # (length, d_state, groups, reverse, extras, softplus, dim, parallel)
    (1, 4, 0, False, True, True, 5, False),
    (7, 1, 0, True, True, True, 5, False),
    (7, 3, 0, False, False, False, 5, False),  # N not a power of two: padded states
    (7, 4, 2, True, True, True, 6, False),  # 3 channels per group: blocks straddle groups
    (33, 4, 0, False, True, True, 5, False),  # crosses four chunks of 8
    (33, 4, 0, True, True, False, 5, False),
    (33, 4, 2, False, True, True, 64, False),  # 32 channels per group: a block per group
    (1, 4, 0, True, True, True, 5, True),  # L=1 through the chunk-parallel launcher
    (19, 4, 0, False, True, True, 5, True),  # chunk-parallel: 5 chunks of 4, the last one short
    (19, 3, 2, True, True, True, 6, True),
    # wider states: the backward in state groups of 16 (2, 4, and 3 with the last one 8 states of 16)
    (9, 32, 0, True, True, True, 5, False),
    (5, 64, 2, False, True, True, 4, False),
    (9, 40, 0, False, False, False, 5, False),
]
# every kernel (forward, its chunk-parallel passes, backward, carry summary) in state groups of 4
GROUPED_CASES = [
    (9, 12, 0, False, True, True, 5, False),
    (19, 10, 2, True, True, True, 6, True),  # N_PAD 16: 3 groups, the last one 2 states; chunk-parallel
]


def check_against_reference(length, d_state, groups, reverse, extras, softplus, dim, parallel):
    if parallel:
        with parallel_scan():
            return check_against_reference(length, d_state, groups, reverse, extras, softplus, dim, False)
    inputs = make_inputs(2, dim, length, d_state, groups, extras, big_decay=length == 33 and softplus)
    dout = torch.randn(2, dim, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def scan(backend):
        def call(t):
            return selective_scan(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
                                  softplus, True, reverse=reverse, backend=backend)
        return call

    def ref(t):
        return selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
                                  softplus, True, reverse=reverse)

    out_ref, last_ref, grads_ref = run_with_grads(ref, inputs, dout)
    f32 = {k: v.float() if v is not None else None for k, v in inputs.items()}
    out, last, grads = run_with_grads(scan("triton"), f32, dout)
    assert out.dtype == torch.float32 and last.dtype == torch.float32
    assert rel_err(out, out_ref) < 1e-5
    assert rel_err(last, last_ref) < 1e-5
    assert set(grads) == set(grads_ref)
    for name in grads:
        assert grads[name].shape == inputs[name].shape, name
        tol = 1e-3 if name != "A" or length > 1 else 1e-6
        assert rel_err(grads[name], grads_ref[name]) < tol, name


@check("noncontiguous_and_constant_BC")
def check_noncontiguous_inputs_and_constant_BC():
    """Vim's u and delta are transposed views: no copies, same numbers; constant (E, N) B/C also work."""
    base = make_inputs(2, 6, 9, 4, 0, True)
    u_t = base["u"].transpose(1, 2).contiguous().transpose(1, 2).float()  # strides (L*E, 1, E)
    assert not u_t.is_contiguous()
    f32 = {k: v.float() if v is not None else None for k, v in base.items()}
    delta_view = torch.cat([f32["delta"], f32["delta"]], dim=1)[:, 6:]  # batch stride 2*E*L, like xz.chunk
    assert not delta_view.is_contiguous()
    out = selective_scan(u_t, delta_view, f32["A"], f32["B"], f32["C"], f32["D"], f32["z"],
                         f32["delta_bias"], True, backend="triton")
    ref = selective_scan_ref(base["u"], base["delta"], base["A"], base["B"], base["C"], base["D"], base["z"],
                             base["delta_bias"], True)
    assert rel_err(out, ref) < 1e-5
    B_const, C_const = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    out_c = selective_scan(f32["u"], f32["delta"], f32["A"], B_const.float(), C_const.float(),
                           backend="triton")
    ref_c = selective_scan_ref(base["u"], base["delta"], base["A"], B_const, C_const)
    assert rel_err(out_c, ref_c) < 1e-5


def check_vim_layout_BC(length, d_state, reverse, parallel):
    """B/C as Vim passes them: views of x_dbl (b, L, dt_rank + 2N), states contiguous, strides multiples of
    4: the kernels' aligned path (B_t/C_t read 4 states at a time), forward and gradients."""
    if parallel:
        with parallel_scan():
            return check_vim_layout_BC(length, d_state, reverse, False)
    from vimbench.kernels import triton_scan

    base = make_inputs(2, 6, length, d_state, 0, True, seed=3)
    gen = torch.Generator().manual_seed(5)
    x_dbl = torch.randn(2, length, 4 + 2 * d_state, generator=gen, dtype=torch.float64)
    B_view = x_dbl[:, :, 4:4 + d_state].transpose(1, 2)  # (b, N, L), stride over N 1, over L 4 + 2N
    C_view = x_dbl[:, :, 4 + d_state:].transpose(1, 2)
    inputs = {**base, "B": B_view, "C": C_view}
    dout = torch.randn(2, 6, length, dtype=torch.float64, generator=gen)

    def vim_views(t):  # float32 leaves, re-viewed like the model's so the kernels see the same strides
        x = torch.cat([torch.zeros(2, length, 4, dtype=t["B"].dtype), t["B"].transpose(1, 2),
                       t["C"].transpose(1, 2)], dim=2)
        return x[:, :, 4:4 + d_state].transpose(1, 2), x[:, :, 4 + d_state:].transpose(1, 2)

    def ours(t):
        B, C = vim_views(t)
        aligned = triton_scan._Prepared(t["u"], t["delta"], t["A"], B, C, t["D"], t["delta_bias"]).bc_aligned
        assert aligned == (d_state % 4 == 0)
        return selective_scan(t["u"], t["delta"], t["A"], B, C, t["D"], t["z"], t["delta_bias"], True, True,
                              reverse=reverse, backend="triton")

    def ref(t):
        return selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"],
                                  True, True, reverse=reverse)

    out_ref, last_ref, grads_ref = run_with_grads(ref, inputs, dout)
    f32 = {k: v.float() if v is not None else None for k, v in inputs.items()}
    out, last, grads = run_with_grads(ours, f32, dout)
    assert rel_err(out, out_ref) < 1e-5 and rel_err(last, last_ref) < 1e-5
    for name in grads:
        assert rel_err(grads[name], grads_ref[name]) < 1e-3, name


def _in_groups(fn, *args, size: int = 4, **kwargs):
    with small_groups(size):
        return fn(*args, **kwargs)


def check_half_precision(dtype, tol, d_state=4):
    inputs = make_inputs(2, 5, 12, d_state, 0, True)
    ref = selective_scan_ref(*inputs.values(), True, reverse=True)
    low = {k: (v.to(dtype) if k in ("u", "delta", "B", "C", "z") else v.float()) if v is not None else None
           for k, v in inputs.items()}
    out, last = selective_scan(*low.values(), True, True, reverse=True, backend="triton")
    assert out.dtype == dtype and last.dtype == torch.float32
    assert rel_err(out, ref) < tol


def test_availability_follows_the_interpreter_flag(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "triton" not in available_backends("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "triton" in available_backends("cpu")
    assert "triton" in fused_bidirectional_backends("cpu")


def _directions(dim=5, length=7, d_state=4, seed=0):
    pair = [make_inputs(2, dim, length, d_state, 0, True, seed=seed + i) for i in range(2)]
    z = pair[0]["z"]
    dirs = [ScanDirection(**{k: v.float().requires_grad_(True) for k, v in p.items() if k != "z"})
            for p in pair]
    return dirs, z.float().requires_grad_(True)


def check_fused_bidirectional(length, parallel=False, d_state=4):
    if parallel:
        with parallel_scan():
            return check_fused_bidirectional(length, d_state=d_state)
    (fwd, bwd), z = _directions(length=length, d_state=d_state)
    fused = bidirectional_selective_scan(fwd, bwd, z, backend="triton")
    g = torch.randn_like(fused)
    fused_grads = torch.autograd.grad(fused, [*vars(fwd).values(), *vars(bwd).values(), z], g)
    separate = bidirectional_selective_scan(fwd, bwd, z, backend="reference", fused=False)
    sep_grads = torch.autograd.grad(separate, [*vars(fwd).values(), *vars(bwd).values(), z], g)
    assert rel_err(fused, separate) < 1e-5
    for a, b in zip(fused_grads, sep_grads, strict=True):
        assert rel_err(a, b) < 1e-4


@check("bidirectional-vim-layout")
def check_fused_bidirectional_with_vim_views():
    """Both directions' B/C as views of their x_dbl (the aligned path of the fused kernels), L=9, N=8."""
    import dataclasses

    (fwd, bwd), z = _directions(dim=6, length=9, d_state=8)

    def with_views(d):
        x = torch.randn(2, 9, 4 + 16, generator=torch.Generator().manual_seed(2))
        x[:, :, 4:12] = d.B.detach().transpose(1, 2)
        x[:, :, 12:] = d.C.detach().transpose(1, 2)
        x.requires_grad_(True)
        return dataclasses.replace(d, B=x[:, :, 4:12].transpose(1, 2), C=x[:, :, 12:].transpose(1, 2)), x

    (fwd, x_f), (bwd, x_b) = with_views(fwd), with_views(bwd)
    fused = bidirectional_selective_scan(fwd, bwd, z, backend="triton")
    g = torch.randn_like(fused)
    leaves = [v for v in (*vars(fwd).values(), *vars(bwd).values()) if v.is_leaf] + [x_f, x_b, z]
    fused_grads = torch.autograd.grad(fused, leaves, g)
    separate = bidirectional_selective_scan(fwd, bwd, z, backend="reference", fused=False)
    sep_grads = torch.autograd.grad(separate, leaves, g)
    assert rel_err(fused, separate) < 1e-5
    for a, b in zip(fused_grads, sep_grads, strict=True):
        assert rel_err(a, b) < 1e-4


@check("bidirectional_flops")
def check_fused_bidirectional_counts_two_scan_directions():
    (fwd, bwd), z = _directions()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        bidirectional_selective_scan(fwd, bwd, z, backend="triton")
    counts = counter.get_flop_counts()["Global"]
    assert counts[torch.ops.vimbench.bidirectional_selective_scan] == 2 * scan_flops(2, 7, 5, 4)


for _case in CASES:
    check("reference-L{}-N{}-G{}-rev{}-extras{}-softplus{}-E{}-parallel{}".format(*_case))(
        lambda c=_case: check_against_reference(*c))
for _case in GROUPED_CASES:
    check("state-groups-of-4-L{}-N{}-G{}-rev{}-extras{}-softplus{}-E{}-parallel{}".format(*_case))(
        lambda c=_case: _in_groups(check_against_reference, *c))
for _case in ((19, 8, False, False), (33, 16, True, False), (19, 4, True, True), (7, 3, False, False)):
    check("vim-layout-L{}-N{}-rev{}-parallel{}".format(*_case))(lambda c=_case: check_vim_layout_BC(*c))
for _dtype, _tol in ((torch.float16, 3e-3), (torch.bfloat16, 3e-2)):
    check(f"half-{_dtype}")(lambda d=_dtype, t=_tol: check_half_precision(d, t))
check("half-bf16-state-groups-of-4")(lambda: _in_groups(check_half_precision, torch.bfloat16, 3e-2, 12))
check("vim-layout-L9-N16-rev-state-groups-of-8")(lambda: _in_groups(check_vim_layout_BC, 9, 16, True, False,
                                                                    size=8))
for _length in (1, 6, 7, 19):
    check(f"bidirectional-L{_length}")(lambda n=_length: check_fused_bidirectional(n))
check("bidirectional-L19-parallel")(lambda: check_fused_bidirectional(19, parallel=True))
check("bidirectional-L9-N10-state-groups-of-4")(lambda: _in_groups(check_fused_bidirectional, 9, d_state=10))


@check("backward_uses_saved_states")
def check_backward_never_reruns_the_forward():
    """Through the op, the backward gets the forward's chunk states: no forward kernel runs in backward."""
    from vimbench.kernels import triton_scan

    t = {k: v.float().requires_grad_(True) if v is not None else None
         for k, v in make_inputs(1, 5, 9, 4, 0, True).items()}
    out = selective_scan(*t.values(), True, backend="triton")
    calls = []
    real = triton_scan.triton_scan_forward
    triton_scan.triton_scan_forward = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        out.sum().backward()
    finally:
        triton_scan.triton_scan_forward = real
    assert not calls and t["u"].grad is not None


class allocations:
    """Records the shape and dtype of every tensor allocated (aten.empty*) inside the block."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        shapes = self.shapes = []

        class _Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func.overloadpacket in (torch.ops.aten.empty, torch.ops.aten.empty_strided):
                    shapes.append((tuple(out.shape), out.dtype))
                return out

        self.mode = _Record()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)

    def state_like(self, batch: int, dim: int, n_pad: int, lead: tuple = ()) -> list[tuple]:
        """The fp32 (*lead, batch, slots, E, N_PAD) tensors allocated: tile states or span carries."""
        rank = len(lead) + 4
        return [shape for shape, dtype in self.shapes if dtype == torch.float32 and len(shape) == rank
                and shape[:len(lead)] == lead and shape[-4] == batch and shape[-2:] == (dim, n_pad)]


@contextlib.contextmanager
def calls_of(module, name: str):
    """The calls of `module.name` inside the block, each as {"args": args, **kwargs}."""
    real, seen = getattr(module, name), []

    def spy(*args, **kwargs):
        seen.append({"args": args, **kwargs})
        return real(*args, **kwargs)

    setattr(module, name, spy)
    try:
        yield seen
    finally:
        setattr(module, name, real)


@contextlib.contextmanager
def forward_calls(backend: str):
    """The keyword arguments of every call of the registered `backend`'s forward inside the block."""
    import dataclasses

    from vimbench.kernels import registry

    real = registry.get_backend(backend)
    seen: list[dict] = []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real.forward(*args, **kwargs)

    registry.register_backend(dataclasses.replace(real, forward=spy))
    try:
        yield seen
    finally:
        registry.register_backend(real)


def check_inference_saves_no_tile_states(parallel: bool, reverse: bool):
    """save=False (inference): the same output and last state, bit for bit, as save=True; no tile state
    allocated (one-launch scan) or only the span carries (chunk-parallel); under no_grad the op runs it so;
    and a backward without saved states (it re-runs the forward) still matches float64."""
    if parallel:
        with parallel_scan():
            return _inference(True, reverse)
    return _inference(False, reverse)


def _inference(parallel: bool, reverse: bool):
    from vimbench.kernels import triton_scan

    t = {k: v.float() if v is not None else None for k, v in make_inputs(2, 5, 19, 4, 0, True).items()}
    args = (*t.values(), True, reverse)
    p = triton_scan._Prepared(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["delta_bias"])
    assert p.cfg.parallel == parallel and p.cfg.n_chunks > p.cfg.n_par
    out_s, last_s, H = triton_scan.triton_scan_forward(*args, save=True)
    with allocations() as rec:
        out_i, last_i = triton_scan.triton_scan_forward(*args, save=False)
    assert torch.equal(out_i, out_s) and torch.equal(last_i, last_s)
    assert tuple(H.shape) == p.saved_shape()
    assert rec.state_like(2, 5, 4) == ([p.carry_shape()] if parallel else []), rec.shapes
    with torch.no_grad(), forward_calls("triton") as seen:  # the op decides `save`
        out_op = selective_scan(*t.values(), True, reverse=reverse, backend="triton")
    assert torch.equal(out_op, out_s) and [c.get("save", False) for c in seen] == [False]
    # the op asked not to save, then differentiated: its backward re-runs the forward for the tile states
    leaves = {k: v.clone().requires_grad_(True) if v is not None else None for k, v in t.items()}
    out, _, saved = torch.ops.vimbench.selective_scan(*leaves.values(), True, reverse, "triton", False)
    assert saved.numel() == 0
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(out, [v for v in leaves.values() if v is not None], dout)
    ref_leaves = {k: v.double().requires_grad_(True) if v is not None else None for k, v in t.items()}
    ref = selective_scan_ref(*ref_leaves.values(), True, reverse=reverse)
    ref_grads = torch.autograd.grad(ref, [v for v in ref_leaves.values() if v is not None], dout.double())
    for a, r in zip(grads, ref_grads, strict=True):
        assert rel_err(a, r) < 1e-3


def check_fused_inference_saves_no_tile_states(parallel: bool):
    """The fused op: save=False gives the same output bit for bit, allocates no tile state (chunk-parallel:
    only both directions' span states), under no_grad runs so, and its backward without saved states
    (recomputed) matches the float64 reference."""
    if parallel:
        with parallel_scan():
            return _fused_inference(True)
    return _fused_inference(False)


def _fused_inference(parallel: bool):
    from vimbench.kernels import triton_bidirectional, triton_scan

    (fwd, bwd), z = _directions(length=19)
    args = [v.detach() for v in (*vars(fwd).values(), *vars(bwd).values(), z)]
    p = triton_scan._Prepared(*args[:7])
    assert p.cfg.parallel == parallel
    out_s, H = triton_bidirectional._launch_bidirectional(*args, True, True)
    with allocations() as rec:
        out_i, H_i = triton_bidirectional._launch_bidirectional(*args, True, False)
    assert torch.equal(out_i, out_s) and H_i.numel() == 0 and tuple(H.shape) == (2, *p.saved_shape())
    assert rec.state_like(2, 5, 4, (2,)) == ([(2, *p.carry_shape())] if parallel else []), rec.shapes
    with torch.no_grad(), calls_of(triton_bidirectional, "_launch_bidirectional") as seen:
        out_op = bidirectional_selective_scan(fwd, bwd, z, backend="triton")
    assert torch.equal(out_op, out_s) and [c["args"][-1] for c in seen] == [False]
    leaves = [v.detach().clone().requires_grad_(True) for v in (*vars(fwd).values(), *vars(bwd).values(), z)]
    out, saved = torch.ops.vimbench.bidirectional_selective_scan(*leaves, True, False)
    assert saved.numel() == 0
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(out, leaves, g)
    ref_dirs = [ScanDirection(*[v.double() for v in leaves[k:k + 7]]) for k in (0, 7)]
    ref_z = leaves[14].double()
    ref = bidirectional_selective_scan(*ref_dirs, ref_z, backend="reference", fused=False)
    ref_grads = torch.autograd.grad(ref, leaves_of(ref_dirs, ref_z), g.double())
    for k, (a, r) in enumerate(zip(grads, ref_grads, strict=True)):
        assert rel_err(a, r) < 1e-4, k


def leaves_of(dirs, z):
    return [*vars(dirs[0]).values(), *vars(dirs[1]).values(), z]


for _par in (False, True):
    check(f"inference-saves-no-tile-states-parallel{_par}")(
        lambda par=_par: check_inference_saves_no_tile_states(par, par))
    check(f"bidirectional-inference-saves-no-tile-states-parallel{_par}")(
        lambda par=_par: check_fused_inference_saves_no_tile_states(par))


interpreter_results, test_in_triton_interpreter = interpreter_tests(__file__, CHECKS, setup=_chunks_of_8)


@pytest.mark.gpu
@pytest.mark.parametrize("length", [197, 2049])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_cuda_matches_reference(length, dtype, tol):
    """The real check: compiled kernels on a GPU at a Vim-like width, gradients included."""
    host = make_inputs(2, 96, length, 16, 0, True)
    inputs = {k: v.cuda() if v is not None else None for k, v in host.items()}
    dout = torch.randn(2, 96, length, dtype=torch.float64, device="cuda")
    ref_out, ref_last, ref_grads = run_with_grads(
        lambda t: selective_scan_ref(*t.values(), True, True), inputs, dout)
    out, last, grads = run_with_grads(
        lambda t: selective_scan(*t.values(), True, True, backend="triton"), inputs, dout, dtype=dtype)
    assert rel_err(out, ref_out) < tol and rel_err(last, ref_last) < tol
    for name, grad in grads.items():
        assert rel_err(grad, ref_grads[name]) < (1e-3 if dtype == torch.float32 else 5e-2), name
