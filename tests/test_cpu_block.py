"""The fused CPU inference block (vimbench.kernels.cpu_block): same numbers as the block's Python path with
the "cpu" backends, taken only where that holds (inference, float32, CPU, cpu backends)."""

from __future__ import annotations

import pytest
import torch
from vimbench.kernels import cpu_block, cpu_scan

from vimbench.models.registry import create_model
from vimbench.models.vim import VimBlock, VimConfig


@pytest.fixture(scope="module")
def built():
    status = cpu_scan.build_status()
    if not status.ok:
        pytest.skip(f"cpu scan extension unavailable: {status.error}")


def _block(dim: int, seed: int = 0) -> VimBlock:
    torch.manual_seed(seed)
    block = VimBlock(VimConfig(embed_dim=dim, depth=2)).eval()
    block.mixer.reset_parameters()
    with torch.no_grad():  # random, not the init's constants: every weight matters
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return block


def _both_paths(block: VimBlock, hidden: torch.Tensor, residual: torch.Tensor | None, monkeypatch):
    with torch.inference_mode():
        monkeypatch.setattr(cpu_block, "ENABLED", False)
        ref = block(hidden, residual)
        monkeypatch.setattr(cpu_block, "ENABLED", True)
        assert cpu_block.vim_block_cpu_ready(hidden, block.mixer.A_log, block.mixer.scan_backend)
        fused = block(hidden, residual)
    return ref, fused


# L = 300 > 256 positions takes two time blocks per tile; dim 40 -> E = 80: a partial 16-channel tile
@pytest.mark.parametrize("batch,length,dim", [(1, 197, 64), (2, 33, 40), (1, 300, 48), (3, 1, 32)])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_block_matches_python_path(built, batch, length, dim, with_residual, threads, monkeypatch):
    block = _block(dim)
    hidden = torch.randn(batch, length, dim)
    residual = torch.randn(batch, length, dim) if with_residual else None
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        (ref_out, ref_res), (out, res) = _both_paths(block, hidden, residual, monkeypatch)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(res, ref_res)
    # same kernels and GEMM calls; the 1/2 moves before out_proj (exact): equal up to GEMM blocking
    torch.testing.assert_close(out, ref_out, rtol=1e-6, atol=1e-6)


def test_whole_model_matches_python_path(built, monkeypatch):
    torch.manual_seed(1)
    model = create_model("vim-t", img_size=64).eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        monkeypatch.setattr(cpu_block, "ENABLED", False)
        ref = model(image)
        monkeypatch.setattr(cpu_block, "ENABLED", True)
        fused = model(image)
    torch.testing.assert_close(fused, ref, rtol=1e-6, atol=1e-6)


def test_not_taken_for_training_other_dtypes_or_backends(built):
    block = _block(32)
    hidden = torch.randn(1, 9, 32)
    weight = block.mixer.A_log
    assert torch.is_grad_enabled()
    assert not cpu_block.vim_block_cpu_ready(hidden, weight, "auto")  # autograd needs the op-by-op path
    with torch.no_grad():
        assert cpu_block.vim_block_cpu_ready(hidden, weight, "auto")
        assert cpu_block.vim_block_cpu_ready(hidden, weight, "cpu")
        assert not cpu_block.vim_block_cpu_ready(hidden, weight, "reference")
        assert not cpu_block.vim_block_cpu_ready(hidden.double(), weight, "auto")
        assert not cpu_block.vim_block_cpu_ready(hidden, weight.double(), "auto")


def test_training_still_gets_gradients(built):
    block = _block(32).train()
    hidden = torch.randn(2, 17, 32, requires_grad=True)
    out, _ = block(hidden, None)
    out.square().sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    assert block.mixer.A_b_log.grad is not None and block.mixer.A_b_log.grad.abs().sum() > 0


def test_bad_weights_raise_one_error(built):
    block = _block(32)
    mixer = block.mixer
    hidden = torch.randn(1, 5, 32)
    fwd = [mixer.conv1d.weight, mixer.conv1d.bias, mixer.x_proj.weight, mixer.dt_proj.weight,
           mixer.dt_proj.bias, mixer.A_log, mixer.D]  # fmt: skip
    with torch.no_grad(), pytest.raises(RuntimeError, match="7 weights per direction"):
        cpu_block.vim_block_cpu(hidden, None, block.norm.weight, 1e-5, mixer.in_proj.weight,
                                mixer.out_proj.weight, fwd, fwd[:3], mixer.dt_rank)  # fmt: skip


@pytest.mark.slow
def test_torch_compile_traces_the_cpu_ops(built):
    """The C++ ops have fake kernels: torch.compile traces the fused block (CPU Vim failed to before)."""
    block = _block(32)
    hidden = torch.randn(1, 9, 32)
    with torch.inference_mode():
        ref = block(hidden, None)
        compiled = torch.compile(block, fullgraph=True)(hidden, None)
    torch.testing.assert_close(compiled, ref, rtol=0, atol=0)
