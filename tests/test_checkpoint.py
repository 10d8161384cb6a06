"""Checkpoint loading: official layout, safetensors, our own saves, pos-embed resizing, clear rejections."""

from __future__ import annotations

import argparse
import pickle

import pytest
import torch

from vimbench import create_model, load_checkpoint, save_checkpoint
from vimbench.checkpoint import DEFAULT_POS_EMBED_RESIZE, CheckpointError, cls_rule, resize_pos_embed


def _tiny(name: str, img_size: int = 32, **kw):
    torch.manual_seed(0)
    return create_model(name, img_size=img_size, num_classes=10, **kw).eval()


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["vim-t", "deit-t"])
def test_our_save_round_trips(tmp_path, name):
    model = _tiny(name)
    path = save_checkpoint(model, tmp_path / "m.pth")
    torch.manual_seed(1)
    loaded = create_model(name, img_size=32, num_classes=10, checkpoint=path)
    assert _same_weights(model, loaded)


def test_official_vim_layout_with_optimizer_and_namespace(tmp_path):
    model = _tiny("vim-t")
    official = {
        "model": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        "lr_scheduler": {"last_epoch": 299},
        "epoch": 299,
        "scaler": {"scale": 65536.0},
        "args": argparse.Namespace(model="vim_tiny", batch_size=128, lr=5e-4, output_dir="out"),
    }
    path = tmp_path / "vim_t_midclstok_76p1acc.pth"
    torch.save(official, path)
    with pytest.raises(pickle.UnpicklingError):  # a plain weights_only load refuses the Namespace
        torch.load(path, weights_only=True)
    assert _same_weights(model, load_checkpoint(_tiny("vim-t"), path))


def test_module_prefix_is_stripped(tmp_path):
    model = _tiny("deit-t")
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    assert _same_weights(model, load_checkpoint(_tiny("deit-t"), path))


def test_safetensors_deit(tmp_path):
    from safetensors.torch import save_file

    model = _tiny("deit-t")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert _same_weights(model, load_checkpoint(_tiny("deit-t"), path))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_objects_are_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _tiny("deit-t").state_dict(), "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match=r"cannot load .* safely"):
        load_checkpoint(_tiny("deit-t"), path)


def test_wrong_family_names_the_differing_keys(tmp_path):
    path = save_checkpoint(_tiny("deit-t"), tmp_path / "deit.pth")
    with pytest.raises(CheckpointError, match=r"missing layers\.0\.mixer\.A_log.*unexpected blocks\.0"):
        load_checkpoint(_tiny("vim-t"), path)


def test_wrong_size_names_the_first_differing_shape(tmp_path):
    path = save_checkpoint(_tiny("vim-s"), tmp_path / "vim_s.pth")
    expected = r"at 414 keys, first cls_token: file \(1, 1, 384\) vs model \(1, 1, 192\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(_tiny("vim-t"), path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(_tiny("vim-t"), tmp_path / "nope.pth")


def test_vim_pos_embed_keeps_the_middle_cls_token(tmp_path):
    src = _tiny("vim-t", img_size=224)
    path = save_checkpoint(src, tmp_path / "vim224.pth")
    dst = create_model("vim-t", img_size=320, num_classes=10, checkpoint=path)
    old, new = src.pos_embed.detach(), dst.pos_embed.detach()
    assert new.shape == (1, 401, 192)
    torch.testing.assert_close(new[:, 200], old[:, 98], rtol=0, atol=0)
    # the patch grid is resampled, not shifted: corners stay close to the old corners
    assert (new[:, 0] - old[:, 0]).abs().mean() < (new[:, 0] - old[:, 98]).abs().mean()


def test_deit_pos_embed_keeps_the_leading_cls_token(tmp_path):
    src = _tiny("deit-t", img_size=224)
    path = save_checkpoint(src, tmp_path / "deit224.pth")
    dst = create_model("deit-t", img_size=384, num_classes=10, checkpoint=path)
    assert dst.pos_embed.shape == (1, 577, 192)
    torch.testing.assert_close(dst.pos_embed[:, 0], src.pos_embed[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("cls_index", [0, "middle"])
def test_resize_to_the_same_grid_is_identity(cls_index):
    pos = torch.randn(1, 197, 8)
    torch.testing.assert_close(resize_pos_embed(pos, 197, cls_index), pos, rtol=1e-5, atol=1e-5)


def test_official_fixture_loads_through_load_checkpoint(tmp_path, fixtures_dir):
    data = torch.load(fixtures_dir / "vim_t_official_224.pt", weights_only=True)
    path = tmp_path / "official.pth"
    torch.save({"model": data["model"], "args": argparse.Namespace(model=data["name"])}, path)
    model = create_model(data["name"], checkpoint=path).eval()
    with torch.no_grad():
        logits = model(data["input_224"].float())
    ref = data["logits_224"].float()
    assert (logits - ref).abs().max() / ref.abs().max() <= 1e-5


@pytest.mark.parametrize("method, antialias", [("timm", True), ("deit", False)])
def test_pos_embed_resize_methods(method, antialias):
    """timm (default): bicubic with antialias, as timm's checkpoint filter; deit: bicubic without, as
    facebookresearch/deit main.py. Upsampling 14x14 -> 24x24 differs by several % between the two."""
    torch.manual_seed(0)
    pos = torch.randn(1, 197, 8)
    out = resize_pos_embed(pos, 577, 0, method)
    grid = pos[:, 1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(24, 24), mode="bicubic", antialias=antialias)
    torch.testing.assert_close(out[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 576, 8), rtol=0, atol=0)
    other = resize_pos_embed(pos, 577, 0, "deit" if method == "timm" else "timm")
    assert (out - other).norm() / out.norm() > 0.01


def test_default_resize_is_timms_and_unknown_is_refused(tmp_path):
    assert DEFAULT_POS_EMBED_RESIZE == "timm"
    path = save_checkpoint(_tiny("deit-t", img_size=224), tmp_path / "d.pth")
    default = load_checkpoint(_tiny("deit-t", img_size=320), path)
    timm_way = load_checkpoint(_tiny("deit-t", img_size=320), path, pos_embed_resize="timm")
    deit_way = load_checkpoint(_tiny("deit-t", img_size=320), path, pos_embed_resize="deit")
    assert torch.equal(default.pos_embed, timm_way.pos_embed)
    assert not torch.equal(default.pos_embed, deit_way.pos_embed)
    with pytest.raises(ValueError, match="unknown pos-embed resize 'area'; known: timm, deit"):
        load_checkpoint(_tiny("deit-t", img_size=320), path, pos_embed_resize="area")


def test_cls_placement_comes_from_the_models_cls_index():
    assert cls_rule(_tiny("vim-t", img_size=64)) == "middle"
    assert cls_rule(_tiny("deit-t", img_size=64)) == 0


def test_models_command_loads_a_checkpoint_and_says_how_it_resized(cli, tmp_path):
    path = save_checkpoint(create_model("deit-t", img_size=32), tmp_path / "deit32.pth")
    result = cli(["models", "--checkpoint", path, "--model", "deit-t", "--res", "64"])
    assert result.code == 0, result.err
    assert "pos_embed 5 -> 17 tokens (bicubic with antialias, as timm's checkpoint filter)" in result.out
    plain = cli(["models", "--checkpoint", path, "--model", "deit-t", "--res", "64",
                 "--pos-embed-resize", "deit"])
    assert "bicubic without antialias, as facebookresearch/deit main.py" in plain.out
    help_text = " ".join(cli(["models", "--help"]).out.replace("│", " ").split())
    assert "timm (default; bicubic with antialias" in help_text
    bad = cli(["models", "--checkpoint", path, "--model", "deit-t", "--pos-embed-resize", "area"])
    assert bad.code == 2 and "unknown pos-embed resize 'area'" in bad.err
    wrong = cli(["models", "--checkpoint", path, "--model", "vim-t"])
    assert wrong.code == 2 and "missing layers.0.mixer.A_log" in wrong.err
