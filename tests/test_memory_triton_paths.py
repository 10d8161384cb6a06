"""The Triton scan models' merged paths, allocation by allocation, hand-counted: the chunk-parallel fused
pair (3 launches forward, 3 backward) and the state groups past 16 states (fp32 per-group partials)."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses import FakeTensorMode

from vimbench.memory import scan_gpu_models
from vimbench.memory.tracker import allocations_of
from vimbench.testing.scan_layouts import vim_scan_direction

F32 = 4


def _layer_inputs(batch: int, dim: int, length: int, nstate: int):
    leaf = torch.randn(batch, dim, length)
    a_log, d_vec = torch.randn(dim, nstate), torch.randn(dim)
    fwd, bwd = (vim_scan_direction(leaf, a_log, nstate, d_vec) for _ in (0, 1))
    as_tuple = [(d.u, d.delta, d.A, d.B, d.C, d.D, d.delta_bias) for d in (fwd, bwd)]
    return (*as_tuple, leaf * 2.0)


# ------------------------------------------------------------------ (a) chunk-parallel fused bidirectional

# (batch, E, L, N, hand-counted config): tiles = ceil(L / 16); one 1-warp program per 32 channels, far below
# the 1056 warps that fill an H100, so spans of max(2, tiles // ceil(1056 / warps)) tiles: n_par spans; N_PAD
# the next power of 2; backward: 32-channel blocks, slab per program 32 ch x 16 steps x (2 * N_PAD + 4)
PARALLEL = [
    # 7 tiles, 1 warp: spans of 2 tiles -> 4 spans
    dict(batch=1, dim=32, length=100, nstate=4, tiles=7, n_par=4, n_pad=4, eblk=1),
    # 9 tiles, 2 warps: spans of 2 -> 5
    dict(batch=2, dim=8, length=130, nstate=4, tiles=9, n_par=5, n_pad=4, eblk=1),
    # Vim-S layer at 1248 px, batch 1: L = 78 * 78 + 1 = 6085, 381 tiles; 24 warps want 44 spans:
    # spans of 381 // 44 = 8 tiles -> 48 spans (24 x 48 = 1152 warps per launch)
    dict(batch=1, dim=768, length=6085, nstate=16, tiles=381, n_par=48, n_pad=16, eblk=24),
]


def _fused_parallel_forward(c: dict) -> list[int]:
    """`_launch_bidirectional`, chunk-parallel, saving: H (2, B, tiles, E, N_PAD), out, span states
    (2, B, n_par, E, N_PAD), dt sums (2, B, n_par, E), the combine's spare last states (2, B, E, N)."""
    b, e, n = c["batch"], c["dim"], c["nstate"]
    return [2 * b * c["tiles"] * e * c["n_pad"] * F32, b * e * c["length"] * F32,
            2 * b * c["n_par"] * e * c["n_pad"] * F32, 2 * b * c["n_par"] * e * F32, 2 * b * e * n * F32]


@pytest.mark.parametrize("c", PARALLEL)
def test_fused_chunk_parallel_forward_allocates_span_states_beside_the_tile_states(c):
    with FakeTensorMode():
        fwd, bwd, z = _layer_inputs(c["batch"], c["dim"], c["length"], c["nstate"])
        allocs, alive, (_out, H) = allocations_of(scan_gpu_models.fused_forward, fwd, bwd, z, True)
        assert tuple(H.shape) == (2, c["batch"], c["tiles"], c["dim"], c["n_pad"])
    expected = _fused_parallel_forward(c)
    assert allocs == expected  # one output: no per-direction outputs, no copies of H
    assert alive == sorted(expected[:2])  # span states, dt sums and spare die with the call


def test_vim_s_1248_batch_1_fused_forward_by_hand():
    # H 2 x 381 x 768 x 16 x 4 B, out 768 x 6085 x 4, spans 2 x 48 x 768 x 16 x 4, dt sums 2 x 48 x 768 x 4
    assert _fused_parallel_forward(PARALLEL[2]) == [37_453_824, 18_693_120, 4_718_592, 294_912, 98_304]


def _fused_parallel_backward(c: dict) -> list[int]:
    """`_backward_bidirectional`, one launch over (direction, span): stacked du, ddelta, dz; fp32 dA, dD,
    d(delta_bias) partials per span; dB/dC partials per channel block; both slabs; `adjoint_carries` for both
    directions (carries, dt sums and spare states); then per direction dA, dB, dC, dD, d(delta_bias)."""
    b, e, length, n, npad, par = c["batch"], c["dim"], c["length"], c["nstate"], c["n_pad"], c["n_par"]
    slab = 2 * b * c["eblk"] * par * 32 * 16 * (2 * npad + 4)
    grads = [e * n * F32, b * n * length * F32, b * n * length * F32, e * F32, e * F32]
    return [2 * b * e * length * F32] * 3 + [
        2 * b * par * e * n * F32, 2 * b * par * e * F32, 2 * b * par * e * F32,
        2 * b * c["eblk"] * 2 * n * length * F32, slab * F32,
        2 * b * par * e * npad * F32, 2 * b * par * e * F32, 2 * b * e * n * F32,
    ] + grads * 2  # fmt: skip


@pytest.mark.parametrize("c", PARALLEL)
def test_fused_chunk_parallel_backward_is_one_stacked_launch(c):
    with FakeTensorMode():
        fwd, bwd, z = _layer_inputs(c["batch"], c["dim"], c["length"], c["nstate"])
        _, H = scan_gpu_models.fused_forward(fwd, bwd, z, True)
        dout = torch.empty(fwd[0].shape)
        allocs, alive, _grads = allocations_of(scan_gpu_models.fused_backward, dout, fwd, bwd, z, H)
    expected = _fused_parallel_backward(c)
    assert allocs == expected
    assert alive == sorted(expected[:3] + expected[-10:])  # stacked du/ddelta/dz and the grads


def test_vim_s_1248_batch_1_fused_backward_slab_by_hand():
    """The largest allocation of the chunk-parallel backward: 2 directions x 24 channel blocks x 48 spans x
    (32 x 16 x 36) floats = 162 MiB, beside 35.7 MiB for each of the stacked du, ddelta, dz."""
    expected = _fused_parallel_backward(PARALLEL[2])
    assert expected[7] == 2 * 24 * 48 * 32 * 16 * 36 * 4 == 169_869_312
    assert expected[0] == 2 * 768 * 6085 * 4 == 37_386_240


# ------------------------------------------------------------------------ (b) state groups past 16 states

# (batch, E, L, N, hand-counted): groups of 16 states per program (forward and backward), N_PAD = N here;
# the backward's carry summary holds 64 states (one group). Vim-S layer at 224 px, batch 128: 13 tiles,
# 4-warp programs (6 x 128 x 4 = 3072 warps: not chunk-parallel), 24 backward blocks of 32 channels
GROUPED = [
    dict(batch=2, dim=128, length=40, nstate=32, tiles=3, groups=2, eblk=4),
    dict(batch=2, dim=128, length=40, nstate=64, tiles=3, groups=4, eblk=4),
    dict(batch=128, dim=768, length=197, nstate=32, tiles=13, groups=2, eblk=24),
    dict(batch=128, dim=768, length=197, nstate=64, tiles=13, groups=4, eblk=24),
]


def _grouped_direction_forward(c: dict) -> list[int]:
    """`triton_scan_forward` past 16 states, saving: out, last state (B, E, N), tile states (B, tiles, E, N),
    fp32 output partials (groups, B, E, L) and their sum (B, E, L) (copied into out)."""
    b, e, length, n = c["batch"], c["dim"], c["length"], c["nstate"]
    plane = b * e * length * F32
    return [plane, b * e * n * F32, b * c["tiles"] * e * n * F32, c["groups"] * plane, plane]


@pytest.mark.parametrize("c", GROUPED)
def test_fused_op_past_16_states_runs_two_grouped_directions(c):
    """`_launch_bidirectional` past FUSED_MAX_STATES: H (2, B, tiles, E, N), each direction's grouped
    forward (its tile states copied into H, then freed), the two outputs summed."""
    b, e, length, n = c["batch"], c["dim"], c["length"], c["nstate"]
    with FakeTensorMode():
        fwd, bwd, z = _layer_inputs(b, e, length, n)
        allocs, alive, (_out, H) = allocations_of(scan_gpu_models.fused_forward, fwd, bwd, z, True)
        assert tuple(H.shape) == (2, b, c["tiles"], e, n)
    direction = _grouped_direction_forward(c)
    H_bytes, plane = 2 * b * c["tiles"] * e * n * F32, b * e * length * F32
    assert allocs == [H_bytes, *direction, *direction, plane]
    assert alive == sorted([H_bytes, plane])


def test_vim_s_grouped_forward_by_hand():
    # d_state 64, batch 128, 224 px: 4 fp32 partial planes of 128 x 768 x 197 x 4 B = 295.5 MiB per direction
    assert _grouped_direction_forward(GROUPED[3])[3] == 4 * 128 * 768 * 197 * 4 == 309_854_208


def _grouped_direction_backward(c: dict) -> list[int]:
    """`triton_scan_backward` with state groups: fp32 du, ddelta, dz partials (groups, B, E, L); dA, dD
    partials; d(delta_bias) partials per group (groups, B, 1, E); dB/dC partials; carries (1, B, 1, E, N);
    the slab (a program per channel block and group); the three partial sums; then dA, dB, dC, dD, dbias."""
    b, e, length, n, g = c["batch"], c["dim"], c["length"], c["nstate"], c["groups"]
    plane = b * e * length * F32
    slab = b * c["eblk"] * g * 32 * 16 * (2 * 16 + 4) * F32
    return [g * plane] * 3 + [
        b * e * n * F32, b * e * F32, g * b * e * F32, b * c["eblk"] * 2 * n * length * F32,
        b * e * n * F32, slab, plane, plane, plane,
        e * n * F32, b * n * length * F32, b * n * length * F32, e * F32, e * F32,
    ]  # fmt: skip


@pytest.mark.parametrize("c", GROUPED)
def test_grouped_backward_writes_per_group_partials(c):
    """The fused backward past 16 states: two single-direction backwards, each with fp32 per-group du,
    ddelta, dz and d(delta_bias) partials summed by the launcher."""
    b, e, length, n = c["batch"], c["dim"], c["length"], c["nstate"]
    with FakeTensorMode():
        fwd, bwd, z = _layer_inputs(b, e, length, n)
        _, H = scan_gpu_models.fused_forward(fwd, bwd, z, True)
        dout = torch.empty(fwd[0].shape)
        allocs, alive, _grads = allocations_of(scan_gpu_models.fused_backward, dout, fwd, bwd, z, H)
    direction = _grouped_direction_backward(c)
    assert allocs == direction * 2
    kept = direction[-8:]  # the summed du, ddelta, dz and the parameter grads
    assert alive == sorted(kept * 2)


def test_vim_s_grouped_backward_slab_by_hand():
    # d_state 32: 128 batch x 24 blocks x 2 groups x (32 x 16 x 36) floats = 432 MiB per direction
    assert _grouped_direction_backward(GROUPED[2])[8] == 128 * 24 * 2 * 18432 * 4 == 452_984_832


# ---------------------------------------------------------- the models against the wrappers themselves

# (batch, E, L, N): one launch; chunk-parallel; state groups (32, 64); chunk-parallel with groups
CONFORMANCE = [(2, 64, 40, 16), (1, 32, 100, 16), (2, 128, 40, 32), (2, 128, 40, 64), (1, 128, 100, 32)]


def _wrapper_and_model_allocations(real, model, args) -> tuple[list[int], list[int]]:
    """Allocation sizes, in order, of the real Triton launcher (its kernel launches recorded, not run: meta
    tensors, as `vimbench kernels inspect` runs them) and of its model, on the same inputs."""
    from vimbench.kernelbench.launches import Capture

    with Capture():
        real_allocs, _, _ = allocations_of(lambda *_: real(), *args)  # args: registered as existing
    model_allocs, _, _ = allocations_of(lambda *_: model(), *args)
    return real_allocs, model_allocs


def _meta_layer(batch: int, dim: int, length: int, nstate: int):
    with torch.device("meta"):
        return _layer_inputs(batch, dim, length, nstate)


@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), CONFORMANCE)
def test_training_models_allocate_what_the_wrappers_allocate(batch, dim, length, nstate):
    """Forward (saving) and backward, per direction and fused: the same sizes in the same order as
    kernels/triton_scan.py and triton_bidirectional.py on main, so a kernel change that the model misses
    fails here."""
    from vimbench.kernels import triton_bidirectional as bidir
    from vimbench.kernels import triton_scan

    fwd, bwd, z = _meta_layer(batch, dim, length, nstate)
    u, delta, A, B, C, D, bias = fwd
    dout = torch.empty(u.shape, device="meta")
    saved = torch.empty(scan_gpu_models.triton_prepared(u, A, B).saved_shape(), device="meta")
    H = torch.empty((2, *saved.shape), device="meta")
    pairs = [
        (lambda: triton_scan.triton_scan_forward(u, delta, A, B, C, D, z, bias, True, False, True),
         lambda: scan_gpu_models.triton_forward(u, delta, A, B, C, D, z, bias, True)),
        (lambda: triton_scan.triton_scan_backward(dout, u, delta, A, B, C, D, z, bias, True, False, saved),
         lambda: scan_gpu_models.triton_backward(dout, u, delta, A, B, C, D, z, bias, saved)),
        (lambda: bidir._launch_bidirectional(*fwd, *bwd, z, True),
         lambda: scan_gpu_models.fused_forward(fwd, bwd, z, True)),
        (lambda: bidir._backward_bidirectional(dout, *fwd, *bwd, z, True, H),
         lambda: scan_gpu_models.fused_backward(dout, fwd, bwd, z, H)),
    ]  # fmt: skip
    for real, model in pairs:
        real_allocs, model_allocs = _wrapper_and_model_allocations(real, model, (fwd, bwd, z, dout, saved, H))
        assert model_allocs == real_allocs


@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), CONFORMANCE[:2])
def test_inference_model_allocates_what_the_wrapper_allocates(batch, dim, length, nstate):
    from vimbench.kernels import triton_scan

    fwd, _, z = _meta_layer(batch, dim, length, nstate)
    u, delta, A, B, C, D, bias = fwd
    real_allocs, model_allocs = _wrapper_and_model_allocations(
        lambda: triton_scan.triton_scan_forward(u, delta, A, B, C, D, z, bias, True, False, False),
        lambda: scan_gpu_models.triton_forward(u, delta, A, B, C, D, z, bias, False), (fwd, z))
    assert model_allocs == real_allocs


@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), CONFORMANCE)
def test_fused_inference_model_allocates_what_the_wrapper_allocates(batch, dim, length, nstate):
    """The fused op not saving: no tile states (an empty stand-in), chunk-parallel only its span states."""
    from vimbench.kernels import triton_bidirectional as bidir

    fwd, bwd, z = _meta_layer(batch, dim, length, nstate)
    real_allocs, model_allocs = _wrapper_and_model_allocations(
        lambda: bidir._launch_bidirectional(*fwd, *bwd, z, True, False),
        lambda: scan_gpu_models.fused_forward(fwd, bwd, z, False), (fwd, bwd, z))
    assert model_allocs == real_allocs
