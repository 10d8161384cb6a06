"""Model families (family.py: the contract; one module per family) and the registry."""

from .family import ModelFamily, ModelOption, ModelSpec
from .registry import (
    all_options,
    create_model,
    expand_model_patterns,
    get_family,
    get_spec,
    list_families,
    list_models,
    option_columns,
)
from .vim import VimConfig, VisionMamba

__all__ = [
    "ModelFamily",
    "ModelOption",
    "ModelSpec",
    "VimConfig",
    "VisionMamba",
    "all_options",
    "create_model",
    "expand_model_patterns",
    "get_family",
    "get_spec",
    "list_families",
    "list_models",
    "option_columns",
]
