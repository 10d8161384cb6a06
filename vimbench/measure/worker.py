"""Measure one Point in a fresh process: `python -m vimbench.measure.worker < point.json` prints one JSON row.

A fresh process per point keeps allocator state, compile caches and a CUDA OOM from leaking into the next
point. The worker turns what it can catch (OOM, exceptions) into a row itself; `run_point_subprocess` in the
parent turns what it cannot (crashes, signal kills, hangs past the timeout) into rows too.

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
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .plan import Point

DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_ERROR_CHARS = 500


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def point_options(point: Point) -> dict[str, str]:
    """The model options a point carries, as the family contract takes them."""
    return {"scan_backend": point.scan_backend, "attn_backend": point.attn_backend}


def resolved_options(point: Point) -> dict[str, str]:
    """The model's options as they will really run ("auto" made concrete); ValueError if one cannot."""
    from vimbench.models import get_spec

    spec = get_spec(point.model)
    return spec.contract.resolve_options(spec, point_options(point), point.device)


def precision_mode(point: Point) -> str:
    """How a reduced dtype is applied: weights and input cast (infer) or fp32 weights + autocast (train)."""
    if point.dtype == "fp32":
        return "fp32"
    return "cast" if point.mode == "infer" else "autocast"


def identity_row(point: Point) -> dict[str, Any]:
    """The columns that say what was measured, computed the same way in the parent and the worker."""
    import torch

    from vimbench.models import get_spec, option_columns

    from .environment import cpu_capability, describe_device

    spec = get_spec(point.model)
    try:
        options = resolved_options(point)
    except ValueError:  # the row still says what was asked for
        options = point_options(point)
    try:
        device = describe_device(point.device)
    except Exception:
        device = {"name": "", "uuid": ""}
    return {
        "model": spec.name,
        "family": spec.family,
        "img_size": point.img_size,
        "tokens": spec.tokens(point.img_size),
        "batch_size": point.batch_size,
        "dtype": point.dtype,
        "device": point.device,
        "device_name": device["name"],
        "device_uuid": device["uuid"],
        "mode": point.mode,
        **option_columns(spec, options),
        "compile": point.compile,
        "channels_last": point.channels_last,
        "iters": point.iters,
        "repeats": point.repeats,
        "host": socket.gethostname(),
        "warmup": point.warmup,
        "min_time_s": point.min_time_s,
        "threads": point.threads,
        "precision": precision_mode(point),
        "torch_version": torch.__version__,
        "cpu_capability": cpu_capability(),  # SIMD level of torch's CPU kernels and the cpu scan build
    }


def failure_row(point: Point, status: str, error: str, **extra: Any) -> dict[str, Any]:
    row = identity_row(point)
    row.update(status=status, error=" ".join(str(error).split())[:_ERROR_CHARS], timestamp=now_utc(), **extra)
    return row


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
    from .runner import measure_point

    row = measure_point(point, _simulation_hooks)
    with os.fdopen(real_stdout, "w") as out:
        out.write(json.dumps(row, default=str) + "\n")
    return 0


def _die_with_parent() -> None:
    """Workers run in their own session; if the sweep is killed, a worker must not keep holding a GPU."""
    parent = os.getppid()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)


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
    full_env = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "vimbench.measure.worker"]
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


if __name__ == "__main__":
    sys.exit(main())
