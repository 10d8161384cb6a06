"""The body of a worker: build the model, warm up, time, read memory, and fill one results row.

Runs inside the worker process (never in the sweep's own process): it sets torch's thread count, may
create a CUDA context and may run out of memory, all of which must die with the process.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable
from typing import Any

from vimbench.dtypes import torch_dtype
from vimbench.metrics import Collector, MetricContext, all_metrics

from .plan import Point
from .timing import time_steps
from .worker import failure_row, identity_row, is_oom, now_utc, resolved_backends


def start_collectors(point: Point, device_uuid: str) -> list[Collector]:
    """Every registered metric's collector for this point, built now (before the model: a memory peak
    covers the whole point), in registry order."""
    if point.device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(point.device))
    context = MetricContext(point.device, point.batch_size, point.nvml_interval_ms, device_uuid)
    return [metric.collector(context) for metric in all_metrics() if metric.collector is not None]


def _sync_for(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def _build(point: Point, scan: str, attn: str):
    """(model, step) where step() runs one timed iteration: a forward, or a full training step."""
    import torch

    from vimbench.models import create_model

    dtype = torch_dtype(point.dtype)
    device = torch.device(point.device)
    model = create_model(
        point.model,
        img_size=point.img_size,
        scan_backend=scan if scan != "-" else "auto",
        attn_backend=attn if attn != "-" else "auto",
    ).to(device)
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
    collectors: list[Collector] = []
    try:
        collectors = start_collectors(point, row.get("device_uuid") or "")
        scan, attn = resolved_backends(point)
        params, step = _build(point, scan, attn)
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
                on_start=lambda: [c.start() for c in collectors],
                on_stop=lambda: [c.stop() for c in collectors],
            )
        for collector in collectors:
            row.update(collector.columns(timing))
        row.update(status="ok", params=params, gflops=_gflops(point), error="")
    except Exception as exc:
        oom = is_oom(exc)
        message = f"{type(exc).__name__}: {exc}" if not oom else str(exc).split("\n")[0]
        if not oom:
            traceback.print_exc()  # to stderr: the full story for whoever reads the worker's log
        extra: dict[str, Any] = {}
        for collector in collectors:  # what was read before the failure (memory peaks) still counts
            with contextlib.suppress(Exception):
                extra.update(collector.columns(None))
        row = failure_row(point, "oom" if oom else "error", message, threads=row["threads"], **extra)
    row["timestamp"] = now_utc()
    row["duration_s"] = time.perf_counter() - started
    return row
