"""The results.csv column spec: identity columns (what was measured), option columns (per-model knobs),
every registered metric's columns (vimbench.metrics), and the schema version.

Core columns come first, in a fixed order that every results.csv has (the contract readers rely on); extra
columns follow and may be missing from older files (readers fill them in). The order below is today's
header: identity, then metric core columns, then the rest of the identity, then extras.
"""

from __future__ import annotations

from functools import cache

from vimbench.metrics import metric_columns
from vimbench.metrics.spec import Column

# the version this code writes (run.json "schema_version" and the results.csv column of that name)
# 1: no schema_version column; 2: schema_version + energy columns; 3: the timm_kwargs option column
SCHEMA_VERSION = 3

# Per-model options: knobs that apply to one family and read "-" for the others (a scan backend for DeiT, an
# attention backend for Vim). Points and rows carry them as an `options` map; results.csv writes each as its
# own readable column.
OPTION_COLUMNS: tuple[Column, ...] = (
    Column("scan_backend", doc='resolved selective-scan backend (vim), "-" for other families'),
    Column("attn_backend", doc='resolved attention backend (deit, timm), "-" for models without the choice'),
    Column("timm_kwargs", core=False,
           doc='timm create_model keyword arguments, canonical "key=value;..." (empty: none), "-" for other '
               "families (schema 3)"),
)
# the short name of each option in labels, legends and ratio-gate selectors ("scan=cpu")
OPTION_SHORT: dict[str, str] = {"scan_backend": "scan", "attn_backend": "attn", "timm_kwargs": "timm"}
# the columns each schema version added (how the version of an existing header is recognised)
ADDED_IN_VERSION: dict[int, tuple[str, ...]] = {2: ("schema_version",), 3: ("timm_kwargs",)}

_IDENTITY_HEAD: tuple[Column, ...] = (
    Column("model", doc="registry name, e.g. vim-t"),
    Column("family", doc="vim | deit | timm (vimbench.models.registry.FAMILIES)"),
    Column("img_size", "int", "px", doc="pixels (square)"),
    Column("tokens", "int", doc="sequence length incl. cls token"),
    Column("batch_size", "int"),
    Column("dtype", doc="fp32 | fp16 | bf16"),
    Column("device", doc="cpu | cuda:N as the worker saw it"),
    Column("device_name", doc="GPU marketing name or CPU model: never mix two in one curve or gate"),
    Column("device_uuid", doc="NVML UUID on CUDA, empty on CPU"),
    Column("mode", doc="infer | train"),
    *(c for c in OPTION_COLUMNS if c.core),
    Column("compile", "bool", doc="torch.compile used"),
    Column("channels_last", "bool"),
    Column("status",
           doc="ok | oom | error | timeout | skipped-oom | skipped (the model cannot run this size)"),
)
_IDENTITY_TAIL: tuple[Column, ...] = (
    Column("params", "int"),
    Column("gflops", "float", "GFLOP", doc="per image, scan-aware (vimbench.profile.flops)"),
    Column("host"),
    Column("timestamp", doc="UTC ISO-8601 when the point finished"),
    Column("duration_s", "float", "s", doc="wall time of the worker"),
    Column("error", doc="message for non-ok statuses"),
)
# the knobs behind each number that the contract does not name
_IDENTITY_EXTRA: tuple[Column, ...] = (
    Column("warmup", "int", core=False),
    Column("min_time_s", "float", "s", core=False),
    Column("threads", "int", core=False),
    Column("precision", core=False, doc="cast (infer fp16/bf16) | autocast (train fp16/bf16) | fp32"),
)
_OPTION_EXTRA: tuple[Column, ...] = tuple(c for c in OPTION_COLUMNS if not c.core)
_VERSION_EXTRA: tuple[Column, ...] = (
    Column("torch_version", core=False),
    Column("cpu_capability", core=False, doc="SIMD level of torch's CPU kernels and the cpu scan build"),
)
SCHEMA_VERSION_COLUMN = Column("schema_version", "int", core=False, doc="results schema of this row")

STATUSES = ("ok", "oom", "error", "timeout", "skipped-oom", "skipped")


@cache
def all_column_specs() -> tuple[Column, ...]:
    """Every column in header order: core (identity head, metrics, identity tail), then extras."""
    metric_cols = metric_columns()
    core = (*_IDENTITY_HEAD, *(c for c in metric_cols if c.core), *_IDENTITY_TAIL)
    extra = (
        *_IDENTITY_EXTRA,
        *(c for c in metric_cols if not c.core and c.name in _LEGACY_METRIC_EXTRAS),
        *_VERSION_EXTRA,
        *(c for c in metric_cols if not c.core and c.name not in _LEGACY_METRIC_EXTRAS),
        *_OPTION_EXTRA,
        SCHEMA_VERSION_COLUMN,
    )
    return (*core, *extra)


# metric extras that schema 1 already wrote before torch_version (their place in the header is kept)
_LEGACY_METRIC_EXTRAS = frozenset({"nvml_baseline_mib", "rss_baseline_mib"})


@cache
def column_index() -> dict[str, Column]:
    return {c.name: c for c in all_column_specs()}


def column(name: str) -> Column | None:
    """The spec of a column, or None for a column this version does not know (kept as text)."""
    return column_index().get(name)


@cache
def core_columns() -> tuple[str, ...]:
    """The contract: every results.csv starts with these, in this order."""
    return tuple(c.name for c in all_column_specs() if c.core)


@cache
def all_columns() -> tuple[str, ...]:
    """The header of a new results.csv."""
    return tuple(c.name for c in all_column_specs())


@cache
def numeric_columns() -> frozenset[str]:
    return frozenset(c.name for c in all_column_specs() if c.numeric)


def option_names() -> tuple[str, ...]:
    return tuple(c.name for c in OPTION_COLUMNS)


def header_schema_version(header: tuple[str, ...] | list[str]) -> int:
    """The schema an existing results.csv header was written with: the newest version whose added columns
    it has (1 for a header without schema_version)."""
    version = 1
    for number in sorted(ADDED_IN_VERSION):
        if not all(name in header for name in ADDED_IN_VERSION[number]):
            break
        version = number
    return version


# Two rows measure "the same thing" when these agree (resume, compare, gate).
POINT_KEY: tuple[str, ...] = (
    "model",
    "img_size",
    "batch_size",
    "dtype",
    "mode",
    *(c.name for c in OPTION_COLUMNS),
    "compile",
    "channels_last",
    "device_name",
)


CORE_COLUMNS: tuple[str, ...] = core_columns()
ALL_COLUMNS: tuple[str, ...] = all_columns()
