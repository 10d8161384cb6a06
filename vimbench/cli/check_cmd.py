"""`vimbench check`: every scan backend against a float64 reference, forward and gradients.

Exit 0 when every row passes (skips and forward-only rows included), 1 on any failure or non-finite value,
2 on bad input. On CPU, Triton backends run through the Triton interpreter, which must be switched on
before Triton kernels are defined: asking for one without TRITON_INTERPRET=1 re-runs that part in a
subprocess with the interpreter on and merges its rows into the same table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from .common import UsageError, check_output_file, console, parse_csv_list


def _parse_device(device: str | None) -> torch.device:
    """--device (default: cuda when there is one) through the one device parser (vimbench.devices)."""
    from vimbench.devices import resolve_device

    try:
        return torch.device(resolve_device(device or "auto"))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _parse_dtypes(value: str | None) -> list[str]:
    from vimbench.dtypes import DTYPES, normalize_dtype

    names = parse_csv_list(value) or list(DTYPES)
    try:
        return list(dict.fromkeys(normalize_dtype(n) for n in names))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def _parse_backends(value: str | None, device: torch.device) -> tuple[list[str], list[str]]:
    """(backends to check here, Triton backends to check in an interpreter subprocess)."""
    from vimbench.kernels import all_backends, available_backends

    available = available_backends(device)
    known = [b.name for b in all_backends()]
    if not value:
        return available, []
    local, interpreted = [], []
    for name in dict.fromkeys(parse_csv_list(value)):
        if name not in known:
            raise UsageError(f"unknown scan backend {name!r}; known: {', '.join(known)}")
        if name in available:
            local.append(name)
        elif device.type == "cpu" and name.startswith("triton") and not _interpreter_on():
            interpreted.append(name)
        else:
            raise UsageError(
                f"scan backend {name!r} is not available on {device.type}; available: {', '.join(available)}"
            )
    return local, interpreted


def _run_interpreted(
    backends: list[str], dtypes: list[str], quick: bool, max_len: int | None, no_grad: bool
) -> list[dict]:
    """Check Triton backends on CPU in a child with TRITON_INTERPRET=1; its rows come back as JSON."""
    from vimbench.kernelbench.check import INTERPRETER_MAX_LEN

    limit = min(max_len, INTERPRETER_MAX_LEN) if max_len else INTERPRETER_MAX_LEN
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [
            sys.executable,
            "-m",
            "vimbench.cli.app",
            "check",
            "--device",
            "cpu",
            "--backends",
            ",".join(backends),
            "--dtypes",
            ",".join(dtypes),
            "--max-len",
            str(limit),
            "--json",
            str(out),
            "--quiet",
        ]
        cmd += ["--quick"] if quick else []
        cmd += ["--no-grad"] if no_grad else []
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode not in (0, 1) or not out.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return [
                {
                    "backend": b,
                    "dtype": "*",
                    "case": "*",
                    "phase": "-",
                    "status": "FAIL",
                    "note": f"interpreter subprocess exited {proc.returncode}: {last}",
                }
                for b in backends
            ]
        return json.loads(out.read_text())["results"]


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "nan"
    return "inf" if value == float("inf") else f"{value:.1e}"


_STYLE = {"pass": "green", "FAIL": "bold red", "skip": "yellow", "fwd-only": "cyan"}


def _table(rows: list[dict], device: torch.device) -> Table:
    """One row per (backend, dtype, case, phase); the case name carries L, N, G and the flags."""
    table = Table(
        title=f"selective scan vs float64 reference ({device.type})",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
    )
    for col in ("backend", "dtype", "case", "phase", "worst", "max abs", "rel", "tol", "status"):
        numeric = col in ("max abs", "rel", "tol")
        table.add_column(col, justify="right" if numeric else "left", no_wrap=True)
    for r in rows:
        status = r["status"]
        measured = status in ("pass", "FAIL") and r.get("worst")
        table.add_row(
            r["backend"],
            r["dtype"],
            r["case"],
            r["phase"],
            r.get("worst", ""),
            *(_fmt(r.get(k, float("nan"))) if measured else "" for k in ("max_abs", "rel", "tol")),
            f"[{_STYLE.get(status, '')}]{status}[/]",
        )
    return table


def _notes(rows: list[dict]) -> list[str]:
    """One line per row that carries a note (failures, skips), printed under the table."""
    return [
        f"{r['backend']} {r['dtype']} {r['case']} {r['phase']}: {r['status']}: {r['note']}"
        for r in rows
        if r.get("note")
    ]


def check(
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    backends: str = typer.Option(
        None, "--backends", help="Comma-separated backends (default: all available)."
    ),
    dtypes: str = typer.Option(None, "--dtypes", help="Comma-separated: fp32,fp16,bf16 (default: all)."),
    quick: bool = typer.Option(False, "--quick", help="A small subset of cases (CI, GPU smoke runs)."),
    max_len: int = typer.Option(None, "--max-len", min=1, help="Skip cases with L above this."),
    no_grad: bool = typer.Option(False, "--no-grad", help="Forward only: skip the gradient rows."),
    json_out: Path = typer.Option(None, "--json", help="Also write every row to this JSON file."),
    quiet: bool = typer.Option(False, "--quiet", help="No table, only the summary line."),
) -> None:
    """Check every scan backend against a float64 reference (forward and gradients); exit 1 on failure."""
    from vimbench.kernelbench.check import full_cases, quick_cases, run_checks, summarize

    dev = _parse_device(device)
    dtype_names = _parse_dtypes(dtypes)
    local, interpreted = _parse_backends(backends, dev)
    check_output_file(json_out, "--json")
    cases = quick_cases() if quick else full_cases()
    console.print(
        f"checking {', '.join(local + interpreted) or 'no backend'} on {dev.type}: "
        f"{len(cases)} cases x {', '.join(dtype_names)}",
        highlight=False,
    )

    def progress(row) -> None:  # failures show up as they happen; the full grid takes minutes on CPU
        if row.failed:
            console.print(
                f"FAIL {row.backend} {row.dtype} {row.case} {row.phase}: rel {_fmt(row.rel)} "
                f"(tol {_fmt(row.tol)}) {row.note}",
                highlight=False,
                markup=False,
            )

    with console.status("checking..."):
        results = run_checks(
            local, dtype_names, cases, dev, max_len=max_len, with_grad=not no_grad, on_result=progress
        )
    rows = [r.to_dict() for r in results]
    if interpreted:
        rows += _run_interpreted(interpreted, dtype_names, quick, max_len, no_grad)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"device": dev.type, "results": rows}, indent=1, default=str))
    if not quiet:
        wide = Console(width=max(console.width, 110))  # CI logs (not a terminal) take more than 80
        wide.print(_table(rows, dev))
        for line in _notes(rows):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    counts = summarize(r["status"] for r in rows)
    console.print(", ".join(f"{n} {k}" for k, n in counts.items()), highlight=False)
    if counts.get("FAIL", 0):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("check")(check)
