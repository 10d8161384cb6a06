"""Scan-kernel benchmark at Vim layer shapes: time, achieved bandwidth and exp rate vs the card's ceilings.

Per direction the scan must move at least B*L*(4*E + 2*G*N) elements (u, delta, z in; out; B and C) and
evaluate one exp and ~9 FLOP per (b, l, e, n). Achieved GB/s and exp/s are reported against a table of
known peaks, keyed by GPU name; unknown cards get no ceiling rather than an invented one. Times are medians
over repeats after warmup (CUDA events on GPU), with p10/p90 as the spread; a row is noisy by the one rule
of vimbench.metrics.timing_stats (IQR of the samples > 10% of their median).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

from vimbench.kernels.bidirectional import (
    ScanDirection,
    bidirectional_selective_scan,
    fused_bidirectional_backends,
)
from vimbench.kernels.flops import scan_flops
from vimbench.kernels.registry import get_backend
from vimbench.kernels.scan import selective_scan
from vimbench.metrics.timing_stats import NOISE_RULE, is_noisy, spread

from .check import DTYPES

# Vim variants: E = 2 * embed dim (expand 2), N = 16, patch 16
VIM_SHAPES: dict[str, int] = {"vim-t": 384, "vim-s": 768, "vim-b": 1536}
D_STATE = 16
PATCH = 16


@dataclass(frozen=True)
class Ceiling:
    """Peak HBM bandwidth (bytes/s) and exp throughput (exp/s, special-function units) of one card."""

    bandwidth: float
    exp_rate: float


# (substring of the device name, ceiling); first match wins, so specific names come first.
# exp/s = SMs * 16 SFU exp per clock * boost clock.
KNOWN_CEILINGS: tuple[tuple[str, Ceiling], ...] = (
    ("H200", Ceiling(4.8e12, 4.2e12)),
    ("H100 NVL", Ceiling(3.9e12, 3.8e12)),
    ("H100 PCIe", Ceiling(2.0e12, 3.2e12)),
    ("H100", Ceiling(3.35e12, 4.2e12)),  # SXM ("H100 80GB HBM3")
    ("A100-SXM4-80GB", Ceiling(2.04e12, 2.44e12)),
    ("A100 80GB PCIe", Ceiling(1.94e12, 2.44e12)),
    ("A100", Ceiling(1.56e12, 2.44e12)),  # 40 GB parts
)


def ceiling_for(device_name: str) -> Ceiling | None:
    """Known peaks of a GPU by name; None for any card not in the table (never a guess)."""
    for key, ceiling in KNOWN_CEILINGS:
        if key.lower() in device_name.lower():
            return ceiling
    return None


def seqlen_for(res: int) -> int:
    """Tokens of a Vim layer at `res` pixels: (res/16)^2 patches plus the class token."""
    if res % PATCH:
        raise ValueError(f"resolution {res} is not a multiple of the patch size {PATCH}")
    return (res // PATCH) ** 2 + 1


def minimal_bytes(batch: int, length: int, dim: int, groups: int, dstate: int, elem_bytes: int) -> int:
    """Bytes one direction must move at least: u, delta, z, out (E each) and B, C (G*N each) per token."""
    return batch * length * (4 * dim + 2 * groups * dstate) * elem_bytes


@dataclass
class Timing:
    median_s: float
    p10_s: float
    p90_s: float
    samples: int
    iqr_pct: float = 0.0

    @property
    def noisy(self) -> bool:
        return is_noisy(self.iqr_pct)


def time_fn(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 3,
    repeats: int = 20,
    min_sample_s: float = 1e-3,
) -> Timing:
    """Median and p10/p90 seconds per call. Each sample times enough back-to-back calls to last
    `min_sample_s` (CUDA events on GPU, synchronized perf_counter on CPU), so launch jitter averages out."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(max(warmup, 1)):
        fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    once = max(time.perf_counter() - start, 1e-7)
    inner = max(1, min(1000, math.ceil(min_sample_s / once)))
    samples: list[float] = []
    for _ in range(max(repeats, 1)):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end) / 1e3 / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            samples.append((time.perf_counter() - t0) / inner)
    stats = spread(samples)
    return Timing(stats.median, stats.p10, stats.p90, stats.count, stats.iqr_pct)


@dataclass
class BenchRow:
    device: str
    gpu: str
    shape: str
    res: int
    batch: int
    dtype: str
    backend: str
    variant: str  # "scan", "bidir-fused", "bidir-reverse", "bidir-flip"
    seqlen: int
    dim: int
    dstate: int
    groups: int
    directions: int
    median_ms: float = float("nan")
    p10_ms: float = float("nan")
    p90_ms: float = float("nan")
    gb_s: float = float("nan")
    pct_mem_peak: float = float("nan")
    exp_per_s: float = float("nan")
    pct_exp_peak: float = float("nan")
    gflop_s: float = float("nan")
    speedup_vs_reference: float = float("nan")
    speedup_vs_mamba_ssm: float = float("nan")
    status: str = "ok"  # "ok", "skipped", "error"
    note: str = ""
    extra: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        return d


CSV_COLUMNS = [k for k in BenchRow.__dataclass_fields__ if k != "extra"]


def make_layer_inputs(
    batch: int, length: int, dim: int, dtype: torch.dtype, device: torch.device, seed: int = 0
) -> dict[str, Tensor]:
    """Inputs of one Vim scan direction, with Vim's value ranges (A = -(1..16), dt ~ softplus(-4.6 + ...))."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen)

    return {
        "u": randn(batch, dim, length).to(device, dtype),
        "delta": (randn(batch, dim, length) * 0.5).to(device, dtype),
        "A": (-torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(dim, 1)).to(device),
        "B": randn(batch, D_STATE, length).to(device, dtype),
        "C": randn(batch, D_STATE, length).to(device, dtype),
        "D": torch.ones(dim, device=device),
        "z": randn(batch, dim, length).to(device, dtype),
        "delta_bias": torch.full((dim,), -4.6, device=device),
    }


def _scan_call(backend: str, x: dict[str, Tensor], reverse: bool = False) -> Callable[[], object]:
    """One forward of the backend itself (no autograd, no op dispatch): the kernel's own time."""
    forward = get_backend(backend).forward

    def run() -> object:
        return forward(
            x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, reverse
        )

    return run


def _bidir_calls(backend: str, x: dict[str, Tensor]) -> dict[str, Callable[[], object]]:
    """The fused launch, two calls with reverse=True, and upstream's two calls on torch.flip copies."""
    direction = ScanDirection(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"])

    def fused() -> object:
        return bidirectional_selective_scan(direction, direction, x["z"], backend=backend, fused=True)

    def reverse() -> object:
        return bidirectional_selective_scan(direction, direction, x["z"], backend=backend, fused=False)

    def flip() -> object:
        y_fwd = selective_scan(
            x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, backend=backend
        )
        u, delta, B, C, z = (x[k].flip(-1) for k in ("u", "delta", "B", "C", "z"))
        y_bwd = selective_scan(u, delta, x["A"], B, C, x["D"], z, x["delta_bias"], True, backend=backend)
        return y_fwd + y_bwd.flip(-1)

    return {"bidir-fused": fused, "bidir-reverse": reverse, "bidir-flip": flip}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from vimbench.measure.environment import collect_environment

    return str(collect_environment()["cpu"])


def reference_work_limit(device: torch.device) -> int:
    """Largest B*L*E*N the reference loop is timed at (it allocates (B, E, N, L) temporaries)."""
    return 2 * 10**8 if device.type == "cuda" else 1 * 10**7


def run_bench(
    backends: list[str],
    shapes: list[str],
    batches: list[int],
    dtypes: list[str],
    device: torch.device | str,
    *,
    res: int = 224,
    warmup: int = 3,
    repeats: int = 20,
    min_sample_s: float = 1e-3,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Time each backend at each (shape, batch, dtype); fill bandwidth, exp rate and speedups."""
    dev = torch.device(device)
    gpu = device_name(dev)
    ceiling = ceiling_for(gpu) if dev.type == "cuda" else None
    length = seqlen_for(res)
    fused = set(fused_bidirectional_backends(dev))
    rows: list[BenchRow] = []
    for shape in shapes:
        dim = VIM_SHAPES[shape]
        for dtype in dtypes:
            elem = torch.empty((), dtype=DTYPES[dtype]).element_size()
            for batch in batches:
                x = make_layer_inputs(batch, length, dim, DTYPES[dtype], dev)
                work = batch * length * dim * D_STATE
                group: list[BenchRow] = []
                for backend in backends:
                    calls: dict[str, Callable[[], object]] = {"scan": _scan_call(backend, x)}
                    if backend in fused:
                        calls |= _bidir_calls(backend, x)
                    for variant, fn in calls.items():
                        directions = 1 if variant == "scan" else 2
                        row = BenchRow(
                            dev.type,
                            gpu,
                            shape,
                            res,
                            batch,
                            dtype,
                            backend,
                            variant,
                            length,
                            dim,
                            D_STATE,
                            1,
                            directions,
                        )
                        if backend == "reference" and work > reference_work_limit(dev):
                            row.status, row.note = "skipped", "reference too slow at this size"
                        else:
                            _measure(row, fn, dev, ceiling, elem, work, warmup, repeats, min_sample_s)
                        group.append(row)
                _fill_speedups(group)
                for row in group:
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
                del x
    return rows


def _measure(
    row: BenchRow,
    fn: Callable[[], object],
    dev: torch.device,
    ceiling: Ceiling | None,
    elem: int,
    work: int,
    warmup: int,
    repeats: int,
    min_sample_s: float,
) -> None:
    try:
        with torch.inference_mode():
            timing = time_fn(fn, dev, warmup=warmup, repeats=repeats, min_sample_s=min_sample_s)
    except torch.cuda.OutOfMemoryError:
        row.status, row.note = "error", "out of memory"
        torch.cuda.empty_cache()
        return
    except Exception as exc:  # one broken backend must not stop the benchmark
        row.status, row.note = (
            "error",
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )
        return
    t = timing.median_s
    row.median_ms, row.p10_ms, row.p90_ms = t * 1e3, timing.p10_s * 1e3, timing.p90_s * 1e3
    nbytes = row.directions * minimal_bytes(row.batch, row.seqlen, row.dim, row.groups, row.dstate, elem)
    exps = row.directions * work
    row.gb_s = nbytes / t / 1e9
    row.exp_per_s = exps / t
    row.gflop_s = row.directions * scan_flops(row.batch, row.seqlen, row.dim, row.dstate) / t / 1e9
    if ceiling is not None:
        row.pct_mem_peak = 100 * nbytes / t / ceiling.bandwidth
        row.pct_exp_peak = 100 * exps / t / ceiling.exp_rate
    if timing.noisy:
        row.note = f"noisy: {NOISE_RULE}"


def _fill_speedups(group: list[BenchRow]) -> None:
    """Speedup = baseline time / row time, same (shape, dtype, batch) and the same variant kind."""
    by_key = {(r.backend, r.variant): r for r in group if r.status == "ok"}
    for row in group:
        if row.status != "ok":
            continue
        for baseline, attr in (("reference", "speedup_vs_reference"), ("mamba_ssm", "speedup_vs_mamba_ssm")):
            # the reference's own bidirectional time is two of its scans
            base = by_key.get((baseline, row.variant)) or by_key.get((baseline, "scan"))
            if base is None:
                continue
            base_ms = base.median_ms * (row.directions if base.variant == "scan" else 1)
            setattr(row, attr, base_ms / row.median_ms)
