"""Model definitions (Vim here, DeiT in `vimbench.baselines`) and the registry."""

from .registry import ModelSpec, create_model, get_spec, list_models
from .vim import VimConfig, VisionMamba

__all__ = ["ModelSpec", "VimConfig", "VisionMamba", "create_model", "get_spec", "list_models"]
