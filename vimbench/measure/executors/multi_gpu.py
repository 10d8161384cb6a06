"""Spread the points of one sweep over several local GPUs: one worker thread per GPU, largest points first.

Every point still runs in its own fresh worker process (`run_point_subprocess`), and that process sees only
its GPU: `CUDA_VISIBLE_DEVICES` is set to the one GPU the sweep calls `cuda:N`, so inside the worker the
GPU is `cuda:0`. Two points never share a GPU, so timings and memory stay as clean as a single-GPU run.

Device identity. The worker records the name and UUID of the GPU it really ran on (torch honours
`CUDA_VISIBLE_DEVICES`). Rows are then labelled with the sweep's numbering (`device` = `cuda:N`, not the
worker's `cuda:0`). A row the parent had to write itself (timeout, crash) describes the point as the parent
sees `cuda:0`, so its name and UUID are replaced by the pinned GPU's; a worker row whose UUID differs from
the pinned GPU's is kept as measured (it says where the point really ran) and reported once as a warning.

CPU shares. Parallel workers would otherwise fight over the CPU that launches their kernels (small points are
launch-bound), so the usable CPUs are split into one contiguous share per GPU: each GPU's thread pins itself
to its share, the workers it starts inherit it, and a worker never runs more torch threads than its share
(the row's `threads` says how many it used). With fewer CPUs than GPUs nothing is pinned.

Scheduling. The coordinating (caller's) thread owns the queue: it hands the next largest point to whichever
GPU is free, asks the sweep's `skip` callback just before starting it, and calls `on_row` for every row,
one at a time, so the sweep's bookkeeping needs no locks (the store's append is process-safe anyway).

Skip-after-OOM with parallel GPUs. Largest-first starts the larger points of a curve (model + every knob but
resolution) before its smaller ones, so an OOM seen during the run never has larger points of its curve
still queued: each size is tried, and each OOM (it fails fast, at the first forward) is recorded as `oom`;
points running on other GPUs finish and are recorded as measured. The sweep's `skip` is still asked before
every start, so OOMs known beforehand (a resumed run) drop the larger queued points of their curve as
`skipped-oom`, as in a single-GPU run. The curve is the plan's point, whatever GPU ran it: in a sweep that
mixes GPU models, an OOM on the smaller GPU also counts for the larger one.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..plan import Point
from .base import OnRow, SkipCheck

# run_point_subprocess's signature: (point, extra environment) -> one results row
Runner = Callable[[Point, Mapping[str, str] | None], dict]
# "cuda:N" -> {"name": ..., "uuid": ...} as the coordinating process sees the GPU
Identify = Callable[[str], Mapping[str, Any]]

_CUDA = re.compile(r"^cuda:(\d+)$")
_WORKER_MODULE = "vimbench.measure.worker"
_TRAIN_FACTOR = 3  # forward + backward (~2x forward)


def point_cost(point: Point) -> float:
    """Relative work of a point, for largest-first scheduling (longest-processing-time-first).

    cost ~ batch x the family's work per image (`ModelFamily.relative_cost`: linear in tokens for Vim,
    quadratic for DeiT's attention), x3 for training. Fixed per-point costs (process start, model build) are
    the same for every point and do not change the order. Unknown models cost 0 (they fail fast anyway).
    """
    from vimbench.models import get_spec

    try:
        spec = get_spec(point.model)
        per_image = spec.contract.relative_cost(spec, point.img_size)
    except ValueError:
        return 0.0
    return float(point.batch_size * per_image * (_TRAIN_FACTOR if point.mode == "train" else 1))


def largest_first(points: Sequence[Point]) -> list[Point]:
    """Points by decreasing cost; equal costs keep the plan's order (sorted is stable)."""
    return sorted(points, key=point_cost, reverse=True)


def pinned_environment(device: str, parent_visible: str | None = None) -> dict[str, str]:
    """Extra environment that makes `device` (the sweep's cuda:N) the only GPU a worker sees, as cuda:0.

    With no CUDA_VISIBLE_DEVICES in the parent, its cuda:N is physical index N in the same
    CUDA_DEVICE_ORDER (inherited); otherwise it is the N-th entry of the parent's list (an index or UUID).
    Non-CUDA devices (fakes in tests) get no pinning.
    """
    match = _CUDA.match(device)
    if not match:
        return {}
    index = int(match[1])
    if parent_visible is not None and parent_visible.strip():
        entries = [e.strip() for e in parent_visible.split(",") if e.strip()]
        if index >= len(entries):
            raise ValueError(f"{device} is not in CUDA_VISIBLE_DEVICES={parent_visible}")
        return {"CUDA_VISIBLE_DEVICES": entries[index]}
    return {"CUDA_VISIBLE_DEVICES": str(index)}


def cpu_shares(count: int, cpus: Sequence[int] | None = None) -> list[frozenset[int]]:
    """`count` disjoint, contiguous, equal shares of the usable CPUs; [] when there are fewer CPUs."""
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    size = len(cpus) // count if count > 0 else 0
    if size == 0:
        return []
    return [frozenset(cpus[i * size:(i + 1) * size]) for i in range(count)]


def _describe_cuda(device: str) -> Mapping[str, Any]:
    from ..environment import describe_device

    return describe_device(device)


@dataclass
class _Slot:
    """One GPU of the sweep: its name there, the worker's environment, and what the GPU is."""

    device: str
    env: dict[str, str]
    name: str = ""
    uuid: str = ""
    cpus: frozenset[int] = frozenset()  # empty: not pinned


class MultiDeviceExecutor:
    """Runs the points of a sweep on several GPUs at once, one point per GPU at a time, largest first.

    `runner` and `identify` are injectable so the scheduler can be tested without GPUs; `env` adds to every
    worker's environment (as LocalExecutor's does).
    """

    def __init__(
        self,
        devices: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        runner: Runner | None = None,
        identify: Identify | None = None,
        pin_cpus: bool = True,
    ):
        devices = list(devices)
        if not devices:
            raise ValueError("MultiDeviceExecutor needs at least one device")
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices listed twice in {','.join(devices)}: points never share a GPU")
        self.devices = devices
        self.env = dict(env or {})
        self._runner = runner
        self._identify = identify
        self.pin_cpus = pin_cpus
        self._warned_uuid: set[str] = set()
        self.worker_environments: list[dict[str, Any]] = []

    @property
    def plan_device(self) -> str:
        """The device a sweep using this executor should plan for (defaults and resume keys)."""
        return self.devices[0]

    def describe(self) -> dict[str, Any]:
        """For run.json: how the points were spread."""
        return {"executor": "multi-device", "devices": list(self.devices), "schedule": "largest-first",
                "isolation": "one worker process per point, CUDA_VISIBLE_DEVICES pinned to its GPU"}

    def _slots(self) -> list[_Slot]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        identify = self._identify or _describe_cuda
        shares = cpu_shares(len(self.devices)) if self.pin_cpus else []
        slots = []
        for i, device in enumerate(self.devices):
            slot = _Slot(device, {**self.env, **pinned_environment(device, visible)},
                         cpus=shares[i] if shares else frozenset())
            if _CUDA.match(device):
                info = identify(device)
                slot.name, slot.uuid = str(info.get("name") or ""), str(info.get("uuid") or "")
            slots.append(slot)
        return slots

    def run(self, points: Sequence[Point], on_row: OnRow, skip: SkipCheck | None = None) -> None:
        """Run every point on the first free GPU, largest first; rows reach on_row in this thread."""
        slots = self._slots()
        self.worker_environments = [
            {"device": s.device, "device_name": s.name, "device_uuid": s.uuid,
             "cuda_visible_devices": s.env.get("CUDA_VISIBLE_DEVICES"), "cpus": _cpu_list(s.cpus),
             "host": socket.gethostname(), "points": 0}
            for s in slots
        ]
        pending = largest_first(points)
        done: queue.Queue[tuple[_Slot, Point, dict]] = queue.Queue()
        inboxes: dict[str, queue.Queue[Point | None]] = {s.device: queue.Queue() for s in slots}
        threads = [
            threading.Thread(target=self._serve, args=(s, inboxes[s.device], done), daemon=True,
                             name=f"vimbench-{s.device}")
            for s in slots
        ]
        for thread in threads:
            thread.start()
        idle = list(slots)
        running = 0
        try:
            while pending or running:
                while idle and pending:
                    point = pending.pop(0)
                    skipped = skip(point) if skip is not None else None
                    if skipped is not None:
                        on_row(point, skipped)
                        continue
                    slot = idle.pop(0)
                    inboxes[slot.device].put(point)
                    running += 1
                if running:
                    slot, point, row = _get(done)
                    running -= 1
                    idle.append(slot)
                    self._count(slot)
                    on_row(point, row)
        except BaseException:
            # Ctrl-C or a failing on_row: no worker may keep a GPU busy after we return
            for inbox in inboxes.values():
                inbox.put(None)
            _stop_workers(threads)
            _record_finished(done, on_row)
            raise
        for inbox in inboxes.values():
            inbox.put(None)
        for thread in threads:
            thread.join()

    def _serve(self, slot: _Slot, inbox: queue.Queue[Point | None], done: queue.Queue) -> None:
        """One GPU's thread: run what the coordinator hands over until it sends None; always answer."""
        if slot.cpus:  # this thread only (Linux): the workers it starts inherit the share
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, slot.cpus)
        while (point := inbox.get()) is not None:
            try:
                row = self._run_one(slot, point)
            except BaseException as exc:  # the coordinator waits for one answer per point, whatever happens
                row = _error_row(point, f"{type(exc).__name__}: {exc}")
            done.put((slot, point, row))

    def _run_one(self, slot: _Slot, point: Point) -> dict:
        pinned = "CUDA_VISIBLE_DEVICES" in slot.env
        child_point = replace(point, device="cuda:0" if pinned else slot.device)
        if slot.cpus and (point.threads is None or point.threads > len(slot.cpus)):
            child_point = replace(child_point, threads=len(slot.cpus))
        try:
            runner = self._runner
            if runner is None:
                from .local import run_point_subprocess as runner
            row = dict(runner(child_point, slot.env))
        except Exception as exc:  # a bug in the runner must not stop the other GPUs
            row = _error_row(child_point, f"{type(exc).__name__}: {exc}")
        return self._attribute(slot, row)

    def _attribute(self, slot: _Slot, row: dict) -> dict:
        """Label the row with the sweep's device and the GPU it was pinned to (see the module docstring)."""
        row["device"] = slot.device
        if not slot.uuid:
            return row
        uuid = str(row.get("device_uuid") or "")
        if uuid and uuid != slot.uuid and row.get("status") == "ok":
            if slot.uuid not in self._warned_uuid:
                self._warned_uuid.add(slot.uuid)
                warnings.warn(f"{slot.device}: worker measured on GPU {uuid}, expected {slot.uuid} "
                              "(CUDA_VISIBLE_DEVICES pinning); rows keep the GPU they ran on", stacklevel=2)
            return row
        row["device_name"], row["device_uuid"] = slot.name, slot.uuid
        return row

    def _count(self, slot: _Slot) -> None:
        for entry in self.worker_environments:
            if entry["device"] == slot.device:
                entry["points"] += 1


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus)) if cpus else "all"


def _error_row(point: Point, message: str) -> dict:
    """The worker's own failure row when it can be built (it describes the device), else the bare identity."""
    from ..rows import failure_row

    try:
        return failure_row(point, "error", message)
    except Exception:
        return {"model": point.model, "img_size": point.img_size, "batch_size": point.batch_size,
                "dtype": point.dtype, "device": point.device, "mode": point.mode, "status": "error",
                "error": message}


def _get(done: queue.Queue) -> Any:
    """Block for the next finished point, waking up regularly so Ctrl-C is handled at once."""
    while True:
        with contextlib.suppress(queue.Empty):
            return done.get(timeout=0.5)


def _record_finished(done: queue.Queue, on_row: OnRow) -> None:
    """After an interruption: keep the points that finished cleanly; interrupted ones rerun on --resume."""
    while True:
        try:
            _slot, point, row = done.get_nowait()
        except queue.Empty:
            return
        if row.get("status") in ("ok", "oom"):
            with contextlib.suppress(Exception):
                on_row(point, row)


def _worker_children() -> list[Any]:
    import psutil

    try:
        children = psutil.Process().children()
    except psutil.Error:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if _WORKER_MODULE in " ".join(child.cmdline()):
                found.append(child)
    return found


def _stop_workers(threads: Sequence[threading.Thread], patience_s: float = 15.0) -> None:
    """Kill the worker processes this process started (each leads its own process group) until every
    GPU thread has returned: a thread that was about to start a worker gets it killed too."""
    import time

    deadline = time.monotonic() + patience_s
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        for child in _worker_children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=0.2)
