"""Build a torch C++ extension without ever hanging on a dead builder's lock.

`torch.utils.cpp_extension.load` guards its build directory with a FileBaton: a `lock` file created with
O_EXCL and removed when the build ends. A builder killed mid-build (a sweep stopped during the first C++ scan
build) leaves that file behind, and every later `load` of the same extension polls for it forever, with no
timeout and no message. Here every build or load runs under our own `flock` on a file in the same directory.
The kernel drops an flock when its holder dies, so once we hold it, no live vimbench process is building
there, and a torch `lock` left in the directory belongs to a dead one: it is removed before torch looks.
Waiting for a live builder is bounded (`timeout_s`), then the caller gets an error instead of a hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TORCH_LOCK = "lock"  # torch.utils.file_baton.FileBaton's file in the build directory
OUR_LOCK = "vimbench-build.lock"
DEFAULT_TIMEOUT_S = 900.0  # a first build: ~25 s on an idle 2-core VM; room for a busy one


class BuildLockTimeout(RuntimeError):
    """Another live process kept the build directory longer than we are willing to wait."""


def build_directory(name: str) -> Path:
    """Where torch builds extension `name` (TORCH_EXTENSIONS_DIR respected)."""
    from torch.utils import cpp_extension

    try:
        return Path(cpp_extension._get_build_directory(name, verbose=False))
    except AttributeError:  # private helper gone in some torch: its documented default layout
        root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
        return Path(root) / name


def _holder(fd: int) -> str:
    pid = os.pread(fd, 64, 0).decode(errors="replace").strip()
    return f"pid {pid}" if pid.isdigit() else "pid unknown"


@contextlib.contextmanager
def exclusive_build(
    build_dir: Path, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.2
) -> Iterator[None]:
    """Hold our flock on `build_dir` (waiting at most `timeout_s` for a live holder), with any torch lock
    left by a dead builder removed. BuildLockTimeout names the live holder's pid."""
    build_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(build_dir / OUR_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BuildLockTimeout(
                        f"{build_dir} has been held by another build ({_holder(fd)}) for more than "
                        f"{timeout_s:g} s"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        stale = build_dir / TORCH_LOCK
        if stale.exists():
            stale.unlink(missing_ok=True)
            log.warning("removed %s, left by a build that was killed", stale)
        yield
    finally:
        os.close(fd)  # releases the flock


def load_extension(name: str, timeout_s: float = DEFAULT_TIMEOUT_S, **load_kwargs: Any) -> Any:
    """`torch.utils.cpp_extension.load(name=name, **load_kwargs)` under `exclusive_build`."""
    from torch.utils import cpp_extension

    with exclusive_build(build_directory(name), timeout_s):
        return cpp_extension.load(name=name, **load_kwargs)
