"""The Vim family: hustvl/Vim's bidirectional Mamba models, with a choice of selective-scan backend."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from vimbench.layers import PatchEmbed

from .family import ModelFamily, ModelOption, ModelSpec, Options, ProfileScopes
from .vim import VimConfig, VisionMamba

_SUFFIX = "bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2"
# (name, embed dim, stride, official name, aliases, paired baseline)
_MODELS = (
    ("vim-t", 192, 16, f"vim_tiny_patch16_224_{_SUFFIX}", ("vim-ti", "vim-tiny"), "deit-t"),
    ("vim-s", 384, 16, f"vim_small_patch16_224_{_SUFFIX}", ("vim-small",), "deit-s"),
    (
        "vim-b", 768, 16,
        "vim_base_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_middle_cls_token_div2",
        ("vim-base",), "deit-b",
    ),
    ("vim-t-stride8", 192, 8, f"vim_tiny_patch16_stride8_224_{_SUFFIX}", ("vim-ti-stride8",), None),
    ("vim-s-stride8", 384, 8, f"vim_small_patch16_stride8_224_{_SUFFIX}", (), None),
)
# FLOP counting runs the reference scan: two selective_scan calls per layer, whatever backend is fastest here
COUNTING_SCAN_BACKEND = "reference"
# per layer and token, multiply-accumulates ~ dim (the bidirectional scan): 2 directions x expand 2 x
# d_state 16 x 4.5, over 24 layers; the projections add ~6 dim^2 per layer (144 dim^2 over 24 layers)
_SCAN_MACS_PER_DIM = 24 * 2 * 2 * 16 * 9 // 2
_LINEAR_MACS_PER_DIM2 = 144


class VimFamily(ModelFamily):
    name = "vim"
    description = "Vision Mamba (hustvl/Vim), middle cls token, bidirectional selective scan"
    cls_position = "middle"
    runs_selective_scan = True

    def __init__(self) -> None:
        self._specs = tuple(
            ModelSpec(name, "vim", official, VimConfig(embed_dim=dim, stride=stride), 16, stride, dim,
                      aliases, baseline, owner=self)
            for name, dim, stride, official, aliases, baseline in _MODELS
        )

    @property
    def options(self) -> tuple[ModelOption, ...]:  # type: ignore[override]
        from vimbench.kernels import all_backends

        names = ("auto", *(b.name for b in all_backends()))
        return (ModelOption("scan_backend", "scan backend", "auto", names,
                            "selective-scan backend (auto: the best one that runs on the device)"),)

    def specs(self) -> Sequence[ModelSpec]:
        return self._specs

    def resolve_options(self, spec: ModelSpec, options: Options | None, device: str) -> dict[str, str]:
        from vimbench.kernels import resolve_backend

        values = self.option_values(options)
        return {"scan_backend": resolve_backend(values["scan_backend"], device)}

    def build(self, spec: ModelSpec, img_size: int, num_classes: int, options: Options) -> nn.Module:
        values = self.option_values(options)
        return VisionMamba(spec.config, img_size=img_size, num_classes=num_classes,
                           scan_backend=values["scan_backend"])

    def flop_options(self, options: Options | None) -> dict[str, str]:
        return {"scan_backend": COUNTING_SCAN_BACKEND}

    def profile_scopes(self) -> ProfileScopes:
        # conv1d, add+RMSNorm and the scan scope themselves through VisionMamba's ScopedKernels
        return ProfileScopes(modules=((PatchEmbed, "linear/matmul"),))

    def relative_cost(self, spec: ModelSpec, img_size: int) -> float:
        dim = spec.embed_dim
        per_token = _LINEAR_MACS_PER_DIM2 * dim * dim + _SCAN_MACS_PER_DIM * dim
        return float(self.tokens(spec, img_size) * per_token)
