"""The "mamba_ssm" adapter's plumbing, with a stand-in for upstream's `selective_scan_fn` on CPU.

The real package needs CUDA; here a fake `mamba_ssm.ops.selective_scan_interface` (the reference loop, which
like upstream knows no `reverse`) is put in sys.modules. That checks what the adapter controls: argument
order, the flips for reverse=True, the last state, gradients through upstream's autograd, availability.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from vimbench.kernels import mamba_ssm_adapter, resolve_backend, selective_scan_ref
from vimbench.kernels.registry import get_backend

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
PACKAGES = ("mamba_ssm", "mamba_ssm.ops", mamba_ssm_adapter.UPSTREAM_MODULE)


class FakeUpstream:
    """Upstream's signature (no `reverse`), computed by the reference loop; records what it was given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, torch.Tensor | None]] = []

    def __call__(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 return_last_state=False):  # fmt: skip
        self.calls.append({"u": u, "B": B, "z": z})
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


@pytest.fixture
def upstream(monkeypatch):
    fake = FakeUpstream()
    for name in PACKAGES:
        module = types.ModuleType(name)
        if name == mamba_ssm_adapter.UPSTREAM_MODULE:
            module.selective_scan_fn = fake
        monkeypatch.setitem(sys.modules, name, module)
    mamba_ssm_adapter.load_selective_scan_fn.cache_clear()
    yield fake
    mamba_ssm_adapter.load_selective_scan_fn.cache_clear()


@pytest.fixture
def no_upstream(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # makes `import mamba_ssm...` raise ImportError
    mamba_ssm_adapter.load_selective_scan_fn.cache_clear()
    yield
    mamba_ssm_adapter.load_selective_scan_fn.cache_clear()


def make_inputs(grouped: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch, dim, length, nstate = 2, 12, 9, 4
    bc = (batch, 2, nstate, length) if grouped else (batch, nstate, length)
    return {
        "u": torch.randn(batch, dim, length, generator=gen),
        "delta": torch.randn(batch, dim, length, generator=gen) * 0.5,
        "A": -torch.rand(dim, nstate, generator=gen) - 0.1,
        "B": torch.randn(*bc, generator=gen),
        "C": torch.randn(*bc, generator=gen),
        "D": torch.randn(dim, generator=gen),
        "z": torch.randn(batch, dim, length, generator=gen),
        "delta_bias": torch.randn(dim, generator=gen) * 0.2,
    }


def test_available_only_on_cuda_with_upstream(upstream):
    assert mamba_ssm_adapter.is_available(torch.device("cuda"))
    assert not mamba_ssm_adapter.is_available(torch.device("cpu"))
    assert resolve_backend("auto", "cpu") != "mamba_ssm"
    assert get_backend("mamba_ssm").priority == 50


def test_unavailable_without_upstream(no_upstream):
    assert not mamba_ssm_adapter.is_available(torch.device("cuda"))
    with pytest.raises(RuntimeError, match="does not import"):
        get_backend("mamba_ssm").forward(*make_inputs(False).values(), True, False)


@pytest.mark.parametrize("grouped", [False, True], ids=["BNL", "G2"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_forward_matches_reference(upstream, reverse, grouped):
    inputs = make_inputs(grouped)
    out, last = get_backend("mamba_ssm").forward(*inputs.values(), True, reverse)
    ref_out, ref_last = selective_scan_ref(*inputs.values(), True, return_last_state=True, reverse=reverse)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last, ref_last, rtol=1e-5, atol=1e-6)
    assert last.dtype == torch.float32
    (call,) = upstream.calls
    expected_u = inputs["u"].flip(-1) if reverse else inputs["u"]
    expected_B = inputs["B"].flip(-1) if reverse else inputs["B"]
    assert torch.equal(call["u"], expected_u) and torch.equal(call["B"], expected_B)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_backward_matches_reference(upstream, reverse):
    inputs = make_inputs(grouped=True)
    dout = torch.randn(2, 12, 9, generator=torch.Generator().manual_seed(3))
    grads = get_backend("mamba_ssm").backward(dout, *inputs.values(), True, reverse)
    ref_grads = get_backend("reference").backward(dout, *inputs.values(), True, reverse)
    for name, grad, ref in zip(GRAD_NAMES, grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-5, msg=name)


def test_optional_inputs_stay_none(upstream):
    inputs = make_inputs(grouped=False)
    inputs.update(D=None, z=None, delta_bias=None)
    dout = torch.ones(2, 12, 9)
    grads = get_backend("mamba_ssm").backward(dout, *inputs.values(), False, True)
    assert [g is None for g in grads] == [False] * 5 + [True] * 3
    (call,) = upstream.calls  # backward re-runs the forward once
    assert call["z"] is None
