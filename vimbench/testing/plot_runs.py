"""Synthetic run folders for the plot, report and reproduce tests: Fig. 1-shaped rows (Vim-Ti flat-ish,
DeiT-Ti quadratic, OOM where asked) written straight to results.csv, with a run.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vimbench.models import get_spec
from vimbench.results import CORE_COLUMNS as RESULT_COLUMNS

FAKE_ENV = {
    "host": "testhost", "platform": "Linux", "python": "3.11", "torch": "2.13.0+cpu", "triton": "3.9.0",
    "cuda_runtime": None, "cudnn": None, "nvidia_driver": None, "cuda_visible_devices": None,
    "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2, "gpus_nvml": [], "gpus_torch": [],
    "precision": {"matmul_allow_tf32": False, "cudnn_allow_tf32": True,
                  "float32_matmul_precision": "highest"},
}  # fmt: skip


def make_row(model: str, img_size: int, status: str = "ok", throughput: float = 0.0, mem: float = 0.0,
             *, batch: int = 1, attn: str = "sdpa", scan: str = "cpu", device_name: str = "Test CPU",
             error: str = "") -> dict:  # fmt: skip
    """One results.csv row as the sweep writes it (latency p10/p90 at -5% / +10% of the median)."""
    spec = get_spec(model)
    family, own = spec.family, {opt.name for opt in spec.options}
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(model=model, family=family, img_size=img_size, tokens=(img_size // 16) ** 2 + 1,
               batch_size=batch, dtype="fp32", device="cpu", device_name=device_name, mode="infer",
               scan_backend=scan if "scan_backend" in own else "-",
               attn_backend=attn if "attn_backend" in own else "-",
               compile="false", channels_last="false", status=status, error=error)  # fmt: skip
    if status == "ok":
        latency = 1000.0 * batch / throughput
        row.update(throughput=throughput, latency_ms=latency, latency_ms_p10=0.95 * latency,
                   latency_ms_p90=1.1 * latency, iqr_pct=12.5 if img_size == 512 else 2.0,
                   noisy="true" if img_size == 512 else "false", peak_mem_mib=mem, peak_mem_source="rss",
                   iters=2, repeats=3, gflops=1.5)  # fmt: skip
    return row


def fig1_rows(attn: str = "math", batch: int = 1, deit_oom_at: int | None = 1248, models=("vim-t", "deit-t"),
              resolutions=(512, 640, 736, 1024, 1248)) -> list[dict]:  # fmt: skip
    """Vim-Ti flat-ish, DeiT-Ti quadratic: math attention 3x slower than sdpa; DeiT OOM from deit_oom_at."""
    rows = []
    for model in models:
        for res in resolutions:
            scale = (res / 512) ** 2
            if model == "vim-t":
                rows.append(make_row(model, res, "ok", 40.0 / scale, 400.0 + 100 * scale, batch=batch))
            elif deit_oom_at is not None and res >= deit_oom_at and attn == "math":
                status = "oom" if res == deit_oom_at else "skipped-oom"
                rows.append(make_row(model, res, status, attn=attn, batch=batch, error="out of memory"))
            else:
                slow = 3.0 if attn == "math" else 1.0
                throughput, mem = 60.0 / (scale**1.5 * slow), 300.0 + 200 * scale**2 / slow
                rows.append(make_row(model, res, "ok", throughput, mem, attn=attn, batch=batch))
    return rows


def write_run(run_dir: Path, rows: list[dict], meta: dict | None = None, append: bool = False) -> Path:
    """results.csv (+ run.json unless meta is False-y and a run.json exists)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    csv_path = run_dir / "results.csv"
    new = not (append and csv_path.exists())
    with csv_path.open("w" if new else "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    if meta is not None or not (run_dir / "run.json").exists():
        default = {"argv": ["vimbench", "sweep", "--device", "cpu"],
                   "config": {"models": ["vim-t", "deit-t"]}, "environment": FAKE_ENV}  # fmt: skip
        (run_dir / "run.json").write_text(json.dumps(meta if meta is not None else default))
    return run_dir
