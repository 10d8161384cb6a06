"""The body of a worker: build the model, warm up, time, read memory, and fill one results row.

Runs inside the worker process (never in the sweep's own process): it sets torch's thread count, may
create a CUDA context and may run out of memory, all of which must die with the process.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from .memory import reset_torch_peaks, rss_now_mib, rss_peak_mib, torch_peaks_mib
from .nvml_sampler import NvmlPeak, NvmlSampler
from .plan import Point
from .timing import time_steps
from .worker import DTYPE_NAMES, failure_row, identity_row, is_oom, now_utc, resolved_options


class _Memory:
    """Collects the memory readings of one point, whatever way it ends."""

    def __init__(self, point: Point):
        self.device = point.device
        self.sampler: NvmlSampler | None = None
        self.rss_baseline = rss_now_mib()
        if self.device.startswith("cuda"):
            import torch

            from .environment import describe_device

            torch.cuda.set_device(torch.device(self.device))
            try:
                uuid = describe_device(self.device)["uuid"]
                self.sampler = NvmlSampler.for_uuid(uuid, os.getpid(), point.nvml_interval_ms).start()
            except Exception:  # no NVML (some containers): the row falls back to torch's reserved peak
                self.sampler = None
            reset_torch_peaks(self.device)

    def columns(self) -> dict[str, Any]:
        nvml: NvmlPeak | None = self.sampler.stop() if self.sampler is not None else None
        alloc, reserved = torch_peaks_mib(self.device)
        rss = rss_peak_mib()
        cols: dict[str, Any] = {
            "torch_peak_alloc_mib": alloc,
            "torch_peak_reserved_mib": reserved,
            "rss_peak_mib": rss,
            "rss_baseline_mib": self.rss_baseline,
        }
        if nvml is not None:
            if self.sampler is not None and self.sampler.uuid:
                cols["device_uuid"] = self.sampler.uuid  # NVML's spelling: tells a MIG slice from its GPU
            cols.update(
                nvml_peak_mib=nvml.peak_mib,
                nvml_interval_ms=nvml.interval_ms,
                nvml_baseline_mib=nvml.baseline_mib,
                peak_mem_mib=nvml.peak_mib,
                peak_mem_source=nvml.source,
            )
        elif self.device.startswith("cuda"):
            cols.update(peak_mem_mib=reserved, peak_mem_source="torch-reserved")
        else:
            cols.update(peak_mem_mib=rss, peak_mem_source="rss")
        return cols


def _sync_for(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def _build(point: Point, options: dict[str, str]):
    """(model, step) where step() runs one timed iteration: a forward, or a full training step."""
    import torch

    from vimbench.models import create_model

    dtype = getattr(torch, DTYPE_NAMES[point.dtype])
    device = torch.device(point.device)
    runnable_options = {k: v for k, v in options.items() if v != "-"}  # "-": the model has no such choice
    model = create_model(point.model, img_size=point.img_size, options=runnable_options).to(device)
    memory_format = torch.channels_last if point.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    shape = (point.batch_size, 3, point.img_size, point.img_size)
    params = sum(p.numel() for p in model.parameters())
    if point.mode == "infer":
        model.eval()
        if point.dtype != "fp32":
            model = model.to(dtype)  # the Vim model keeps its residual stream fp32 internally
        x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
        runnable = torch.compile(model) if point.compile else model

        def step() -> object:
            return runnable(x)

        return params, step
    model.train()
    x = torch.randn(shape, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 1000, (point.batch_size,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    runnable = torch.compile(model) if point.compile else model
    use_amp = point.dtype != "fp32"
    scaler = torch.amp.GradScaler(device.type, enabled=point.dtype == "fp16")
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step() -> object:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            loss = loss_fn(runnable(x).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    return params, train_step


def _unsupported(point: Point) -> str | None:
    """Why the model cannot run this resolution (its family's word), or None."""
    from vimbench.models import get_spec

    spec = get_spec(point.model)
    return spec.contract.unsupported_reason(spec, point.img_size)


def _skipped(point: Point, reason: str, threads: int, started: float) -> dict[str, Any]:
    row = failure_row(point, "skipped", reason, threads=threads)
    row["duration_s"] = time.perf_counter() - started
    return row


def _gflops(point: Point) -> float | None:
    try:
        from vimbench.profile.flops import model_gflops

        return model_gflops(point.model, point.img_size, batch_size=1)
    except Exception:
        return None


def measure_point(point: Point, hooks: Callable[[Point], None] | None = None) -> dict[str, Any]:
    """One full row for `point`; OOM and exceptions become rows (status oom / error), never raise."""
    import torch

    started = time.perf_counter()
    if point.threads:
        torch.set_num_threads(point.threads)
    row = identity_row(point)
    row["threads"] = torch.get_num_threads()
    memory: _Memory | None = None
    try:
        reason = _unsupported(point)
        if reason is not None:
            return _skipped(point, reason, row["threads"], started)
        memory = _Memory(point)
        params, step = _build(point, resolved_options(point))
        if hooks is not None:
            hooks(point)
        grad_mode = torch.inference_mode() if point.mode == "infer" else contextlib.nullcontext()
        with grad_mode:
            timing = time_steps(
                step,
                batch_size=point.batch_size,
                warmup=point.warmup,
                iters=point.iters,
                min_time_s=point.min_time_s,
                repeats=point.repeats,
                sync=_sync_for(point.device),
            )
        row.update(timing.summary())
        row.update(memory.columns())
        row.update(status="ok", params=params, gflops=_gflops(point), error="")
    except Exception as exc:
        oom = is_oom(exc)
        message = f"{type(exc).__name__}: {exc}" if not oom else str(exc).split("\n")[0]
        if not oom:
            traceback.print_exc()  # to stderr: the full story for whoever reads the worker's log
        extra = {}
        if memory is not None:
            with contextlib.suppress(Exception):
                extra = memory.columns()
        row = failure_row(point, "oom" if oom else "error", message, threads=row["threads"], **extra)
    row["timestamp"] = now_utc()
    row["duration_s"] = time.perf_counter() - started
    return row
