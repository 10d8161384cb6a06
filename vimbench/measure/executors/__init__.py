"""Where points run: the executors, and choosing one (`make_executor`, what the CLI calls).

- no --devices, --executor local: `LocalExecutor`, one point after another on the sweep's --device.
- --devices all | cuda:0,cuda:1,...: `MultiDeviceExecutor`, one worker per local GPU, largest points first.
- --executor ray [--ray-address ADDR]: `RayExecutor`, one Ray task per point claiming one GPU.

A sweep spread over GPUs of different models records each row's `device_name`; curves and gates must never
mix two of them, so run-level code asks `distinct_devices(rows)` (vimbench.results) before comparing anything.
"""

from __future__ import annotations

from vimbench.results import distinct_devices, require_one_device

from .base import Executor, OnRow, OomSkipper, SkipCheck
from .local import LocalExecutor, run_point_subprocess

EXECUTORS = ("local", "ray")
__all__ = [
    "EXECUTORS",
    "Executor",
    "LocalExecutor",
    "OnRow",
    "OomSkipper",
    "SkipCheck",
    "distinct_devices",
    "make_executor",
    "require_one_device",
    "run_point_subprocess",
]


def make_executor(
    devices: str | None = None, executor: str = "local", ray_address: str | None = None
) -> Executor:
    """The executor for `vimbench sweep --devices/--executor/--ray-address`. ValueError: one line."""
    kind = (executor or "local").strip().lower()
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    if kind == "ray":
        if devices:
            raise ValueError("--devices picks local GPUs; with --executor ray, Ray assigns one GPU per point")
        from .ray import RayExecutor, import_ray

        import_ray()  # fail now, with the install hint, rather than after planning
        return RayExecutor(address=ray_address or None)
    if ray_address:
        raise ValueError("--ray-address needs --executor ray")
    if devices is None or not devices.strip():
        return LocalExecutor()
    from vimbench.devices import parse_devices

    from .multi_gpu import MultiDeviceExecutor

    return MultiDeviceExecutor(parse_devices(devices))
