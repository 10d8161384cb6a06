"""The identity columns of a results row, computed the same way in the sweep's process and in the worker."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

from vimbench.results import ResultRow, typed_row

from .plan import Point

_ERROR_CHARS = 500


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resolved_options(point: Point) -> dict[str, str]:
    """The model's options as they will really run ("auto" made concrete by its family); ValueError if one
    cannot (unknown, or not available on the point's device)."""
    from vimbench.models import get_spec

    spec = get_spec(point.model)
    return spec.contract.resolve_options(spec, point.options, point.device)


def precision_mode(point: Point) -> str:
    """How a reduced dtype is applied: weights and input cast (infer) or fp32 weights + autocast (train)."""
    if point.dtype == "fp32":
        return "fp32"
    return "cast" if point.mode == "infer" else "autocast"


def identity_row(point: Point) -> ResultRow:
    """The columns that say what was measured, computed the same way in the parent and the worker."""
    import torch

    from vimbench.models import get_spec, option_columns

    from .environment import cpu_capability, describe_device

    spec = get_spec(point.model)
    try:
        options = resolved_options(point)
    except ValueError:  # the row still says what was asked for
        options = dict(point.options)
    try:
        device = describe_device(point.device)
    except Exception:
        device = {"name": "", "uuid": ""}
    return typed_row({
        "model": spec.name,
        "family": spec.family,
        "img_size": point.img_size,
        "tokens": spec.tokens(point.img_size, point.options),
        "batch_size": point.batch_size,
        "dtype": point.dtype,
        "device": point.device,
        "device_name": device["name"],
        "device_uuid": device["uuid"],
        "mode": point.mode,
        **option_columns(spec, options),
        "compile": point.compile,
        "channels_last": point.channels_last,
        "iters": point.iters,
        "repeats": point.repeats,
        "host": socket.gethostname(),
        "warmup": point.warmup,
        "min_time_s": point.min_time_s,
        "threads": point.threads,
        "precision": precision_mode(point),
        "torch_version": torch.__version__,
        "cpu_capability": cpu_capability(),  # SIMD level of torch's CPU kernels and the cpu scan build
    })


def failure_row(point: Point, status: str, error: str, **extra: Any) -> ResultRow:
    row: dict[str, Any] = dict(identity_row(point))
    row.update(status=status, error=" ".join(str(error).split())[:_ERROR_CHARS], timestamp=now_utc(), **extra)
    return typed_row(row)
