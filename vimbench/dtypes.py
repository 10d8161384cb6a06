"""The one dtype table, as the layers above the op library import it: `vimbench.kernels.dtypes` holds it
(so the kernels share it too); this module is its name for everything else."""

from __future__ import annotations

from vimbench.kernels.dtypes import (
    ALIASES,
    DTYPES,
    IO_DTYPES,
    TORCH_DTYPES,
    TORCH_NAMES,
    dtype_name,
    normalize_dtype,
    torch_dtype,
    torch_dtypes,
)

__all__ = [
    "ALIASES",
    "DTYPES",
    "IO_DTYPES",
    "TORCH_DTYPES",
    "TORCH_NAMES",
    "dtype_name",
    "normalize_dtype",
    "torch_dtype",
    "torch_dtypes",
]
