"""Which scan backend `auto` runs on CUDA: the official mamba_ssm kernel when installed, until a GPU
measurement shows ours >= 1.0x (kernels/registry.py); our Triton kernels otherwise."""

from __future__ import annotations

import dataclasses

import pytest
from vimbench.kernels import registry


@pytest.fixture
def official_installed(monkeypatch):
    backend = registry.get_backend("mamba_ssm")
    monkeypatch.setitem(registry._BACKENDS, "mamba_ssm",
                        dataclasses.replace(backend, is_available=lambda device: device.type == "cuda"))


def test_auto_on_cuda_prefers_the_official_kernel_while_unmeasured(official_installed):
    assert registry.resolve_backend("auto", "cuda") == "mamba_ssm"
    assert registry.resolve_backend("auto", "cpu") != "mamba_ssm"


def test_auto_on_cuda_runs_ours_once_measured_faster(official_installed, monkeypatch):
    monkeypatch.setattr(registry, "PREFER_OFFICIAL_ON_CUDA", False)
    assert registry.resolve_backend("auto", "cuda") == "triton"


def test_auto_on_cuda_without_mamba_ssm_runs_triton(monkeypatch):
    backend = registry.get_backend("mamba_ssm")
    monkeypatch.setitem(registry._BACKENDS, "mamba_ssm",
                        dataclasses.replace(backend, is_available=lambda device: False))
    assert registry.resolve_backend("auto", "cuda") == "triton"
