"""What a sweep measures: resolution specs, one `Point` per measurement, the sweep config and its plan.

A `Point` is everything a worker needs to measure one (model, resolution, batch, dtype, backend, ...) cell in
a fresh process, with the device already resolved and the device-specific defaults filled in, so it can be
shipped as JSON to a subprocess today and to another GPU or machine later.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import InitVar, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vimbench.devices import resolve_device
from vimbench.dtypes import DTYPES

MODES = ("infer", "train")
DEFAULT_RES_STEP = 128
DEFAULT_MODELS = ("vim-t", "deit-t")
# `vimbench sweep` with no options: quick on a 2-core CPU; the paper's range on a GPU
DEFAULT_RES_CPU = "224,320,448"
DEFAULT_RES_CUDA = "224..1248"

_INT = re.compile(r"^\d+$")
_RANGE = re.compile(r"^(\d+)\s*\.\.\s*(\d+)(?:\s*:\s*(\d+))?$")


@dataclass(frozen=True)
class MeasureDefaults:
    """Timing knobs used when the user does not set them: long enough for stable GPU numbers, short on CPU."""

    warmup: int
    iters: int
    min_time_s: float
    repeats: int


GPU_DEFAULTS = MeasureDefaults(warmup=10, iters=30, min_time_s=1.0, repeats=5)
CPU_DEFAULTS = MeasureDefaults(warmup=1, iters=2, min_time_s=0.5, repeats=3)


def defaults_for(device: str) -> MeasureDefaults:
    return CPU_DEFAULTS if device == "cpu" else GPU_DEFAULTS


def _off_grid(value: int, patch: int) -> str:
    lower = max(patch, value - value % patch)
    upper = lower + patch if lower < value else patch
    nearest = f"{lower} or {upper}" if lower != upper else str(lower)
    return f"resolution {value} is not a multiple of the {patch}-pixel patch; nearest valid: {nearest}"


def _check_on_grid(value: int, patch: int) -> int:
    if value < patch or value % patch:
        raise ValueError(_off_grid(value, patch))
    return value


def parse_resolutions(spec: str, patch: int = 16) -> list[int]:
    """ "224..1248" -> 224, 352, ..., 1248 (step 128); "A..B:S" sets the step; comma lists mix both.

    Every value must be a multiple of `patch`. A range always ends at B, even when B is not on the step.
    The result is sorted and without duplicates. ValueError carries a one-line message naming the problem.
    """
    items = [item.strip() for item in str(spec).split(",")]
    if not any(items):
        raise ValueError("no resolution given (e.g. --res 224..1248, --res 224,512 or --res 224..1024:64)")
    values: list[int] = []
    for item in items:
        if not item:
            raise ValueError(f"empty item in resolution list {spec!r}")
        if _INT.match(item):
            values.append(_check_on_grid(int(item), patch))
            continue
        match = _RANGE.match(item)
        if not match:
            raise ValueError(
                f"malformed resolution {item!r}: use N, A..B (step {DEFAULT_RES_STEP}) or A..B:STEP"
            )
        start, stop = int(match[1]), int(match[2])
        step = int(match[3]) if match[3] is not None else DEFAULT_RES_STEP
        if start > stop:
            raise ValueError(f"reversed resolution range {item!r}: {start} > {stop} (write {stop}..{start})")
        if step <= 0:
            raise ValueError(f"resolution step must be positive in {item!r}")
        if step % patch:
            raise ValueError(
                f"resolution step {step} in {item!r} is not a multiple of the {patch}-pixel patch"
            )
        _check_on_grid(start, patch)
        _check_on_grid(stop, patch)
        values.extend(range(start, stop + 1, step))
        values.append(stop)
    return sorted(set(values))


@dataclass(frozen=True)
class Point:
    """One measurement, self-contained: what a worker process needs, nothing else."""

    model: str
    img_size: int
    batch_size: int = 1
    dtype: str = "fp32"
    device: str = "cpu"  # resolved: "cpu" or "cuda:N"
    mode: str = "infer"
    # per-model options by name (vimbench.results.OPTION_COLUMNS), e.g. {"scan_backend": "cpu"}; an option
    # the model does not take is ignored, one it takes but is not given is "auto"
    options: dict[str, str] = field(default_factory=dict, hash=False)
    compile: bool = False
    channels_last: bool = False
    warmup: int = CPU_DEFAULTS.warmup
    iters: int = CPU_DEFAULTS.iters
    min_time_s: float = CPU_DEFAULTS.min_time_s
    repeats: int = CPU_DEFAULTS.repeats
    timeout_s: float = 900.0
    threads: int | None = None  # torch intra-op threads in the worker; None: all CPUs this process may use
    nvml_interval_ms: float = 5.0
    # the options as keywords, as before the options map: Point(..., scan_backend="cpu") still works
    scan_backend: InitVar[str | None] = None
    attn_backend: InitVar[str | None] = None

    def __post_init__(self, scan_backend: str | None, attn_backend: str | None) -> None:
        given = {k: v for k, v in (("scan_backend", scan_backend), ("attn_backend", attn_backend))
                 if v and v != self.option(k)}  # dataclasses.replace passes the properties' values back
        if given:
            object.__setattr__(self, "options", {**self.options, **given})

    def option(self, name: str, default: str = "auto") -> str:
        """The value of one per-model option (`default` when not given)."""
        return self.options.get(name, default)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Point:
        data = json.loads(text)
        from vimbench.results import option_names

        legacy = {name: data.pop(name) for name in option_names() if name in data}  # pre-options JSON
        if legacy:
            data["options"] = {**legacy, **(data.get("options") or {})}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Point fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def label(self) -> str:
        return f"{self.model}@{self.img_size} b{self.batch_size} {self.dtype} {self.mode}"


# point.scan_backend / point.attn_backend read the option (the init-only keywords above fold into it)
for _name in ("scan_backend", "attn_backend"):
    setattr(Point, _name, property(lambda self, _n=_name: self.option(_n), doc=f"options[{_name!r}]"))


@dataclass
class SweepConfig:
    """A sweep as the user asked for it. None for a timing knob means: the default for the device."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    resolutions: list[int] = field(default_factory=list)  # empty: DEFAULT_RES_CPU / DEFAULT_RES_CUDA
    batch_size: int = 1
    dtype: str = "fp32"
    device: str = "auto"
    mode: str = "infer"
    warmup: int | None = None
    iters: int | None = None
    min_time_s: float | None = None
    repeats: int | None = None
    scan_backend: str = "auto"
    attn_backend: str = "auto"
    timm_kwargs: str = ""  # timm.create_model keywords for timm models ("drop_path_rate=0.1,...")
    compile: bool = False
    channels_last: bool = False
    out_dir: Path | None = None
    resume: bool = False
    skip_after_oom: bool = True
    timeout_s: float = 900.0
    plots: bool = True
    threads: int | None = None
    nvml_interval_ms: float = 5.0
    preflight: bool = True  # CUDA: predict each point's memory; skip what cannot fit (vimbench.memory)


def default_threads() -> int:
    """The CPUs this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most torch threads a worker may ask for: far beyond that, thread creation fails (a segfault)."""
    return 4 * (os.cpu_count() or 1)


def validate_config(config: SweepConfig) -> SweepConfig:
    """Check every knob and resolve the device and the resolution default. ValueError: one line."""
    from vimbench.models import expand_model_patterns, get_spec

    if not config.models:
        raise ValueError("no model given")
    models = expand_model_patterns(list(config.models))  # globs; ValueError names the closest models
    if config.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {config.batch_size}")
    if config.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {config.dtype!r}; use one of {', '.join(DTYPES)}")
    if config.mode not in MODES:
        raise ValueError(f"unknown mode {config.mode!r}; use one of {', '.join(MODES)}")
    for name, value, low in (
        ("--warmup", config.warmup, 0),
        ("--iters", config.iters, 1),
        ("--repeats", config.repeats, 1),
        ("--threads", config.threads, 1),
    ):
        if value is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if config.threads is not None and config.threads > max_threads():
        raise ValueError(f"--threads {config.threads} is more than {max_threads()} (4 per CPU here)")
    if config.min_time_s is not None and not (math.isfinite(config.min_time_s) and config.min_time_s >= 0):
        raise ValueError(f"--min-time must be >= 0 and finite (seconds), got {config.min_time_s}")
    if config.compile and config.warmup == 0:
        raise ValueError("--compile needs --warmup >= 1: compilation must happen before the timed region")
    if not (math.isfinite(config.timeout_s) and config.timeout_s > 0):
        raise ValueError(f"--timeout must be positive and finite (seconds), got {config.timeout_s}")
    if not (math.isfinite(config.nvml_interval_ms) and config.nvml_interval_ms > 0):
        raise ValueError(f"--nvml-interval-ms must be a finite number > 0, got {config.nvml_interval_ms}")
    device = resolve_device(config.device)
    resolutions = list(config.resolutions) or parse_resolutions(
        DEFAULT_RES_CPU if device == "cpu" else DEFAULT_RES_CUDA
    )
    for name in models:
        spec = get_spec(name)
        for res in resolutions:
            if spec.contract.resolution_error(spec, res) is not None:
                raise ValueError(_off_grid(res, spec.stride) + f" (model {name})")
    timm_kwargs = _check_options(models, model_options(config), device)["timm_kwargs"]
    return replace(config, models=models, resolutions=sorted(set(resolutions)), device=device,
                   timm_kwargs=timm_kwargs)


def model_options(config: SweepConfig) -> dict[str, str]:
    """The per-model options of a sweep as the options map its points carry."""
    return {"scan_backend": config.scan_backend, "attn_backend": config.attn_backend,
            "timm_kwargs": config.timm_kwargs}


def _check_options(models: list[str], options: dict[str, str], device: str) -> dict[str, str]:
    """Each model's family resolves the options it has (ValueError: unknown or unavailable here, timm kwargs
    its model does not take); a value that no family accepts is refused even when no model in the sweep uses
    that option. Returns the options, free-form ones in their one spelling."""
    from vimbench.models import all_options, get_spec

    options = dict(options)
    for opt in all_options():
        if opt.name in options:
            options[opt.name] = opt.check(options[opt.name])
    for name in models:
        spec = get_spec(name)
        spec.contract.resolve_options(spec, options, device)
    return options


def build_plan(config: SweepConfig) -> list[Point]:
    """Every point of the sweep, model by model, resolutions ascending (so an OOM skips what follows)."""
    config = validate_config(config)
    knobs = defaults_for(config.device)
    return [
        Point(
            model=model,
            img_size=res,
            batch_size=config.batch_size,
            dtype=config.dtype,
            device=config.device,
            mode=config.mode,
            options=model_options(config),
            compile=config.compile,
            channels_last=config.channels_last,
            warmup=knobs.warmup if config.warmup is None else config.warmup,
            iters=knobs.iters if config.iters is None else config.iters,
            min_time_s=knobs.min_time_s if config.min_time_s is None else config.min_time_s,
            repeats=knobs.repeats if config.repeats is None else config.repeats,
            timeout_s=config.timeout_s,
            threads=config.threads or default_threads(),
            nvml_interval_ms=config.nvml_interval_ms,
        )
        for model in config.models
        for res in config.resolutions
    ]


def config_to_json(config: SweepConfig) -> dict[str, Any]:
    data = asdict(config)
    data["out_dir"] = str(config.out_dir) if config.out_dir is not None else None
    return data
