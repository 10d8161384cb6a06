"""`vimbench kernels compile`: every kernel really compiles for Hopper/Ampere on this GPU-less machine, with
registers, spills and shared memory reported; a broken configuration makes the command exit 1."""

from __future__ import annotations

import re

import pytest
from vimbench.kernels import aot

RESOURCE_ROW = re.compile(r"^\s*(\w+)\s+(fp32|fp16|bf16)\s+(.+?)\s+(\d+)\s+(\d+)/(\d+)\s+(\d+)\s+[\d.]+\s*$")


def _rows(out: str) -> dict[str, tuple[int, int, int]]:
    """kernel -> (registers, spill store bytes, shared bytes) from the printed table."""
    rows = {}
    for line in out.splitlines():
        m = RESOURCE_ROW.match(line)
        if m:
            rows[m.group(1)] = (int(m.group(4)), int(m.group(5)), int(m.group(7)))
    return rows


def test_every_kernel_compiles_for_sm90(cli, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # AOT must not care
    res = cli(["kernels", "compile", "--arch", "sm_90", "--quick", "--dtype", "bf16", "--d-state", "16",
               "-j", "1"])
    assert res.code == 0, res.err
    rows = _rows(res.out)
    assert set(rows) == set(aot.kernel_names())
    for kernel, (regs, spills, shared) in rows.items():
        assert 0 < regs <= 255, kernel
        assert shared >= 0 and spills >= 0
    assert f"{len(aot.kernel_names())}/{len(aot.kernel_names())} compiled for sm_90" in res.out


def test_scan_kernels_compile_for_ampere_and_hopper(cli):
    res = cli(["kernels", "compile", "--arch", "sm_80,sm_90", "--kernel", "scan_fwd,scan_bwd", "--quick",
               "--dtype", "fp32", "--d-state", "16", "-j", "1"])
    assert res.code == 0, res.err
    assert set(_rows(res.out)) == {"scan_fwd", "scan_bwd"}
    assert "2/2 compiled for sm_80" in res.out and "2/2 compiled for sm_90" in res.out


def test_full_configuration_set_covers_every_launch_choice():
    """Every (warps, padded states) pick_config can return, at any (L, B*E), has a compile job."""
    from vimbench.kernels.triton_common import pick_config

    jobs = aot.compile_jobs()
    scan_fwd = {(dict(j.constexprs)["BLOCK_E"], dict(j.constexprs)["N_PAD"], j.num_warps)
                for j in jobs if j.kernel == "scan_fwd"}
    for d_state in (1, 4, 16, 33, 64, 256):
        for batch, length in ((1, 6085), (1, 197), (128, 197), (8, 1)):
            cfg = pick_config(batch, 768, length, d_state)
            assert (cfg.block_e, cfg.n_pad, cfg.num_warps) in scan_fwd
    kinds = {j.kernel for j in jobs}
    assert kinds == set(aot.kernel_names())


def test_compile_failure_exits_1(cli, monkeypatch):
    broken = aot.CompileJob("scan_fwd", "fp32", (("HAS_Z", True), ("BLOCK_E", 3), ("N_PAD", 16),
                                                 ("EVEN_N", True), ("MODE", 0)), 4)
    monkeypatch.setattr(aot, "compile_jobs", lambda *args, **kwargs: [broken])
    res = cli(["kernels", "compile", "--arch", "sm_90", "-j", "1"])
    assert res.code == 1
    assert "compile failed: scan_fwd fp32" in res.err


@pytest.mark.parametrize("args", [["--arch", "sm_75"], ["--arch", "sm_80,sm_75"], ["--kernel", "nope"],
                                  ["--dtype", "fp64"], ["--d-state", "999"]])
def test_bad_input_is_one_line_exit_2(cli, args):
    res = cli(["kernels", "compile", *args])
    assert res.code == 2
    assert res.err.strip().startswith("error:") and len(res.err.strip().splitlines()) == 1
