"""The GPU scan kernel models of `vimbench memory`: saved tile states, hand-counted against the tracker."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch._subclasses import FakeTensorMode

from vimbench.memory import MemoryQuery
from vimbench.memory.predictor import predict, replay, trace
from vimbench.memory.scan_standin import TRACE_BACKEND, trace_backend
from vimbench.memory.tracker import StorageTracker
from vimbench.testing.scan_layouts import tile_state_bytes, vim_scan_direction

F32 = 4
# (kernel model, tile-state tensors per layer in training: one fused (2, ...) tensor or one per direction)
SAVING = [("triton-fused", 1), ("triton", 2), ("cuda", 2)]
# (batch, E, L, N): small, one Vim-S layer at 224 px batch 128 (E = 768, L = 14 * 14 + 1, N = 16), then a
# chunk-parallel one (batch 1, 7 tiles) and one past 16 states (state groups); sizes unlike any other tensor's
SHAPES = [(2, 8, 40, 4), (1, 32, 50, 16), (128, 768, 197, 16), (1, 32, 100, 16), (2, 128, 40, 32)]


def _run_layer(kernel: str, batch: int, dim: int, length: int, nstate: int, train: bool):
    """One bidirectional scan with Vim's layouts (B/C strided views of x_dbl) on fake tensors."""
    from vimbench.kernels import bidirectional_selective_scan

    with FakeTensorMode(), trace_backend(kernel):
        leaf = torch.randn(batch, dim, length, requires_grad=train)
        a_log = torch.randn(dim, nstate, requires_grad=train)
        d_vec = torch.randn(dim, requires_grad=train)
        tracker = StorageTracker()
        tracker.register([leaf, a_log, d_vec], "weights")
        grad_ctx = torch.enable_grad() if train else torch.no_grad()
        with grad_ctx, tracker:
            z = leaf * 2.0

            fwd, bwd = (vim_scan_direction(leaf, a_log, nstate, d_vec) for _ in (0, 1))
            y = bidirectional_selective_scan(fwd, bwd, z, backend=TRACE_BACKEND)
            after_forward = dict(tracker.log.alive())
            if train:
                y.sum().backward()
                assert leaf.grad.shape == leaf.shape and a_log.grad.shape == a_log.shape
                assert d_vec.grad.shape == d_vec.shape
            del y, z
    return tracker, after_forward


@pytest.mark.parametrize(("kernel", "tensors"), SAVING)
@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), SHAPES)
def test_training_forward_keeps_tile_states_until_backward(kernel, tensors, batch, dim, length, nstate):
    tiles = tile_state_bytes(batch, dim, length, nstate)
    tracker, after_forward = _run_layer(kernel, batch, dim, length, nstate, train=True)
    _, baseline = _run_layer("mamba_ssm", batch, dim, length, nstate, train=True)  # keeps no states
    kept = sorted(after_forward.values())
    assert sum(kept) - sum(baseline.values()) == 2 * tiles  # both directions, nothing else extra
    assert kept.count(2 * tiles // tensors) >= tensors
    # all of them are freed by the end of the backward
    tile_handles = [h for h, size in after_forward.items() if size == 2 * tiles // tensors]
    assert not set(tile_handles) & set(tracker.log.alive())


def test_vim_s_layer_tile_states_are_82_mb_per_direction():
    assert tile_state_bytes(128, 768, 197, 16) == 128 * 13 * 768 * 16 * 4 == 81_788_928


@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), SHAPES[:2])
def test_inference_cuda_writes_tile_states_but_does_not_keep_them(batch, dim, length, nstate):
    """Our CUDA forward writes its tile states whether or not it saves them; inference frees them at once."""
    tiles = tile_state_bytes(batch, dim, length, nstate)
    tracker, after_forward = _run_layer("cuda", batch, dim, length, nstate, train=False)
    _, baseline = _run_layer("mamba_ssm", batch, dim, length, nstate, train=False)
    assert sum(after_forward.values()) == sum(baseline.values())
    written = [h for h, size in tracker.log.sizes.items() if size == tiles]
    assert len(written) >= 2  # one per direction ...
    assert not set(written) & set(after_forward)  # ... and they die with the call


@pytest.mark.parametrize("kernel", ["triton-fused", "triton"])
@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), [*SHAPES[:2], SHAPES[4]])
def test_inference_triton_allocates_no_tile_states(kernel, batch, dim, length, nstate):
    """Issue 13's spec: a Triton forward not asked to save allocates no tile-state tensor (B*E fills the GPU:
    no span carries either)."""
    tiles = tile_state_bytes(batch, dim, length, nstate)
    tracker, after_forward = _run_layer(kernel, batch, dim, length, nstate, train=False)
    _, baseline = _run_layer("mamba_ssm", batch, dim, length, nstate, train=False)
    assert sum(after_forward.values()) == sum(baseline.values())
    assert not {tiles, 2 * tiles} & set(tracker.log.sizes.values())


@pytest.mark.parametrize(("kernel", "carries_per_call"), [("triton-fused", 2), ("triton", 1)])
def test_inference_triton_chunk_parallel_allocates_span_carries_only(kernel, carries_per_call):
    """Chunk-parallel (batch 1, L = 100: 7 tiles in 4 spans of 2), not saving: one fp32 carry per span per
    direction, (B, 4, E, 16) per direction or (2, B, 4, E, 16) fused, instead of one state per tile."""
    batch, dim, length, nstate = 1, 32, 100, 16
    tiles = tile_state_bytes(batch, dim, length, nstate)
    carries = batch * 4 * dim * 16 * F32
    tracker, after_forward = _run_layer(kernel, batch, dim, length, nstate, train=False)
    _, baseline = _run_layer("mamba_ssm", batch, dim, length, nstate, train=False)
    assert sum(after_forward.values()) == sum(baseline.values())
    sizes = list(tracker.log.sizes.values())
    assert not {tiles, 2 * tiles} & set(sizes)
    assert sizes.count(carries_per_call * carries) == 2 // carries_per_call


def test_cuda_tile_states_are_unpadded():
    """Our CUDA kernel saves (B, tiles, E, N) with N as is; Triton pads N to a power of 2."""
    batch, dim, length, nstate = 2, 32, 40, 12
    _, cuda_fwd = _run_layer("cuda", batch, dim, length, nstate, train=True)
    _, triton_fwd = _run_layer("triton", batch, dim, length, nstate, train=True)
    tiles = batch * 3 * dim * F32
    assert list(cuda_fwd.values()).count(tiles * nstate) == 2
    assert list(triton_fwd.values()).count(tiles * 16) == 2


def test_train_prediction_counts_every_layers_tile_states(monkeypatch):
    """Vim-Ti at 224 px, batch 16, fp32 train: at the end of the forward every one of the 24 layers holds
    both directions' tile states (2, 16, ceil(197/16), 384, 16) fp32; a forward that does not save them
    (the wrapper re-runs it in the backward) predicts a peak lower by 23 layers' worth."""
    from vimbench.memory import scan_gpu_models
    from vimbench.models import get_spec

    q = MemoryQuery("vim-t", 224, 16, mode="train", scan_kernel="triton-fused")
    length, dim, depth = get_spec("vim-t").tokens(224), 384, 24
    per_layer = 2 * tile_state_bytes(16, dim, length, 16)
    log, _ = trace(q)
    alive = peak_count = 0
    tile_handles = {h for h, size in log.sizes.items() if size == per_layer}
    for kind, handle in log.events:
        if handle in tile_handles:
            alive += 1 if kind == "alloc" else -1
            peak_count = max(peak_count, alive)
    assert peak_count == depth
    with_tiles = replay(log)["peak_bytes"]
    original = scan_gpu_models.fused_forward
    monkeypatch.setattr(scan_gpu_models, "fused_forward", lambda f, b, z, save: original(f, b, z, False))
    without = replay(trace(q)[0])["peak_bytes"]
    # the peak sits in the last layer's backward, where the variant re-creates that layer's tile states
    assert with_tiles - without == (depth - 1) * per_layer == 23 * 10_223_616


def _peak_alive(log, size: int) -> int:
    alive = peak_count = 0
    for kind, handle in log.events:
        if log.sizes[handle] == size:
            alive += 1 if kind == "alloc" else -1
            peak_count = max(peak_count, alive)
    return peak_count


def test_infer_prediction_tile_states_none_for_triton_one_direction_at_most_for_cuda():
    """Vim-Ti at 96 px, batch 2 (L = 37, 3 tiles): the fused Triton forward allocates no tile states in
    inference; our CUDA one holds one direction's (2, 3, 384, 16) fp32 at a time."""
    q = MemoryQuery("vim-t", 96, 2, scan_kernel="triton-fused")
    per_direction = tile_state_bytes(2, 384, 37, 16)
    sizes = list(trace(q)[0].sizes.values())
    others = list(trace(dataclasses.replace(q, scan_kernel="mamba_ssm"))[0].sizes.values())  # no tile states
    for size in (per_direction, 2 * per_direction):
        assert sizes.count(size) == others.count(size)  # a weight of that size exists in both
    cuda_log, _ = trace(dataclasses.replace(q, scan_kernel="cuda"))
    assert _peak_alive(cuda_log, per_direction) == 1
    assert predict(dataclasses.replace(q, scan_kernel="cuda")).peak_bytes > 0


@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), [(2, 8, 40, 4), (1, 32, 2100, 16)])
def test_mamba_ssm_chunk_states_in_forward_and_again_in_backward(batch, dim, length, nstate):
    """Upstream's x (B, E, ceil(L/2048), 2N) fp32: once per direction in the forward (freed inside the op),
    once more per direction when the backward re-runs the forward; nothing is kept in between."""
    x_bytes = batch * dim * -(-length // 2048) * 2 * nstate * F32
    tracker, after_forward = _run_layer("mamba_ssm", batch, dim, length, nstate, train=True)
    assert list(tracker.log.sizes.values()).count(x_bytes) == 4
    assert x_bytes not in after_forward.values()
