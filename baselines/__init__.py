"""The baselines Vim is measured against: the DeiT family (timm's definition, two attention backends).

The adapter to the official mamba_ssm scan kernel lives with the other scan backends in `vimbench.kernels`.
"""

from .deit import ATTENTION_BACKENDS, DeiT, DeiTConfig

__all__ = ["ATTENTION_BACKENDS", "DeiT", "DeiTConfig"]
