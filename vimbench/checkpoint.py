"""Load official Vim / timm DeiT checkpoints (and our own saves) into vimbench models.

Official Vim `.pth` files keep the weights under "model" beside optimizer state and an
`argparse.Namespace`; they load with `weights_only=True` and an allow-list, never by unpickling arbitrary
objects. Position embeddings are resized to the model's resolution keeping the cls token where the model
puts it (its `cls_index`): the middle of the sequence for Vim (upstream's own interpolation gets this wrong),
the front for DeiT.

Two resize methods, because the two DeiT code bases disagree (1.8e-4 relative on DeiT-Ti logits at 384):
- "timm" (default): bicubic with antialias in float32, as timm's checkpoint filter
  (`resample_abs_pos_embed`) does, so a DeiT loaded here equals `timm.create_model(..., img_size=R)` loaded
  through timm;
- "deit": bicubic without antialias, as facebookresearch/deit's main.py (and hustvl/Vim's) fine-tuning does.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# what an official training checkpoint may hold besides tensors
_SAFE_GLOBALS = [argparse.Namespace]
_WEIGHT_KEYS = ("model", "state_dict", "model_state", "module")
# name -> (F.interpolate antialias flag, where the method comes from)
POS_EMBED_RESIZE = {
    "timm": (True, "bicubic with antialias, as timm's checkpoint filter"),
    "deit": (False, "bicubic without antialias, as facebookresearch/deit main.py"),
}
DEFAULT_POS_EMBED_RESIZE = "timm"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the requested model (the message says why)."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The model weights in `path` (.pth/.pt or .safetensors), prefixes like "module." stripped."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the file (.pth or .safetensors)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path))
        except Exception as exc:  # SafetensorError (truncated, corrupt header) and OSError
            raise CheckpointError(f"cannot read {path} as safetensors: {_load_reason(exc)}") from exc
    else:
        try:
            with torch.serialization.safe_globals(_SAFE_GLOBALS):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle errors come in many types
            raise CheckpointError(f"cannot load {path} safely (weights_only): {_load_reason(exc)}") from exc
    if isinstance(obj, dict):
        for key in _WEIGHT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (looked at the top level and {_WEIGHT_KEYS})")
    return {_strip_prefix(k): v for k, v in obj.items()}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# torch's advice around the reason, which for an untrusted file is the wrong advice (weights_only=False)
_BOILERPLATE = ("Weights only load failed", "Check the documentation", "(1)", "(2)", "In PyTorch 2.6")


def _load_reason(exc: BaseException) -> str:
    """One plain line saying why a file did not load: the refused global when a pickle asks for one."""
    text = _ANSI.sub("", str(exc))
    refused = _GLOBAL.search(text)
    if refused:
        return (f"it asks for the global {refused[1]}, which is refused: a checkpoint may hold only tensors "
                "and plain data, never code to run")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line.split("WeightsUnpickler error:")[-1].strip() for line in lines
              if not line.startswith(_BOILERPLATE)]
    return next((line for line in useful if line), lines[0] if lines else type(exc).__name__)


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def check_pos_embed_resize(method: str) -> str:
    """`method` if it is a known resize method, else ValueError naming the known ones."""
    if method not in POS_EMBED_RESIZE:
        raise ValueError(f"unknown pos-embed resize {method!r}; known: {', '.join(POS_EMBED_RESIZE)}")
    return method


def resize_pos_embed(
    pos_embed: Tensor, num_tokens: int, cls_index: int | str, method: str = DEFAULT_POS_EMBED_RESIZE
) -> Tensor:
    """Resize (1, M0+1, D) to (1, M1+1, D) bicubically over the square patch grid.

    cls_index: 0 for a leading cls token, "middle" for Vim's token at M//2 (old and new M each use their own).
    method: a key of POS_EMBED_RESIZE ("timm": antialiased, the default; "deit": plain bicubic).
    """
    antialias = POS_EMBED_RESIZE[check_pos_embed_resize(method)][0]
    old_patches = pos_embed.shape[1] - 1
    new_patches = num_tokens - 1
    old_grid, new_grid = math.isqrt(old_patches), math.isqrt(new_patches)
    if old_grid * old_grid != old_patches or new_grid * new_grid != new_patches:
        raise CheckpointError(f"pos_embed with {old_patches} patches is not a square grid; cannot resize")
    old_cls = old_patches // 2 if cls_index == "middle" else int(cls_index)
    new_cls = new_patches // 2 if cls_index == "middle" else int(cls_index)
    cls = pos_embed[:, old_cls : old_cls + 1]
    grid = torch.cat((pos_embed[:, :old_cls], pos_embed[:, old_cls + 1 :]), dim=1)
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False, antialias=antialias
    )
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_patches, dim).to(pos_embed.dtype)
    return torch.cat((grid[:, :new_cls], cls, grid[:, new_cls:]), dim=1)


def cls_rule(model: nn.Module) -> int | str:
    """The model's cls placement as a rule that holds at any resolution: 0 (leading) or "middle" (M // 2).

    Read from the model's own `cls_index`, so the loader never needs to know the model's family.
    """
    index = int(getattr(model, "cls_index", 0))
    patches = model.state_dict()["pos_embed"].shape[1] - 1
    if index == 0:
        return 0
    if index == patches // 2:
        return "middle"
    raise CheckpointError(
        f"cls_index {index} of {type(model).__name__} is neither 0 nor the middle ({patches // 2})"
    )


def adapt_state_dict(
    model: nn.Module, state: dict[str, Tensor], pos_embed_resize: str = DEFAULT_POS_EMBED_RESIZE
) -> dict[str, Tensor]:
    """Check keys and shapes against `model`, resizing pos_embed; CheckpointError on any mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match {type(model).__name__}: "
            f"missing {_first(missing)}; unexpected {_first(unexpected)}"
        )
    out = dict(state)
    if "pos_embed" in out and out["pos_embed"].shape != expected["pos_embed"].shape:
        out["pos_embed"] = resize_pos_embed(
            out["pos_embed"], expected["pos_embed"].shape[1], cls_rule(model), pos_embed_resize
        )
    bad = [k for k, v in expected.items() if out[k].shape != v.shape]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"checkpoint shapes differ from the model at {len(bad)} keys, first {k}: "
            f"file {tuple(out[k].shape)} vs model {tuple(expected[k].shape)}"
        )
    return out


def _first(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_checkpoint(
    model: nn.Module, path: str | Path, pos_embed_resize: str = DEFAULT_POS_EMBED_RESIZE
) -> nn.Module:
    """Load `path` into `model` strictly (after pos-embed resizing); returns the model."""
    state = adapt_state_dict(model, read_state_dict(path), pos_embed_resize)
    model.load_state_dict(state, strict=True)
    return model


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Save weights in the official layout (under "model") plus what vimbench needs to rebuild it."""
    path = Path(path)
    meta = {
        "name": getattr(model, "vimbench_name", type(model).__name__),
        "img_size": getattr(model, "img_size", None),
        "num_classes": getattr(model, "num_classes", None),
    }
    torch.save({"model": model.state_dict(), "vimbench": meta}, path)
    return path
