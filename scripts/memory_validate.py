"""Prediction error per measured point, and the measured device overhead, from the runs of gpu_validate.sh.

Every CUDA row of a sweep carries `predicted_mem_mib` (vimbench memory's NVML figure) and
`predicted_alloc_mib` (its torch.cuda.max_memory_allocated), beside the measured `nvml_peak_mib`,
`torch_peak_alloc_mib` and `torch_peak_reserved_mib`. This writes OUT/memory_validation.csv (one line per
ok point), prints the errors, and the device overhead measured as NVML peak minus torch's reserved peak
(median over points): the constant to record in vimbench/memory/device.py MEASURED_OVERHEAD_MIB.

    python scripts/memory_validate.py OUT_DIR
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path


def _float(row: dict, key: str) -> float | None:
    try:
        value = float(row.get(key) or "nan")
    except ValueError:
        return None
    return None if value != value else value


def _error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or not measured:
        return None
    return 100.0 * (predicted - measured) / measured


def collect(out: Path) -> list[dict]:
    points = []
    for results in sorted(out.glob("**/results.csv")):
        with results.open() as fh:
            for row in csv.DictReader(fh):
                if row.get("status") != "ok" or not row.get("device", "").startswith("cuda"):
                    continue
                nvml, reserved = _float(row, "nvml_peak_mib"), _float(row, "torch_peak_reserved_mib")
                points.append({
                    "run": results.parent.name, "model": row["model"], "img_size": row["img_size"],
                    "batch_size": row["batch_size"], "dtype": row["dtype"], "mode": row["mode"],
                    "attn_backend": row.get("attn_backend", ""), "device_name": row.get("device_name", ""),
                    "predicted_alloc_mib": _float(row, "predicted_alloc_mib"),
                    "torch_peak_alloc_mib": _float(row, "torch_peak_alloc_mib"),
                    "alloc_error_pct": _error(_float(row, "predicted_alloc_mib"),
                                              _float(row, "torch_peak_alloc_mib")),
                    "predicted_mem_mib": _float(row, "predicted_mem_mib"), "nvml_peak_mib": nvml,
                    "nvml_error_pct": _error(_float(row, "predicted_mem_mib"), nvml),
                    "overhead_mib": None if nvml is None or reserved is None else nvml - reserved,
                })  # fmt: skip
    return points


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else ".")
    points = collect(out)
    if not points:
        print("memory validation: no ok CUDA rows found (nothing measured on a GPU)")
        return 0
    target = out / "memory_validation.csv"
    with target.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(points[0]))
        writer.writeheader()
        writer.writerows(points)
    print(f"{'run':<22} {'model':<7} {'res':>5} {'bs':>4} {'mode':<5} {'alloc err %':>11} {'nvml err %':>10} "
          f"{'overhead MiB':>12}")  # fmt: skip
    for p in points:
        cells = [f"{p[k]:+.1f}" if p[k] is not None else "-" for k in ("alloc_error_pct", "nvml_error_pct")]
        overhead = f"{p['overhead_mib']:.0f}" if p["overhead_mib"] is not None else "-"
        print(f"{p['run']:<22} {p['model']:<7} {p['img_size']:>5} {p['batch_size']:>4} {p['mode']:<5} "
              f"{cells[0]:>11} {cells[1]:>10} {overhead:>12}")  # fmt: skip
    overheads = [p["overhead_mib"] for p in points if p["overhead_mib"] is not None]
    errors = [abs(p["alloc_error_pct"]) for p in points if p["alloc_error_pct"] is not None]
    if errors:
        print(f"allocator peak: median |error| {statistics.median(errors):.1f}%, max {max(errors):.1f}% "
              f"over {len(errors)} points")
    if overheads:
        names = sorted({p["device_name"] for p in points})
        print(f"measured device overhead (NVML peak - torch reserved peak), median over {len(overheads)} "
              f"points on {', '.join(names)}: {statistics.median(overheads):.0f} MiB "
              "-> record it in vimbench/memory/device.py MEASURED_OVERHEAD_MIB")
    print(f"written: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
