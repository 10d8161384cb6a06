"""Synthetic GPU (or CPU) runs for the gate tests: rows as the sweep's store writes them, a fixed
environment, per-repeat samples with a seeded wobble."""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any

from vimbench.measure.store import ResultsStore
from vimbench.models import get_spec
from vimbench.results import CORE_COLUMNS as RESULT_COLUMNS

H100 = "NVIDIA H100 80GB HBM3"
ENV: dict[str, Any] = {
    "host": "runner-1", "torch": "2.11.0+cu128", "triton": "3.6.0", "cuda_runtime": "12.8",
    "nvidia_driver": "570.86.15", "cpu": "AMD EPYC 9654", "torch_threads": 16,
    "gpus_nvml": [{"name": H100, "uuid": "GPU-1"}], "gpus_torch": [{"name": H100, "uuid": "GPU-1"}],
    "precision": {"matmul_allow_tf32": False, "cudnn_allow_tf32": True},
}


def point(model: str, img_size: int, samples: list[float] | None, status: str = "ok", *, batch: int = 64,
          dtype: str = "bf16", scan: str | None = None, attn: str | None = None, device: str = "cuda:0",
          device_name: str = H100, error: str = "") -> dict[str, Any]:
    """One results.csv row; throughput is the median of `samples` as the sweep records it."""
    spec = get_spec(model)
    family, own = spec.family, {opt.name for opt in spec.options}
    ok = status == "ok"
    row = {col: "" for col in RESULT_COLUMNS}
    row.update(
        model=model, family=family, img_size=img_size, tokens=(img_size // 16) ** 2 + 1, batch_size=batch,
        dtype=dtype, device=device, device_name=device_name, mode="infer",
        scan_backend=scan or ("cuda" if "scan_backend" in own else "-"),
        attn_backend=attn or ("sdpa" if "attn_backend" in own else "-"), compile=False, channels_last=False,
        status=status, throughput=statistics.median(samples) if ok and samples else None,
        throughput_samples=samples if ok else None, repeats=len(samples or []), error=error,
    )
    return row


def write_run(run_dir: Path, rows: list[dict[str, Any]], env: dict[str, Any] | None = ENV) -> Path:
    """A run dir written by the sweep's own store (results.csv + run.json)."""
    store = ResultsStore(run_dir)
    for row in rows:
        store.append(row)
    if env is not None:
        store.write_run_json({"environment": env, "config": {"models": "test"}})
    return run_dir


def wobble(center: float, n: int = 5, pct: float = 1.0, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [round(center * (1 + rng.uniform(-pct, pct) / 100), 3) for _ in range(n)]
