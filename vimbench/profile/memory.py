"""Activation memory of one forward pass, block by block, from the CUDA caching allocator's counters.

Forward hooks on every block read the allocator around it: at block entry the bytes allocated (weights,
input, the residual stream) become the block's baseline and the peak counter is reset; at exit the peak
above that baseline is the block's activation peak (the transient tensors the block needs at once) and
what is still allocated above it is what the block hands on. The whole-forward peak is the largest peak
seen, including the stretches outside blocks (patch embedding, head). The allocator counts only tensors:
not the CUDA context, not cuBLAS workspaces allocated outside it, not fragmentation (see `reserved`).

The allocator is injected (`AllocatorCounters`), so the bookkeeping is tested on CPU with a synthetic one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

MIB = 2**20
NOT_TRACKED_ON_CPU = "activation memory per block: not tracked on CPU"


@dataclass(frozen=True)
class AllocatorCounters:
    """The three allocator readings the tracker needs (torch.cuda's, or a fake in tests)."""

    allocated: Callable[[], int]
    peak: Callable[[], int]
    reset_peak: Callable[[], None]

    @classmethod
    def cuda(cls, device: object) -> AllocatorCounters:
        import torch

        return cls(
            allocated=lambda: torch.cuda.memory_allocated(device),
            peak=lambda: torch.cuda.max_memory_allocated(device),
            reset_peak=lambda: torch.cuda.reset_peak_memory_stats(device),
        )


@dataclass(frozen=True)
class BlockMemory:
    name: str
    baseline_bytes: int  # allocated when the block started
    peak_bytes: int  # peak allocated during the block, above the baseline
    retained_bytes: int  # allocated when it ended, above the baseline (its output, minus freed input)


@dataclass
class ForwardMemory:
    """One forward: allocated before it (weights + input), its overall peak above that, and each block."""

    start_bytes: int = 0
    peak_bytes: int = 0
    blocks: list[BlockMemory] = field(default_factory=list)

    @property
    def max_block(self) -> BlockMemory | None:
        return max(self.blocks, key=lambda b: b.peak_bytes, default=None)


def model_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks: Vim's `layers`, DeiT's `blocks`."""
    for attr in ("layers", "blocks"):
        container = getattr(model, attr, None)
        if isinstance(container, (nn.ModuleList, nn.Sequential)):
            return [(f"{attr}.{i}", block) for i, block in enumerate(container)]
    return []


class BlockMemoryTracker:
    """Hooks that turn allocator readings into a `ForwardMemory`; use around exactly one forward."""

    def __init__(self, blocks: Sequence[tuple[str, nn.Module]], counters: AllocatorCounters):
        self.blocks = list(blocks)
        self.counters = counters
        self.result = ForwardMemory()
        self._open: list[tuple[str, int]] = []
        self._handles: list = []

    def _enter_block(self, name: str) -> None:
        self._note_peak()
        baseline = self.counters.allocated()
        self.counters.reset_peak()
        self._open.append((name, baseline))

    def _exit_block(self) -> None:
        name, baseline = self._open.pop()
        peak = self.counters.peak()
        self.result.blocks.append(
            BlockMemory(name, baseline, max(0, peak - baseline), self.counters.allocated() - baseline)
        )
        self._note_peak()

    def _note_peak(self) -> None:
        self.result.peak_bytes = max(self.result.peak_bytes, self.counters.peak() - self.result.start_bytes)

    def __enter__(self) -> BlockMemoryTracker:
        self.result = ForwardMemory(start_bytes=self.counters.allocated())
        self.counters.reset_peak()
        for name, block in self.blocks:
            self._handles.append(block.register_forward_pre_hook(lambda _m, _a, n=name: self._enter_block(n)))
            self._handles.append(block.register_forward_hook(lambda _m, _a, _o: self._exit_block()))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._note_peak()


def measure_forward_memory(model: nn.Module, x, device: object) -> ForwardMemory:
    """One inference forward of `model` on CUDA `x` with per-block allocator tracking."""
    import torch

    torch.cuda.synchronize(device)
    tracker = BlockMemoryTracker(model_blocks(model), AllocatorCounters.cuda(device))
    with torch.inference_mode(), tracker:
        model(x)
    torch.cuda.synchronize(device)
    return tracker.result
