"""The short table printed last by scripts/gpu_validate.sh: each step's status, then the headline numbers.

Reads only what the steps wrote under OUT_DIR; a step that did not run shows as such, never as a number.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vimbench.report.runs import Run, vim_deit_pairs


def _steps(out: Path) -> Table:
    table = Table(title=f"gpu_validate steps ({out})")
    for col in ("step", "status", "seconds", "log"):
        table.add_column(col)
    with (out / "steps.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            table.add_row(row["step"], row["status"], row["seconds"], row["log"])
    return table


def _fmt(value: float, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _pairs(out: Path, device: str) -> Table | None:
    table = Table(title=f"Vim vs DeiT at the largest resolution measured ({device})")
    columns = ("run", "pair", "res", "vim img/s", "deit img/s", "speedup", "vim MiB", "deit MiB", "saving %")
    for col in columns:
        table.add_column(col)
    found = False
    for name in ("fig1", "sweep-vim-s-deit-s", "sweep-cpu"):
        if not (out / name / "results.csv").is_file():
            continue
        for pair in vim_deit_pairs(Run.load(out / name)):
            last = pair.table.iloc[-1]
            attn = pair.deit.config.get("attn_backend", "")
            label = f"{pair.vim.config['model']} / {pair.deit.config['model']} ({attn})"
            deit_tp = (_fmt(last["deit_throughput"], ".1f") if last["deit_status"] == "ok"
                       else str(last["deit_status"]))
            table.add_row(
                name, label, str(int(last["img_size"])), _fmt(last["vim_throughput"], ".1f"), deit_tp,
                _fmt(last["speedup"], ".2f"), _fmt(last["vim_peak_mem_mib"], ".0f"),
                _fmt(last["deit_peak_mem_mib"], ".0f"), _fmt(last["memory_saving_pct"], ".1f"),
            )
            found = True
    return table if found else None


def main(out_dir: str) -> int:
    out = Path(out_dir)
    console = Console(width=160)
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").is_file() else {}
    gpus = env.get("gpus_torch") or []
    device = gpus[0]["name"] if gpus else f"CPU: {env.get('cpu', 'unknown')}"
    console.print(_steps(out))
    pairs = _pairs(out, device)
    if pairs is not None:
        console.print(pairs)
    bench = out / "kernels_bench.csv"
    if bench.is_file():
        console.print(f"kernel timings: {bench} ({sum(1 for _ in bench.open()) - 1} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
