"""Kernel checks: relative error against a float64 reference, and checks run in one Triton-interpreter
subprocess (TRITON_INTERPRET must be set before triton is imported), each reported on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

import torch


def run_interpreter_checks(test_file: str | Path, names: list[str]) -> dict[str, str | None]:
    """Run `_run_checks(names)` of the test module at `test_file` in a fresh interpreter-mode Python (the
    module imported from its own folder): {name: None or the failure}."""
    path = Path(test_file)
    code = (f"import sys, json; sys.path.insert(0, {str(path.parent)!r}); import {path.stem} as m; "
            f"print('@@' + json.dumps(m._run_checks({names!r})))")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    marked = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if not marked:
        raise RuntimeError(f"interpreter checks crashed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(marked[-1][2:])


def run_checks_here(checks: dict, names: list[str]) -> dict[str, str | None]:
    """Inside the subprocess: each check's traceback, or None if it passed."""
    results = {}
    for name in names:
        try:
            checks[name]()
            results[name] = None
        except Exception:
            results[name] = traceback.format_exc()
    return results


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """max|x - ref| / max|ref| (NaN anywhere -> inf, so it never passes)."""
    x, ref = x.double(), ref.double()
    if not torch.isfinite(x).all():
        return float("inf")
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
