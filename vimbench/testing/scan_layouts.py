"""Scan inputs with Vim's layouts, for the memory tests' traces: what a Vim mixer hands the scan."""

from __future__ import annotations

from torch import Tensor

from vimbench.kernels import ScanDirection

F32_BYTES = 4
TILE_POSITIONS = 16  # positions per saved tile start state (kernels/triton_common.CHUNK, the CUDA kTile)


def vim_scan_direction(leaf: Tensor, a_log: Tensor, nstate: int,
                       d_vec: Tensor | None = None) -> ScanDirection:
    """One direction from a (B, E, L) leaf: B and C strided views of an x_dbl (B*L, 2N) copy, as in the
    model; u and delta new (B, E, L) tensors; D and delta_bias `d_vec` (or none)."""
    batch, dim, length = leaf.shape
    rows = (leaf * 1.0).transpose(1, 2).reshape(batch * length, dim)
    x_dbl = rows[:, : 2 * nstate].contiguous()
    b, c = (x_dbl[:, i * nstate : (i + 1) * nstate].view(batch, length, nstate).transpose(1, 2)
            for i in (0, 1))  # fmt: skip
    return ScanDirection(u=leaf * 3.0, delta=leaf * 4.0, A=a_log, B=b, C=c, D=d_vec, delta_bias=d_vec)


def tile_state_bytes(batch: int, dim: int, length: int, nstate: int) -> int:
    """One direction's saved tile start states by hand: B * ceil(L / 16) * E * N * 4 (N a power of 2)."""
    return batch * -(-length // TILE_POSITIONS) * dim * nstate * F32_BYTES
