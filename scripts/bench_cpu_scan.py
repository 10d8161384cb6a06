"""Benchmark the "cpu" scan backend against the plain PyTorch loop, and Vim-T against DeiT-T end to end.

    python scripts/bench_cpu_scan.py --threads 1          # kernel: B=2, E=768, L=197, N=16 fp32 (Vim-S layer)
    python scripts/bench_cpu_scan.py --levels all         # once per SIMD level this CPU runs (own build each)
    python scripts/bench_cpu_scan.py --e2e --rounds 2     # plus Vim-T (cpu scan) vs DeiT-T at 224/1248 px

Kernel times go through the public op (`selective_scan(..., backend=...)`), forward alone and forward +
backward through autograd, as a model would see them; "M upd/s/core" is state updates (B*E*L*N) per
second of process CPU time, so it holds per core whatever the thread count and the machine's load.
`--levels` reruns the kernel bench in a child process per ATEN_CPU_CAPABILITY (default, avx2, avx512 where
the CPU has it; each builds its own extension) and prints one summary line per level with the ISA the
build reports. End to end: batch 1, fp32, eval + inference_mode, synthetic input, warmup then timed
iterations; each round rebuilds nothing, so a second round shows how much the numbers move on a shared
machine. Medians are printed; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from vimbench.kernels import cpu_scan, resolve_backend, selective_scan

from vimbench.models.registry import create_model


@dataclass(frozen=True)
class Timing:
    wall: float  # median wall seconds
    wall_min: float
    cpu: float  # median process CPU seconds (all threads): robust to other processes preempting this one

    def __str__(self) -> str:
        return f"{self.wall * 1e3:9.2f} ms (min {self.wall_min * 1e3:.2f}, cpu {self.cpu * 1e3:.2f})"


def measure(fn: Callable[[], object], iters: int, warmup: int = 1) -> Timing:
    """Median wall and CPU time of `fn` over `iters` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(iters):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return Timing(statistics.median(walls), min(walls), statistics.median(cpus))


def scan_inputs(batch: int, dim: int, length: int, nstate: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    return {
        "u": randn(batch, dim, length),
        "delta": randn(batch, dim, length) * 0.5,
        "A": -torch.rand(dim, nstate, generator=gen) * 4,
        "B": randn(batch, nstate, length),
        "C": randn(batch, nstate, length),
        "D": randn(dim),
        "z": randn(batch, dim, length),
        "delta_bias": randn(dim) * 0.1,
    }


def simd_level() -> str:
    """torch's CPU capability and what the loaded cpu scan build vectorises for."""
    built = cpu_scan.compiled_isa()
    isa = f"{built[0]} ({built[1]} fp32 lanes)" if built else f"unavailable: {cpu_scan.build_status().error}"
    return f"ATEN_CPU_CAPABILITY={torch.backends.cpu.get_cpu_capability()}, cpu scan build {isa}"


def bench_kernel(args: argparse.Namespace) -> None:
    inputs = scan_inputs(args.batch, args.dim, args.length, args.nstate)
    shape = f"B={args.batch} E={args.dim} L={args.length} N={args.nstate} fp32"
    updates = args.batch * args.dim * args.length * args.nstate
    print(f"scan {shape}, torch threads={torch.get_num_threads()}, {simd_level()}")
    results: dict[str, dict[str, float]] = {}
    for backend in ("reference", "cpu"):
        resolve_backend(backend, "cpu")  # builds the extension outside the timed region

        def forward(backend: str = backend) -> torch.Tensor:
            with torch.inference_mode():
                return selective_scan(**inputs, delta_softplus=True, backend=backend)

        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}

        def forward_backward(backend: str = backend, leaves: dict = leaves) -> None:
            out = selective_scan(**leaves, delta_softplus=True, backend=backend)
            out.backward(torch.ones_like(out))

        iters = args.iters if backend == "cpu" else max(3, args.iters // 5)
        fwd = measure(forward, iters)
        both = measure(forward_backward, max(3, iters // 2))
        results[backend] = {"fwd": fwd, "fwd+bwd": both}
        print(f"  {backend:9s} forward {fwd}   forward+backward {both}")
        print(f"  {backend:9s} M upd/s/core: forward {updates / fwd.cpu / 1e6:.0f}, "
              f"forward+backward {updates / both.cpu / 1e6:.0f}")
    for phase in ("fwd", "fwd+bwd"):
        ref, fast = results["reference"][phase], results["cpu"][phase]
        print(f"  speedup {phase}: wall {ref.wall / fast.wall:.1f}x, cpu time {ref.cpu / fast.cpu:.1f}x")
    fwd, both, ref = results["cpu"]["fwd"], results["cpu"]["fwd+bwd"], results["reference"]["fwd"]
    print(f"SUMMARY {torch.backends.cpu.get_cpu_capability()}|{simd_level()}|{fwd.cpu * 1e3:.2f}|"
          f"{updates / fwd.cpu / 1e6:.0f}|{both.cpu * 1e3:.2f}|{ref.cpu / fwd.cpu:.1f}")


def bench_levels(args: argparse.Namespace, argv: list[str]) -> None:
    """The kernel bench once per SIMD level this CPU runs, each in a child with its own build."""
    levels = ["default", "avx2", "avx512"] if args.levels == ["all"] else args.levels
    rows = []
    for level in levels:
        env = {**os.environ, "ATEN_CPU_CAPABILITY": level}
        child = [sys.executable, __file__, *[a for a in argv if a != "--e2e"], "--levels", "none"]
        run = subprocess.run(child, env=env, capture_output=True, text=True)
        print(run.stdout, end="", file=sys.stdout)
        lines = [line for line in run.stdout.splitlines() if line.startswith("SUMMARY ")]
        if run.returncode or not lines:
            print(f"{level}: failed ({run.stderr.strip().splitlines()[-1:]})")
            continue
        got, level_text, fwd_ms, rate, both_ms, speedup = lines[-1][8:].split("|")
        if got.lower() != level:
            print(f"{level}: not run (this CPU runs it as {got})")
            continue
        rows.append(f"  {level:8s} {fwd_ms:>9s} ms {rate:>8s} M upd/s/core {both_ms:>9s} ms  {speedup:>6s}x"
                    f"   {level_text}")
    print("level    forward (cpu time)   per core   fwd+bwd (cpu time)  vs loop   SIMD")
    print("\n".join(rows))


def bench_model(name: str, img_size: int, iters: int, **backends: str) -> Timing:
    """Per-image time of `name` at `img_size`, batch 1, fp32, inference mode."""
    model = create_model(name, img_size=img_size, **backends).eval()
    image = torch.randn(1, 3, img_size, img_size)
    with torch.inference_mode():
        return measure(lambda: model(image), iters, warmup=1)


def bench_e2e(args: argparse.Namespace) -> None:
    threads = torch.get_num_threads()
    print(f"end to end, batch 1, fp32, inference_mode, torch threads={threads}, {simd_level()}")
    for round_index in range(args.rounds):
        for img_size in args.sizes:
            iters = args.e2e_iters
            vim = {b: bench_model("vim-t", img_size, iters, scan_backend=b) for b in args.vim_backends}
            deit = {a: bench_model("deit-t", img_size, iters, attn_backend=a) for a in args.deit_attn}
            best_deit = min(deit.values(), key=lambda t: t.wall)
            best_deit_cpu = min(t.cpu for t in deit.values())
            cells = [f"vim-t[{b}] {1 / t.wall:.3f} img/s (cpu {t.cpu:.2f} s)" for b, t in vim.items()]
            cells += [f"deit-t[{a}] {1 / t.wall:.3f} img/s (cpu {t.cpu:.2f} s)" for a, t in deit.items()]
            ratios = [
                f"vim-t[{b}]/best deit-t throughput: wall {best_deit.wall / t.wall:.2f}, "
                f"cpu time {best_deit_cpu / t.cpu:.2f}"
                for b, t in vim.items()
            ]
            print(f"  round {round_index + 1} {img_size}px: " + ", ".join(cells))
            print("    " + "; ".join(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--length", type=int, default=197)
    parser.add_argument("--nstate", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20, help="timed kernel iterations (cpu backend)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--e2e", action="store_true", help="also time Vim-T vs DeiT-T end to end")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 1248])
    parser.add_argument("--vim-backends", nargs="+", default=["cpu"], help="scan backends for Vim-T")
    parser.add_argument("--e2e-iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-kernel", action="store_true")
    parser.add_argument("--deit-attn", nargs="+", default=["sdpa"], help="DeiT-T attention backends")
    parser.add_argument("--levels", nargs="+", default=["none"],
                        help="'all' or SIMD levels (default avx2 avx512) to bench, each in its own process")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.levels != ["none"] and not args.skip_kernel:
        bench_levels(args, sys.argv[1:])
    elif not args.skip_kernel:
        bench_kernel(args)
    if args.e2e:
        bench_e2e(args)


if __name__ == "__main__":
    main()
