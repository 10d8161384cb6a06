"""Kernel checks run in Triton's interpreter, each reported as its own test.

Triton decides at import time whether its library functions are interpretable, so TRITON_INTERPRET=1 must be
set before triton is imported: a test module's checks run in ONE fresh subprocess started with it (nothing
leaks into other test files). A module writes its checks into a dict and asks for its tests:

    interpreter_results, test_in_triton_interpreter = interpreter_tests(__file__, CHECKS)

The subprocess imports the module from its own folder (which registers its checks here again) and runs only
the checks this pytest session selected (`-k` runs a few, not all). The interpreter is slow and
single-threaded while most of the suite leaves the second core of a 2-core runner idle, so tests/conftest.py
starts every module's subprocess right after collection, one at a time in a background thread
(`start_selected`); each module's fixture then waits for its own results. Without that call the fixture runs
its subprocess itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

Checks = dict[str, Callable[[], object]]
Results = dict[str, dict]  # name -> {"error": traceback or None, "seconds": float}
TIMEOUT_S = 1800  # the subprocess of one module; each test's own limit is pytest-timeout's
_SUITES: dict[str, tuple[Checks, Callable[[], None] | None]] = {}
_STARTED: dict[str, Future] = {}
_RUNNING: set[subprocess.Popen] = set()
_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def interpreter_tests(test_file: str | Path, checks: Checks, setup: Callable[[], None] | None = None):
    """(module-scoped fixture `interpreter_results`, test `test_in_triton_interpreter` parametrized over the
    check names) for the module at `test_file`; `setup` runs once in the subprocess before the checks (e.g.
    shrinking a kernel config so tiny shapes cross its boundaries). Bind both names at module level."""
    path = str(Path(test_file).resolve())
    _SUITES[path] = (checks, setup)

    @pytest.fixture(scope="module", name="interpreter_results")
    def interpreter_results(request) -> Results:
        pytest.importorskip("triton")
        started = _STARTED.get(path)
        if started is not None:
            return started.result()
        return run_in_interpreter(path, _selected(request.session.items).get(path) or list(checks))

    @pytest.mark.parametrize("name", list(checks))
    def test_in_triton_interpreter(interpreter_results, name, record_property):
        """Each check of this module, run on CPU tensors in Triton's interpreter."""
        result = interpreter_results.get(name, {"error": f"{name} did not run", "seconds": 0.0})
        record_property("interpreter_s", result["seconds"])
        if result["error"] is not None:
            pytest.fail(result["error"], pytrace=False)

    return interpreter_results, test_in_triton_interpreter


def start_selected(items: Iterable[pytest.Item]) -> None:
    """Start the subprocesses of every module with selected interpreter checks, in collection order, one at
    a time in a background thread."""
    global _POOL
    selected = _selected(items)
    if not selected:
        return
    _POOL = _POOL or ThreadPoolExecutor(max_workers=1, thread_name_prefix="triton-interpreter")
    for path, names in selected.items():
        if path not in _STARTED:
            _STARTED[path] = _POOL.submit(run_in_interpreter, path, names)


def stop_all() -> None:
    """End of session: kill what still runs (a `-x` stop, Ctrl-C), start nothing new."""
    if _POOL is not None:
        _POOL.shutdown(wait=False, cancel_futures=True)
    with _LOCK:
        for proc in _RUNNING:
            proc.kill()


def _selected(items: Iterable[pytest.Item]) -> dict[str, list[str]]:
    """{module path: selected check names} for the registered modules."""
    selected: dict[str, list[str]] = {}
    for item in items:
        path = str(Path(item.path).resolve())
        params = getattr(getattr(item, "callspec", None), "params", {})
        ours = getattr(item, "originalname", "") == "test_in_triton_interpreter"
        if path in _SUITES and ours and "name" in params:
            selected.setdefault(path, []).append(params["name"])
    return selected


def run_in_interpreter(test_file: str, names: list[str]) -> Results:
    """Run `names` of the module at `test_file` in a fresh interpreter-mode Python (one torch thread: the
    rest of the suite runs beside it)."""
    path = Path(test_file)
    code = (f"import sys, json; sys.path.insert(0, {str(path.parent)!r}); import {path.stem}; "
            f"from vimbench.testing.interpreter import _run_here; "
            f"print('@@' + json.dumps(_run_here({str(path)!r}, {names!r})))")
    env = {"OMP_NUM_THREADS": "1", **os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    with _LOCK:
        _RUNNING.add(proc)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n(killed after {TIMEOUT_S} s)"
    finally:
        with _LOCK:
            _RUNNING.discard(proc)
    marked = [line for line in out.splitlines() if line.startswith("@@")]
    if not marked:
        raise RuntimeError(f"interpreter checks crashed (exit {proc.returncode}):\n{err[-3000:]}")
    return json.loads(marked[-1][2:])


def _run_here(test_file: str, names: list[str]) -> Results:
    """Inside the subprocess: the registered module's setup, then each check's traceback (or None) and
    duration."""
    skip_repatching_in_device_calls()
    checks, setup = _SUITES[test_file]
    if setup is not None:
        setup()
    results: Results = {}
    for name in names:
        started = time.perf_counter()
        try:
            checks[name]()
            error = None
        except Exception:
            error = traceback.format_exc()
        results[name] = {"error": error, "seconds": round(time.perf_counter() - started, 2)}
    return results


def skip_repatching_in_device_calls() -> bool:
    """Triton's interpreter patches triton.language for a kernel launch (and restores it after), then patches
    it AGAIN, scanning every module member, on each call of a `@triton.jit` helper inside the kernel: about a
    third of our scan checks' time. Inside a launch that already patched the same language modules the
    second patch changes nothing (every patch it makes is idempotent), so skip it. Numbers are unchanged;
    False (and nothing done) when this Triton's interpreter is not laid out as expected."""
    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        return False
    parts = [getattr(interpreter, name, None) for name in ("GridExecutor", "_patch_lang", "_LangPatchScope")]
    executor, patch_lang, empty_scope = parts
    if any(part is None for part in parts) or getattr(patch_lang, "_vimbench", False):
        return False
    patched: list[frozenset[int] | None] = []  # per launch in progress: the modules patched in it so far
    lang_ids = (id(tl), id(tl.core))

    def langs(fn) -> frozenset[int]:
        return frozenset(id(v) for v in fn.__globals__.values() if id(v) in lang_ids)

    def patch_once(fn):
        if patched and patched[-1] is not None and langs(fn) <= patched[-1]:
            return empty_scope()  # a helper called inside a launch that patched these modules already
        scope = patch_lang(fn)
        if patched:  # the launch's own patch, or a helper's that reached further (tl.core as well as tl)
            patched[-1] = langs(fn) | (patched[-1] or frozenset())
        return scope

    launch = executor.__call__

    def launch_tracked(self, *args, **kwargs):
        patched.append(None)
        try:
            return launch(self, *args, **kwargs)
        finally:
            patched.pop()

    patch_once._vimbench = True
    interpreter._patch_lang = patch_once
    executor.__call__ = launch_tracked
    return True
