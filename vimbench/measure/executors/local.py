"""Run each point in a fresh worker process on this machine (`python -m vimbench.measure.worker`).

`run_point_subprocess` is the parent's side of a worker: it sends the Point as JSON, reads back one JSON row,
and turns what the worker cannot report (crashes, signal kills, hangs past the timeout) into rows itself.
Every executor (local, multi-GPU, Ray) starts its workers through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..plan import Point
from ..rows import failure_row, now_utc
from ..worker import PARENT_PID_ENV
from .base import OnRow, SkipCheck

WORKER_MODULE = "vimbench.measure.worker"


class LocalExecutor:
    """Points one after another on this machine, each in a fresh `python -m vimbench.measure.worker`."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = dict(env) if env is not None else None

    def describe(self) -> dict[str, Any]:
        """For run.json: how the points ran."""
        return {"executor": "local", "schedule": "plan order, one point at a time",
                "isolation": "one fresh worker process per point"}

    def run(self, points: Sequence[Point], on_row: OnRow, skip: SkipCheck | None = None) -> None:
        for point in points:
            skipped = skip(point) if skip is not None else None
            if skipped is not None:
                on_row(point, skipped)
                continue
            on_row(point, run_point_subprocess(point, env=self.env))


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_row(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "status" in row:
            return row
    return None


def _stderr_reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


def run_point_subprocess(point: Point, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run `point` in a fresh worker process and return its row, whatever happens to the worker.

    `env` adds to (overrides) this process's environment. Hangs past point.timeout_s are killed (the whole
    process group, compile workers included) and become `timeout` rows; crashes and signal kills `error`.
    """
    full_env = {**os.environ, **(env or {}), PARENT_PID_ENV: str(os.getpid())}
    cmd = [sys.executable, "-m", WORKER_MODULE]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=full_env,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(point.to_json(), timeout=point.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        return failure_row(
            point,
            "timeout",
            f"no result after {point.timeout_s:g} s; worker killed",
            duration_s=time.perf_counter() - start,
        )
    except BaseException:  # Ctrl-C in the parent: do not leave the worker running
        _kill_group(proc)
        raise
    duration = time.perf_counter() - start
    row = _last_row(stdout)
    if row is not None:
        row["duration_s"] = duration  # the worker's whole life: startup, build, warmup, timing
        row.setdefault("timestamp", now_utc())
        return row
    rc = proc.returncode
    if rc is not None and rc < 0:
        name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        hint = " (likely the OS out-of-memory killer)" if -rc == signal.SIGKILL else ""
        reason = f"worker killed by {name}{hint}"
    else:
        reason = f"worker exited with code {rc}: {_stderr_reason(stderr)}"
    return failure_row(point, "error", reason, duration_s=duration)
