"""The DeiT family: our own exact copy of timm's DeiT (baselines/deit.py), with a choice of attention."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vimbench.baselines.deit import ATTENTION_BACKENDS, Attention, DeiT, DeiTConfig, resolve_attn_backend
from vimbench.layers import PatchEmbed

from .family import ModelFamily, ModelOption, ModelSpec, Options, ProfileScopes

# (name, embed dim, heads, official name, aliases)
_MODELS = (
    ("deit-t", 192, 3, "deit_tiny_patch16_224", ("deit-ti", "deit-tiny")),
    ("deit-s", 384, 6, "deit_small_patch16_224", ("deit-small",)),
    ("deit-b", 768, 12, "deit_base_patch16_224", ("deit-base",)),
)
# per token, multiply-accumulates: 12 layers x 12 dim^2 (projections, MLP) + 12 x (QK^T + AV) tokens dim
_LINEAR_MACS_PER_DIM2 = 144
_ATTN_MACS_PER_TOKEN_DIM = 12 * 2

ATTN_OPTION = ModelOption(
    "attn_backend", "attention backend", "auto", ("auto", *ATTENTION_BACKENDS),
    "sdpa: torch's fused scaled_dot_product_attention; math: softmax(QK^T)V materialised (auto: sdpa)",
)


class DeiTFamily(ModelFamily):
    name = "deit"
    description = "DeiT (timm's definition, our own exact copy), leading cls token, global attention"
    options = (ATTN_OPTION,)
    cls_position = "front"

    def __init__(self) -> None:
        self._specs = tuple(
            ModelSpec(name, "deit", official, DeiTConfig(embed_dim=dim, num_heads=heads), 16, 16, dim,
                      aliases, owner=self)
            for name, dim, heads, official, aliases in _MODELS
        )

    def specs(self) -> Sequence[ModelSpec]:
        return self._specs

    def resolve_options(self, spec: ModelSpec, options: Options | None, device: str) -> dict[str, str]:
        values = self.option_values(options)
        return {"attn_backend": resolve_attn_backend(values["attn_backend"])}

    def build(self, spec: ModelSpec, img_size: int, num_classes: int, options: Options) -> nn.Module:
        values = self.option_values(options)
        return DeiT(spec.config, img_size=img_size, num_classes=num_classes,
                    attn_backend=values["attn_backend"])

    def profile_scopes(self) -> ProfileScopes:
        return ProfileScopes(modules=((Attention, "attention"), (PatchEmbed, "linear/matmul")))

    def relative_cost(self, spec: ModelSpec, img_size: int) -> float:
        tokens, dim = self.tokens(spec, img_size), spec.embed_dim
        return float(tokens * (_LINEAR_MACS_PER_DIM2 * dim * dim + _ATTN_MACS_PER_TOKEN_DIM * tokens * dim))
