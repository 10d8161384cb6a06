"""Layers shared by the Vim and DeiT definitions."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Conv2d patchifier -> (B, M, D) tokens in row-major patch order (timm/Vim `patch_embed.proj`)."""

    def __init__(self, img_size: int, patch_size: int, stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.img_size = img_size
        self.patch_size = patch_size
        self.stride = stride
        self.grid_size = grid_size(img_size, patch_size, stride)
        self.num_patches = self.grid_size * self.grid_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def add_patch_tokens(
    model: nn.Module, img_size: int, patch_size: int, stride: int, in_chans: int, embed_dim: int
) -> None:
    """Give `model` the official top-level token parameters: cls_token, patch_embed, pos_embed (M+1 tokens).

    Where the cls token goes is the family's business (Vim: middle, DeiT: front); the keys are the same.
    """
    check_img_size(img_size, patch_size, stride)
    model.img_size = img_size
    model.embed_dim = embed_dim
    model.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
    model.patch_embed = PatchEmbed(img_size, patch_size, stride, in_chans, embed_dim)
    model.num_tokens = model.patch_embed.num_patches + 1
    model.pos_embed = nn.Parameter(torch.zeros(1, model.num_tokens, embed_dim))


def grid_size(img_size: int, patch_size: int, stride: int) -> int:
    return (img_size - patch_size) // stride + 1


def img_size_error(img_size: int, patch_size: int, stride: int) -> str | None:
    """Why `img_size` is off the patch grid, naming the nearest valid sizes; None when it is on it."""
    if img_size >= patch_size and (img_size - patch_size) % stride == 0:
        return None
    lower = max(patch_size, img_size - (img_size - patch_size) % stride)
    upper = lower + stride if lower < img_size else patch_size
    return (
        f"image size {img_size} is not on the {stride}-pixel patch grid "
        f"(patch {patch_size}, stride {stride}); nearest valid: {lower} or {upper}"
    )


def check_img_size(img_size: int, patch_size: int, stride: int) -> None:
    """Raise ValueError naming the nearest valid sizes when `img_size` is off the patch grid."""
    error = img_size_error(img_size, patch_size, stride)
    if error is not None:
        raise ValueError(error)


def trunc_normal_(tensor: Tensor, std: float = 0.02) -> Tensor:
    return nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


@torch.no_grad()
def init_linear_conv(module: nn.Module) -> None:
    """timm/Vim-style init for random-weight benchmarking (never affects timing)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight)
        if module.bias is not None and not getattr(module.bias, "_no_reinit", False):
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
