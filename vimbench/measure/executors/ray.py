"""Run the points of one sweep as Ray tasks on a cluster; rows come back to the driver, which writes them.

Ray is an optional extra (`pip install vimbench[ray]`); it is imported only when this executor runs.
vimbench (same version) must be installed on every node: each task runs the same isolated worker
(`run_point_subprocess`) on its node, so a point is measured exactly as `vimbench sweep` measures it locally.

GPU claims. By default a cuda point is a task with `num_gpus=1`: Ray gives it one GPU of its node and sets
CUDA_VISIBLE_DEVICES to it, so the worker measures on `cuda:0` and two points never share a GPU; it also
claims its node's CPUs divided by its GPUs and runs no more torch threads than that, so points on one node
do not fight over the cores that launch their kernels. A cpu point claims `num_cpus` = its torch thread
count instead, so CPU points never share cores. `num_gpus_per_point=0`
is the CPU/test mode (every point runs on cpu, `ray.init(num_cpus=2)` on a laptop or CI); it refuses cuda
points, which would otherwise run on a GPU nobody claimed.

Scheduling. At most as many tasks as the cluster has GPUs (CPU mode: CPUs) are in flight; the next largest
point is submitted when one finishes, after the sweep's `skip` check, so resume and skip-after-OOM behave as
in a local sweep. `on_row` runs in the driver as each task completes (`ray.wait`), so results.csv is written
in one place. Tasks have `max_retries=0`: a task whose worker or node dies (WorkerCrashedError, NodeDiedError,
...) becomes an `error` row with Ray's message, which `vimbench sweep --resume` can run again.

Each task also returns a short description of its node and GPU (`worker_environments`, for run.json).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..plan import Point
from .base import OnRow, SkipCheck
from .multi_gpu import largest_first

RAY_MISSING = "--executor ray needs Ray: pip install vimbench[ray]"
# run_point_subprocess's signature; injectable for tests (pickled to the task, so define it at module level)
Runner = Callable[[Point, Mapping[str, str] | None], dict]
_ERROR_CHARS = 500


def import_ray() -> Any:
    """Ray, or a ValueError with the one line that says how to get it."""
    try:
        import ray
    except ImportError:
        raise ValueError(RAY_MISSING) from None
    return ray


def node_summary() -> dict[str, Any]:
    """What the numbers of a task depend on, read where the task runs without touching CUDA (NVML only)."""
    import platform

    import torch

    from vimbench import __version__

    from ..environment import nvml_devices

    gpus, driver = nvml_devices()
    summary: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "vimbench": __version__,
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "nvidia_driver": driver,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus_nvml": gpus,
    }
    with contextlib.suppress(Exception):
        import ray

        context = ray.get_runtime_context()
        summary["ray_node_id"] = context.get_node_id()
        summary["ray_gpu_ids"] = [str(i) for i in ray.get_gpu_ids()]
    return summary


def run_point_task(
    point_json: str, on_gpu: bool, threads: int, runner: Runner | None = None
) -> dict[str, Any]:
    """The body of a Ray task: measure one point in a fresh worker process on this node.

    On a GPU task, Ray has set CUDA_VISIBLE_DEVICES to the claimed GPU, which the worker inherits, so the
    point runs on `cuda:0`. Returns {"row": the result row, "worker": node_summary()}.
    """
    point = Point.from_json(point_json)
    point = replace(point, device="cuda:0" if on_gpu else "cpu", threads=threads)
    if runner is None:
        from .local import run_point_subprocess as runner
    row = dict(runner(point, None))
    worker = node_summary()
    row["host"] = row.get("host") or worker["host"]
    gpu_ids = worker.get("ray_gpu_ids") or []
    if on_gpu and len(gpu_ids) == 1:
        row["device"] = f"cuda:{gpu_ids[0]}"  # the GPU as its node numbers it, not the worker's cuda:0
    return {"row": row, "worker": worker}


class RayExecutor:
    """Dispatch points as Ray tasks (one GPU each) and gather their rows in the driver.

    `address`: a running cluster ("auto", "ray://head:10001", "head:6379"); None starts a local Ray (or joins
    RAY_ADDRESS, Ray's own rule). An already initialized Ray (e.g. in tests) is used as it is.
    `num_gpus_per_point`: 1 (a GPU per cuda point; cpu points claim their threads as CPUs), or 0 for the
    CPU/test mode described in the module docstring.
    """

    def __init__(
        self,
        address: str | None = None,
        num_gpus_per_point: int = 1,
        *,
        runner: Runner | None = None,
        max_in_flight: int | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
    ):
        if num_gpus_per_point not in (0, 1):
            raise ValueError(
                f"num_gpus_per_point: 1 (a GPU per point) or 0 (CPU/test mode), not {num_gpus_per_point}"
            )
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.address = address
        self.num_gpus_per_point = num_gpus_per_point
        self.runner = runner
        self.max_in_flight = max_in_flight
        self.init_kwargs = dict(init_kwargs or {})
        self.worker_environments: list[dict[str, Any]] = []
        self._workers: dict[tuple[str, str], dict[str, Any]] = {}

    def describe(self) -> dict[str, Any]:
        """For run.json: where and how the points were dispatched."""
        return {"executor": "ray", "ray_address": self.address, "num_gpus_per_point": self.num_gpus_per_point,
                "schedule": "largest-first", "max_retries": 0,
                "isolation": "one Ray task per point, running one worker process on the GPU Ray assigned"}

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; True when this call started it (then `run` shuts it down)."""
        if ray.is_initialized():
            return False
        kwargs = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
        try:
            ray.init(address=self.address, **kwargs)
        except Exception as exc:  # unreachable address, broken install, ...: one line, not Ray's traceback
            ray.shutdown()  # whatever a failed start left running
            where = self.address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ValueError(f"cannot start or reach Ray at {where}: {type(exc).__name__}: {first}") from None
        return True

    def _check_points(self, points: Sequence[Point]) -> None:
        if self.num_gpus_per_point == 0:
            gpu = [p for p in points if p.device != "cpu"]
            if gpu:
                raise ValueError(f"Ray CPU/test mode (num_gpus_per_point=0) cannot run {gpu[0].device} "
                                 "points: they would use a GPU no task claimed")

    def _capacity(self, ray: Any, points: Sequence[Point]) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        resources = ray.cluster_resources()
        if self.num_gpus_per_point and any(p.device != "cpu" for p in points):
            gpus = int(resources.get("GPU", 0))
            if gpus < 1:
                raise ValueError("the Ray cluster has no GPU: cuda points claim one GPU each (num_gpus=1)")
            return gpus
        return max(1, int(resources.get("CPU", 1)))

    def _claim(self, point: Point, node_cpus: int, cpus_per_gpu: int) -> tuple[dict[str, Any], int]:
        """(Ray options, torch threads) for a point. A GPU point: one GPU and its node's CPU share per GPU,
        in a fresh Ray worker process (no CUDA state carried between points). A CPU point: as many CPUs
        as its threads (capped at the largest node). Either way the worker runs no more threads than it
        claimed, so concurrent points never fight over cores."""
        if self.num_gpus_per_point and point.device != "cpu":
            cpus = max(1, min(point.threads or cpus_per_gpu, cpus_per_gpu))
            return {"num_gpus": 1, "num_cpus": cpus, "max_retries": 0, "max_calls": 1}, cpus
        cpus = max(1, min(point.threads or 1, node_cpus))
        return {"num_gpus": 0, "num_cpus": cpus, "max_retries": 0}, cpus

    def run(self, points: Sequence[Point], on_row: OnRow, skip: SkipCheck | None = None) -> None:
        """Submit points largest first as capacity frees up; record each row in this (the driver's) thread."""
        ray = import_ray()
        self._check_points(points)
        started = self._connect(ray)
        try:
            self._run(ray, points, on_row, skip)
        finally:
            self.worker_environments = sorted(self._workers.values(),
                                              key=lambda w: (w.get("host", ""), w.get("device_uuid", "")))
            if started:
                ray.shutdown()

    def _run(self, ray: Any, points: Sequence[Point], on_row: OnRow, skip: SkipCheck | None) -> None:
        task = ray.remote(run_point_task)
        capacity = self._capacity(ray, points)
        node_cpus, cpus_per_gpu = _largest_node_cpus(ray), _cpus_per_gpu(ray)
        pending = largest_first(points)
        in_flight: dict[Any, Point] = {}
        try:
            while pending or in_flight:
                while pending and len(in_flight) < capacity:
                    point = pending.pop(0)
                    skipped = skip(point) if skip is not None else None
                    if skipped is not None:
                        on_row(point, skipped)
                        continue
                    on_gpu = bool(self.num_gpus_per_point) and point.device != "cpu"
                    options, threads = self._claim(point, node_cpus, cpus_per_gpu)
                    ref = task.options(**options).remote(point.to_json(), on_gpu, threads, self.runner)
                    in_flight[ref] = point
                if not in_flight:
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    point = in_flight.pop(ref)
                    on_row(point, self._collect(ray, ref, point))
        except BaseException:
            for ref in in_flight:  # a polite cancel lets the task kill its worker process
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=False)
            raise

    def _collect(self, ray: Any, ref: Any, point: Point) -> dict:
        """The task's row, or an `error` row when the task, its worker or its node died."""
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as exc:
            return self._lost_row(point, exc)
        row, worker = dict(result["row"]), dict(result.get("worker") or {})
        self._remember(worker, row)
        return row

    def _lost_row(self, point: Point, exc: BaseException) -> dict:
        """Described from the driver (the node that ran the point is gone or did not answer): no host."""
        from ..rows import failure_row

        message = " ".join(str(exc).split())
        row = failure_row(point, "error", f"Ray task lost: {type(exc).__name__}: {message}")
        row["host"] = ""
        return row

    def _remember(self, worker: dict[str, Any], row: Mapping[str, Any]) -> None:
        """One entry per (host, GPU): the node summary plus the GPU the rows name, and a point count."""
        key = (str(row.get("host", "")), str(row.get("device_uuid") or row.get("device_name") or ""))
        entry = self._workers.get(key)
        if entry is None:
            entry = {**worker, "host": key[0], "device_name": row.get("device_name", ""),
                     "device_uuid": row.get("device_uuid", ""), "points": 0}
            self._workers[key] = entry
        entry["points"] += 1


def _largest_node_cpus(ray: Any) -> int:
    """CPUs of the biggest live node: a task asking for more could never be scheduled."""
    cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max([c for c in cpus if c > 0], default=1)


def _cpus_per_gpu(ray: Any) -> int:
    """The CPUs a GPU point may claim: each GPU node's CPUs split evenly over its GPUs, the smallest share."""
    shares = [int(r.get("CPU", 0) // r["GPU"]) for n in ray.nodes() if n.get("Alive")
              for r in [n.get("Resources", {})] if r.get("GPU", 0) >= 1]
    return max(1, min(shares, default=1))
