"""The CUDA scan kernels (ours, and optionally the official mamba one) through the same `inspect` figures.

Ours: kernels/csrc/selective_scan_cuda.cu compiled to a cubin by nvcc for the arch (no torch headers needed),
cached per arch and source hash. The official forward: compiled by scripts/fetch_official_mamba.sh into
OFFICIAL_DIR/official_<arch>_<dtype>.cubin from the mamba-ssm sdist (never committed). Resources come from
`cuobjdump -res-usage`, the loop counts from the same SASS analysis as the Triton kernels.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import sass
from .inspect import KernelReport, _fill_loops, blocks_per_sm
from .launches import Shape

_CPP_TYPE = {"fp32": "float", "fp16": "__half", "bf16": "__nv_bfloat16"}
_RES = re.compile(r"Function (\S+):\s*\n?\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
THREADS = 128  # kThreads in selective_scan_cuda.cu


def _demangle(names: list[str]) -> dict[str, str]:
    filt = shutil.which("c++filt")
    if not filt or not names:
        return {n: n for n in names}
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out, strict=False)) if len(out) == len(names) else {n: n for n in names}


def resource_usage(cubin: Path) -> dict[str, dict[str, int]]:
    """mangled kernel name -> registers, stack, shared and local (spill) bytes, from cuobjdump -res-usage."""
    text = subprocess.run([sass.tool("cuobjdump"), "-res-usage", str(cubin)], capture_output=True, text=True,
                          timeout=300, check=True).stdout
    return {m.group(1): {"registers": int(m.group(2)), "stack": int(m.group(3)), "shared": int(m.group(4)),
                         "local": int(m.group(5))} for m in _RES.finditer(text)}


@functools.cache
def our_cubin(arch: str) -> Path:
    """Our kernels' cubin for `arch` (nvcc, cached in the temp dir by arch and source hash)."""
    from vimbench.kernels.cuda_scan import CSRC

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found: the CUDA kernels cannot be compiled here")
    sources = sorted(CSRC.glob("selective_scan_cuda*"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"vimbench-cuda-{arch}-{digest}.cubin"
    if not out.exists():
        cc = arch.split("_")[1]
        cmd = [nvcc, "-std=c++17", "-O3", "-cubin", f"-arch=sm_{cc}", "-lineinfo",
               str(CSRC / "selective_scan_cuda.cu"), "-o", str(out) + ".tmp"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(f"nvcc failed: {proc.stderr.strip().splitlines()[-1:]}")
        Path(str(out) + ".tmp").replace(out)
    return out


def _report_kernel(cubin: Path, want: str, backend: str, phase: str, arch: str, dtype: str, shape: Shape,
                   grid: tuple[int, int, int], warps: int, elems_per_thread: float,
                   config: str) -> KernelReport:
    report = KernelReport(backend, phase, "", arch, dtype, shape.label, config, warps_per_block=warps,
                          grid=grid, warps_launched=grid[0] * grid[1] * grid[2] * warps)
    try:
        kernels = sass.disassemble(cubin.read_bytes())
        names = _demangle(list(kernels))
        matches = [m for m, d in names.items() if want in d.replace(" ", "")]
        if not matches:
            raise RuntimeError(f"no kernel matching {want!r} in {cubin.name}")
        mangled = matches[0]
        report.kernel = names[mangled].split("(")[0].replace("vimbench_scan::", "").removeprefix("void ")
        usage = resource_usage(cubin).get(mangled, {})
        report.registers = usage.get("registers")
        report.spill_bytes = usage.get("local")
        report.shared_bytes = usage.get("shared")
        if report.registers is not None:
            report.blocks_per_sm = blocks_per_sm(arch, report.registers, report.shared_bytes or 0, warps)
        _fill_loops(report, kernels[mangled], elems_per_thread)
    except Exception as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        report.error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return report


def inspect_cuda(arch: str, dtype: str, shape: Shape) -> list[KernelReport]:
    """Our CUDA forward and backward at `shape`: one thread per (batch, channel) row, kN states each."""
    from .launches import model_scan_inputs

    inputs = model_scan_inputs(shape, dtype)
    k_n = 16 if inputs.d_state <= 16 else 64
    rows = shape.batch * inputs.d_inner
    grid = ((rows + THREADS - 1) // THREADS, 1, 1)
    t = _CPP_TYPE[dtype]
    try:
        cubin = our_cubin(arch)
    except Exception as exc:
        return [KernelReport("cuda", phase, "", arch, dtype, shape.label, error=str(exc))
                for phase in ("fwd", "bwd")]
    # Vim's B/C are views of x_dbl with contiguous states: with d_state == kN the forward runs its exact path
    exact = "true" if inputs.d_state == k_n and inputs.fwd.B.stride(-2) == 1 else "false"
    kernels = (("fwd", f"selective_scan_fwd_kernel<{t},{t},{k_n},{exact}>"),
               ("bwd", f"selective_scan_bwd_kernel<{t},{t},{k_n}>"))
    return [_report_kernel(cubin, want, "cuda", phase, arch, dtype, shape, grid, THREADS // 32, k_n,
                           f"kN{k_n} t{THREADS}" + (" exact" if phase == "fwd" and exact == "true" else ""))
            for phase, want in kernels]


def official_config(length: int) -> tuple[int, int]:
    """(threads, items per thread) mamba's selective_scan_fwd_launch picks for `length`."""
    if length <= 128:
        return 32, 4
    if length <= 256:
        return 32, 8
    if length <= 512:
        return 32, 16
    if length <= 1024:
        return 64, 16
    return 128, 16


def inspect_official(official_dir: str, arch: str, dtype: str, shape: Shape) -> list[KernelReport]:
    """The official forward as Vim calls it (real A, variable B and C, with z), from the fetched cubin."""
    from .launches import model_scan_inputs

    cubin = Path(official_dir) / f"official_{arch}_{dtype}.cubin"
    if not cubin.exists():
        return [KernelReport("official", "fwd", "selective_scan_fwd_kernel", arch, dtype, shape.label,
                             error=f"{cubin} missing: run scripts/fetch_official_mamba.sh {official_dir}")]
    inputs = model_scan_inputs(shape, dtype)
    threads, items = official_config(inputs.length)
    even = inputs.length % (threads * items) == 0
    t = {"fp32": "float", "fp16": "c10::Half", "bf16": "c10::BFloat16"}[dtype]
    even_len = str(even).lower()
    want = f"Selective_Scan_fwd_kernel_traits<{threads},{items},1,{even_len},true,true,true,{t},float>"
    return [_report_kernel(cubin, want, "official", "fwd", arch, dtype, shape,
                           (shape.batch, inputs.d_inner, 1), threads // 32, items,
                           f"t{threads} items{items}")]
