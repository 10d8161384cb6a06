"""One writer per run folder: a sweep holds an exclusive `flock` on RUN/.sweep.lock while it runs.

Two sweeps writing one folder would measure every point twice while competing for the machine, duplicate
rows and lose one run.json. The kernel drops an flock when its holder dies (kill -9 included), so a crashed
sweep never leaves the folder locked; the lock file itself stays (removing it would race with a new holder).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".sweep.lock"


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
