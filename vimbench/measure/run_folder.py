"""Run folders: new ones get names no other sweep gets, and each has one writer at a time.

A sweep holds an exclusive `flock` on RUN/.sweep.lock while it runs.

Two sweeps writing one folder would measure every point twice while competing for the machine, duplicate
rows and lose one run.json. The kernel drops an flock when its holder dies (kill -9 included), so a crashed
sweep never leaves the folder locked; the lock file itself stays (removing it would race with a new holder).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = ".sweep.lock"
_MAX_SLUG = 80  # folder names stay far below the 255-byte limit of common filesystems


def models_slug(models: list[str]) -> str:
    """"vim-t-deit-t"; a long list keeps its first models plus a count and a digest of the whole list; ':' and
    '/' of timm:NAME become '_'."""
    models = [m.replace(":", "_").replace("/", "_") for m in models]
    slug = "-".join(models)
    if len(slug) <= _MAX_SLUG:
        return slug
    digest = hashlib.sha1(",".join(models).encode()).hexdigest()[:8]
    return f"{'-'.join(models[:3])}-and-{len(models) - 3}-more-{digest}"


def new_dir(root: Path, name_at: Callable[[datetime], str]) -> Path:
    """Create and return a folder no other call ever got: `name_at(now)` names it (millisecond stamps), and an
    atomic mkdir settles two sweeps started in the same millisecond. ValueError (one line) if it cannot."""
    while True:
        path = root / name_at(datetime.now(UTC))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            time.sleep(0.001)
        except OSError as exc:
            raise ValueError(f"cannot create run folder {path}: {exc.strerror or exc}") from None


def stamp(now: datetime) -> str:
    """UTC time to the millisecond, sortable as text: 20261127T170734.512Z."""
    return now.strftime("%Y%m%dT%H%M%S.") + f"{now.microsecond // 1000:03d}Z"


class RunFolderBusy(ValueError):
    """Another live process is writing this run folder (the message names its pid)."""


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder, or say in one line (ValueError) why it cannot be one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir} is a file, not a run folder; give a folder (new or a run's)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create run folder {run_dir}: {exc.strerror or exc}") from None
    if not os.access(run_dir, os.W_OK):
        raise ValueError(f"run folder {run_dir} is not writable")


def _holder(fd: int) -> str:
    text = os.pread(fd, 4096, 0).decode("utf-8", errors="replace").strip()
    pid, _, rest = text.partition(" ")
    return f"pid {pid}{f' on {rest}' if rest else ''}" if pid.isdigit() else "pid unknown"


@contextlib.contextmanager
def hold_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold RUN/.sweep.lock for the duration; RunFolderBusy at once if another process holds it."""
    prepare_run_dir(run_dir)
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ValueError(f"cannot lock run folder {run_dir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(
                f"{run_dir} is being written by another sweep ({_holder(fd)}); wait for it to finish or "
                "pick another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
