"""The timm family (`timm:NAME`) and DeiT == timm DeiT; skipped without timm (the `timm` extra).

CI runs these in a venv with torch 2.14.1 + torchvision 0.29.1 + timm (`pytest -m timm`).
"""

from __future__ import annotations

import pytest
import torch

from vimbench import create_model, save_checkpoint
from vimbench.models import expand_model_patterns, get_spec
from vimbench.models.timm_family import probe, timm_available

pytestmark = [
    pytest.mark.timm,
    pytest.mark.skipif(not timm_available(), reason="timm is not installed (pip install 'vimbench[timm]')"),
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def deit_weights(tmp_path_factory):
    """deit-t and deit-s at 224 with perturbed random weights, saved in the official layout."""
    paths = {}
    for name in ("deit-t", "deit-s"):
        torch.manual_seed(0)
        model = create_model(name)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        paths[name] = save_checkpoint(model, tmp_path_factory.mktemp(name) / "w.pth")
    return paths


@pytest.mark.parametrize("name, timm_name", [("deit-t", "deit_tiny_patch16_224"),
                                             ("deit-s", "deit_small_patch16_224")])
@pytest.mark.parametrize("img_size", [224, 384])
def test_deit_equals_timm_deit_with_the_same_weights(deit_weights, one_torch_thread, name, timm_name,
                                                     img_size):
    path = deit_weights[name]
    ours = create_model(name, img_size=img_size, checkpoint=path).eval()
    theirs = create_model(f"timm:{timm_name}", img_size=img_size, checkpoint=path).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, img_size, img_size)
    with torch.no_grad():
        assert _rel(ours(x), theirs(x)) <= 1e-6
    assert torch.equal(ours.pos_embed, theirs.pos_embed)


def test_deit_resize_is_the_option_that_differs_from_timm(deit_weights, one_torch_thread):
    path = deit_weights["deit-t"]
    ours = create_model("deit-t", img_size=384, checkpoint=path, pos_embed_resize="deit").eval()
    theirs = create_model("timm:deit_tiny_patch16_224", img_size=384, checkpoint=path).eval()
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        assert _rel(ours(x), theirs(x)) > 1e-5  # 1.8e-4 on these weights
    assert (ours.pos_embed - theirs.pos_embed).norm() / theirs.pos_embed.norm() > 0.05


@pytest.mark.parametrize("name, img_size, tokens", [
    ("timm:vit_small_patch16_224", 224, 197),
    ("timm:vit_small_patch16_224", 384, 577),
    ("timm:convnext_tiny", 224, 56 * 56),  # positions of the finest feature map (stride 4)
])
def test_tokens_the_timm_way(name, img_size, tokens):
    assert get_spec(name).tokens(img_size) == tokens


def test_a_resolution_the_model_cannot_run_is_a_reason_not_a_crash():
    spec = get_spec("timm:crossvit_tiny_240")
    reason = spec.contract.unsupported_reason(spec, 256)
    assert reason is not None and "cannot run 256px" in reason and "\n" not in reason
    assert spec.contract.unsupported_reason(spec, 240) is None


def test_unknown_timm_name_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown timm model 'timm:vit_smal_patch16_224'; closest: "
                                         r"timm:vit_small_patch16_224"):
        get_spec("timm:vit_smal_patch16_224")


def test_globs_expand_with_a_cap_and_refuse_no_match():
    names = expand_model_patterns(["vim-t", "timm:deit_tiny_*"])
    assert names[0] == "vim-t" and "timm:deit_tiny_patch16_224" in names
    assert all(n.startswith("timm:deit_tiny_") for n in names[1:])
    with pytest.raises(ValueError, match="more than the cap of 5"):
        expand_model_patterns(["timm:vit_*"], cap=5)
    with pytest.raises(ValueError, match="no model matches 'timm:zzz_nothing_\\*'"):
        expand_model_patterns(["timm:zzz_nothing_*"])


@pytest.mark.parametrize("backend", ["sdpa", "math"])
def test_attention_kernel_choice(one_torch_thread, backend):
    torch.manual_seed(0)
    ref = create_model("timm:vit_tiny_patch16_224", img_size=64, attn_backend="math").eval()
    other = create_model("timm:vit_tiny_patch16_224", img_size=64, attn_backend=backend).eval()
    other.load_state_dict(ref.state_dict())
    assert all(m.fused_attn == (backend == "sdpa") for m in other.modules() if hasattr(m, "fused_attn"))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(other(x), ref(x), rtol=1e-4, atol=1e-5)


def test_resolved_options_say_what_runs():
    vit, convnext = get_spec("timm:vit_tiny_patch16_224"), get_spec("timm:convnext_tiny")
    assert vit.contract.resolve_options(vit, {"attn_backend": "auto"}, "cpu")["attn_backend"] == "sdpa"
    assert convnext.contract.resolve_options(convnext, {"attn_backend": "math"}, "cpu")["attn_backend"] == "-"
    assert probe("convnext_tiny", 224).has_attention is False


def test_flops_of_timm_deit_equal_ours():
    from vimbench.profile.flops import model_gflops

    ours = model_gflops("deit-t", 224)
    assert model_gflops("timm:deit_tiny_patch16_224", 224) == pytest.approx(ours, rel=1e-9)
    assert model_gflops("timm:convnext_tiny", 224) == pytest.approx(8.9, rel=0.05)  # timm: 4.47 GMACs
