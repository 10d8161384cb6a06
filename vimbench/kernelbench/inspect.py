"""`vimbench kernels inspect`: every scan kernel we own, compiled for a GPU architecture as the model launches
it, with its resources, occupancy, launch grid and the SASS of its time loop counted per state update.

A kernel author's tool for a machine with no GPU (see /work/shared/docs/static-kernel-analysis.md). Figures:
- regs / spills: `ptxas -v` on the generated PTX; smem: the kernel's static + dynamic shared bytes.
- blocks/SM: min(max blocks, warps, registers, shared memory) at the arch's limits (register allocation in
  256-register units per warp, 1 KiB of shared memory reserved per block).
- grid / warps: the launch the model makes at that shape; warps/SM = warps in flight over the H100's 132 SMs.
- loop counts: along the longest path of one iteration of each time loop (innermost loop holding a
  MUFU.EX2), divided by the state updates one thread performs per iteration = (state elements per thread,
  from the kernel's state tile and warps) x (steps per iteration, max(1, EX2 on the path // elements per
  thread), which detects unrolling). A kernel with several time loops (a backward) reports their sum, plus
  the per-tile code of the loop enclosing them (all of it) divided by the updates of one tile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from . import sass
from .launches import Capture, Launch, ScanInputs, Shape, model_scan_inputs, specialise

ARCHS = {"sm_80": 80, "sm_90": 90}
H100_SMS = 132


@dataclass(frozen=True)
class ArchLimits:
    regs_per_sm: int = 65536
    smem_per_sm: int = 228 * 1024
    max_blocks: int = 32
    max_warps: int = 64


LIMITS = {"sm_80": ArchLimits(smem_per_sm=164 * 1024), "sm_90": ArchLimits()}


def blocks_per_sm(arch: str, regs: int, smem: int, warps: int) -> int:
    """Resident blocks per SM allowed by warps, registers and shared memory."""
    lim = LIMITS[arch]
    warp_regs = math.ceil(max(regs, 1) * 32 / 256) * 256
    warps_by_regs = 4 * ((lim.regs_per_sm // 4) // warp_regs)  # four schedulers, each with its own file
    by_regs = warps_by_regs // warps
    by_smem = lim.smem_per_sm // (smem + 1024)
    return max(0, min(lim.max_blocks, lim.max_warps // warps, by_regs, by_smem))


@dataclass
class KernelReport:
    backend: str
    phase: str
    kernel: str
    arch: str
    dtype: str
    shape: str
    config: str = ""
    registers: int | None = None
    spill_bytes: int | None = None  # ptxas spill stores + loads
    shared_bytes: int | None = None
    warps_per_block: int = 0
    blocks_per_sm: int | None = None
    grid: tuple[int, int, int] = (0, 0, 0)
    warps_launched: int = 0
    time_loops: int = 0
    updates_per_iteration: float = 0.0
    per_update: dict[str, float] = field(default_factory=dict)  # instructions, mufu, ldg, stg per update
    per_iteration: dict[str, int] = field(default_factory=dict)  # bar, shfl, local (spills) per iteration
    per_tile: dict[str, int] = field(default_factory=dict)  # the code around the time loops, per tile
    error: str = ""
    note: str = ""

    @property
    def warps_per_sm(self) -> float:
        return self.warps_launched / H100_SMS


def normalise(loops: list[sass.LoopCounts], elems_per_thread: float, tile: sass.LoopCounts | None = None,
              tile_steps: float = 0) -> tuple[float, dict, dict]:
    """(updates per iteration of the first loop, per-update figures summed over loops, per-iteration sums).

    `tile`: the per-tile code around the time loops, spread over the updates of one tile (`tile_steps`
    positions); its BAR/SHFL are not per-iteration figures and are left out of those.
    """
    per_update: dict[str, float] = {}
    per_iter: dict[str, int] = {}
    first = 0.0
    for i, loop in enumerate(loops):
        steps = max(1, loop["ex2"] // max(1, round(elems_per_thread)))
        updates = elems_per_thread * steps
        first = updates if i == 0 else first
        for key in ("instructions", "mufu", "ex2", "ldg", "stg"):
            per_update[key] = per_update.get(key, 0.0) + loop[key] / updates
        for key in ("bar", "shfl", "local", "lds", "sts", "atom"):
            per_iter[key] = per_iter.get(key, 0) + loop[key]
    if tile is not None and tile_steps > 0:
        for key in ("instructions", "mufu", "ex2", "ldg", "stg"):
            per_update[key] = per_update.get(key, 0.0) + tile[key] / (elems_per_thread * tile_steps)
        per_iter["local"] = per_iter.get("local", 0) + tile["local"]
    return first, per_update, per_iter


# ---- Triton ------------------------------------------------------------------------------------------------

INFERENCE_PHASES = ("fwd infer", "bidir fwd infer")


def _triton_phases(inputs: ScanInputs, inference: bool = True) -> Iterator[tuple[str, Callable[[], None]]]:
    """(phase, call) pairs: each call runs one launcher (forward, backward, fused pair) on the meta inputs.

    The forwards as training launches them (tile states saved for the backward); with `inference`, also as
    inference does ("... infer": nothing saved, SAVE=0)."""
    from vimbench.kernels import triton_bidirectional as bidir
    from vimbench.kernels import triton_scan

    f, b, z = inputs.fwd, inputs.bwd, inputs.z
    fwd_args = (f.u, f.delta, f.A, f.B, f.C, f.D, z, f.delta_bias, True, False)
    yield "fwd", lambda: triton_scan.triton_scan_forward(*fwd_args, save=True)
    if inference:
        yield "fwd infer", lambda: triton_scan.triton_scan_forward(*fwd_args, save=False)

    def backward():
        saved = triton_scan.saved_like(f.u, f.A)
        triton_scan.triton_scan_backward(z.new_empty(z.shape), *fwd_args, saved)

    yield "bwd", backward
    yield "bidir fwd", lambda: bidir.launch_for_inspect(f, b, z, backward=False)
    if inference:
        yield "bidir fwd infer", lambda: bidir.launch_for_inspect(f, b, z, backward=False, save=False)
    yield "bidir bwd", lambda: bidir.launch_for_inspect(f, b, z, backward=True)


def _capture_triton(inputs: ScanInputs, inference: bool = True) -> list[Launch]:
    import torch

    launches: list[Launch] = []
    with torch.no_grad():
        for phase, call in _triton_phases(inputs, inference):
            with Capture() as cap:
                cap.phase = phase
                call()
            launches.extend(cap.launches)
    return launches


def _config_label(launch: Launch) -> str:
    from vimbench.kernels.aot import _SHORT

    parts = []
    for k, v in launch.constexprs.items():
        short = _SHORT.get(k, k)
        parts.append((short if v else f"-{short}") if isinstance(v, bool) else f"{short}{v}")
    return " ".join([*parts, f"w{launch.num_warps}"])


def _state_elems_per_thread(launch: Launch) -> float:
    state = getattr(launch.kernel, "state_elems", None)
    consts = launch.constexprs
    elems = state(consts) if state else consts.get("BLOCK_E", 1) * consts.get("N_PAD", 1)
    return max(1.0, elems / (32 * launch.num_warps))


_COMPILED: dict[tuple, tuple] = {}


def _compile(launch: Launch, arch: str) -> tuple[dict, int, list[sass.Instr]]:
    """(ptxas usage, shared bytes, SASS) of `launch` for `arch`, cached per specialisation in this process."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    from vimbench.kernels.aot import ptxas_usage

    target = GPUTarget("cuda", ARCHS[arch], 32)
    signature, constexprs, attrs, options = specialise(launch, make_backend(target))
    key = (launch.kernel.__name__, arch, repr(sorted(signature.items())), repr(sorted(constexprs.items())),
           repr(sorted(attrs.items())), launch.num_warps)
    if key not in _COMPILED:
        compiled = triton.compile(ASTSource(launch.kernel.compiled, signature, constexprs, attrs),
                                  target=target, options=options.__dict__)
        usage = ptxas_usage(compiled.asm["ptx"], ARCHS[arch])
        instrs = next(iter(sass.disassemble(compiled.asm["cubin"]).values()))
        _COMPILED[key] = (usage, int(getattr(compiled.metadata, "shared", 0)), instrs)
    return _COMPILED[key]


def inspect_triton_launch(launch: Launch, arch: str, dtype: str, shape: Shape) -> KernelReport:
    report = KernelReport("triton", launch.phase, launch.kernel.__name__.strip("_"), arch, dtype, shape.label,
                          _config_label(launch), warps_per_block=launch.num_warps, grid=launch.grid,
                          warps_launched=launch.warps)
    try:
        usage, report.shared_bytes, instrs = _compile(launch, arch)
        report.registers = usage["registers"]
        report.spill_bytes = usage["spill_store_bytes"] + usage["spill_load_bytes"]
        report.blocks_per_sm = blocks_per_sm(arch, report.registers, report.shared_bytes, launch.num_warps)
        _fill_loops(report, instrs, _state_elems_per_thread(launch), _tile_steps(launch))
    except Exception as exc:  # one kernel failing must not hide the others
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        report.error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return report


def _tile_steps(launch: Launch) -> float:
    """Positions per pass of the code around the time loop: the kernel's `chunk_len` argument (a tile), over
    the passes per tile its `tile_passes` declares; 0 for kernels without tiles."""
    names = launch.kernel.compiled.arg_names
    if "chunk_len" not in names:
        return 0
    passes = getattr(launch.kernel, "tile_passes", None)
    return int(launch.args[names.index("chunk_len")]) / (passes(launch.constexprs) if passes else 1)


def _fill_loops(report: KernelReport, instrs: list[sass.Instr], elems_per_thread: float,
                tile_steps: float = 0) -> None:
    loops = sass.time_loops(instrs)
    report.time_loops = len(loops)
    if not sass.loops_well_nested(instrs):
        report.note = "backward branches overlap (out-of-line code): loop figures not comparable"
    tile = sass.tile_code(instrs) if tile_steps else None
    if tile is not None:
        report.per_tile = {"instructions": tile.instructions, **tile.counts}
    report.updates_per_iteration, report.per_update, report.per_iteration = normalise(
        loops, elems_per_thread, tile, tile_steps)


def inspect_triton(arch: str, dtype: str, shape: Shape, inference: bool = True) -> list[KernelReport]:
    inputs = model_scan_inputs(shape, dtype)
    launches = _capture_triton(inputs, inference)
    return [inspect_triton_launch(launch, arch, dtype, shape) for launch in launches]


# ---- everything -------------------------------------------------------------------------------------------

def inspect_all(archs: list[str], dtypes: list[str], shapes: list[Shape], triton: bool = True,
                cuda: bool = True, official_dir: str | None = None) -> Iterator[KernelReport]:
    """Reports for every (arch, dtype, shape) and kernel, Triton first, then CUDA (and the official one).

    Our CUDA kernels are skipped (no row) on a machine without nvcc.
    """
    import shutil

    from . import cuda_kernels

    cuda = cuda and shutil.which("nvcc") is not None
    for arch in archs:
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
        for dtype in dtypes:
            for shape in shapes:
                if triton:
                    yield from inspect_triton(arch, dtype, shape)
                if cuda:
                    yield from cuda_kernels.inspect_cuda(arch, dtype, shape)
                if official_dir:
                    yield from cuda_kernels.inspect_official(official_dir, arch, dtype, shape)


def as_dict(report: KernelReport) -> dict:
    row = asdict(report)
    row["warps_per_sm"] = round(report.warps_per_sm, 2)
    return row
