"""The model families: exact official numerics, keys, shapes, counts, cls-token placement, dtypes."""

from __future__ import annotations

import pytest
import torch

from vimbench import create_model, get_spec, list_models
from vimbench.layers import check_img_size

EXPECTED = {
    "vim-t": (7_148_008, 415),
    "vim-s": (25_796_584, 415),
    "vim-b": (97_598_440, 415),
    "vim-t-stride8": (7_250_344, 415),
    "vim-s-stride8": (26_001_256, 415),
    "deit-t": (5_717_416, 152),
    "deit-s": (22_050_664, 152),
    "deit-b": (86_567_656, 152),
}


def _meta_model(name: str, **kwargs):
    with torch.device("meta"):
        return create_model(name, scan_backend="reference", **kwargs)


def test_registry_lists_every_family():
    assert list_models() == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_param_and_key_counts(name):
    model = _meta_model(name)
    params, keys = EXPECTED[name]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys
    assert not list(model.buffers())


def test_vim_tiny_key_shapes_match_official():
    sd = _meta_model("vim-t").state_dict()
    assert sd["layers.0.mixer.in_proj.weight"].shape == (768, 192)
    assert sd["layers.0.mixer.x_proj.weight"].shape == (44, 384)
    assert sd["layers.0.mixer.dt_proj.weight"].shape == (384, 12)
    assert sd["layers.0.mixer.conv1d.weight"].shape == (384, 1, 4)
    assert sd["layers.23.mixer.A_b_log"].shape == (384, 16)
    assert sd["pos_embed"].shape == (1, 197, 192)
    assert "norm_f.weight" in sd and "head.bias" in sd


@pytest.mark.parametrize(
    "alias, name",
    [
        ("vim_tiny_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2", "vim-t"),
        ("vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2", "vim-b"),
        ("vim_small_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2",
         "vim-s-stride8"),
        ("deit_tiny_patch16_224", "deit-t"),
        ("DeiT-Ti", "deit-t"),
        ("vim_ti", "vim-t"),
    ],
)
def test_official_names_are_aliases(alias, name):
    assert get_spec(alias).name == name


def test_unknown_model_lists_known():
    with pytest.raises(ValueError, match="known: vim-t, vim-s"):
        get_spec("vim-xl")


@pytest.mark.parametrize(
    "fixture, name", [("vim_t_official_224.pt", "vim-t"), ("deit_t_official_224.pt", "deit-t")]
)
def test_logits_match_official_fixture(fixtures_dir, fixture, name):
    data = torch.load(fixtures_dir / fixture, weights_only=True)
    model = create_model(name).eval()
    model.load_state_dict({k: v.float() for k, v in data["model"].items()}, strict=True)
    assert list(model.state_dict()) == list(data["model"])  # same keys, same order
    with torch.no_grad():
        features = model.forward_features(data["input_224"].float())
        logits = model.head(features)
    ref = data["logits_224"].float()
    assert (logits - ref).abs().max() / ref.abs().max() <= 1e-5
    feat_ref = data["features_224"].float()
    assert (features - feat_ref).abs().max() / feat_ref.abs().max() <= 1e-5


def _silence_blocks(model) -> None:
    """Zero every residual branch so the features are the normalised cls embedding alone."""
    with torch.no_grad():
        if model.family == "vim":
            for layer in model.layers:
                layer.mixer.out_proj.weight.zero_()
        else:
            for block in model.blocks:
                for lin in (block.attn.proj, block.mlp.fc2):
                    lin.weight.zero_()
                    lin.bias.zero_()


@pytest.mark.parametrize("name", ["vim-t", "deit-t"])
@pytest.mark.parametrize("img_size", [320, 512])
def test_cls_token_sits_where_the_family_puts_it(name, img_size):
    torch.manual_seed(0)
    model = create_model(name, img_size=img_size).eval()
    grid = img_size // 16
    assert model.num_tokens == grid * grid + 1
    expected_index = (grid * grid) // 2 if name.startswith("vim") else 0
    assert model.cls_index == expected_index
    _silence_blocks(model)
    x = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        features = model.forward_features(x)
        token = (model.cls_token + model.pos_embed[:, expected_index]).reshape(1, -1)
        if name.startswith("vim"):
            norm = token * torch.rsqrt(token.square().mean(-1, keepdim=True) + 1e-5) * model.norm_f.weight
        else:
            norm = model.norm(token)
    torch.testing.assert_close(features, norm, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("img_size, ok", [(224, True), (240, True), (738, False), (8, False)])
def test_img_size_must_sit_on_the_patch_grid(img_size, ok):
    if ok:
        check_img_size(img_size, 16, 16)
    else:
        with pytest.raises(ValueError, match="nearest valid"):
            check_img_size(img_size, 16, 16)


def test_off_grid_error_names_736_for_738():
    with pytest.raises(ValueError, match="736 or 752"):
        create_model("vim-t", img_size=738)


def test_stride8_runs_on_its_own_grid():
    model = _meta_model("vim-t-stride8", img_size=232)
    assert model.num_tokens == 28 * 28 + 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_keeps_vim_residual_in_fp32(dtype):
    torch.manual_seed(0)
    model = create_model("vim-t", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    residual_dtypes = []
    model.layers[3].register_forward_hook(lambda mod, inp, out: residual_dtypes.append(out[1].dtype))
    model = model.to(dtype)
    with torch.no_grad():
        low = model(x.to(dtype))
    assert low.dtype == dtype and residual_dtypes == [torch.float32]
    assert torch.isfinite(low.float()).all()
    assert (low.float() - ref).abs().max() / ref.abs().max() < 0.1


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_deit_attention_backends_agree(backend):
    torch.manual_seed(0)
    ref = create_model("deit-t", img_size=96, attn_backend="math").eval()
    other = create_model("deit-t", img_size=96, attn_backend=backend).eval()
    other.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(other(x), ref(x), rtol=1e-4, atol=1e-5)


def test_unknown_attention_backend_rejected():
    with pytest.raises(ValueError, match="unknown attention backend"):
        create_model("deit-t", attn_backend="flash9")


def test_vim_backward_runs_on_reference_scan():
    torch.manual_seed(0)
    model = create_model("vim-t", img_size=32, num_classes=10, scan_backend="reference")
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.layers[0].mixer.A_b_log.grad.abs().sum() > 0


def test_families_declare_their_options_and_cls_position():
    from vimbench.models import get_family, list_families

    assert [f.name for f in list_families()] == ["vim", "deit", "timm"]
    vim, deit = get_family("vim"), get_family("deit")
    assert [o.name for o in vim.options] == ["scan_backend"] and "reference" in vim.options[0].choices
    assert deit.options[0].choices == ("auto", "sdpa", "math")
    assert (vim.cls_position, deit.cls_position) == ("middle", "front")
    with pytest.raises(ValueError, match="unknown family 'vit'"):
        get_family("vit")


@pytest.mark.parametrize("name, columns", [
    ("vim-t", {"scan_backend": "reference", "attn_backend": "-"}),
    ("deit-t", {"scan_backend": "-", "attn_backend": "math"}),
])
def test_each_family_writes_its_own_option_columns(name, columns):
    from vimbench.models import option_columns

    spec = get_spec(name)
    asked = {"scan_backend": "reference", "attn_backend": "math"}
    resolved = spec.contract.resolve_options(spec, asked, "cpu")
    cols = option_columns(spec, resolved)
    assert {k: cols[k] for k in columns} == columns


def test_globs_expand_registered_models_and_refuse_nonsense():
    from vimbench.models import expand_model_patterns

    assert expand_model_patterns(["deit-*", "vim-t"]) == ["deit-t", "deit-s", "deit-b", "vim-t"]
    assert expand_model_patterns(["vim-t", "vim_ti"]) == ["vim-t"]  # aliases collapse
    with pytest.raises(ValueError, match="more than the cap of 2"):
        expand_model_patterns(["vim-*"], cap=2)
    with pytest.raises(ValueError, match="no model matches 'deit-x\\*'"):
        expand_model_patterns(["deit-x*"])


def test_unknown_model_names_the_closest():
    with pytest.raises(ValueError, match="unknown model 'deit-tt'; closest: deit-t"):
        get_spec("deit-tt")


@pytest.mark.parametrize(("name", "message"), [
    ("tim:vit_small_patch16_224", "unknown model family prefix 'tim:' in 'tim:vit_small_patch16_224'; "
                                  "closest: timm:"),
    ("foo:bar", "unknown model family prefix 'foo:' in 'foo:bar'; prefixes: timm:"),
])
def test_unknown_family_prefix_names_the_prefixes(cli, name: str, message: str):
    with pytest.raises(ValueError, match=message):
        get_spec(name)
    result = cli(["sweep", "--models", name, "--res", "224"])
    assert result.code == 2 and message in result.err and len(result.err.strip().splitlines()) == 1


def test_paired_baselines_come_from_the_spec():
    assert get_spec("vim-s").baseline == "deit-s" and get_spec("vim-t-stride8").baseline is None
