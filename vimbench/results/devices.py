"""Which device models a set of result rows comes from: curves and gates never mix two GPU (or CPU) models."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def distinct_devices(rows: Any) -> list[str]:
    """The distinct non-empty device_name values of results rows (a DataFrame or an iterable of mappings).

    More than one means the rows come from different GPU (or CPU) models: keep them apart.
    """
    if hasattr(rows, "columns"):  # a DataFrame
        if "device_name" not in rows.columns:
            return []
        values: Iterable[Any] = rows["device_name"].tolist()
    else:
        values = (row.get("device_name") for row in rows if isinstance(row, Mapping))
    names = {str(v).strip() for v in values if v is not None and v == v}  # v == v drops NaN
    return sorted(n for n in names if n)


def require_one_device(rows: Any, what: str) -> str | None:
    """The single device_name of `rows` (None when no row names one); ValueError (one line) if several."""
    names = distinct_devices(rows)
    if len(names) > 1:
        raise ValueError(f"{what}: results mix {len(names)} device models ({'; '.join(names)}); "
                         "numbers from different GPUs are not comparable: select one device_name")
    return names[0] if names else None
