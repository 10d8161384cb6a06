"""A TorchDispatchMode that logs every storage an op creates and the moment it dies, in order.

It works the way torch's own `torch.distributed._tools.mem_tracker.MemTracker` does (a weak reference with a
callback per `UntypedStorage`), but keeps the whole event log instead of running totals, so that the same
log can be replayed afterwards through the CUDA caching-allocator model (`allocator.py`) and split into
categories decided later (a storage becomes "gradients" once it is found in a `.grad`). It runs the same on
fake tensors (shapes only, no data: `torch._subclasses.FakeTensorMode`) and on real ones, which is how the
prediction is validated against a real run.

It sees what ops return. Memory an op allocates and frees inside its own kernel (workspaces) is invisible,
which is why the Vim scan is traced through a stand-in that allocates what the kernel allocates
(`scan_standin.py`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

CATEGORIES = ("weights", "inputs", "activations", "gradients", "optimizer")


@dataclass
class StorageLog:
    """alloc/free events in program order; `sizes[h]` bytes of storage h; `category[h]` what it holds."""

    events: list[tuple[str, int]] = field(default_factory=list)
    sizes: dict[int, int] = field(default_factory=dict)
    category: dict[int, str] = field(default_factory=dict)
    marks: dict[str, int] = field(default_factory=dict)  # name -> index into events (e.g. "step2")

    def alive(self, since: int = 0) -> dict[int, int]:
        """{handle: bytes} of the storages allocated from event `since` on and not freed by the end."""
        alive: dict[int, int] = {}
        for kind, handle in self.events[since:]:
            if kind == "alloc":
                alive[handle] = self.sizes[handle]
            else:
                alive.pop(handle, None)
        return alive


class StorageTracker(TorchDispatchMode):
    """Log the storages created by every op run under it (and the ones `register`ed), and their frees."""

    def __init__(self) -> None:
        super().__init__()
        self.log = StorageLog()
        self._handles: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: dict[int, weakref.ref] = {}
        self._next = 0
        self.default_category = "activations"

    def _on_free(self, handle: int, _ref: weakref.ref) -> None:
        self._refs.pop(handle, None)
        self.log.events.append(("free", handle))

    def _track(self, storage: torch.UntypedStorage, category: str) -> int:
        handle = self._handles.get(storage)
        if handle is not None:
            return handle
        handle = self._next
        self._next += 1
        self._handles[storage] = handle
        self._refs[handle] = weakref.ref(storage, lambda ref, h=handle: self._on_free(h, ref))
        self.log.sizes[handle] = storage.nbytes()
        self.log.category[handle] = category
        self.log.events.append(("alloc", handle))
        return handle

    def handle_of(self, tensor: torch.Tensor) -> int | None:
        return self._handles.get(tensor.untyped_storage())

    def register(self, tensors, category: str) -> None:
        """Count tensors that exist already (weights, inputs) from now on, under `category`."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                handle = self._track(t.untyped_storage(), category)
                self.log.category[handle] = category

    def recategorize(self, tensors, category: str) -> None:
        """Storages found later to hold gradients or optimizer state: counted as such over their life."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                handle = self.handle_of(t)
                if handle is not None:
                    self.log.category[handle] = category

    def mark(self, name: str) -> None:
        self.log.marks[name] = len(self.log.events)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat, _ = tree_flatten(out)
        for t in flat:
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage(), self.default_category)
        return out


def allocations_of(fn, *args) -> tuple[list[int], list[int], object]:
    """(sizes of the storages `fn` allocates, in order; sizes of those still alive after it; its result).
    Storages of `args` exist already, so they are registered first and never count as allocations."""
    from torch.utils._pytree import tree_flatten

    tracker = StorageTracker()
    tracker.register(tree_flatten(args)[0], "inputs")
    start = len(tracker.log.events)
    with tracker:
        result = fn(*args)
    allocs = [tracker.log.sizes[h] for kind, h in tracker.log.events[start:] if kind == "alloc"]
    return allocs, sorted(tracker.log.alive(start).values()), result
