"""The worker: `python -m vimbench.measure.worker < point.json` measures one Point and prints one JSON row.

A fresh process per point keeps allocator state, compile caches and a CUDA OOM from leaking into the next
point. Here the worker builds the model, warms up, times, lets every registered metric collect around the
timed window, and turns what it can catch (OOM, exceptions) into a row itself; the parent's side
(`executors.local.run_point_subprocess`) turns what it cannot (crashes, signal kills, hangs) into rows too.
It sets torch's thread count and may create a CUDA context: all of that dies with the process.

Test hooks (environment variables, read by the worker only):
  VIMBENCH_SIMULATE_OOM_ABOVE=N   raise an OOM for img_size > N, after the model is built
  VIMBENCH_SIMULATE_CRASH_AT=N    SIGKILL itself mid-point at img_size N
  VIMBENCH_SIMULATE_HANG_AT=N     hang at img_size N (exercise the timeout)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from vimbench.dtypes import torch_dtype
from vimbench.metrics import Collector, MetricContext, all_metrics
from vimbench.results import ResultRow, typed_row

from .plan import Point
from .rows import failure_row, identity_row, now_utc, resolved_options
from .timing import time_steps

# Set by run_point_subprocess to the sweep's pid: a worker whose sweep died before the worker could ask to die
# with it (PR_SET_PDEATHSIG) sees a different parent and exits at once.
PARENT_PID_ENV = "VIMBENCH_WORKER_PARENT_PID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def _simulation_hooks(point: Point) -> None:
    import torch

    if (at := _env_int("VIMBENCH_SIMULATE_CRASH_AT")) is not None and point.img_size == at:
        os.kill(os.getpid(), signal.SIGKILL)
    if (at := _env_int("VIMBENCH_SIMULATE_HANG_AT")) is not None and point.img_size == at:
        time.sleep(10**6)
    if (above := _env_int("VIMBENCH_SIMULATE_OOM_ABOVE")) is not None and point.img_size > above:
        raise torch.cuda.OutOfMemoryError(
            f"simulated out of memory at img_size {point.img_size} (VIMBENCH_SIMULATE_OOM_ABOVE={above})"
        )


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text or "DefaultCPUAllocator" in text
    )


def main() -> int:
    """Read a Point (JSON on stdin, or argv[1]), measure it, print one JSON row on the real stdout."""
    _die_with_parent()
    real_stdout = os.dup(1)
    os.dup2(2, 1)  # anything libraries print goes to stderr; stdout carries only the row
    sys.stdout = sys.stderr
    text = sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read()
    point = Point.from_json(text)
    row = measure_point(point, _simulation_hooks)
    with os.fdopen(real_stdout, "w") as out:
        out.write(json.dumps(row, default=str) + "\n")
    return 0


def _die_with_parent() -> None:
    """Workers run in their own session; if the sweep is killed, a worker must not keep holding a GPU."""
    spawner = _env_int(PARENT_PID_ENV)
    parent = os.getppid() if spawner is None else spawner
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG (Linux)
    if os.getppid() != parent:  # the sweep died before the request took effect (even before we started)
        sys.exit(1)




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


def _build(point: Point, options: dict[str, str]):
    """(model, step) where step() runs one timed iteration: a forward, or a full training step."""
    import torch

    from vimbench.models import create_model

    dtype = torch_dtype(point.dtype)
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
    """Why the model cannot run this resolution (its family's word: a timm model's shape error), or None."""
    from vimbench.models import get_spec

    spec = get_spec(point.model)
    return spec.contract.unsupported_reason(spec, point.img_size, point.options)


def _gflops(point: Point) -> float | None:
    try:
        from vimbench.profile.flops import model_gflops

        return model_gflops(point.model, point.img_size, batch_size=1, options=point.options)
    except Exception:
        return None


def measure_point(point: Point, hooks: Callable[[Point], None] | None = None) -> ResultRow:
    """One full row for `point`; OOM and exceptions become rows (status oom / error), a size the model cannot
    run a `skipped` row; never raises."""
    import torch

    started = time.perf_counter()
    if point.threads:
        torch.set_num_threads(point.threads)
    row = identity_row(point)
    row["threads"] = torch.get_num_threads()
    collectors: list[Collector] = []
    try:
        reason = _unsupported(point)
        if reason is not None:  # the model cannot run this size: say why, measure nothing
            row = failure_row(point, "skipped", reason, threads=row["threads"])
            row["duration_s"] = time.perf_counter() - started
            return row
        collectors = start_collectors(point, row.get("device_uuid") or "")
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
    try:
        return typed_row(row)  # every key a column of the spec, every value of its kind
    except ValueError as exc:  # a collector's bug: the point becomes an error row that says so
        return failure_row(point, "error", f"bad results row: {exc}", duration_s=row["duration_s"])


if __name__ == "__main__":
    sys.exit(main())
