"""The scan launch rule shared by the Triton and CUDA backends, in plain Python (no triton import).

Keyed on (L, B*E): one channel per thread (BLOCK_E = 32 * warps) with its states in registers; 4 warps per
program when that still fills an H100 with >= TARGET_WARPS warps, else 1; and when even that cannot fill it
(batch 1 at high resolution), the sequence is cut into spans of whole tiles scanned in parallel (forward and
backward alike). `triton_common` re-exports these names (and passes its own constants, which tests patch);
`cuda_scan` imports them from here, so the CUDA backend runs without triton installed.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_D_STATE = 256
# 8 warps per SM on a 132-SM H100: below this the GPU idles whatever the per-update cost
TARGET_WARPS = 8 * 132
# positions per tile: the forward saves every tile's start state, the backward works tile by tile
CHUNK = 16
# the shortest span (positions, rounded up to whole tiles) of the chunk-parallel scan
MIN_PARALLEL_CHUNK = 32


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


@dataclass(frozen=True)
class ScanConfig:
    """How one scan direction is launched: programs of BLOCK_E channels x all states, over spans of tiles.

    A tile is `chunk` positions (every tile's start state is saved for the backward); a program scans a span
    of `span` tiles, `n_par` spans side by side (1 unless `parallel`).
    """

    n_pad: int
    num_warps: int
    chunk: int  # positions per tile (checkpoint interval for the backward)
    n_chunks: int  # tiles
    parallel: bool  # spans scanned in parallel (summary, combine, then the span scans)
    span: int = 0  # tiles per program (all of them unless parallel)
    n_par: int = 1

    @property
    def block_e(self) -> int:
        return 32 * self.num_warps

    @property
    def vec(self) -> int:
        """States per vector access (a thread's 128-bit block of its channel's states)."""
        return min(4, self.n_pad)


def n_pad_for(d_state: int) -> int:
    if not 1 <= d_state <= MAX_D_STATE:
        raise ValueError(f"triton scan supports 1..{MAX_D_STATE} states, got {d_state}")
    return next_power_of_2(d_state)


def pick_config(batch: int, dim: int, length: int, d_state: int, *, target_warps: int | None = None,
                chunk: int | None = None, min_parallel_chunk: int | None = None) -> ScanConfig:
    """Launch config keyed on (L, B*E) (see the module docstring); the keywords override this module's
    constants (triton_common passes its own)."""
    target_warps = TARGET_WARPS if target_warps is None else target_warps
    chunk = CHUNK if chunk is None else chunk
    min_parallel_chunk = MIN_PARALLEL_CHUNK if min_parallel_chunk is None else min_parallel_chunk
    n_pad = n_pad_for(d_state)
    length = max(length, 1)
    warps4 = cdiv(dim, 128) * batch * 4
    num_warps = 4 if warps4 >= target_warps else 1
    warps = cdiv(dim, 32 * num_warps) * batch * num_warps
    chunk = min(chunk, length)
    n_tiles = cdiv(length, chunk)
    if warps >= target_warps or length < 2 * min_parallel_chunk:
        return ScanConfig(n_pad, num_warps, chunk, n_tiles, False, n_tiles, 1)
    wanted = cdiv(target_warps, warps)
    span = max(cdiv(min_parallel_chunk, chunk), n_tiles // wanted)
    return ScanConfig(n_pad, num_warps, chunk, n_tiles, True, span, cdiv(n_tiles, span))
