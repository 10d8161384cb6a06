"""Our CUDA scan's model, allocation by allocation, hand-counted against kernels/cuda_scan.py and
csrc/selective_scan_cuda_binding.cpp: fp32 partials everywhere a sum runs (dA per span, dB/dC per 32-row
block, dD, d(delta_bias), and past 16 states out, du, ddelta, dz per state group), the backward's slab."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses import FakeTensorMode

from vimbench.memory import scan_gpu_models
from vimbench.memory.tracker import allocations_of
from vimbench.testing.scan_layouts import vim_scan_direction

F32 = 4

# (batch, E, L, N, hand-counted): tiles = ceil(L / 16); n_par spans (the Triton rule: chunk-parallel only at
# batch 1 here); groups = ceil(N / 16); slots = dB/dC partial slots for E channels per B/C group (Vim has
# one group): (32 - gcd(E, 32) + E - 1) // 32 + 1
CASES = [
    dict(batch=2, dim=8, length=40, nstate=4, tiles=3, n_par=1, groups=1, slots=1),  # gcd 8: 1 slot
    dict(batch=1, dim=32, length=100, nstate=16, tiles=7, n_par=4, groups=1, slots=1),  # chunk-parallel
    dict(batch=2, dim=128, length=40, nstate=32, tiles=3, n_par=1, groups=2, slots=4),
    dict(batch=2, dim=128, length=40, nstate=64, tiles=3, n_par=1, groups=4, slots=4),
    dict(batch=1, dim=128, length=100, nstate=32, tiles=7, n_par=4, groups=2, slots=4),  # both
    dict(batch=128, dim=768, length=197, nstate=16, tiles=13, n_par=1, groups=1, slots=24),  # Vim-S layer
]


def _direction(c: dict):
    leaf = torch.randn(c["batch"], c["dim"], c["length"])
    d = vim_scan_direction(leaf, torch.randn(c["dim"], c["nstate"]), c["nstate"], torch.randn(c["dim"]))
    return (d.u, d.delta, d.A, d.B, d.C, d.D, leaf * 2.0, d.delta_bias)  # z: the gate


def _forward_by_hand(c: dict) -> list[int]:
    """The binding's `fwd`: out, last state (B, E, N), tile states (B, tiles, E, N), span sums of dt
    (B, n_par, E) when chunk-parallel, per state group output partials (groups, B, E, L) past 16 states."""
    b, e, length, n, par, g = (c[k] for k in ("batch", "dim", "length", "nstate", "n_par", "groups"))
    plane = b * e * length * F32
    return [plane, b * e * n * F32, b * c["tiles"] * e * n * F32] + (
        [b * par * e * F32] if par > 1 else []) + ([g * plane] if g > 1 else [])  # fmt: skip


def _backward_by_hand(c: dict) -> list[int]:
    """The binding's `bwd` (with z, D, delta_bias): du, ddelta, dz (past 16 states fp32 (groups, B, E, L)
    partials); dA partials (B, n_par, E, N); dB, dC partials (slots, B, 1, N, L); dD partials (B, n_par, E);
    d(delta_bias) partials (groups, B, n_par, E); the slab B * E * n_par * groups * 16 * 2 * 16 floats;
    chunk-parallel span carries (B, n_par, E, N) and span sums of dt; then the sums: du, ddelta, dz past 16
    states, dA (E, N), dB and dC (B, 1, N, L; slot 0's view when one slot), dD (E), d(delta_bias) (E)."""
    b, e, length, n = c["batch"], c["dim"], c["length"], c["nstate"]
    par, g, s = c["n_par"], c["groups"], c["slots"]
    plane = b * e * length * F32
    bc = b * n * length * F32
    allocs = [g * plane] * 3 + [b * par * e * n * F32, s * bc, s * bc, b * par * e * F32,
                                g * b * par * e * F32, b * e * par * g * 16 * 2 * 16 * F32]  # fmt: skip
    allocs += [b * par * e * n * F32, b * par * e * F32] if par > 1 else []
    allocs += [plane] * 3 if g > 1 else []
    return allocs + [e * n * F32] + ([bc, bc] if s > 1 else []) + [e * F32, e * F32]


@pytest.mark.parametrize("c", CASES)
def test_cuda_forward_allocates_by_hand(c):
    with FakeTensorMode():
        args = _direction(c)
        allocs, alive, (_out, saved) = allocations_of(scan_gpu_models.cuda_forward, *args, True)
        assert tuple(saved.shape) == (c["batch"], c["tiles"], c["dim"], c["nstate"])
    expected = _forward_by_hand(c)
    assert allocs == expected
    assert alive == sorted(expected[::2][:2])  # out and the tile states; the partials die with the call


@pytest.mark.parametrize("c", CASES)
def test_cuda_backward_allocates_by_hand(c):
    with FakeTensorMode():
        args = _direction(c)
        _, saved = scan_gpu_models.cuda_forward(*args, True)
        dout = torch.empty(args[0].shape)
        allocs, alive, grads = allocations_of(scan_gpu_models.cuda_backward, dout, *args, saved)
        assert [tuple(g.shape) for g in grads] == [tuple(x.shape) for x in args]
    expected = _backward_by_hand(c)
    assert allocs == expected
    b, e, length, n, g = (c[k] for k in ("batch", "dim", "length", "nstate", "groups"))
    plane, bc = b * e * length * F32, b * n * length * F32
    assert alive == sorted([plane] * 3 + [e * n * F32, bc, bc, e * F32, e * F32])  # the grads only
    assert len(expected) == 9 + 2 * (c["n_par"] > 1) + 3 * (g > 1) + 3 + 2 * (c["slots"] > 1)


def test_vim_s_backward_partials_by_hand():
    """Vim-S layer at 224 px, batch 128, fp32, one direction: 24 dB/dC slots of 128 x 16 x 197 fp32 =
    38.7 MB each, dA partials 128 x 768 x 16 x 4 B = 6.3 MB, dD and d(delta_bias) 0.4 MB each, slab
    128 x 768 x 16 x 2 x 16 floats = 192 MiB (unchanged at 16 states)."""
    expected = _backward_by_hand(CASES[-1])
    assert scan_gpu_models.cuda_bc_slots(768) == 24
    assert expected[4] == expected[5] == 24 * 128 * 16 * 197 * 4 == 38_731_776
    assert expected[3] == 128 * 768 * 16 * 4 == 6_291_456
    assert expected[6] == expected[7] == 128 * 768 * 4 == 393_216
    assert expected[8] == 128 * 768 * 16 * 2 * 16 * 4 == 201_326_592


@pytest.mark.parametrize(("channels", "slots"), [(1, 1), (8, 1), (32, 1), (48, 2), (64, 2), (96, 3),
                                                 (100, 4), (768, 24)])
def test_bc_partial_slots_follow_the_header(channels, slots):
    """`bc_partial_slots`: the most 32-row blocks a run of `channels` rows can touch when it starts at a
    multiple of gcd(channels, 32) (48 rows from row 16: blocks 0 and 1; 100 rows from row 28: blocks 0..3)."""
    assert scan_gpu_models.cuda_bc_slots(channels) == slots


@pytest.mark.parametrize(("nstate", "floats_per_row"), [(4, 512), (16, 512), (17, 1024), (64, 2048),
                                                        (256, 8192)])
def test_scratch_width_is_16_per_state_group(nstate, floats_per_row):
    """The slab is 16 * ceil(N / 16) states wide (the old model's kMaxDState = 256 past 16 states was not)."""
    assert scan_gpu_models.cuda_scratch_floats(1, 1, nstate, 1) == floats_per_row
    assert scan_gpu_models.cuda_scratch_floats(3, 5, nstate, 7) == 3 * 5 * 7 * floats_per_row
