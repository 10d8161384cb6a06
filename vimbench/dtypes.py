"""The one dtype table: the names vimbench accepts (fp32, fp16, bf16), their aliases, and torch's dtypes."""

from __future__ import annotations

from typing import Any

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


def normalize_dtype(name: str) -> str:
    """ "float16" / "half" / "FP16" -> "fp16"; ValueError (one line) for a name that is none of them."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return key


def torch_dtype(name: str) -> Any:
    """The torch dtype of a vimbench dtype name (aliases accepted)."""
    import torch

    return getattr(torch, TORCH_NAMES[normalize_dtype(name)])


def torch_dtypes() -> dict[str, Any]:
    """{"fp32": torch.float32, ...} in DTYPES order."""
    return {name: torch_dtype(name) for name in DTYPES}
