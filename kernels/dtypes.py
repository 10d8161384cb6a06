"""The one dtype table: the names vimbench accepts (fp32, fp16, bf16), their aliases, torch's dtypes, and
the dtypes the kernels read and write.

It lives in the op library (the bottom layer, importing nothing of vimbench) so that the kernels, and every
layer above them through `vimbench.dtypes`, share one table instead of a tuple per kernel module.
"""

from __future__ import annotations

import torch

DTYPES: tuple[str, ...] = ("fp32", "fp16", "bf16")
TORCH_NAMES: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
ALIASES: dict[str, str] = {
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
    "bfloat16": "bf16",
}
TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, TORCH_NAMES[name]) for name in DTYPES}
# what the scan, conv1d and norm kernels take as inputs and give as outputs (they compute in float32)
IO_DTYPES: tuple[torch.dtype, ...] = tuple(TORCH_DTYPES.values())


def normalize_dtype(name: str) -> str:
    """ "float16" / "half" / "FP16" -> "fp16"; ValueError (one line) for a name that is none of them."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return key


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a vimbench dtype name (aliases accepted)."""
    return TORCH_DTYPES[normalize_dtype(name)]


def torch_dtypes() -> dict[str, torch.dtype]:
    """{"fp32": torch.float32, ...} in DTYPES order."""
    return dict(TORCH_DTYPES)


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 -> "bf16"; ValueError for a dtype outside the table."""
    for name, value in TORCH_DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"dtype {dtype} is not one of {', '.join(DTYPES)}")
