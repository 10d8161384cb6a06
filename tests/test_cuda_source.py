"""The CUDA scan kernel without a GPU: its source compiles for sm_80/sm_90 with nvcc, and its per-row code
(the exact functions each CUDA thread runs) matches the float64 reference when run on the host."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from vimbench.kernels.cuda_scan import CSRC, launch_config, prepare
from vimbench.kernels.reference import selective_scan_ref


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_kernel_source_compiles_for_ampere_and_hopper(tmp_path: Path) -> None:
    """One nvcc run, two targets; no torch headers involved. ptxas must report both entry points."""
    cmd = [
        "nvcc",
        "-std=c++17",
        "-O3",
        "-c",
        str(CSRC / "selective_scan_cuda.cu"),
        "-o",
        str(tmp_path / "k.o"),
        "-gencode",
        "arch=compute_80,code=sm_80",
        "-gencode",
        "arch=compute_90,code=sm_90",
        "-Xptxas",
        "-v",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for arch in ("sm_80", "sm_90"):
        assert f"for '{arch}'" in proc.stderr
    assert "selective_scan_fwd_kernel" in proc.stderr and "selective_scan_bwd_kernel" in proc.stderr


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory) -> ctypes.CDLL:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    lib = tmp_path_factory.mktemp("scan_host") / "libscan_host.so"
    subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O2",
            "-shared",
            "-fPIC",
            str(CSRC / "selective_scan_cuda_host.cpp"),
            "-o",
            str(lib),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return ctypes.CDLL(str(lib))


def _ptr(t: torch.Tensor | None) -> int | None:
    return t.data_ptr() if t is not None else None


def _strides(t: torch.Tensor | None, n: int) -> list[int]:
    return list(t.stride()) if t is not None else [0] * n


def _host_call(lib, args: dict, softplus: bool, reverse: bool, dout: torch.Tensor | None = None,
               config: tuple[int, int, int, int] | None = None, saved: torch.Tensor | None = None):
    """Run the kernels' code on the host through the same `prepare` and launch config the CUDA backend uses.

    config: (chunk, n_chunks, span, n_par), else `launch_config`'s; saved: the forward's tile states (the
    backward's input). Forward: (out, last, tile states); backward: the gradients.
    """
    u, delta, A, B4, C4, D, z, bias = prepare(
        *(args[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"))
    )
    batch, dim, length = u.shape
    if config is None:
        cfg = launch_config(batch, dim, length, A.shape[1])
        config = (cfg.chunk, cfg.n_chunks, cfg.span, cfg.n_par)
    out = torch.empty(batch, dim, length)
    last = torch.empty(batch, dim, A.shape[1])
    tiles = saved if saved is not None else torch.empty(batch, config[1], dim, A.shape[1])
    sizes = (ctypes.c_int * 11)(
        batch, dim, length, A.shape[1], dim // B4.shape[1], int(softplus), int(reverse), *config
    )
    strides = (ctypes.c_int64 * 24)(
        *_strides(u, 3),
        *_strides(delta, 3),
        *_strides(z, 3),
        *out.stride(),
        *A.stride(),
        *B4.stride(),
        *C4.stride(),
        *_strides(D, 1),
        *_strides(bias, 1),
    )
    ptrs = (ctypes.c_void_p * 11)(*map(_ptr, (u, delta, A, B4, C4, D, z, bias, out, last, tiles)))
    if dout is None:
        assert lib.vb_scan_fwd_host(sizes, strides, ptrs) == 0
        return out, last, tiles
    grads = {
        "u": torch.empty_like(out),
        "delta": torch.empty_like(out),
        "z": torch.empty_like(out) if z is not None else None,
        "A": torch.zeros_like(A),
        "B": torch.zeros(B4.shape),
        "C": torch.zeros(C4.shape),
        "D": torch.zeros_like(D) if D is not None else None,
        "delta_bias": torch.zeros_like(bias) if bias is not None else None,
    }
    bwd_strides = (ctypes.c_int64 * 11)(*dout.stride(), *grads["B"].stride(), *grads["C"].stride())
    bwd_ptrs = (ctypes.c_void_p * 9)(
        *map(
            _ptr,
            (
                dout,
                grads["u"],
                grads["delta"],
                grads["z"],
                grads["A"],
                grads["B"],
                grads["C"],
                grads["D"],
                grads["delta_bias"],
            ),
        )
    )
    assert lib.vb_scan_bwd_host(sizes, strides, ptrs, bwd_strides, bwd_ptrs) == 0
    for k in ("B", "C"):  # back to the caller's B/C shape, as cuda_scan._reduce_like does
        x = args[k]
        grads[k] = grads[k].squeeze(1) if x.dim() == 3 else grads[k].sum((0, 3)) if x.dim() == 2 else grads[k]
    return grads


# (L, N, E, groups, z, D, bias, softplus, reverse, strided, constant_bc, config): config (chunk, span)
# forces a launch config (n_chunks and n_par follow); None takes launch_config's (one span at these sizes).
CASES = [
    (1, 16, 4, 1, True, True, True, True, False, False, False, None),
    (7, 1, 4, 1, False, False, False, False, True, False, False, None),
    (15, 16, 64, 1, True, True, True, True, False, True, False, None),  # full 32-row blocks: unrolled sums
    (16, 16, 64, 2, True, True, True, True, True, True, False, (16, 1)),  # one tile, one span
    (17, 16, 48, 1, True, True, True, True, False, True, False, (16, 1)),  # blocks straddle batches; 2 spans
    (40, 16, 4, 2, True, True, True, True, True, True, False, None),
    (70, 16, 64, 4, True, True, True, True, False, True, False, (16, 2)),  # 16-channel groups; 3 spans
    (70, 24, 8, 1, False, True, False, True, True, False, False, (4, 3)),  # N > 16; tiles of 4, 6 spans
    (197, 16, 4, 1, True, True, True, True, False, False, False, None),
    (197, 16, 32, 1, True, False, True, True, True, True, False, (16, 2)),  # chunk-parallel, reverse
    (19, 16, 4, 1, True, True, True, True, True, True, False, None),  # contiguous states: the exact-N path
    (33, 64, 4, 2, True, False, True, True, False, False, False, None),
    (33, 64, 4, 2, False, True, True, True, True, True, False, (8, 1)),  # exact path at N = 64, 5 spans
    (16, 8, 4, 1, True, True, False, False, True, False, True, None),  # constant (E, N) B and C
    # state groups (d_state > 16: one thread per 16 states, partial outputs summed in order)
    (37, 32, 64, 1, True, True, True, True, False, True, False, None),  # 2 groups, exact path, full blocks
    (37, 32, 64, 2, True, True, True, True, True, True, False, (8, 2)),  # + reverse, 3 spans, 2 B/C groups
    (29, 40, 8, 1, True, True, True, True, False, True, False, None),  # 16 + 16 + 8: generic path
    (45, 40, 48, 1, True, False, True, True, True, False, False, (4, 4)),  # + chunk-parallel, straddling
    (33, 64, 64, 4, True, True, True, True, True, True, False, (16, 1)),  # 4 groups, 16-channel B/C groups
    (9, 256, 4, 1, True, True, True, True, False, True, False, None),  # 16 groups (the largest d_state)
]


def _config(L: int, config: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    if config is None:
        return None
    chunk, span = config
    n_chunks = -(-L // chunk)
    return chunk, n_chunks, span, -(-n_chunks // span)


def _inputs(L, N, e, groups, with_z, with_D, with_bias, softplus, strided, constant_bc):
    gen = torch.Generator().manual_seed(L * 131 + N + e)
    b = 2

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    def seq(*shape):  # (b, e, L), optionally a transposed view
        return randn(shape[0], shape[2], shape[1]).transpose(1, 2) if strided else randn(*shape)

    if constant_bc:
        B, C = randn(e, N), randn(e, N)
    elif groups > 1 and strided:  # states contiguous, as Vim's views of x_dbl (the kernels' exact path)
        B, C = randn(b, groups, L, N).transpose(2, 3), randn(b, groups, L, N).transpose(2, 3)
    elif groups > 1:
        B, C = randn(b, groups, N, L), randn(b, groups, N, L)
    elif strided:
        B, C = randn(b, L, N).transpose(1, 2), randn(b, L, N).transpose(1, 2)
    else:
        B, C = randn(b, N, L), randn(b, N, L)
    delta = seq(b, e, L) * 0.5 - 1.0 if softplus else torch.rand(b, e, L, generator=gen) * 0.3
    return {
        "u": seq(b, e, L),
        "delta": delta,
        "A": -torch.arange(1, N + 1.0).repeat(e, 1) * 0.7,
        "B": B,
        "C": C,
        "D": randn(e) if with_D else None,
        "z": seq(b, e, L) if with_z else None,
        "delta_bias": torch.rand(e, generator=gen) * 0.2 if with_bias else None,
    }


def _first_positions(x: torch.Tensor | None, n: int, reverse: bool, name: str) -> torch.Tensor | None:
    """The first n positions in scan order of a per-position input (the last n when reverse)."""
    if x is None or name in ("A", "D", "delta_bias") or x.dim() == 2:
        return x
    return x[..., -n:] if reverse else x[..., :n]


def _rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double(), ref.detach()
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _case_id(c) -> str:
    par = f"-tile{c[11][0]}x{c[11][1]}" if c[11] else ""
    return f"L{c[0]}-N{c[1]}-E{c[2]}-G{c[3]}{'-rev' if c[8] else ''}{par}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_host_run_of_kernel_code_matches_reference(host_lib, case) -> None:
    """Forward (all modes: full, or summary -> combine -> span pass) and the backward from the forward's
    saved tile states (blocks of 32 rows, dB/dC summed per tile; chunk-parallel carries) vs float64."""
    L, N, e, groups, with_z, with_D, with_bias, softplus, reverse, strided, constant_bc, config = case
    args = _inputs(L, N, e, groups, with_z, with_D, with_bias, softplus, strided, constant_bc)
    config = _config(L, config)
    leaves = {k: v.double().requires_grad_() if v is not None else None for k, v in args.items()}
    ref_out, ref_last = selective_scan_ref(
        *(leaves[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
        softplus,
        return_last_state=True,
        reverse=reverse,
    )
    out, last, tiles = _host_call(host_lib, args, softplus, reverse, config=config)
    assert _rel(out, ref_out) < 1e-5
    assert _rel(last, ref_last) < 1e-5
    chunk = config[0] if config else min(16, L)
    if chunk < L:  # tile 1's start state is the state after the first tile (scan order)
        _, ref_tile1 = selective_scan_ref(
            *(_first_positions(leaves[k], chunk, reverse, k) for k in
              ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")),
            softplus, return_last_state=True, reverse=reverse)
        assert _rel(tiles[:, 1], ref_tile1) < 1e-5

    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    wanted = {k: v for k, v in leaves.items() if v is not None}
    ref_grads = dict(
        zip(wanted, torch.autograd.grad(ref_out, list(wanted.values()), dout.double()), strict=True)
    )
    grads = _host_call(host_lib, args, softplus, reverse, dout=dout, config=config, saved=tiles)
    for name, ref in ref_grads.items():
        assert grads[name].shape == ref.shape, name
        assert _rel(grads[name], ref) < 1e-4, name


class _HostExtension:
    """The torch binding's fwd/bwd, run by the host harness: the CUDA backend's Python side end to end."""

    NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

    def __init__(self, lib):
        self.lib, self.calls = lib, []

    def fwd(self, *args):
        *tensors, softplus, reverse, chunk, n_chunks, span, n_par, threads = args
        self.calls.append(("fwd", n_par, threads))
        inputs = dict(zip(self.NAMES, tensors, strict=True))
        return _host_call(self.lib, inputs, softplus, reverse, config=(chunk, n_chunks, span, n_par))

    def bwd(self, dout, *args):
        *tensors, softplus, reverse, saved, chunk, n_chunks, span, n_par = args
        self.calls.append(("bwd", tuple(saved.shape)))
        g = _host_call(self.lib, dict(zip(self.NAMES, tensors, strict=True)), softplus, reverse, dout=dout,
                       config=(chunk, n_chunks, span, n_par), saved=saved)
        return [g[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]


@pytest.mark.parametrize("reverse", [False, True])
def test_custom_op_hands_the_tile_states_to_the_backward(host_lib, monkeypatch, reverse) -> None:
    """selective_scan(backend="cuda") through the custom op: one forward, whose tile states reach the backward
    (no second forward), gradients equal to the float64 reference in the callers' B/C shapes."""
    import dataclasses

    from vimbench.kernels import cuda_scan, registry
    from vimbench.kernels.scan import selective_scan

    fake = _HostExtension(host_lib)
    monkeypatch.setattr(cuda_scan, "load_extension", lambda: fake)
    backend = registry.get_backend("cuda")
    assert backend.saves_for_backward
    monkeypatch.setitem(registry._BACKENDS, "cuda", dataclasses.replace(backend, is_available=lambda d: True))
    args = _inputs(40, 16, 8, 1, True, True, True, True, True, False)
    leaves = {k: v.clone().requires_grad_() for k, v in args.items()}
    ref_leaves = {k: v.double().requires_grad_() for k, v in args.items()}
    out = selective_scan(*leaves.values(), delta_softplus=True, reverse=reverse, backend="cuda")
    ref = selective_scan_ref(*ref_leaves.values(), True, reverse=reverse)
    assert _rel(out, ref) < 1e-5
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    out.backward(dout)
    ref.backward(dout.double())
    assert fake.calls == [("fwd", 1, 32), ("bwd", (2, 3, 8, 16))]  # tiles of 16: 3 for L=40
    for name, leaf in leaves.items():
        assert leaf.grad.shape == leaf.shape and _rel(leaf.grad, ref_leaves[name].grad) < 1e-4, name


@pytest.mark.gpu
def test_cuda_backend_passes_quick_check() -> None:
    from vimbench.kernelbench.check import quick_cases, run_checks

    rows = run_checks(["cuda"], ["fp32", "bf16"], quick_cases(), "cuda")
    assert rows and not [r for r in rows if r.failed]


def test_failed_build_reports_unavailable_with_one_log_line(monkeypatch, caplog) -> None:
    """No nvcc / compiler error on a GPU machine: one warning, backend unavailable, no exception."""
    import torch.utils.cpp_extension
    from vimbench.kernels import cuda_scan

    def broken_load(**kwargs):
        raise RuntimeError("Error building extension 'vimbench_selective_scan_cuda'\nlong compiler log...")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken_load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda_scan.load_extension.cache_clear()
    try:
        with caplog.at_level("WARNING"):
            assert not cuda_scan.is_available(torch.device("cuda"))
            assert not cuda_scan.is_available(torch.device("cuda"))  # cached: one build attempt, one line
        lines = [r.getMessage() for r in caplog.records if "cuda scan" in r.getMessage()]
        assert lines == [
            "cuda scan backend unavailable: build failed: Error building extension "
            "'vimbench_selective_scan_cuda'"
        ]
        assert not cuda_scan.is_available(torch.device("cpu"))
    finally:
        cuda_scan.load_extension.cache_clear()


def test_cuda_backend_imports_without_triton() -> None:
    """The CUDA backend's launch rule is plain Python (kernels/launch_rules.py): with `triton` made
    unimportable, cuda_scan imports, registers "cuda" and picks the same configs as the Triton side."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"
        "from vimbench.kernels import cuda_scan, registry\n"
        "assert 'triton' not in sys.modules or sys.modules['triton'] is None\n"
        "assert registry.get_backend('cuda').name == 'cuda'\n"
        "cfg = cuda_scan.launch_config(1, 768, 6085, 16)\n"
        "print(cfg.num_warps, cfg.n_chunks, cfg.span, cfg.n_par)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["1", "381", "8", "48"]  # batch 1, 1248 px: spans of 8 tiles, 48 of them
