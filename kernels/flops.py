"""The scan op's FLOP count, declared by the op library itself (vimbench.profile.flops registers the formula
of the single-direction op; the fused bidirectional op registers its own)."""

from __future__ import annotations

SCAN_FLOPS_PER_ELEMENT = 9  # per (batch, position, channel, state)


def scan_flops(batch: int, length: int, channels: int, d_state: int) -> int:
    """FLOPs of one selective-scan direction: 9 per (batch, position, channel, state)."""
    return SCAN_FLOPS_PER_ELEMENT * batch * length * channels * d_state
