"""Selective-scan kernels and the other hot ops of the Vim block, every backend behind one op.

`selective_scan(..., backend=...)` is the one entry point; `available_backends(device)` lists what runs.
Backend modules register themselves on import; those whose toolchain is missing stay unregistered or
report themselves unavailable, so importing this package never fails for lack of a GPU or compiler.
"""

from __future__ import annotations

from . import _backends as _load_backends  # noqa: F401  (registers the optional backends)
from . import scan as _scan  # noqa: F401  (registers the op and the reference backend)
from .bidirectional import ScanDirection, bidirectional_selective_scan, fused_bidirectional_backends
from .conv1d import causal_conv1d_ref, causal_conv1d_silu
from .reference import selective_scan_ref
from .registry import ScanBackend, all_backends, available_backends, get_backend, resolve_backend
from .rmsnorm import add_rms_norm, add_rms_norm_ref
from .scan import selective_scan

__all__ = [
    "ScanBackend",
    "ScanDirection",
    "add_rms_norm",
    "add_rms_norm_ref",
    "all_backends",
    "available_backends",
    "bidirectional_selective_scan",
    "causal_conv1d_ref",
    "causal_conv1d_silu",
    "fused_bidirectional_backends",
    "get_backend",
    "resolve_backend",
    "selective_scan",
    "selective_scan_ref",
]
