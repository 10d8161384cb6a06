"""vimbench: benchmark and profile Vision Mamba (Vim) against DeiT, with claims you can check."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vimbench")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

from .checkpoint import load_checkpoint, save_checkpoint
from .models import create_model, get_spec, list_models

__all__ = ["__version__", "create_model", "get_spec", "list_models", "load_checkpoint", "save_checkpoint"]
