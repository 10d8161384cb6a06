"""vimbench.memory: the allocator model, hand counts of traced tensors, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch._subclasses import FakeTensorMode

from vimbench.memory import CachingAllocatorModel, MemoryQuery, parse_memory_size, predict, round_size
from vimbench.memory.allocator import LARGE_BUFFER, SMALL_BUFFER, segment_size
from vimbench.memory.predictor import no_truncated_normal_init, replay, trace
from vimbench.memory.scan_standin import KERNEL_MODELS, TRACE_BACKEND, trace_backend
from vimbench.memory.tracker import StorageTracker
from vimbench.testing.scan_layouts import tile_state_bytes, vim_scan_direction

MIB = 2**20


# ------------------------------------------------------------------------------------- allocator model


@pytest.mark.parametrize(
    ("nbytes", "rounded"), [(1, 512), (511, 512), (512, 512), (513, 1024), (4 * MIB + 1, 4 * MIB + 512)]
)
def test_round_size_is_512_byte_blocks(nbytes, rounded):
    assert round_size(nbytes) == rounded


@pytest.mark.parametrize(
    ("nbytes", "segment"),
    [(512, SMALL_BUFFER), (MIB, SMALL_BUFFER), (MIB + 512, LARGE_BUFFER), (10 * MIB - 512, LARGE_BUFFER),
     (10 * MIB, 10 * MIB), (11 * MIB, 12 * MIB), (31 * MIB + 1, 32 * MIB)],
)  # fmt: skip
def test_segment_sizes(nbytes, segment):
    assert segment_size(nbytes) == segment


def test_small_blocks_share_a_2mib_segment_and_merge_on_free():
    alloc = CachingAllocatorModel()
    alloc.malloc("a", 600_000)
    alloc.malloc("b", 600_000)
    assert alloc.reserved == SMALL_BUFFER  # both carved from one small segment
    assert alloc.allocated == 2 * round_size(600_000)
    alloc.free("a")
    alloc.free("b")
    alloc.malloc("c", MIB)  # the merged free space is reused: no new segment
    assert alloc.reserved == SMALL_BUFFER
    assert alloc.peak_allocated == 2 * round_size(600_000)


def test_large_block_split_rule_and_reuse():
    alloc = CachingAllocatorModel()
    alloc.malloc("a", 5 * MIB)  # a 20 MiB segment, split: 15 MiB stays cached
    assert (alloc.reserved, alloc.allocated) == (LARGE_BUFFER, 5 * MIB)
    alloc.malloc("b", 14 * MIB + 512)  # fits the cached 15 MiB block; the rest (< 1 MiB) is not split off
    assert alloc.reserved == LARGE_BUFFER
    assert alloc.allocated == 20 * MIB
    alloc.malloc("c", 30 * MIB)  # nothing cached fits: a new 30 MiB segment
    assert alloc.reserved == LARGE_BUFFER + 30 * MIB
    alloc.free("c")
    alloc.malloc("d", 12 * MIB)  # best fit: the 30 MiB block, split
    assert alloc.reserved == LARGE_BUFFER + 30 * MIB
    assert alloc.peak_reserved == alloc.reserved


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [("80GiB", 80 * 2**30), ("80GB", 80 * 10**9), ("40960MiB", 40 * 2**30), ("80", 80 * 2**30),
     ("1.5 GiB", int(1.5 * 2**30))],
)  # fmt: skip
def test_parse_memory_size(text, nbytes):
    assert parse_memory_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "GiB", "80XB", "-1GiB", "0"])
def test_parse_memory_size_rejects(text):
    with pytest.raises(ValueError):
        parse_memory_size(text)


# ------------------------------------------------------------------------------------- hand counts


def _live_sizes(tracker: StorageTracker) -> list[int]:
    alive = tracker.log.alive()
    return [size for handle, size in alive.items() if tracker.log.category[handle] == "activations"]


@pytest.mark.parametrize(("img_size", "batch"), [(64, 1), (128, 3)])
def test_math_attention_matrix_bytes_match_hand_count(img_size, batch):
    """DeiT-Ti, math attention: each block makes QK^T and its softmax, B*heads*L^2*4 bytes each (fp32)."""
    from vimbench.models import create_model, get_spec

    heads, depth = 3, 12
    length = get_spec("deit-t").tokens(img_size)
    attn_bytes = batch * heads * length * length * 4
    with FakeTensorMode(), no_truncated_normal_init():
        model = create_model("deit-t", img_size=img_size, attn_backend="math")
        x = torch.randn(batch, 3, img_size, img_size)
        tracker = StorageTracker()
        with torch.no_grad(), tracker:
            model(x)
    sizes = [tracker.log.sizes[h] for kind, h in tracker.log.events if kind == "alloc"]
    assert sizes.count(attn_bytes) == 2 * depth
    # training: autograd keeps each block's softmax output (for softmax and for attn @ v), not the scores
    with FakeTensorMode(), no_truncated_normal_init():
        model = create_model("deit-t", img_size=img_size, attn_backend="math").train()
        x = torch.randn(batch, 3, img_size, img_size)
        tracker = StorageTracker()
        with tracker:
            out = model(x)
        assert _live_sizes(tracker).count(attn_bytes) == depth
        del out


def test_sdpa_attention_keeps_no_length_squared_matrix():
    from vimbench.models import create_model, get_spec

    length = get_spec("deit-t").tokens(512)
    with FakeTensorMode(), no_truncated_normal_init():
        model = create_model("deit-t", img_size=512, attn_backend="sdpa")
        tracker = StorageTracker()
        with torch.no_grad(), tracker:
            model(torch.randn(1, 3, 512, 512))
    assert max(tracker.log.sizes.values()) < 3 * length * length * 4 / 4


@pytest.mark.parametrize("kernel", KERNEL_MODELS)
@pytest.mark.parametrize(("batch", "dim", "length", "nstate"), [(2, 8, 16, 4), (1, 32, 40, 16)])
def test_scan_keeps_exactly_its_saved_inputs(kernel, batch, dim, length, nstate):
    """After a training forward, what the scan keeps alive is what `vimbench::selective_scan` saves:
    u, delta, z (B, E, L) and the x_dbl rows B and C are views of, per direction, plus the output and,
    for the kernels that save them, the tile start states."""
    from vimbench.kernels import bidirectional_selective_scan

    f32 = 4
    with FakeTensorMode(), trace_backend(kernel):
        leaf = torch.randn(batch, dim, length, requires_grad=True)
        a_log = torch.randn(dim, nstate, requires_grad=True)
        tracker = StorageTracker()
        tracker.register([leaf, a_log], "weights")
        with tracker:
            z = leaf * 2.0

            fwd, bwd = (vim_scan_direction(leaf, a_log, nstate) for _ in (0, 1))
            y = bidirectional_selective_scan(fwd, bwd, z, backend=TRACE_BACKEND)
        live = sum(_live_sizes(tracker))
        per_direction = 2 * batch * dim * length * f32 + batch * length * 2 * nstate * f32  # u, delta, x_dbl
        output = batch * dim * length * f32
        # a reshape copy per direction (the transpose) is freed; z is shared by both directions
        # the kernels that hand their forward's tile start states to the backward keep them too:
        # B * ceil(L/16) * E * N fp32 per direction (N here a power of 2, Triton's padding changes nothing)
        saves = kernel in ("triton", "triton-fused", "cuda")
        tiles = tile_state_bytes(batch, dim, length, nstate) if saves else 0
        expected = 2 * per_direction + batch * dim * length * f32 + output + 2 * tiles
        assert live == expected
        assert y.shape == (batch, dim, length)
        y.sum().backward()
        assert leaf.grad.shape == leaf.shape and a_log.grad.shape == a_log.shape


def test_trace_backend_is_removed_afterwards():
    from vimbench.kernels import all_backends, fused_bidirectional_backends

    with trace_backend("cuda"):
        assert TRACE_BACKEND in {b.name for b in all_backends()}
    assert TRACE_BACKEND not in {b.name for b in all_backends()}
    assert TRACE_BACKEND not in fused_bidirectional_backends("cpu")


# ----------------------------------------------------------------------------------------- predictor


def test_prediction_categories_and_scaling():
    small = predict(MemoryQuery("vim-t", 224, 1))
    big = predict(MemoryQuery("vim-t", 224, 4))
    weights = small.params * 4
    assert small.by_category["weights"] == pytest.approx(weights, rel=0.01)
    assert big.by_category["inputs"] == 4 * 3 * 224 * 224 * 4
    assert big.by_category["activations"] > 3 * small.by_category["activations"]
    for p in (small, big):
        assert p.peak_bytes <= p.allocated_peak_bytes <= p.reserved_peak_bytes


def test_train_prediction_counts_optimizer_state():
    p = predict(MemoryQuery("deit-t", 64, 2, mode="train"))
    # AdamW: exp_avg and exp_avg_sq, one fp32 copy of the weights each
    assert p.by_category["optimizer"] == pytest.approx(2 * p.params * 4, rel=0.01)


def test_upstream_variant_makes_a_flipped_copy_of_xz_per_block():
    """hustvl/Vim runs the backward direction on xz.flip(-1): one more (B, 2E, L) tensor per block."""
    from vimbench.models import get_spec

    batch, length, inner = 2, get_spec("vim-t").tokens(128), 2 * 192
    xz_bytes = batch * 2 * inner * length * 4

    def count(variant: str) -> int:
        log, _ = trace(MemoryQuery("vim-t", 128, batch, vim_variant=variant))
        return [log.sizes[h] for kind, h in log.events if kind == "alloc"].count(xz_bytes)

    assert count("ours") == 24
    assert count("upstream") == 48


def test_replay_of_empty_log_is_zero():
    assert replay(StorageTracker().log)["peak_bytes"] == 0


# ----------------------------------------------------------------------------------------------- CLI


def test_cli_json_rows(cli):
    result = cli(["memory", "--models", "deit-t", "--res", "224,256", "-b", "2", "--format", "json",
                  "--device-memory", "1GiB"])  # fmt: skip
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [r["img_size"] for r in rows] == [224, 256]
    for r in rows:
        assert r["nvml_mib"] == pytest.approx(r["reserved_mib"] + r["overhead_mib"])
        assert r["fits"] is (r["nvml_mib"] <= 1024)
    assert rows[1]["allocated_mib"] > rows[0]["allocated_mib"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--models", "nope"], "unknown model"), (["--res", "500"], "not a multiple"),
     (["--device-memory", "lots"], "malformed memory size"), (["--dtype", "fp8"], "unknown dtype"),
     (["--mode", "infer", "--vim-variant", "upstream", "--mode", "train"], "inference only"),
     (["-b", "0"], "batch size must be positive"), (["--attn-backend", "flash"], "unknown attention")],
)  # fmt: skip
def test_cli_bad_input_is_one_line_exit_2(cli, args, message):
    result = cli(["memory", *args])
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err
