"""`vimbench kernels inspect`: the scan kernels compiled for sm_90 as Vim-S launches them, with no GPU.

These are the CI guards of the kernels' static shape: the forward's time loop has no barrier or shuffle and
stays lean, no scan kernel spills, and batch 1 at 1248 px launches enough warps to fill an H100. One module
fixture compiles every Triton scan kernel once (about a minute on 2 cores); the CLI tests reuse its cache.
"""

from __future__ import annotations

import json

import pytest

from vimbench.kernelbench import inspect as kinspect
from vimbench.kernelbench import sass
from vimbench.kernelbench.launches import Capture, Shape, model_scan_inputs

FORWARD_MAX_INSTR_PER_UPDATE = 19.0  # <= 0.5x the official kernel's 38.7 (sm_90, fp32)
BACKWARD_MAX_RATIO = 2.5  # the backward's instructions per update over the forward's (README, GPU section)


@pytest.fixture(scope="module")
def vim_s_224() -> dict[str, list[kinspect.KernelReport]]:
    """phase -> reports, every Triton scan kernel at Vim-S, 224 px, batch 128, fp32, sm_90."""
    reports: dict[str, list] = {}
    for r in kinspect.inspect_triton("sm_90", "fp32", Shape.parse("vim-s@224:b128")):
        reports.setdefault(r.phase, []).append(r)
    return reports


PHASES = {"fwd", "fwd infer", "bwd", "bidir fwd", "bidir fwd infer", "bidir bwd"}


def test_every_scan_kernel_compiles_without_spills(vim_s_224):
    assert set(vim_s_224) == PHASES
    for phase, reports in vim_s_224.items():
        for r in reports:
            assert not r.error, (phase, r.error)
            assert r.spill_bytes == 0, (phase, r.kernel, r.spill_bytes)
            assert r.per_iteration.get("local", 0) == 0
            assert 0 < r.registers <= 255 and r.blocks_per_sm >= 1
            assert r.time_loops >= 1, (phase, r.kernel)


def test_forward_time_loop_has_no_barrier_or_shuffle_and_is_lean(vim_s_224):
    for phase in ("fwd", "fwd infer", "bidir fwd", "bidir fwd infer"):
        for r in vim_s_224[phase]:
            assert r.per_iteration.get("bar", 0) == 0, (phase, r.kernel)
            assert r.per_iteration.get("shfl", 0) == 0, (phase, r.kernel)
            # one channel per thread, all 16 states (the fused kernel: both directions' channel)
            assert r.updates_per_iteration == (32 if phase.startswith("bidir") else 16)
            assert r.per_update["instructions"] <= FORWARD_MAX_INSTR_PER_UPDATE, r.per_update
            assert 1.0 <= r.per_update["ex2"] < 1.25  # one exp2 per update (+ softplus, sigmoid per channel)


def test_fused_bidirectional_costs_no_more_than_one_direction(vim_s_224):
    for suffix in ("", " infer"):  # training and inference
        single = vim_s_224["fwd" + suffix][0].per_update["instructions"]
        fused = vim_s_224["bidir fwd" + suffix][0].per_update["instructions"]
        assert fused <= single, (suffix, fused, single)
    bwd = vim_s_224["bidir bwd"]
    assert len(bwd) == 1 and bwd[0].grid[2] == 2  # both directions' backward in one launch


def test_backward_stays_within_its_budget(vim_s_224):
    forward = vim_s_224["fwd"][0].per_update["instructions"]
    for phase in ("bwd", "bidir bwd"):
        (r,) = vim_s_224[phase]
        assert r.per_update["instructions"] <= BACKWARD_MAX_RATIO * forward, (phase, r.per_update)
        assert r.per_update["ex2"] < 1.2  # the decay's exp once per update, reused by the adjoint
        assert r.per_iteration.get("bar", 0) == 0 and r.per_iteration.get("shfl", 0) == 0
        # dB/dC summed over channels once per tile: two barriers around the slab, no per-step reduction
        assert r.per_tile["bar"] <= 2 and r.per_tile.get("shfl", 0) == 0


def _launches(shape: str, phase_calls) -> list:
    inputs = model_scan_inputs(Shape.parse(shape), "fp32")
    found = []
    for phase, call in kinspect._triton_phases(inputs):
        if phase in phase_calls:
            with Capture() as cap:
                cap.phase = phase
                call()
            found.extend(cap.launches)
    return found


def test_batch1_1248px_forward_fills_an_h100():
    """Vim-S at 1248 px (L=6085), batch 1: the chunk-parallel scan launches >= 8 warps per SM of 132 SMs."""
    launches = _launches("vim-s@1248:b1", {"fwd", "bidir fwd"})
    scans = [lc for lc in launches if lc.kernel.__name__ in ("_scan_fwd_kernel", "_bidir_fwd_kernel")]
    assert scans and all(lc.warps >= 8 * 132 for lc in scans), [(lc.grid, lc.warps) for lc in scans]
    assert [lc.constexprs["MODE"] for lc in scans] == [1, 2, 1, 2]  # summary + span passes
    tile, span = launches[0].args[18], launches[0].args[20]  # chunk_len (positions per tile), tiles per span
    assert tile == 16 and 32 <= tile * span <= 6085 // 44 + 1


def test_batch1_1248px_backward_fills_an_h100():
    """The backward is chunk-parallel too (adjoint carries per span, combined): >= 1056 warps at batch 1."""
    for phase in ("bwd", "bidir bwd"):
        launches = _launches("vim-s@1248:b1", {phase})
        names = [lc.kernel.__name__ for lc in launches]
        assert names == ["_bwd_summary_kernel", "_combine_kernel", "_scan_bwd_kernel"], names
        for lc in launches:
            if lc.kernel.__name__ in ("_scan_bwd_kernel", "_bwd_summary_kernel"):
                assert lc.warps >= 8 * 132 and lc.num_warps == 1, (lc.kernel.__name__, lc.grid)
        bwd = next(lc for lc in launches if lc.kernel.__name__ == "_scan_bwd_kernel")
        assert bwd.grid == ((24, 1, 48) if phase == "bwd" else (24, 1, 96))  # (span, direction) on axis 2


def test_batch1_1248px_fused_bidirectional_is_three_shared_launches_each_way():
    """The fused op at batch 1, 1248 px: forward = one summary of both directions per span of positions, one
    combine of both, one span pass running both directions over the same positions (out written once, no
    add after); backward = one summary, one combine, one backward launch, each for both directions."""
    fwd = _launches("vim-s@1248:b1", {"bidir fwd"})
    assert [(lc.kernel.__name__, lc.grid) for lc in fwd] == [("_bidir_fwd_kernel", (24, 1, 48)),
                                                             ("_combine_kernel", (96, 1, 2)),
                                                             ("_bidir_fwd_kernel", (24, 1, 48))]
    bwd = _launches("vim-s@1248:b1", {"bidir bwd"})
    assert [(lc.kernel.__name__, lc.grid) for lc in bwd] == [("_bwd_summary_kernel", (24, 1, 96)),
                                                             ("_combine_kernel", (96, 1, 2)),
                                                             ("_scan_bwd_kernel", (24, 1, 96))]


@pytest.fixture(scope="module")
def vim_s_1248_b1() -> dict[str, list[kinspect.KernelReport]]:
    """phase -> reports of the chunk-parallel launches at Vim-S, 1248 px, batch 1, fp32, sm_90 (the single
    direction's forward for comparison, and the fused op's forward and backward)."""
    shape = Shape.parse("vim-s@1248:b1")
    reports: dict[str, list] = {}
    for launch in _launches(shape.label, {"fwd", "bidir fwd", "bidir bwd"}):
        report = kinspect.inspect_triton_launch(launch, "sm_90", "fp32", shape)
        reports.setdefault(launch.phase, []).append(report)
    return reports


@pytest.mark.parametrize("shape", ["vim-s@224:b128", "vim-s@1248:b1"])
def test_fused_forward_no_costlier_than_one_direction_in_bf16(shape):
    """Issue 13 item 4 in bf16 too: the fused forward's walk over L (one launch, or the span pass at batch 1)
    costs no more instructions per update than one direction's, as training and inference launch them (fp32:
    the tests above), without spills and with at least 8 resident warps per SM."""
    parsed = Shape.parse(shape)
    inputs = model_scan_inputs(parsed, "bf16")
    walks = {}
    for phase, call in kinspect._triton_phases(inputs):
        if "fwd" in phase:
            with Capture() as cap:
                cap.phase = phase
                call()
            walk = cap.launches[-1]  # the one-launch scan, or the span pass after summary and combine
            walks[phase] = kinspect.inspect_triton_launch(walk, "sm_90", "bf16", parsed)
    for suffix in ("", " infer"):
        single, fused = walks["fwd" + suffix], walks["bidir fwd" + suffix]
        for r in (single, fused):
            assert not r.error and r.spill_bytes == 0, (r.kernel, r.error, r.spill_bytes)
            assert r.blocks_per_sm * r.warps_per_block >= 8
        assert fused.per_update["instructions"] <= single.per_update["instructions"], (
            suffix, fused.per_update, single.per_update)


def test_batch1_1248px_fused_launches_are_lean(vim_s_1248_b1):
    """No spills, no barrier or shuffle in any time loop, and the fused span pass costs no more per update
    than one direction's span pass (its per-tile code runs twice per tile and is counted so)."""
    for phase, reports in vim_s_1248_b1.items():
        for r in reports:
            assert not r.error and r.spill_bytes == 0, (phase, r.kernel, r.error, r.spill_bytes)
            assert r.per_iteration.get("bar", 0) == 0, (phase, r.kernel)
            assert r.per_iteration.get("shfl", 0) == 0, (phase, r.kernel)
    single_span = vim_s_1248_b1["fwd"][2]
    fused_span = vim_s_1248_b1["bidir fwd"][2]
    assert fused_span.kernel == "bidir_fwd_kernel" and "mode2" in fused_span.config
    assert fused_span.updates_per_iteration == 32  # both directions' channel, 16 states each, per step
    assert fused_span.per_update["instructions"] <= single_span.per_update["instructions"], (
        fused_span.per_update, single_span.per_update)


@pytest.mark.parametrize("shape", ["vim-s@224:b128", "vim-s@1248:b1"])
def test_inference_forwards_store_no_tile_states(shape, vim_s_224):
    """Inference (SAVE=0): no tile-state stores and no tile-state buffer: the one-launch forwards get a
    stand-in pointer (no buffer of their own), the chunk-parallel ones only their span carries, one per span
    (batch, n_spans, E, N_PAD) per direction; grids as in training. At 224 px the loop figures confirm it:
    fewer stores per update than the training forward (its per-tile state store is gone)."""
    for kind, tile_arg in (("fwd", "H_ptr"), ("bidir fwd", "Hf_ptr")):
        train, infer = _launches(shape, {kind}), _launches(shape, {kind + " infer"})
        assert [(lc.kernel, lc.grid) for lc in train] == [(lc.kernel, lc.grid) for lc in infer]
        for lc_t, lc_i in zip(train, infer, strict=True):
            if lc_i.kernel.__name__ == "_combine_kernel":
                continue
            assert lc_t.constexprs["SAVE"] is True and lc_i.constexprs["SAVE"] is False
            names = lc_i.kernel.compiled.arg_names
            tiles = lc_t.args[names.index(tile_arg)]
            stand_in = lc_i.args[names.index(tile_arg)]
            n_chunks = lc_i.args[names.index("n_chunks")]
            assert tiles.shape[-3] == n_chunks == (13 if shape.endswith("b128") else 381)
            if kind == "bidir fwd":  # the span states are S, separate; tile pointers are a stand-in input
                assert stand_in.dim() == 2 and stand_in.shape == (768, 16)
                if lc_i.constexprs["MODE"] != 0:
                    assert lc_i.args[names.index("S_ptr")].shape == (2, 1, 48, 768, 16)
            elif lc_i.constexprs["MODE"] == 0:
                assert stand_in.shape == (128, 768, 16)  # the last state, never written by SAVE=0
            else:
                assert stand_in.shape == (1, 48, 768, 16)  # one carry per span
    for kind in ("fwd", "bidir fwd"):
        (t,), (i,) = vim_s_224[kind], vim_s_224[kind + " infer"]
        assert i.per_update["stg"] < t.per_update["stg"], (kind, i.per_update, t.per_update)


def test_backward_scratch_at_batch128_224px():
    """Per direction: one slab per program, 32 channels x 16 steps x (2 N + 4) floats (was 2 x 201 MB)."""
    from vimbench.kernels.triton_scan import _Prepared

    f = model_scan_inputs(Shape.parse("vim-s@224:b128"), "fp32").fwd
    p = _Prepared(f.u, f.delta, f.A, f.B, f.C, f.D, f.delta_bias)
    assert p.slab_numel() * 4 == 128 * 24 * 32 * 16 * 36 * 4  # 226 MB


def test_batch128_224px_forward_is_one_full_scan_launch():
    launches = _launches("vim-s@224:b128", {"fwd"})
    assert len(launches) == 1
    (lc,) = launches
    assert lc.constexprs["MODE"] == 0 and lc.num_warps == 4 and lc.grid == (6, 128, 1)


@pytest.mark.parametrize("shapes", [("vim-s@224:b128:n32",), ("vim-s@224:b128:n64", "vim-s@224:b1:n64")])
def test_no_scan_kernel_spills_at_wider_states(shapes):
    """Past the states a thread holds without spilling, the kernels split them into groups (one program
    each): every scan kernel as a model with 32 or 64 states launches it (batch 128: full scans, the fused
    pair, which past 16 states runs as two grouped single-direction scans; batch 1: the chunk-parallel
    passes, summary, combine) compiles without spills. To stay near a
    minute of CI: fp32, sm_90, and at 32 states only the batch-128 launches (the batch-1 kernels' tiles are
    those of 64 states or smaller); every generic/bf16 build is `vimbench kernels compile`'s."""
    kernels = set()
    for shape in shapes:
        for r in kinspect.inspect_triton("sm_90", "fp32", Shape.parse(shape), inference=False):
            assert not r.error, (shape, r.phase, r.error)
            assert r.spill_bytes == 0 and r.per_iteration.get("local", 0) == 0, (shape, r.phase, r.config)
            kernels.add(r.kernel)
    expected = {"scan_fwd_kernel", "scan_bwd_kernel"}  # the fused pair runs as two grouped scans here
    if len(shapes) > 1:
        expected |= {"combine_kernel", "bwd_summary_kernel"}
    assert kernels == expected


def test_wider_states_launch_one_program_per_state_group():
    """64 states: the forward's and the backward's programs hold 16 of a channel's states (4 groups per
    channel block); Vim's 16 states are never split."""
    from vimbench.kernels.triton_common import FUSED_MAX_STATES, state_groups

    (fwd,) = _launches("vim-s@224:b128:n64", {"fwd"})
    (bwd,) = _launches("vim-s@224:b128:n64", {"bwd"})
    assert fwd.grid == (6 * 4, 128, 1) and fwd.constexprs["GROUP"] == 16
    assert bwd.grid == (24 * 4, 128, 1) and bwd.constexprs["GROUP"] == 16
    assert all(state_groups(16, kind) == (16, 1) for kind in ("fwd", "bwd", "bwd_summary"))
    assert state_groups(40, "bwd") == (16, 3) and state_groups(256, "fwd") == (16, 16)
    # the fused pair only up to FUSED_MAX_STATES: past it, two grouped single-direction scans
    assert FUSED_MAX_STATES == 16
    for phase in ("bidir fwd", "bidir bwd"):
        names = {lc.kernel.__name__ for lc in _launches("vim-s@224:b128:n32", {phase})}
        assert names == {"_scan_fwd_kernel" if phase == "bidir fwd" else "_scan_bwd_kernel"}, (phase, names)


def test_model_strides_reach_the_launch():
    """B and C are strided views of x_dbl (stride over L = dt_rank + 2N = 56, over N = 1), as in the model."""
    inputs = model_scan_inputs(Shape.parse("vim-s@224:b2"), "fp32")
    assert inputs.fwd.B.stride() == (197 * 56, 1, 56) and inputs.length == 197 and inputs.d_inner == 768


def test_cli_json_from_the_compile_cache(cli, vim_s_224):
    res = cli(["kernels", "inspect", "--shape", "vim-s@224", "--backend", "triton", "--format", "json"])
    assert res.code == 0, res.err
    rows = json.loads(res.out)
    assert {r["phase"] for r in rows} == PHASES
    fwd = next(r for r in rows if r["phase"] == "fwd")
    assert fwd["grid"] == [6, 128, 1] and fwd["warps_launched"] == 3072 and fwd["arch"] == "sm_90"


@pytest.mark.parametrize("args", [["--arch", "sm_75"], ["--shape", "deit-s@224"], ["--shape", "vim-s@225"],
                                  ["--shape", "vim-s"], ["--format", "xml"], ["--dtype", "fp64"],
                                  ["--backend", "rocm"], ["--official", "/nonexistent/dir"],
                                  ["--shape", "vim-s@224:n0"], ["--shape", "vim-s@224:b1:n257"]])
def test_bad_input_is_one_line_exit_2(cli, args):
    res = cli(["kernels", "inspect", *args])
    assert res.code == 2
    assert res.err.strip().startswith("error:") and len(res.err.strip().splitlines()) == 1


SASS = """
        Function : k
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   FMUL R2, R3, R4 ;
        /*0020*/                   MUFU.EX2 R2, R2 ;
        /*0030*/              @P0 BRA 0x60 ;
        /*0040*/                   SHFL.BFLY PT, R5, R2, 0x1, 0x1f ;
        /*0050*/                   FADD R2, R2, R5 ;
        /*0060*/                   LDG.E R6, desc[UR4][R8.64] ;
        /*0070*/              @P1 BRA 0x10 ;
        /*0080*/                   BAR.SYNC 0x0 ;
        /*0090*/                   FADD R7, R6, R6 ;
        /*00a0*/              @P2 BRA 0x90 ;
        /*00b0*/                   EXIT ;
        /*00c0*/                   NOP ;
"""


def test_sass_time_loop_longest_path_and_counts():
    instrs = sass.parse_sass(SASS)["k"]
    assert [i.opcode for i in instrs][:3] == ["MOV", "FMUL", "MUFU.EX2"] and instrs[-1].opcode == "EXIT"
    (loop,) = sass.time_loops(instrs)  # the 0x90 loop has no EX2 and is not a sibling inside a loop
    assert (loop.start, loop.end) == (0x10, 0x70)
    assert loop.instructions == 7  # the skippable SHFL+FADD are on the longest path
    assert loop["ex2"] == 1 and loop["shfl"] == 1 and loop["ldg"] == 1 and loop["bar"] == 0


def test_normalise_divides_by_updates_and_detects_unrolling():
    loop = sass.LoopCounts(0, 0, 64, {"ex2": 34, "ldg": 8})  # two steps of 16 updates + 2 per-channel EX2
    updates, per_update, _ = kinspect.normalise([loop], 16)
    assert updates == 32 and per_update["instructions"] == 2.0 and per_update["ldg"] == 0.25


TILED = """
        Function : t
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.128 R4, desc[UR4][R2.64] ;
        /*0020*/                   BAR.SYNC 0x0 ;
        /*0030*/                   MUFU.EX2 R8, R9 ;
        /*0040*/              @P0 BRA 0x30 ;
        /*0050*/                   FADD R10, R11, R12 ;
        /*0060*/              @P1 BRA 0x50 ;
        /*0070*/                   STG.E desc[UR4][R2.64], R10 ;
        /*0080*/              @P2 BRA 0x10 ;
        /*0090*/                   EXIT ;
"""


def test_tile_code_is_the_enclosing_loop_outside_its_inner_loops():
    """A tile loop (0x10-0x80) around a time loop (0x30-0x40) and its sibling (0x50-0x60): the tile's own code
    is LDG, BAR, STG and the closing branch; spread over 16 steps x 16 states it adds 4/256 per update."""
    instrs = sass.parse_sass(TILED)["t"]
    loops = sass.time_loops(instrs)
    assert [(lp.start, lp.end) for lp in loops] == [(0x30, 0x40), (0x50, 0x60)]
    tile = sass.tile_code(instrs)
    assert tile.instructions == 4 and tile["bar"] == 1 and tile["ldg"] == 1 and tile["stg"] == 1
    _, per_update, per_iter = kinspect.normalise(loops, 16, tile, 16)
    assert per_update["instructions"] == pytest.approx((2 + 2) / 16 + 4 / 256)
    assert per_iter["bar"] == 0  # a per-tile barrier is not a time-loop barrier


@pytest.mark.parametrize("regs,smem,warps,expected", [(64, 2048, 4, 8), (255, 0, 1, 8), (32, 0, 1, 32),
                                                      (168, 0, 4, 3), (40, 100 * 1024, 4, 2)])
def test_blocks_per_sm_at_hopper_limits(regs, smem, warps, expected):
    assert kinspect.blocks_per_sm("sm_90", regs, smem, warps) == expected


def test_overlapping_backward_branches_are_flagged():
    """nvcc places divergent paths out of line and jumps back: such ranges are not loops."""
    overlap = """
        Function : k
        /*0010*/                   MUFU.EX2 R2, R2 ;
        /*0020*/                   FADD R2, R2, R2 ;
        /*0030*/              @P0 BRA 0x10 ;
        /*0040*/                   FADD R2, R2, R2 ;
        /*0050*/              @P1 BRA 0x20 ;
        /*0060*/                   EXIT ;
"""
    assert sass.loops_well_nested(sass.parse_sass(SASS)["k"])
    assert not sass.loops_well_nested(sass.parse_sass(overlap)["k"])
