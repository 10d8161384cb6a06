"""One of B/C constant (E, N) and the other input-dependent ((B, N, L) or grouped (B, G, N, L)), as in
mamba's own test grid: every backend available on CPU matches the float64 reference, forward and gradients.
Triton runs through its interpreter in one subprocess (vimbench.testing.interpreter), a test per case."""

from __future__ import annotations

import itertools

import pytest
import torch

from vimbench.testing.interpreter import interpreter_tests

# (which of B/C is constant, the other's groups: 0 = shared (B, N, L), G = (B, G, N, L)), reverse
CASES = list(itertools.product("BC", (0, 2), (False, True)))


def _case_id(case) -> str:
    const, groups, reverse = case
    return f"const{const}-{'shared' if not groups else f'g{groups}'}{'-rev' if reverse else ''}"


def _inputs(const: str, groups: int, batch=2, dim=4, length=7, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).requires_grad_(True)

    varying = (batch, groups, n, length) if groups else (batch, n, length)
    return {
        "u": rand(batch, dim, length), "delta": rand(batch, dim, length, scale=0.5),
        "A": (-torch.rand(dim, n, generator=g, dtype=torch.float64) - 0.1).requires_grad_(True),
        "B": rand(dim, n) if const == "B" else rand(*varying),
        "C": rand(dim, n) if const == "C" else rand(*varying),
        "D": rand(dim), "z": rand(batch, dim, length), "delta_bias": rand(dim, scale=0.1),
    }


def check_backend(backend: str, case) -> float:
    """Worst relative error (forward and every gradient) of `backend` in fp32 vs the float64 reference."""
    from vimbench.kernels import selective_scan, selective_scan_ref

    const, groups, reverse = case
    ref_in = _inputs(const, groups)
    ref_out = selective_scan_ref(*ref_in.values(), True, reverse=reverse)
    grad_out = torch.randn(ref_out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref_out, list(ref_in.values()), grad_out)
    inp = {k: v.detach().float().requires_grad_(True) for k, v in ref_in.items()}
    out = selective_scan(*inp.values(), True, reverse=reverse, backend=backend)
    grads = torch.autograd.grad(out, list(inp.values()), grad_out.float())
    worst = 0.0
    for name, got, want in zip(["out", *inp], [out, *grads], [ref_out, *ref_grads], strict=True):
        assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
        rel = ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-12)).item()
        worst = max(worst, rel)
    return worst


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_mixed_constant_and_varying_state_inputs(backend, case) -> None:
    from vimbench.kernels import available_backends

    if backend not in available_backends("cpu"):
        pytest.skip(f"{backend} backend unavailable here")
    assert check_backend(backend, case) < 1e-4


def check_triton(case) -> None:
    worst = check_backend("triton", case)
    assert worst < 1e-4, worst


CHECKS = {_case_id(case): (lambda case=case: check_triton(case)) for case in CASES}
interpreter_results, test_in_triton_interpreter = interpreter_tests(__file__, CHECKS)
