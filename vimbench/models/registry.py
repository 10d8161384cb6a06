"""Model registry and `create_model` (the timm pattern): short names, official names as aliases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from vimbench.baselines.deit import DeiT, DeiTConfig

from .vim import VimConfig, VisionMamba


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # "vim" or "deit"
    build: Callable[..., nn.Module]
    patch_size: int
    stride: int
    embed_dim: int
    official_name: str
    aliases: tuple[str, ...] = field(default=())

    def tokens(self, img_size: int) -> int:
        """Sequence length at `img_size`: patches plus one cls token."""
        grid = (img_size - self.patch_size) // self.stride + 1
        return grid * grid + 1

    def valid_img_size(self, img_size: int) -> bool:
        return img_size >= self.patch_size and (img_size - self.patch_size) % self.stride == 0


_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def _canon(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _register(spec: ModelSpec) -> None:
    _REGISTRY[spec.name] = spec
    for alias in (spec.name, spec.official_name, *spec.aliases):
        _ALIASES[_canon(alias)] = spec.name


def _vim(name: str, dim: int, official: str, stride: int = 16, aliases: tuple[str, ...] = ()) -> None:
    cfg = VimConfig(embed_dim=dim, stride=stride)

    def build(img_size: int, num_classes: int, scan_backend: str, attn_backend: str) -> nn.Module:
        return VisionMamba(cfg, img_size=img_size, num_classes=num_classes, scan_backend=scan_backend)

    _register(ModelSpec(name, "vim", build, 16, stride, dim, official, aliases))


def _deit(name: str, dim: int, heads: int, official: str, aliases: tuple[str, ...] = ()) -> None:
    cfg = DeiTConfig(embed_dim=dim, num_heads=heads)

    def build(img_size: int, num_classes: int, scan_backend: str, attn_backend: str) -> nn.Module:
        return DeiT(cfg, img_size=img_size, num_classes=num_classes, attn_backend=attn_backend)

    _register(ModelSpec(name, "deit", build, 16, 16, dim, official, aliases))


_SUFFIX = "bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"
_vim("vim-t", 192, f"vim_tiny_patch16_224_{_SUFFIX}", aliases=("vim-ti", "vim-tiny"))
_vim("vim-s", 384, f"vim_small_patch16_224_{_SUFFIX}", aliases=("vim-small",))
_vim(
    "vim-b",
    768,
    "vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2",
    aliases=("vim-base",),
)
_vim("vim-t-stride8", 192, f"vim_tiny_patch16_stride8_224_{_SUFFIX}", stride=8, aliases=("vim-ti-stride8",))
_vim("vim-s-stride8", 384, f"vim_small_patch16_stride8_224_{_SUFFIX}", stride=8)
_deit("deit-t", 192, 3, "deit_tiny_patch16_224", aliases=("deit-ti", "deit-tiny"))
_deit("deit-s", 384, 6, "deit_small_patch16_224", aliases=("deit-small",))
_deit("deit-b", 768, 12, "deit_base_patch16_224", aliases=("deit-base",))


def list_models() -> list[str]:
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec for `name` (short name, official name or alias); ValueError listing the known names."""
    try:
        return _REGISTRY[_ALIASES[_canon(name)]]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}") from None


def create_model(
    name: str,
    img_size: int = 224,
    num_classes: int = 1000,
    scan_backend: str = "auto",
    attn_backend: str = "auto",
    checkpoint: str | Path | None = None,
) -> nn.Module:
    """Build a registered model; with `checkpoint`, load its weights (pos-embed resized to `img_size`)."""
    spec = get_spec(name)
    model = spec.build(
        img_size=img_size, num_classes=num_classes, scan_backend=scan_backend, attn_backend=attn_backend
    )
    model.vimbench_name = spec.name
    if checkpoint is not None:
        from vimbench.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    return model
