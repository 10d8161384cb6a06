"""Check a prediction against a real run of the same workload on this CPU (torch.profiler's memory events).

The real run builds the same model with real weights, runs what `predictor.trace` traces (one inference
forward, or one training step after the optimizer state exists) under `torch.profiler` with
`profile_memory=True`, which records every allocation and free of the CPU allocator, inside kernels too.
Measured peak = bytes held before the profiled region (weights, inputs, optimizer state) + the largest
running sum of the profiled allocations. The prediction it is compared with is the fake-tensor trace of the
same query with target "cpu" (the reference norm/conv, the C++ CPU scan's allocation pattern).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch

from .predictor import DTYPES, MemoryQuery, predict


@dataclass(frozen=True)
class Validation:
    query: MemoryQuery
    predicted_bytes: int
    measured_bytes: int

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_bytes - self.measured_bytes) / self.measured_bytes


def _nbytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if torch.is_tensor(t):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _profiled_peak(run) -> int:
    """Largest running sum of CPU allocations minus frees while `run()` executes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    # every allocation and free, also those inside ops (the aggregated `prof.events()` folds those away)
    deltas = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    now = peak = 0
    for _, delta in deltas:
        now += delta
        peak = max(peak, now)
    return peak


def measure_cpu_peak(q: MemoryQuery) -> int:
    """Peak CPU allocator bytes of `q`'s workload run for real (weights and inputs included)."""
    from vimbench.models import create_model

    # the C++ CPU scan for models that run the scan (the others ignore the option)
    model = create_model(q.model, img_size=q.img_size, options=q.model_options(scan_backend="cpu"))
    dtype = DTYPES[q.dtype]
    shape = (q.batch_size, 3, q.img_size, q.img_size)
    if q.mode == "infer":
        model.eval()
        if dtype != torch.float32:
            model = model.to(dtype)
        x = torch.randn(shape, dtype=dtype)
        held = _nbytes([*model.parameters(), *model.buffers(), x])
        with torch.no_grad():
            return held + _profiled_peak(lambda: model(x))
    model.train()
    params = list(model.parameters())
    x = torch.randn(shape)
    labels = torch.randint(0, 1000, (q.batch_size,))
    optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=False)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    held = _nbytes([*params, *model.buffers(), x, labels, *state])
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        with autocast:
            loss = loss_fn(model(x).float(), labels)
        loss.backward()
        optimizer.step()

    return held + _profiled_peak(step)


def validate_on_cpu(q: MemoryQuery) -> Validation:
    """Predicted (fake trace, target cpu) vs measured (real run, profiler) peak bytes of `q`."""
    q = replace(q, target="cpu", scan_kernel="auto")
    return Validation(q, predict(q).peak_bytes, measure_cpu_peak(q))
