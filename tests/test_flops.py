"""Scan-aware FLOP counts: FlopCounterMode totals against hand counts written from the architectures.

Conventions checked here (see vimbench/profile/flops.py): 2 FLOPs per multiply-accumulate; biases, norms,
softmax, SiLU, softplus, the gate and residual adds are elementwise and not counted; the scan is 9*B*L*E*N
per direction; convolution MACs on zero padding are not counted; SDPA counts QK^T and AV like the math path.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vimbench.models import create_model, get_spec
from vimbench.profile.flops import (
    conv_flops_without_padding,
    count_flops,
    count_model_flops,
    model_flop_count,
    model_gflops,
    scan_flops,
)

NUM_CLASSES = 1000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def vim_hand_count(name: str, img_size: int, batch: int) -> dict[str, int]:
    """Vim: patch-embed conv, then per layer in_proj, 2x (x_proj, dt_proj, conv1d, scan), out_proj; head."""
    spec = get_spec(name)
    D, depth, N, K, patch = spec.embed_dim, 24, 16, 4, 16
    E, R = 2 * D, math.ceil(D / 16)
    L = spec.tokens(img_size)  # patches + the middle cls token
    M = L - 1
    B = batch
    in_proj = 2 * B * L * D * 2 * E
    x_proj = 2 * (2 * B * L * E * (R + 2 * N))
    dt_proj = 2 * (2 * B * L * R * E)
    conv1d = 2 * (2 * B * L * E * K)
    scan = 2 * (9 * B * L * E * N)
    out_proj = 2 * B * L * E * D
    patch_embed = 2 * B * M * D * (3 * patch * patch)
    head = 2 * B * D * NUM_CLASSES  # on the cls token only
    linear = depth * (in_proj + x_proj + dt_proj + out_proj) + patch_embed + head
    return {"scan": depth * scan, "conv1d": depth * conv1d, "linear/matmul": linear, "attention": 0,
            "total": linear + depth * (scan + conv1d)}


def deit_hand_count(name: str, img_size: int, batch: int) -> dict[str, int]:
    """DeiT: patch-embed conv, then per block qkv, QK^T, AV, proj, fc1, fc2; head on the cls token."""
    spec = get_spec(name)
    D, depth, patch = spec.embed_dim, 12, 16
    L = spec.tokens(img_size)
    M = L - 1
    B = batch
    qkv = 2 * B * L * D * 3 * D
    qk = 2 * B * L * L * D  # summed over heads: H * (2 * L * L * head_dim)
    av = 2 * B * L * L * D
    proj = 2 * B * L * D * D
    mlp = 2 * B * L * D * 4 * D + 2 * B * L * 4 * D * D
    patch_embed = 2 * B * M * D * (3 * patch * patch)
    head = 2 * B * D * NUM_CLASSES
    linear = depth * (qkv + proj + mlp) + patch_embed + head
    attention = depth * (qk + av)
    return {"scan": 0, "conv1d": 0, "linear/matmul": linear, "attention": attention,
            "total": linear + attention}


def hand_count(name: str, img_size: int, batch: int) -> dict[str, int]:
    fn = vim_hand_count if get_spec(name).family == "vim" else deit_hand_count
    return fn(name, img_size, batch)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("img_size", [224, 512])
@pytest.mark.parametrize("name", ["vim-t", "deit-t"])
def test_flop_counter_matches_hand_count(name, img_size, batch):
    counted = model_flop_count(name, img_size, batch)
    expected = hand_count(name, img_size, batch)
    assert counted.total == expected["total"]
    for category in ("scan", "conv1d", "linear/matmul", "attention"):
        assert counted.by_category[category] == expected[category], category
    assert counted.by_category["norm"] == counted.by_category["other"] == 0
    assert sum(counted.by_category.values()) == counted.total


def test_known_totals_and_stride8():
    # DeiT-Ti at 224 is quoted as 1.3 GMACs: 2.51 GFLOPs here; vim-t 3.11 GFLOPs with the scan
    assert model_flop_count("deit-t", 224).total == 2_507_366_400
    assert model_flop_count("vim-t", 224).total == 3_108_314_112
    assert model_flop_count("vim-t-stride8", 224).total == hand_count("vim-t-stride8", 224, 1)["total"]
    assert model_gflops("vim-t", 224) == pytest.approx(3.108314112)


def test_scan_formula_is_nine_per_state_element():
    assert scan_flops(2, 197, 384, 16) == 9 * 2 * 197 * 384 * 16
    counted = model_flop_count("vim-t", 224)
    assert counted.by_op["vimbench.selective_scan"] == 48 * scan_flops(1, 197, 384, 16)


def test_sdpa_and_math_attention_count_the_same():
    sdpa = model_flop_count("deit-t", 384, attn_backend="sdpa")
    math_path = model_flop_count("deit-t", 384, attn_backend="math")
    assert sdpa.total == math_path.total
    assert sdpa.by_category == math_path.by_category


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, padding, dilation, groups",
    [
        ((2, 6, 19), (6, 1, 4), 1, 3, 1, 6),  # Vim's causal depthwise conv
        ((1, 4, 10), (8, 2, 3), 2, 2, 2, 2),
        ((1, 3, 32, 32), (5, 3, 16, 16), 16, 0, 1, 1),  # patch embedding: no padding
        ((2, 2, 9, 7), (3, 2, 3, 2), (2, 1), (1, 2), (1, 2), 1),
    ],
)
def test_conv_formula_counts_only_real_inputs(x_shape, w_shape, stride, padding, dilation, groups):
    """Brute force: convolving all-ones gives, per output, the number of taps that hit real input."""
    dims = len(x_shape) - 2
    conv = F.conv1d if dims == 1 else F.conv2d
    taps = conv(torch.ones(1, 1, *x_shape[2:]), torch.ones(1, 1, *w_shape[2:]), stride=stride,
                padding=padding, dilation=dilation)
    expected = 2 * x_shape[0] * w_shape[0] * w_shape[1] * int(taps.sum())
    out = conv(torch.ones(x_shape), torch.ones(w_shape), stride=stride, padding=padding, dilation=dilation,
               groups=groups)
    assert conv_flops_without_padding(x_shape, w_shape, out.shape, stride, padding, dilation) == expected


def test_count_is_independent_of_the_registered_scan_backend(monkeypatch):
    """A fused bidirectional backend is never used for counting, and the model keeps its backend."""
    from vimbench.kernels import bidirectional, registry

    def fused_must_not_run(*args, **kwargs):
        raise AssertionError("FLOPs must be counted with two reference selective_scan calls")

    fake = registry.ScanBackend("flops-test-fused", "test only", lambda *a: None, None, lambda d: True, 5000)
    monkeypatch.setitem(registry._BACKENDS, fake.name, fake)
    monkeypatch.setitem(bidirectional._FUSED, fake.name, (fused_must_not_run, lambda d: True))
    with torch.device("meta"):
        model = create_model("vim-t", img_size=224, scan_backend=fake.name)
    assert count_flops(model, 224)["total"] == hand_count("vim-t", 224, 1)["total"]
    assert model.scan_backend == fake.name


def test_real_model_is_counted_on_a_meta_copy_in_any_dtype():
    with torch.device("meta"):
        model = create_model("vim-t", img_size=64)
    model = model.to_empty(device="cpu").to(torch.bfloat16)  # real storage, no costly init
    for p in model.parameters():
        p.data.fill_(0.5)
    before = {k: v.clone() for k, v in list(model.state_dict().items())[:4]}
    counted = count_model_flops(model, 64, 2)
    assert counted.total == hand_count("vim-t", 64, 2)["total"]
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_models_command_reports_the_same_gflops(cli):
    result = cli(["models", "--res", "224", "--format", "json"])
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in json.loads(result.out)}
    for name in ("vim-t", "deit-t"):
        assert rows[name]["gflops"] == round(hand_count(name, 224, 1)["total"] / 1e9, 3)
