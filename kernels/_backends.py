"""Import the optional backends. Each module registers what it can and never raises on import."""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

# module name -> why it may be missing
_OPTIONAL = ("cpu_scan", "triton_scan", "triton_ops", "cuda_scan", "mamba_ssm_adapter")


def _load() -> None:
    for name in _OPTIONAL:
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                log.debug("scan backend %s unavailable: %s", name, exc)
        except Exception as exc:  # a broken optional backend must not break the package
            log.warning("scan backend %s failed to load: %s", name, exc)


_load()
