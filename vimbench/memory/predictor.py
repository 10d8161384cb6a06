"""Predict a point's peak memory by tracing it on fake tensors: shapes and dtypes, no data, no device.

The model is built on the CPU inside `FakeTensorMode`, then one inference forward (or two training steps:
forward, loss, backward, AdamW, as the sweep worker runs them) is traced under `StorageTracker`. The log of
storages replays through the CUDA caching-allocator model. Seconds per point on a CPU, at any size.

Targets: "cuda" predicts what a GPU run allocates (Vim's fused Triton norm/conv/bidirectional scan stand-ins,
foreach AdamW, sdpa as the flash/memory-efficient kernels: output + fp32 logsumexp); "cpu" traces what the CPU
runs (reference norm/conv, the C++ CPU scan's allocation pattern), which is how the prediction is checked
against a real run on this machine (`validate.py`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch._subclasses import FakeTensorMode

from vimbench.dtypes import torch_dtypes

from .allocator import CachingAllocatorModel, round_size
from .gpu_ops import op_models, upstream_mixer_forward
from .scan_standin import KERNEL_MODELS, trace_backend
from .tracker import CATEGORIES, StorageLog, StorageTracker

MIB = 2**20
GIB = 2**30
TARGETS = ("cuda", "cpu")
VIM_VARIANTS = ("ours", "upstream")
DTYPES = torch_dtypes()  # vimbench.dtypes, the one table


@dataclass(frozen=True)
class MemoryQuery:
    """One point to predict. `scan_kernel` "auto": triton-fused on cuda, cpu on cpu."""

    model: str
    img_size: int
    batch_size: int = 1
    dtype: str = "fp32"
    mode: str = "infer"
    attn_backend: str = "auto"
    scan_kernel: str = "auto"
    vim_variant: str = "ours"
    target: str = "cuda"
    timm_kwargs: str = ""  # timm models: create_model keywords (vimbench.models.timm_family)

    def model_options(self, scan_backend: str = "auto") -> dict[str, str]:
        """The options map the model is built with (each family takes its own, ignores the others)."""
        return {"scan_backend": scan_backend, "attn_backend": self.attn_backend,
                "timm_kwargs": self.timm_kwargs}

    def resolved_scan_kernel(self) -> str:
        if self.scan_kernel != "auto":
            return self.scan_kernel
        return "triton-fused" if self.target == "cuda" else "cpu"


@dataclass
class MemoryPrediction:
    """Peaks in bytes. `peak_bytes`: tensor bytes live at the worst moment (exact sizes, what a CPU run
    holds); `allocated_peak_bytes` / `reserved_peak_bytes`: torch.cuda.max_memory_allocated / _reserved as the
    caching allocator would report them; `by_category`: tensor bytes per category at the allocated peak."""

    query: MemoryQuery
    family: str
    tokens: int
    params: int
    peak_bytes: int
    allocated_peak_bytes: int
    reserved_peak_bytes: int
    by_category: dict[str, int] = field(default_factory=dict)
    trace_s: float = 0.0

    def as_row(self) -> dict[str, Any]:
        row = {**asdict(self.query), "scan_kernel": self.query.resolved_scan_kernel(), "family": self.family,
               "tokens": self.tokens, "params": self.params,
               "tensor_peak_mib": self.peak_bytes / MIB, "allocated_mib": self.allocated_peak_bytes / MIB,
               "reserved_mib": self.reserved_peak_bytes / MIB}  # fmt: skip
        row.update({f"{c}_mib": self.by_category.get(c, 0) / MIB for c in CATEGORIES})
        row["trace_s"] = round(self.trace_s, 3)
        return row


def check_query(q: MemoryQuery) -> None:
    """ValueError (one line) for anything the predictor cannot trace."""
    from vimbench.models import all_options, get_spec

    spec = get_spec(q.model)
    if not spec.valid_img_size(q.img_size):
        raise ValueError(f"resolution {q.img_size} is not on the {spec.stride}-pixel grid of {spec.name}")
    if q.batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {q.batch_size}")
    if q.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {q.dtype!r}; use one of {', '.join(DTYPES)}")
    if q.mode not in ("infer", "train"):
        raise ValueError(f"unknown mode {q.mode!r}; use infer or train")
    if q.target not in TARGETS:
        raise ValueError(f"unknown target {q.target!r}; use cuda or cpu")
    if q.vim_variant not in VIM_VARIANTS:
        raise ValueError(f"unknown Vim variant {q.vim_variant!r}; use ours or upstream")
    if q.vim_variant == "upstream" and q.mode != "infer":
        raise ValueError("the upstream (flip-copy) Vim variant is modelled for inference only")
    if q.scan_kernel != "auto" and q.scan_kernel not in KERNEL_MODELS:
        raise ValueError(f"unknown scan kernel model {q.scan_kernel!r}; use auto, {', '.join(KERNEL_MODELS)}")
    options = q.model_options()
    for opt in all_options():  # a value no family takes is a typo, even for a model without that option
        options[opt.name] = opt.check(options.get(opt.name, opt.default))
    spec.contract.check_options(spec, options)


def predict(q: MemoryQuery) -> MemoryPrediction:
    """Trace `q` on fake tensors and replay it through the allocator model."""
    from vimbench.models import get_spec

    check_query(q)
    spec = get_spec(q.model)
    started = time.perf_counter()
    log, params = trace(q)
    prediction = replay(log)
    return MemoryPrediction(
        query=q, family=spec.family, tokens=spec.tokens(q.img_size), params=params,
        peak_bytes=prediction["peak_bytes"], allocated_peak_bytes=prediction["allocated_peak_bytes"],
        reserved_peak_bytes=prediction["reserved_peak_bytes"], by_category=prediction["by_category"],
        trace_s=time.perf_counter() - started,
    )  # fmt: skip


def trace(q: MemoryQuery, fake: bool = True) -> tuple[StorageLog, int]:
    """The storage log of `q`'s workload (as `vimbench.measure.runner` runs it) and the parameter count."""
    from vimbench.models import create_model, get_spec

    scan_ops = get_spec(q.model).contract.runs_selective_scan  # Vim-like: scan, conv1d, norm stand-ins
    tracker = StorageTracker()
    with contextlib.ExitStack() as stack:
        scan = stack.enter_context(trace_backend(q.resolved_scan_kernel())) if scan_ops else "auto"
        if scan_ops:
            stack.enter_context(op_models(q.target))
        if fake:  # built on fake CPU tensors: shapes only, whatever the size
            stack.enter_context(FakeTensorMode())
        with no_truncated_normal_init():  # values do not matter here; its rejection sampling reads data
            model = create_model(q.model, img_size=q.img_size, options=q.model_options(scan))
        if q.vim_variant == "upstream" and scan_ops:
            for layer in model.layers:
                layer.mixer.forward = upstream_mixer_forward.__get__(layer.mixer)
        params = sum(p.numel() for p in model.parameters())
        shape = (q.batch_size, 3, q.img_size, q.img_size)
        if q.mode == "infer":
            _trace_infer(model, shape, DTYPES[q.dtype], tracker)
        else:
            _trace_train(model, shape, q, tracker)
    return tracker.log, params


@contextlib.contextmanager
def no_truncated_normal_init():
    original = torch.nn.init.trunc_normal_
    torch.nn.init.trunc_normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        yield
    finally:
        torch.nn.init.trunc_normal_ = original


def _cast(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """model.to(dtype) for fake parameters (Module.to would try to swap them in place, which fails)."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.is_floating_point():
                setattr(module, name, torch.nn.Parameter(param.to(dtype), param.requires_grad))
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.is_floating_point():
                module._buffers[name] = buf.to(dtype)


def _trace_infer(model, shape, dtype, tracker: StorageTracker) -> None:
    model.eval()
    if dtype != torch.float32:
        _cast(model, dtype)
    tracker.register(list(model.parameters()) + list(model.buffers()), "weights")
    x = torch.randn(shape, dtype=dtype)
    tracker.register([x], "inputs")
    with torch.no_grad(), tracker:
        out = model(x)
        del out


def _trace_train(model, shape, q: MemoryQuery, tracker: StorageTracker) -> None:
    model.train()
    params = list(model.parameters())
    tracker.register(params + list(model.buffers()), "weights")
    x = torch.randn(shape)
    labels = torch.randint(0, 1000, (q.batch_size,))
    tracker.register([x, labels], "inputs")
    # the worker's AdamW: foreach (one fused list op per step) on CUDA, a per-parameter loop on the CPU
    optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=q.target == "cuda")
    loss_fn = torch.nn.CrossEntropyLoss()
    dtype = DTYPES[q.dtype]
    with tracker:
        # step 1 only creates the optimizer state (lazily, in its first step): do that directly, then trace
        # the steady-state step, where the state exists from the start and the grads were reset
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        tracker.recategorize(state, "optimizer")
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = loss_fn(model(x).float(), labels)
        loss.backward()
        tracker.recategorize([p.grad for p in params if p.grad is not None], "gradients")
        optimizer.step()
        del loss, state


def replay(log: StorageLog) -> dict[str, Any]:
    """Peaks of a storage log: exact tensor bytes, and the caching allocator's allocated and reserved."""
    allocator = CachingAllocatorModel()
    live: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
    tensor_bytes = peak_bytes = 0
    best: dict[str, int] = dict(live)
    for kind, handle in log.events:
        size = log.sizes[handle]
        category = log.category[handle]
        if kind == "alloc":
            allocator.malloc(handle, size)
            live[category] += size
            tensor_bytes += size
            peak_bytes = max(peak_bytes, tensor_bytes)
            if allocator.allocated >= allocator.peak_allocated:
                best = dict(live)
        else:
            allocator.free(handle)
            live[category] -= size
            tensor_bytes -= size
    return {
        "peak_bytes": peak_bytes,
        "rounded_peak_bytes": _rounded_peak(log),
        "allocated_peak_bytes": allocator.peak_allocated,
        "reserved_peak_bytes": allocator.peak_reserved,
        "by_category": best,
    }


def _rounded_peak(log: StorageLog) -> int:
    """Peak of the live sizes each rounded to 512 bytes (block sizes before any split rule)."""
    now = peak = 0
    for kind, handle in log.events:
        size = round_size(log.sizes[handle])
        now += size if kind == "alloc" else -size
        peak = max(peak, now)
    return peak
