"""`vimbench profile`: one model under torch.profiler, time by category, top ops, kernels, scan GB/s, memory.

On CPU, time is *self* CPU time: each op's or range's own time without its children, so the categories sum
to the profiled forwards without double counting. On GPU, time is the GPU time of every kernel, memcpy and
memset, each counted once under the category of the op or scope that launched it; the host-side self CPU
time is reported beside it. Categories come from `categories.EventClassifier`; every number is per forward.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vimbench.devices import resolve_device as parse_device
from vimbench.dtypes import torch_dtypes
from vimbench.metrics.timing_stats import spread

from .categories import CATEGORIES, OTHER, SCAN, CategoryScopes, EventClassifier, strong_category
from .flops import FlopCount, count_model_flops
from .memory import ForwardMemory, measure_forward_memory

DTYPES: dict[str, torch.dtype] = torch_dtypes()
ITERATION_SCOPE = "vimbench::forward"


@dataclass(frozen=True)
class ProfileConfig:
    model: str
    img_size: int = 224
    device: str = "cpu"
    batch_size: int = 1
    dtype: str = "fp32"
    scan_backend: str = "auto"
    attn_backend: str = "auto"
    timm_kwargs: str = ""  # timm models: create_model keywords, canonical (vimbench.models.timm_family)
    warmup: int = 2
    iters: int = 2
    trace_path: Path | None = None


@dataclass(frozen=True)
class CategoryTime:
    category: str
    time_us: float
    share: float  # of the total, 0..1


@dataclass(frozen=True)
class OpTime:
    name: str
    category: str
    calls: int
    time_us: float
    share: float


@dataclass(frozen=True)
class ScanBandwidth:
    """Minimal bytes the scan must move (per forward) over the device time of the scan ops."""

    directions: int
    fused: bool  # both directions in one kernel: z read once, one output written
    bytes_per_forward: int
    time_us_per_forward: float
    gbps: float


@dataclass
class EventSummary:
    categories: list[CategoryTime]
    top_ops: list[OpTime]
    kernels: list[OpTime]
    total_us: float
    scan_op_device_us: float


@dataclass
class ProfileResult:
    config: ProfileConfig
    device: str  # resolved, e.g. cpu or cuda:0
    scan_backend: str  # resolved; "-" for DeiT
    attn_backend: str  # resolved; "-" for Vim
    measure: str  # "cpu" (self CPU time) or "device" (self CUDA time)
    summary: EventSummary  # by `measure`
    cpu_summary: EventSummary | None = None  # on CUDA: the host side (launch overhead, Python)
    scan_bandwidth: ScanBandwidth | None = None  # CUDA + Vim only
    flops: FlopCount | None = None
    wall_s_per_iter: float = 0.0  # median over the profiled forwards
    wall_iqr_pct: float = 0.0  # their spread; noisy by the one rule of vimbench.metrics.timing_stats
    memory: ForwardMemory | None = None  # CUDA only
    trace_path: Path | None = None


def scan_min_bytes(batch: int, length: int, channels: int, d_state: int, groups: int = 1,
                   bytes_per_element: int = 4) -> int:
    """Minimal HBM traffic of one forward scan direction: u, delta, z in, out back, B and C in.

    B*L*(4E + 2GN) elements (kernels-and-measurement.md); A, D and the bias are O(E*N) and left out.
    """
    return batch * length * (4 * channels + 2 * groups * d_state) * bytes_per_element


def fused_bidirectional_min_bytes(batch: int, length: int, channels: int, d_state: int, groups: int = 1,
                                  bytes_per_element: int = 4) -> int:
    """Minimal traffic of both directions in one kernel: u, delta, B, C per direction, z once, one output."""
    return batch * length * (6 * channels + 4 * groups * d_state) * bytes_per_element


def achieved_gbps(num_bytes: float, time_us: float) -> float:
    """GB/s (1e9 bytes per second); 0 when no time was measured."""
    return num_bytes / (time_us * 1e-6) / 1e9 if time_us > 0 else 0.0


def summarize_categories(times: Iterable[tuple[str, float]]) -> list[CategoryTime]:
    """(category, time) pairs -> one row per known category, in CATEGORIES order, with shares."""
    totals: dict[str, float] = dict.fromkeys(CATEGORIES, 0.0)
    for category, t in times:
        totals[category] = totals.get(category, 0.0) + t
    grand = sum(totals.values())
    return [CategoryTime(c, t, t / grand if grand else 0.0) for c, t in totals.items()]


def summarize_ops(
    rows: Iterable[tuple[str, str, float]], total_us: float, top: int | None = None
) -> list[OpTime]:
    """(name, category, time) per call -> per (name, category): calls, time, share; slowest first."""
    calls: Counter = Counter()
    times: dict[tuple[str, str], float] = defaultdict(float)
    for name, category, t in rows:
        calls[(name, category)] += 1
        times[(name, category)] += t
    ops = [OpTime(n, c, calls[(n, c)], t, t / total_us if total_us else 0.0) for (n, c), t in times.items()]
    ops.sort(key=lambda o: o.time_us, reverse=True)
    return ops[:top] if top else ops


def _is_cpu_op(event: Any) -> bool:
    return _device_type(event) == "CPU" and not event.is_async


def _device_type(event: Any) -> str:
    return getattr(event.device_type, "name", str(event.device_type))


_RUNTIME_CALL = re.compile(r"^(cuda|cu[A-Z]|__cuda)")


def _is_runtime_call(name: str) -> bool:
    """cudaLaunchKernel, cuLaunchKernelEx, cudaMemcpyAsync...: host-side CUDA runtime/driver calls."""
    return bool(_RUNTIME_CALL.match(name))


def _duration_us(event: Any) -> float:
    return float(event.time_range.end - event.time_range.start)


def _device_activities(events: list[Any], cpu_events: list[Any]) -> list[Any]:
    """Kernels, memcpys and memsets on the GPU; not the GPU mirrors of record_function ranges."""
    annotation_names = {e.name for e in cpu_events if getattr(e, "is_user_annotation", False)}
    return [
        e for e in events
        if _device_type(e) != "CPU" and not getattr(e, "is_user_annotation", False)
        and e.name not in annotation_names and not e.name.startswith(("vimbench::", "ProfilerStep"))
    ]


def _innermost_enclosing(containers: list[Any], times: list[float]) -> list[Any | None]:
    """For each time, the innermost container event whose CPU interval contains it (intervals nest)."""
    order = sorted(range(len(times)), key=lambda i: times[i])
    ranked = sorted(containers, key=lambda e: (e.time_range.start, -e.time_range.end))
    found: list[Any | None] = [None] * len(times)
    stack: list[Any] = []
    next_container = 0
    for i in order:
        t = times[i]
        while next_container < len(ranked) and ranked[next_container].time_range.start <= t:
            candidate = ranked[next_container]
            while stack and stack[-1].time_range.end < candidate.time_range.start:
                stack.pop()
            stack.append(candidate)
            next_container += 1
        while stack and stack[-1].time_range.end < t:
            stack.pop()
        found[i] = stack[-1] if stack else None
    return found


def attribute_device_activities(events: list[Any]) -> list[tuple[Any, Any | None]]:
    """(GPU activity, the CPU event it belongs to) for every kernel/memcpy of the run.

    An activity launched inside an aten or custom op is linked to that op by the profiler
    (`linked_correlation_id`). One launched from plain Python (a Triton kernel called outside any op) has no
    linked op: it is matched to its runtime launch call by CUPTI correlation id, and that call to the
    innermost CPU range (our scopes included) enclosing it in time, since the profiler leaves such runtime
    calls outside the op tree.
    """
    cpu_events = [e for e in events if _is_cpu_op(e)]
    activities = _device_activities(events, cpu_events)
    # torch ops and record_function ranges share one id space; runtime calls use CUPTI's; other kineto CPU
    # events (buffer requests, module loading) could collide with either and are left out
    ops = {e.id: e for e in cpu_events if "::" in e.name or getattr(e, "is_user_annotation", False)}
    runtime_calls = {e.id: e for e in cpu_events if _is_runtime_call(e.name)}
    owners: list[Any | None] = []
    orphan_launches: list[tuple[int, float]] = []
    for activity in activities:
        owner = ops.get(getattr(activity, "linked_correlation_id", 0) or -1)
        if owner is None:
            launch = runtime_calls.get(activity.id)
            if launch is not None:
                owner = launch if launch.cpu_parent is not None else None
                if owner is None:
                    orphan_launches.append((len(owners), float(launch.time_range.start)))
        owners.append(owner)
    if orphan_launches:
        containers = [e for e in cpu_events if not _is_runtime_call(e.name)]
        enclosing = _innermost_enclosing(containers, [t for _, t in orphan_launches])
        for (index, _), owner in zip(orphan_launches, enclosing, strict=True):
            owners[index] = owner
    return list(zip(activities, owners, strict=True))


def _nearest_op_name(event: Any | None) -> str:
    """The op a GPU activity is reported under: its owner, skipping runtime calls."""
    while event is not None and _is_runtime_call(event.name):
        event = event.cpu_parent
    return event.name if event is not None else "(no CPU op)"


def analyse_events(events: Iterable[Any], measure: str, iters: int, top: int | None = 15) -> EventSummary:
    """Profiler FunctionEvents -> categories, top ops and kernels, per forward (times divided by `iters`).

    `measure` "cpu" uses self CPU time of every op and range. "device" uses the GPU time of every kernel,
    memcpy and memset, each under the category of the CPU op or scope that launched it; top ops are then
    ranked by the GPU time they launched.
    """
    events = list(events)
    classifier = EventClassifier()
    per_category: list[tuple[str, float]] = []
    per_op: list[tuple[str, str, float]] = []
    per_kernel: list[tuple[str, str, float]] = []
    scan_op_device_us = 0.0
    if measure == "device":
        for activity, owner in attribute_device_activities(events):
            category = classifier.category(owner) if owner is not None else OTHER
            us = _duration_us(activity) / iters
            per_category.append((category, us))
            per_op.append((_nearest_op_name(owner), category, us))
            per_kernel.append((activity.name, category, us))
            if owner is not None and _within_scan_op(owner):
                scan_op_device_us += us
    else:
        inside = _inside_forwards(events)
        for event in events:
            counted = inside is None or id(event) in inside
            if counted and _is_cpu_op(event) and event.self_cpu_time_total > 0:
                category = classifier.category(event)
                own = float(event.self_cpu_time_total) / iters
                per_category.append((category, own))
                per_op.append((event.name, category, own))
    categories = summarize_categories(per_category)
    total = sum(c.time_us for c in categories)
    if measure == "device" and scan_op_device_us == 0:  # a fused scan launched without a custom op
        scan_op_device_us = next(c.time_us for c in categories if c.category == SCAN)
    return EventSummary(
        categories=categories,
        top_ops=_per_forward_calls(summarize_ops(per_op, total, top), iters),
        kernels=_per_forward_calls(summarize_ops(per_kernel, total, top), iters),
        total_us=total,
        scan_op_device_us=scan_op_device_us,
    )


def _inside_forwards(events: list[Any]) -> set[int] | None:
    """Ids of the events inside the profiled forwards (the ITERATION_SCOPE ranges and what they enclose):
    host time outside them is the loop and the wait for the GPU, not the model. None if no range exists."""
    roots = [e for e in events if e.name == ITERATION_SCOPE and _is_cpu_op(e)]
    if not roots:
        return None
    inside: set[int] = set()
    stack = list(roots)
    while stack:
        event = stack.pop()
        inside.add(id(event))
        stack.extend(getattr(event, "cpu_children", ()))
    return inside


def _per_forward_calls(ops: list[OpTime], iters: int) -> list[OpTime]:
    """Calls were summed over the profiled forwards: report them per forward."""
    return [OpTime(o.name, o.category, max(1, round(o.calls / iters)), o.time_us, o.share) for o in ops]


def _is_scan_op(name: str) -> bool:
    return name.startswith("vimbench::") and not name.startswith("vimbench::scope") and \
        strong_category(name) == SCAN


def _within_scan_op(event: Any) -> bool:
    """True when `event` is a scan custom op or runs inside one (its kernels are "the scan kernels")."""
    while event is not None:
        if _is_scan_op(event.name):
            return True
        event = event.cpu_parent
    return False


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda if present else cpu; ValueError (vimbench.devices) for anything that cannot run here."""
    return torch.device(parse_device(name))


def build_model(config: ProfileConfig, device: torch.device) -> tuple[torch.nn.Module, str, str]:
    """The model in eval mode on `device` in the requested dtype, with its resolved scan and attention
    backends ("-" where the model's family has no such option)."""
    from vimbench.models import create_model, get_spec, option_columns

    spec = get_spec(config.model)
    asked = {"scan_backend": config.scan_backend, "attn_backend": config.attn_backend,
             "timm_kwargs": config.timm_kwargs}
    options = spec.contract.resolve_options(spec, asked, str(device))
    model = create_model(spec.name, img_size=config.img_size,
                         options={k: v for k, v in options.items() if v != "-"})
    columns = option_columns(spec, options)
    model = model.to(device=device, dtype=DTYPES[config.dtype]).eval()
    return model, columns["scan_backend"], columns["attn_backend"]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_profile(config: ProfileConfig, top: int = 15) -> ProfileResult:
    """Warm up, then profile `config.iters` forwards; every number is per forward (one batch)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    device = resolve_device(config.device)
    model, scan_backend, attn_backend = build_model(config, device)
    x = torch.randn(config.batch_size, 3, config.img_size, config.img_size, device=device,
                    dtype=DTYPES[config.dtype])
    use_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if use_cuda else [])
    with torch.inference_mode():
        for _ in range(config.warmup):
            model(x)
        _synchronize(device)
        with CategoryScopes(model, record=True), profile(activities=activities, record_shapes=True) as prof:
            walls = []
            for _ in range(config.iters):
                start = time.perf_counter()
                with record_function(ITERATION_SCOPE):
                    model(x)
                _synchronize(device)
                walls.append(time.perf_counter() - start)
            wall = spread(walls)
    events = prof.events()
    measure = "device" if use_cuda else "cpu"
    summary = analyse_events(events, measure, config.iters, top)
    result = ProfileResult(
        config=config, device=str(device), scan_backend=scan_backend, attn_backend=attn_backend,
        measure=measure, summary=summary, wall_s_per_iter=wall.median, wall_iqr_pct=wall.iqr_pct,
        flops=count_model_flops(model, config.img_size, config.batch_size),
    )
    if use_cuda:
        result.cpu_summary = analyse_events(events, "cpu", config.iters, top)
        result.scan_bandwidth = _scan_bandwidth(model, config, scan_backend, device,
                                                summary.scan_op_device_us)
        result.memory = measure_forward_memory(model, x, device)
    if config.trace_path is not None:
        prof.export_chrome_trace(str(config.trace_path))
        result.trace_path = config.trace_path
    return result


def _scan_bandwidth(model: torch.nn.Module, config: ProfileConfig, scan_backend: str, device: torch.device,
                    scan_us: float) -> ScanBandwidth | None:
    """Minimal scan bytes of one forward (2 directions per Vim layer) against the scan ops' device time."""
    from vimbench.kernels import fused_bidirectional_backends
    from vimbench.models import get_spec

    layers = getattr(model, "layers", None)
    if layers is None or scan_us <= 0:
        return None
    mixer = layers[0].mixer
    length = get_spec(config.model).tokens(config.img_size)
    shape = (config.batch_size, length, mixer.d_inner, mixer.d_state, 1, DTYPES[config.dtype].itemsize)
    fused = scan_backend in fused_bidirectional_backends(device)
    per_layer = fused_bidirectional_min_bytes(*shape) if fused else 2 * scan_min_bytes(*shape)
    total_bytes = len(layers) * per_layer
    return ScanBandwidth(2 * len(layers), fused, total_bytes, scan_us, achieved_gbps(total_bytes, scan_us))
