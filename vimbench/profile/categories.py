"""What a profiled op or counted FLOP belongs to: scan, conv1d, linear/matmul, norm, attention or other.

Op names alone cannot say this: a Triton norm kernel launched from Python has no aten op around it, the
reference scan is a loop of elementwise ops, and DeiT's attention bmm looks like any other matmul. So the
model is annotated from outside, without editing it: `CategoryScopes` opens a `record_function` scope
("vimbench::scope::<category>") around every nn.Linear, norm and attention module (forward pre/post hooks),
plus what the model's family declares (`ModelFamily.profile_scopes`: its attention and patch-embedding
modules; for Vim, the kernel entry points conv1d, add+RMSNorm and the bidirectional scan, by wrapping the
names the model module calls them by, for the duration only).

An event then takes the category of its innermost *strong* ancestor (a scope, the scan custom op, or a
high-level aten op such as layer_norm or scaled_dot_product_attention), else of its innermost *weak*
ancestor (aten::mm, aten::convolution...), else "other". The attention bmm's sit inside the attention scope,
the q/k/v and output projections inside their own (inner) linear scopes, so they count as linear/matmul.
"norm" includes the residual add Vim fuses into it; the patch-embedding conv counts as linear/matmul;
"other" is what is left: elementwise glue, copies, concatenation and the Python between ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

SCAN, CONV1D, LINEAR, NORM, ATTENTION, OTHER = "scan", "conv1d", "linear/matmul", "norm", "attention", "other"
CATEGORIES: tuple[str, ...] = (SCAN, CONV1D, LINEAR, NORM, ATTENTION, OTHER)
SCOPE_PREFIX = "vimbench::scope::"

# the categories a model's fused kernel calls name (vimbench.models.vim.ScopedKernels) -> ours
_KERNEL_CALL_CATEGORIES = {"conv1d": CONV1D, "norm": NORM, "scan": SCAN}

_STRONG_ATEN = {
    "aten::scaled_dot_product_attention": ATTENTION,
    "aten::_scaled_dot_product_flash_attention": ATTENTION,
    "aten::_scaled_dot_product_flash_attention_for_cpu": ATTENTION,
    "aten::_scaled_dot_product_efficient_attention": ATTENTION,
    "aten::_scaled_dot_product_cudnn_attention": ATTENTION,
    "aten::_scaled_dot_product_attention_math": ATTENTION,
    "aten::_flash_attention_forward": ATTENTION,
    "aten::_efficient_attention_forward": ATTENTION,
    "aten::layer_norm": NORM,
    "aten::native_layer_norm": NORM,
    "aten::rms_norm": NORM,
    "aten::_fused_rms_norm": NORM,
    "aten::group_norm": NORM,
    "aten::batch_norm": NORM,
    "aten::conv1d": CONV1D,
    "aten::conv2d": LINEAR,  # the patch embedding: a GEMM in disguise
}

_WEAK_ATEN = {
    "aten::linear": LINEAR,
    "aten::matmul": LINEAR,
    "aten::mm": LINEAR,
    "aten::addmm": LINEAR,
    "aten::bmm": LINEAR,
    "aten::baddbmm": LINEAR,
    "aten::_addmm_activation": LINEAR,
    "aten::einsum": LINEAR,
}

_CONVOLUTION_OPS = ("aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
                    "aten::cudnn_convolution", "aten::_convolution_mode", "aten::thnn_conv2d",
                    "aten::_slow_conv2d_forward", "aten::_nnpack_spatial_convolution")


def scope_name(category: str) -> str:
    return f"{SCOPE_PREFIX}{category}"


def strong_category(name: str) -> str | None:
    """The category an event named `name` imposes on everything it encloses, if any."""
    if name.startswith(SCOPE_PREFIX):
        category = name[len(SCOPE_PREFIX):]
        return category if category in CATEGORIES else None
    if name.startswith("vimbench::"):  # our custom ops: selective_scan, bidirectional_selective_scan, ...
        lowered = name.lower()
        for marker, category in (("scan", SCAN), ("conv", CONV1D), ("norm", NORM)):
            if marker in lowered:
                return category
        return None
    return _STRONG_ATEN.get(name)


def weak_category(name: str, input_dims: int | None = None) -> str | None:
    """The category of a generic op when no scope says otherwise (a bare mm is a linear layer)."""
    if name in _WEAK_ATEN:
        return _WEAK_ATEN[name]
    if name in _CONVOLUTION_OPS:
        return LINEAR if input_dims is not None and input_dims >= 4 else CONV1D
    return None


class EventClassifier:
    """Category of a profiler FunctionEvent: innermost strong ancestor, else innermost weak one, else other.

    Works on anything with `.name`, `.cpu_parent` and optionally `.input_shapes` (FunctionEvent or a fake),
    memoised by object id so a 100k-event trace is classified in one pass.
    """

    def __init__(self) -> None:
        self._strong: dict[int, str | None] = {}

    def _strong_of(self, event: Any) -> str | None:
        chain = []
        node = event
        found: str | None = None
        while node is not None:
            key = id(node)
            if key in self._strong:
                found = self._strong[key]
                break
            own = strong_category(node.name)
            chain.append(key)
            if own is not None:
                found = own
                break
            node = node.cpu_parent
        for key in chain:
            self._strong[key] = found
        # an event that is itself strong gives its own category; the memo holds it for its descendants too
        return found

    def category(self, event: Any) -> str:
        strong = self._strong_of(event)
        if strong is not None:
            return strong
        node = event
        while node is not None:
            weak = weak_category(node.name, _first_input_dims(node))
            if weak is not None:
                return weak
            node = node.cpu_parent
        return OTHER


def _first_input_dims(event: Any) -> int | None:
    shapes = getattr(event, "input_shapes", None)
    if shapes and isinstance(shapes[0], (list, tuple)) and shapes[0]:
        return len(shapes[0])
    return None


def module_category(module: nn.Module, family_scopes: Any = None) -> str | None:
    """Which modules get a scope: what the model's family declares (`ProfileScopes`), then projections,
    norms and torch's own multi-head attention."""
    if family_scopes is not None:
        category = family_scopes.category_of(module)
        if category is not None:
            return category
    if isinstance(module, nn.Linear):
        return LINEAR
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
        return NORM
    if isinstance(module, nn.MultiheadAttention):
        return ATTENTION
    return None


def family_scopes(model: nn.Module) -> Any:
    """The `ProfileScopes` of the model's family (None for a model vimbench did not build)."""
    name = getattr(model, "vimbench_name", None)
    if name is None:
        return None
    from vimbench.models import get_spec

    return get_spec(name).contract.profile_scopes()


class CategoryScopes:
    """Context manager: category scopes around the model's modules and Vim kernel calls.

    `current()` is the innermost open category (used by the FLOP counter); with `record=True` each scope is
    also a `record_function` range, so profiler events nest inside it. Everything is undone on exit.
    """

    def __init__(self, model: nn.Module, record: bool = True):
        self.model = model
        self.record = record
        self._stack: list[tuple[str, Any]] = []
        self._handles: list[Any] = []
        self._scoped: list[Any] = []  # modules whose kernel_scope this context set

    def current(self) -> str | None:
        return self._stack[-1][0] if self._stack else None

    def _open(self, category: str) -> None:
        ctx = torch.profiler.record_function(scope_name(category)) if self.record else None
        if ctx is not None:
            ctx.__enter__()
        self._stack.append((category, ctx))

    def _close(self) -> None:
        if self._stack:
            _, ctx = self._stack.pop()
            if ctx is not None:
                ctx.__exit__(None, None, None)

    @contextlib.contextmanager
    def scope(self, category: str) -> Iterator[None]:
        self._open(category)
        try:
            yield
        finally:
            self._close()

    def _kernel_scope(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.scope(_KERNEL_CALL_CATEGORIES.get(name, OTHER))

    def __enter__(self) -> CategoryScopes:
        scopes = family_scopes(self.model)
        for module in self.model.modules():
            category = module_category(module, scopes)
            if category is None:
                continue
            self._handles.append(module.register_forward_pre_hook(
                lambda _m, _a, c=category: self._open(c)))
            self._handles.append(module.register_forward_hook(lambda _m, _a, _o: self._close()))
        for module in self.model.modules():  # this model's instances only: no module globals touched
            if hasattr(module, "kernel_scope"):
                module.kernel_scope = self._kernel_scope
                self._scoped.append(module)
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        for module in self._scoped:
            module.__dict__.pop("kernel_scope", None)  # back to the class default (no scope)
        self._handles.clear()
        self._scoped.clear()
        while self._stack:  # a forward that raised mid-module leaves scopes open
            self._close()
