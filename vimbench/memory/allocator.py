"""A replay of PyTorch's CUDA caching allocator over a sequence of allocations and frees.

What is modelled (constants and rules of c10/cuda/CUDACachingAllocator.cpp, default settings, one stream):
- every request is rounded up to a multiple of 512 bytes (``kMinBlockSize``; 0 < size < 512 -> 512);
- requests <= 1 MiB come from the small pool, carved out of 2 MiB segments (``kSmallBuffer``); larger ones
  from the large pool: a new segment is 20 MiB for requests under 10 MiB (``kLargeBuffer``), otherwise the
  request rounded up to 2 MiB (``kRoundLarge``);
- a free block is found best-fit (smallest cached block that is large enough) in the request's pool;
- a found block is split when the rest is >= 512 bytes (small pool) or > 1 MiB (large pool); otherwise the
  whole block is handed out and counted as allocated (that is what ``memory_allocated`` reports);
- a freed block merges with free neighbours of its segment; segments are never returned to the driver
  (no OOM, no ``empty_cache``), so the peak of reserved memory is the sum of segments at the end.

Not modelled: expandable segments, ``max_split_size_mb`` / ``roundup_power2_divisions`` /
garbage-collection settings, several streams, cross-stream frees, and memory the CUDA libraries
(cuBLAS/cuDNN workspaces) take through the allocator.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20  # largest small-pool request
SMALL_BUFFER = 2 << 20  # small-pool segment
MIN_LARGE_ALLOC = 10 << 20  # below this a large request gets a LARGE_BUFFER segment
LARGE_BUFFER = 20 << 20
ROUND_LARGE = 2 << 20


def round_size(nbytes: int) -> int:
    """Bytes the allocator hands out for a request (``round_size``): a multiple of 512, at least 512."""
    if nbytes <= 0:
        return 0
    return -(-nbytes // MIN_BLOCK) * MIN_BLOCK


def segment_size(nbytes: int) -> int:
    """Bytes reserved from the driver when no cached block fits (``get_allocation_size``)."""
    if nbytes <= SMALL_SIZE:
        return SMALL_BUFFER
    if nbytes < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-nbytes // ROUND_LARGE) * ROUND_LARGE


@dataclass
class _Block:
    segment: int
    offset: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = field(default=None, repr=False)
    next: _Block | None = field(default=None, repr=False)

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


class CachingAllocatorModel:
    """Feed it `malloc(handle, nbytes)` / `free(handle)`; read `allocated`, `reserved` and their peaks."""

    def __init__(self) -> None:
        self._pools: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}
        self._by_key: dict[tuple[int, int, int], _Block] = {}
        self._live: dict[object, _Block] = {}
        self._segments = 0
        self.allocated = 0
        self.reserved = 0
        self.peak_allocated = 0
        self.peak_reserved = 0
        self.requested = 0
        self.peak_requested = 0
        self._requested_of: dict[object, int] = {}

    # --------------------------------------------------------------------------- pool bookkeeping
    def _insert(self, block: _Block) -> None:
        bisect.insort(self._pools[block.small], block.key())
        self._by_key[block.key()] = block

    def _remove(self, block: _Block) -> None:
        pool = self._pools[block.small]
        del pool[bisect.bisect_left(pool, block.key())]
        del self._by_key[block.key()]

    def _best_fit(self, size: int, small: bool) -> _Block | None:
        pool = self._pools[small]
        index = bisect.bisect_left(pool, (size, -1, -1))
        return self._by_key[pool[index]] if index < len(pool) else None

    # --------------------------------------------------------------------------------- the API
    def malloc(self, handle: object, nbytes: int) -> None:
        size = round_size(nbytes)
        if size == 0 or handle in self._live:
            return
        small = size <= SMALL_SIZE
        block = self._best_fit(size, small)
        if block is not None:
            self._remove(block)
        else:
            seg = segment_size(size)
            block = _Block(self._segments, 0, seg, small)
            self._segments += 1
            self.reserved += seg
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        rest = block.size - size
        if rest >= MIN_BLOCK if small else rest > SMALL_SIZE:
            tail = _Block(block.segment, block.offset + size, rest, small, True, block, block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next = tail
            block.size = size
            self._insert(tail)
        block.free = False
        self._live[handle] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self._requested_of[handle] = nbytes
        self.requested += nbytes
        self.peak_requested = max(self.peak_requested, self.requested)

    def free(self, handle: object) -> None:
        block = self._live.pop(handle, None)
        if block is None:
            return
        self.allocated -= block.size
        self.requested -= self._requested_of.pop(handle)
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._insert(block)

    def reset_peaks(self) -> None:
        """Like torch.cuda.reset_peak_memory_stats: peaks restart from what is held now."""
        self.peak_allocated = self.allocated
        self.peak_reserved = self.reserved
        self.peak_requested = self.requested
