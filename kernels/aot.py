"""Ahead-of-time compilation of every Triton kernel configuration for a GPU architecture, with no GPU.

`compile_all("sm_90")` builds each (kernel, dtype, launch config) the launchers can pick through
`triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`, then reads registers and spills from
`ptxas -v` on the generated PTX (the compiled kernel only reports them once loaded on a device) and shared
memory from the kernel metadata. The kernels' `JITFunction` form is built directly, so this works even in a
process where TRITON_INTERPRET=1 is set. Supports triton 3.0+ (ASTSource's signature changed in 3.3).
"""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import dtypes

ARCHS = {"sm_80": 80, "sm_90": 90}
DTYPES = dtypes.DTYPES
# pointers that are float32 whatever the activations' dtype (parameters, states, gradient partials)
_FP32_POINTERS = {
    "A_ptr", "D_ptr", "bias_ptr", "last_ptr", "Af_ptr", "Df_ptr", "biasf_ptr", "Ab_ptr", "Db_ptr",
    "biasb_ptr", "dA_ptr", "dD_ptr", "dbias_ptr", "dCB_ptr", "H_ptr", "Hf_ptr", "Hb_ptr",
    "dtsum_ptr", "slab_ptr", "Gin_ptr", "Gs_ptr", "S_ptr", "w_ptr", "res_in_ptr", "res_out_ptr",
}
# buffers the launchers allocate themselves (torch.empty: at least 16-byte aligned on every device), so every
# real launch specialises them as such; the generic build assumes only that, nothing about the caller's views
_OWNED_POINTERS = {
    "out_ptr", "last_ptr", "H_ptr", "Hf_ptr", "Hb_ptr", "dtsum_ptr", "Gin_ptr", "Gs_ptr", "slab_ptr",
    "du_ptr", "ddelta_ptr", "dz_ptr", "dA_ptr", "dD_ptr", "dbias_ptr", "dCB_ptr",
}
_FLOAT_SCALARS = {"eps"}
_INT64_SCALARS = {"off_u", "off_d", "off_A", "off_B", "off_C", "off_D", "off_bias"}
_SHORT = {"HAS_Z": "z", "BLOCK_E": "E", "N_PAD": "N", "BLOCK_L": "L", "HAS_RESIDUAL": "res",
          "BLOCK_D": "D", "EVEN_N": "even", "MODE": "mode", "DIRS": "dirs", "BLOCK": "B", "VEC": "v",
          "BC_ALIGNED": "al", "CHUNK": "T", "GROUP": "G", "SAVE": "save"}


@dataclass(frozen=True)
class CompileJob:
    kernel: str
    dtype: str
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int

    @property
    def config(self) -> str:
        """Compact, e.g. "z E32 N16 w4" (flags by name when on, "-" + name when off)."""
        parts = [(_SHORT[k] if v else f"-{_SHORT[k]}") if isinstance(v, bool) else f"{_SHORT[k]}{v}"
                 for k, v in self.constexprs]
        return " ".join([*parts, f"w{self.num_warps}"])


@dataclass
class CompileResult:
    kernel: str
    dtype: str
    config: str
    arch: str
    ok: bool
    registers: int | None = None
    spill_store_bytes: int | None = None
    spill_load_bytes: int | None = None
    shared_bytes: int | None = None
    seconds: float = 0.0
    error: str = ""
    notes: list[str] = field(default_factory=list)


def _kernels() -> dict:
    """name -> TritonKernel, imported lazily (the kernel modules import torch)."""
    from .triton_bidirectional import bidir_fwd_kernel
    from .triton_ops import add_rms_norm_kernel, conv1d_silu_kernel
    from .triton_scan_bwd import bwd_summary_kernel, scan_bwd_kernel
    from .triton_scan_fwd import combine_kernel, scan_fwd_kernel

    return {
        "scan_fwd": scan_fwd_kernel,
        "scan_combine": combine_kernel,
        "scan_bwd": scan_bwd_kernel,
        "scan_bwd_summary": bwd_summary_kernel,
        "bidirectional_fwd": bidir_fwd_kernel,
        "conv1d_silu": conv1d_silu_kernel,
        "add_rms_norm": add_rms_norm_kernel,
    }


def kernel_names() -> list[str]:
    return ["scan_fwd", "scan_combine", "scan_bwd", "scan_bwd_summary", "bidirectional_fwd", "conv1d_silu",
            "add_rms_norm"]


def scan_jobs(name: str, dtype: str, n_pads: list[int]) -> list[CompileJob]:
    """The configurations the scan launchers pick (see triton_common.pick_config), per padded state size:
    forward 4 warps (full scan) and 1 warp (full, summary and span passes); backward and its chunk-parallel
    summary 1 warp, one or both directions; fused bidirectional forward 4 or 1 warps (full) and 1 warp
    (summary and span passes), only up to the states it runs fused (triton_common.FUSED_MAX_STATES); with and
    without z; B/C read 4 states at a time (aligned, contiguous states) or not; states per thread (GROUP) as
    the launchers split them (triton_common.state_groups); forwards saving tile states (training) or not."""
    from .triton_common import CHUNK, FUSED_MAX_STATES, state_groups

    group_kind = {"scan_fwd": "fwd", "scan_bwd": "bwd", "scan_bwd_summary": "bwd_summary"}

    jobs = []
    for n_pad in n_pads:
        if name == "scan_combine":
            jobs.append(CompileJob(name, dtype, (("BLOCK", 128), ("N_PAD", n_pad)), 4))
            continue
        if name == "bidirectional_fwd" and n_pad > FUSED_MAX_STATES:
            continue  # never launched: past FUSED_MAX_STATES Vim's two directions run as two grouped scans
        dirs = (1, 2) if n_pad <= FUSED_MAX_STATES else (1,)  # DIRS=2: the fused op's backward
        vec = min(4, n_pad)
        for aligned in ((True, False) if vec == 4 else (False,)):
            for has_z in (True, False):
                base = (("HAS_Z", has_z), ("N_PAD", n_pad), ("EVEN_N", True), ("VEC", vec),
                        ("BC_ALIGNED", aligned))
                if name in group_kind:
                    base = (*base, ("GROUP", state_groups(n_pad, group_kind[name])[0]))
                if name == "scan_bwd":
                    variants = [(1, (("DIRS", d), ("CHUNK", CHUNK))) for d in dirs]
                elif name == "scan_bwd_summary":
                    variants = [(1, (("DIRS", d),)) for d in dirs]
                else:  # forwards: full scan 4 or 1 warps, summary and span passes 1 warp; saving or not
                    variants = [(w, (("MODE", m), ("SAVE", save))) for save in (True, False)
                                for w, m in ((4, 0), (1, 0), (1, 1), (1, 2))]
                for warps, extra in variants:
                    jobs.append(CompileJob(name, dtype, (*base, ("BLOCK_E", 32 * warps), *extra), warps))
    return jobs


def compile_jobs(kernels: list[str] | None = None, dtypes: list[str] | None = None,
                 d_states: list[int] | None = None, quick: bool = False) -> list[CompileJob]:
    """Every configuration the launchers can pick, optionally restricted to kernels/dtypes/state sizes.

    `quick`: only the first configuration of each (kernel, dtype): a smoke test that every kernel builds.
    """
    if quick:
        full = compile_jobs(kernels, dtypes, d_states)
        return [job for i, job in enumerate(full)
                if i == 0 or (job.kernel, job.dtype) != (full[i - 1].kernel, full[i - 1].dtype)]
    from . import triton_ops
    from .triton_common import MAX_D_STATE, n_pad_for

    pads = sorted({n_pad_for(n) for n in d_states}) if d_states else \
        [1 << k for k in range(MAX_D_STATE.bit_length()) if 1 << k <= MAX_D_STATE]
    jobs: list[CompileJob] = []
    for name in kernels or kernel_names():
        for dtype in dtypes or DTYPES:
            if name in ("scan_fwd", "scan_combine", "scan_bwd", "scan_bwd_summary", "bidirectional_fwd"):
                if name == "scan_combine" and dtype != (dtypes or DTYPES)[0]:
                    continue  # fp32 only: one build is enough
                jobs.extend(scan_jobs(name, dtype, pads))
            elif name == "conv1d_silu":
                consts = (("BLOCK_E", triton_ops.CONV_BLOCK_E), ("BLOCK_L", triton_ops.CONV_BLOCK_L))
                jobs.append(CompileJob(name, dtype, consts, triton_ops.CONV_NUM_WARPS))
            elif name == "add_rms_norm":
                for block, warps in triton_ops.norm_configs():
                    for has_res in (True, False):
                        consts = (("HAS_RESIDUAL", has_res), ("BLOCK_D", block))
                        jobs.append(CompileJob(name, dtype, consts, warps))
            else:
                raise ValueError(f"unknown kernel {name!r}; known: {', '.join(kernel_names())}")
    return jobs


def _signature(fn, dtype: str, constexprs: dict) -> dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32" if name in _FP32_POINTERS else f"*{dtype}"
        elif name in _INT64_SCALARS:
            sig[name] = "i64"
        else:
            sig[name] = "fp32" if name in _FLOAT_SCALARS else "i32"
    return sig


def make_source(fn, signature: dict[str, str], constexprs: dict, aligned: tuple[str, ...] = ()):
    """ASTSource across triton versions: 3.3+ takes `constexprs` and 'constexpr' signature entries.

    `aligned`: pointer arguments known 16-byte aligned (triton 3.3+ only; older versions ignore it).
    """
    from triton.compiler import ASTSource

    params = inspect.signature(ASTSource.__init__).parameters
    if "constexprs" in params:
        attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in aligned}
        return ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)
    runtime = {k: v for k, v in signature.items() if v != "constexpr"}
    try:  # triton 3.2: names
        return ASTSource(fn, signature=runtime, constants=constexprs)
    except Exception:  # triton 3.0/3.1: argument indices
        index = fn.arg_names.index
        return ASTSource(fn, signature={index(k): v for k, v in runtime.items()},
                         constants={index(k): v for k, v in constexprs.items()})


def _ptxas_candidates(cc: int) -> Iterator[str]:
    try:
        from triton.backends.nvidia import compiler as nv
    except ImportError:
        nv = None
    getter = getattr(nv, "get_ptxas", None)
    for args in ((cc,), ()):
        try:
            found = getter(*args)  # type: ignore[misc]
            yield getattr(found, "path", None) or found[0]
        except Exception:
            pass
    if nv is not None:
        bin_dir = Path(nv.__file__).parent / "bin"
        for name in ("ptxas", "ptxas-blackwell"):
            if (bin_dir / name).exists():
                yield str(bin_dir / name)
    if shutil.which("ptxas"):
        yield shutil.which("ptxas")  # type: ignore[misc]


def ptxas_usage(ptx: str, cc: int) -> dict[str, int]:
    """Registers and spill bytes of the kernel in `ptx`, from `ptxas -v` (the first ptxas that accepts it)."""
    match = re.search(r"\.target\s+(sm_\w+)", ptx)
    gpu_name = match.group(1) if match else f"sm_{cc}"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        for ptxas in dict.fromkeys(_ptxas_candidates(cc)):
            cmd = [ptxas, "-v", f"--gpu-name={gpu_name}", str(src), "-o", str(Path(tmp) / "k.o")]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode:
                continue
            log = proc.stderr + proc.stdout
            regs = re.search(r"Used (\d+) registers", log)
            stores = re.search(r"(\d+) bytes spill stores", log)
            loads = re.search(r"(\d+) bytes spill loads", log)
            return {"registers": int(regs.group(1)) if regs else -1,
                    "spill_store_bytes": int(stores.group(1)) if stores else 0,
                    "spill_load_bytes": int(loads.group(1)) if loads else 0}
    raise RuntimeError("no ptxas accepted the generated PTX")


def compile_one(job: CompileJob, arch: str) -> CompileResult:
    """Compile one configuration; a failure is returned (with the error's last line), never raised."""
    import triton
    from triton.backends.compiler import GPUTarget

    result = CompileResult(job.kernel, job.dtype, job.config, arch, ok=False)
    start = time.perf_counter()
    try:
        fn = _kernels()[job.kernel].compiled
        constexprs = dict(job.constexprs)
        owned = tuple(name for name in fn.arg_names if name in _OWNED_POINTERS)
        source = make_source(fn, _signature(fn, job.dtype, constexprs), constexprs, owned)
        compiled = triton.compile(source, target=GPUTarget("cuda", ARCHS[arch], 32),
                                  options={"num_warps": job.num_warps, "enable_fp_fusion": True})
        result.shared_bytes = int(getattr(compiled.metadata, "shared", 0))
        usage = ptxas_usage(compiled.asm["ptx"], ARCHS[arch])
        result.registers = usage["registers"]
        result.spill_store_bytes = usage["spill_store_bytes"]
        result.spill_load_bytes = usage["spill_load_bytes"]
        result.ok = True
    except Exception as exc:  # report, keep going: one broken config must not hide the others
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        result.error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    result.seconds = time.perf_counter() - start
    return result


def _compile_one_dict(job: CompileJob, arch: str) -> dict:
    return asdict(compile_one(job, arch))


def compile_all(arch: str, jobs: list[CompileJob], workers: int = 1) -> Iterator[CompileResult]:
    """Results in job order; `workers` > 1 compiles in that many fresh processes."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield compile_one(job, arch)
        return
    import multiprocessing

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for row in pool.map(_compile_one_dict, jobs, [arch] * len(jobs)):
            yield CompileResult(**row)
