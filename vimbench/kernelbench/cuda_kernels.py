"""The CUDA scan kernels (ours, and optionally the official mamba one) through the same `inspect` figures.

Ours: kernels/csrc/selective_scan_cuda.cu compiled to a cubin by nvcc for the arch (no torch headers needed),
cached per arch and source hash. The official forward: compiled by scripts/fetch_official_mamba.sh into
OFFICIAL_DIR/official_<arch>_<dtype>.cubin from the mamba-ssm sdist (never committed). Resources come from
`cuobjdump -res-usage` (spill bytes: the thread's stack frame plus local memory, i.e. spills and any local
array), the loop counts from the same SASS analysis as the Triton kernels.
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
BWD_THREADS = 32  # kBwdThreads in selective_scan_cuda.h
COMBINE_THREADS = 128  # kMaxThreads in selective_scan_cuda.cu
GROUP_STATES = 16  # kGroupStates in selective_scan_cuda.h: states per thread; more: state groups (grid z)


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
def our_cubin(arch: str, dtype: str = "") -> Path:
    """Our kernels' cubin for `arch` (nvcc, cached in the temp dir by arch and source hash); for "fp32" only
    the float32 instantiations (VB_FP32_ONLY: a quarter of the build time)."""
    from vimbench.kernels.cuda_scan import CSRC

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc not found: the CUDA kernels cannot be compiled here")
    sources = sorted(CSRC.glob("selective_scan_cuda*"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    only = "-fp32" if dtype == "fp32" else ""
    out = Path(tempfile.gettempdir()) / f"vimbench-cuda-{arch}{only}-{digest}.cubin"
    if not out.exists():
        cc = arch.split("_")[1]
        cmd = [nvcc, "-std=c++17", "-O3", "-cubin", f"-arch=sm_{cc}", "-lineinfo",
               *(["-DVB_FP32_ONLY"] if only else []), str(CSRC / "selective_scan_cuda.cu"),
               "-o", str(out) + ".tmp"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise RuntimeError(f"nvcc failed: {proc.stderr.strip().splitlines()[-1:]}")
        Path(str(out) + ".tmp").replace(out)
    return out


def _report_kernel(cubin: Path, want: str, backend: str, phase: str, arch: str, dtype: str, shape: Shape,
                   grid: tuple[int, int, int], warps: int, elems_per_thread: float,
                   config: str, tile_steps: int = 0) -> KernelReport:
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
        if usage:
            report.spill_bytes = usage["local"] + usage["stack"]
        report.shared_bytes = usage.get("shared")
        if report.registers is not None:
            report.blocks_per_sm = blocks_per_sm(arch, report.registers, report.shared_bytes or 0, warps)
        _fill_loops(report, kernels[mangled], elems_per_thread, tile_steps)
    except Exception as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        report.error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return report


Launch = tuple[str, str, tuple[int, int, int], int, int, str]


def _cuda_launches(inputs, batch: int, dtype: str) -> list[Launch]:
    """(phase, kernel, grid, threads per block, states per thread, config) of every launch the CUDA backend
    makes for one direction, forward and backward, as selective_scan_cuda.cu's launch_fwd / launch_bwd."""
    from vimbench.kernels.cuda_scan import launch_config

    cfg = launch_config(batch, inputs.d_inner, inputs.length, inputs.d_state)
    k_n = GROUP_STATES
    groups = -(-inputs.d_state // k_n)
    rows = batch * inputs.d_inner
    t = _CPP_TYPE[dtype]
    # Vim's B/C are views of x_dbl with contiguous states: with whole groups of kN states the kernels run
    # their exact path
    exact = "true" if inputs.d_state % k_n == 0 and inputs.fwd.B.stride(-2) == 1 else "false"
    threads = cfg.block_e
    fwd_grid = (-(-rows // threads), cfg.n_par, groups)
    bwd_grid = (-(-rows // BWD_THREADS), cfg.n_par, groups)
    states = rows * inputs.d_state  # the combine: one thread per (row, state)
    combine = ("selective_scan_combine_kernel", (-(-states // COMBINE_THREADS), 1, 1), COMBINE_THREADS, 1, "")
    label = f"kN{k_n}" + (f" groups{groups}" if groups > 1 else "") + (" exact" if exact == "true" else "")
    fwd = f"selective_scan_fwd_kernel<{t},{t},{k_n},{exact},"
    partial = 4 if groups > 1 else 0  # kPartialOut: each group's partial output (FwdMode in the core)
    found = []
    if cfg.parallel:
        found += [("fwd", fwd + "1>", fwd_grid, threads, k_n, f"{label} summary span{cfg.span}"),
                  ("fwd", *combine[:4], f"spans{cfg.n_par}"),
                  ("fwd", fwd + f"{2 | partial}>", fwd_grid, threads, k_n,
                   f"{label} span pass span{cfg.span}"),
                  ("bwd", f"selective_scan_bwd_summary_kernel<{t},{t},{k_n},{exact}>", bwd_grid, BWD_THREADS,
                   k_n, f"{label} carry summary span{cfg.span}"),
                  ("bwd", *combine[:4], f"spans{cfg.n_par} reverse")]
    else:
        found.append(("fwd", fwd + f"{partial}>", fwd_grid, threads, k_n, label))
    if groups > 1:  # the groups' partial outputs summed, + D u, gated: one thread per (row, position)
        finish = (-(-rows * inputs.length // COMBINE_THREADS), 1, 1)
        at = next((i for i, lc in enumerate(found) if lc[0] == "bwd"), len(found))  # after the forward's
        found.insert(at, ("fwd", f"selective_scan_finish_kernel<{t}>", finish, COMBINE_THREADS, 1,
                          f"groups{groups}"))
    bwd = f"selective_scan_bwd_kernel<{t},{t},{k_n},{exact},{str(groups > 1).lower()}>"  # kPartial: groups
    found.append(("bwd", bwd, bwd_grid, BWD_THREADS, k_n,
                  label + (f" span{cfg.span}" if cfg.parallel else "")))
    return found


def inspect_cuda(arch: str, dtype: str, shape: Shape) -> list[KernelReport]:
    """Our CUDA kernels at `shape` as the backend launches them for one direction (launch config keyed on
    (L, B*E), shared with Triton): one thread per (batch, channel) row and span, kN states each."""
    from vimbench.kernels.cuda_scan import launch_config

    from .launches import model_scan_inputs

    inputs = model_scan_inputs(shape, dtype)
    launches = _cuda_launches(inputs, shape.batch, dtype)
    try:
        cubin = our_cubin(arch, dtype)
    except Exception as exc:
        return [KernelReport("cuda", phase, "", arch, dtype, shape.label, error=str(exc))
                for phase in dict.fromkeys(lc[0] for lc in launches)]
    chunk = launch_config(shape.batch, inputs.d_inner, inputs.length, inputs.d_state).chunk
    return [_report_kernel(cubin, want, "cuda", phase, arch, dtype, shape, grid, threads // 32, elems,
                           f"{config} t{threads}".strip(), chunk)
            for phase, want, grid, threads, elems, config in launches]


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
