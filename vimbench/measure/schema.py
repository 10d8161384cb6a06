"""The results.csv schema: one row per measured point, shared by sweep, compare, plots, reports and gates."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# In this order in every results.csv. Extra columns are allowed after these (readers ignore them).
RESULT_COLUMNS: tuple[str, ...] = (
    "model",  # registry name, e.g. vim-t
    "family",  # vim | deit | timm (vimbench.models.registry.FAMILIES)
    "img_size",  # pixels (square)
    "tokens",  # sequence length incl. cls token
    "batch_size",
    "dtype",  # fp32 | fp16 | bf16
    "device",  # cpu | cuda:N as the worker saw it
    "device_name",  # GPU marketing name or CPU model: never mix two in one curve or gate
    "device_uuid",  # NVML UUID on CUDA, empty on CPU
    "mode",  # infer | train
    "scan_backend",  # resolved name (vim), "-" for the families without this option
    "attn_backend",  # resolved name (deit, timm), "-" for the families (or timm models) without it
    "compile",  # torch.compile used: true/false
    "channels_last",  # true/false
    "status",  # ok | oom | error | timeout | skipped-oom | skipped (the model cannot run this size)
    "throughput",  # images/s, median over repeats
    "throughput_samples",  # per-repeat images/s, space separated
    "latency_ms",  # median time per batch
    "latency_ms_p10",
    "latency_ms_p90",
    "iqr_pct",  # IQR / median of per-repeat latency, percent
    "noisy",  # true when iqr_pct > 10
    "iters",  # timed iterations per repeat (>= --iters, more to reach --min-time)
    "repeats",
    "peak_mem_mib",  # the headline memory number, from peak_mem_source
    "peak_mem_source",  # nvml-process | nvml-device-delta | torch-reserved | rss
    "torch_peak_alloc_mib",
    "torch_peak_reserved_mib",
    "nvml_peak_mib",
    "nvml_interval_ms",
    "rss_peak_mib",
    "params",
    "gflops",  # per image, scan-aware (vimbench.profile.flops)
    "host",
    "timestamp",  # UTC ISO-8601 when the point finished
    "duration_s",  # wall time of the worker
    "error",  # message for non-ok statuses
)

STATUSES = ("ok", "oom", "error", "timeout", "skipped-oom", "skipped")

# Two rows measure "the same thing" when these agree (resume, compare, gate).
POINT_KEY: tuple[str, ...] = (
    "model",
    "img_size",
    "batch_size",
    "dtype",
    "mode",
    "scan_backend",
    "attn_backend",
    "compile",
    "channels_last",
    "device_name",
)


def point_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The identity of a measured point, as strings so CSV-read and in-memory rows compare equal."""
    return tuple(as_text(row.get(k)) for k in POINT_KEY)


def as_text(value: Any) -> str:
    """A cell as the text a results.csv holds: None/NaN -> "", True -> "true", 224.0 -> "224"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    return text.lower() if text in ("True", "False") else text
