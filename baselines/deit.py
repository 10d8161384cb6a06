"""DeiT (timm `deit_{tiny,small,base}_patch16_224`), keys and numerics identical to timm's ViT.

Two attention backends, because the paper's memory figures depend on which one runs:
- "math": softmax(QK^T / sqrt(d)) V with the L x L matrix materialised, as DeiT-era timm did;
- "sdpa": torch.nn.functional.scaled_dot_product_attention (fused flash / memory-efficient kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vimbench.layers import add_patch_tokens, init_linear_conv, trunc_normal_

ATTENTION_BACKENDS = ("sdpa", "math")


@dataclass(frozen=True)
class DeiTConfig:
    embed_dim: int
    num_heads: int
    depth: int = 12
    patch_size: int = 16
    stride: int = 16
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6


def resolve_attn_backend(name: str) -> str:
    if name == "auto":
        return "sdpa"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; known: auto, {', '.join(ATTENTION_BACKENDS)}")
    return name


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, attn_backend: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_backend = resolve_attn_backend(attn_backend)
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.attn_backend == "sdpa":
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(batch, length, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: DeiTConfig, attn_backend: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, attn_backend)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DeiT(nn.Module):
    family = "deit"
    cls_index = 0

    def __init__(
        self,
        cfg: DeiTConfig,
        img_size: int = 224,
        num_classes: int = 1000,
        in_chans: int = 3,
        attn_backend: str = "auto",
    ):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        add_patch_tokens(self, img_size, cfg.patch_size, cfg.stride, in_chans, cfg.embed_dim)
        self.blocks = nn.Sequential(*(Block(cfg, attn_backend) for _ in range(cfg.depth)))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()

    @property
    def attn_backend(self) -> str:
        return self.blocks[0].attn.attn_backend

    def set_attn_backend(self, name: str) -> None:
        for block in self.blocks:
            block.attn.attn_backend = resolve_attn_backend(name)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        trunc_normal_(self.pos_embed)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_linear_conv)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        x = self.blocks(x + self.pos_embed.to(x.dtype))
        return self.norm(x)[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
