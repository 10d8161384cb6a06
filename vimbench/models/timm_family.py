"""The timm family: any timm model as a baseline, named `timm:<timm model name>` (needs the `timm` extra).

- Resolution the timm way: `img_size=` where the model's constructor takes it (ViT, DeiT, Swin, ...), else
  `dynamic_img_size=True`, else the model as defined (convolutional nets run any size).
- A resolution a model cannot run is found by a dry run on the meta device (no memory, no time): the error's
  first line becomes the reason of a `skipped` row; nothing crashes.
- Attention kernel: timm's attention modules carry a `fused_attn` switch (F.scaled_dot_product_attention or
  softmax(QK^T)V materialised); `attn_backend` sdpa / math sets it on every such module, auto keeps timm's
  default; models without attention write "-".
- Keyword arguments: `timm_kwargs` ("drop_path_rate=0.1,global_pool=avg"; Python literals, a bare word is a
  string) go to timm.create_model. They are checked by a meta-device build before anything is measured (an
  unknown key or a value the constructor refuses: a one-line error) and written in one canonical spelling
  (sorted, `key=repr(value)`, ";" between) as the results column of the same name.
- FLOPs: torch's FlopCounterMode on a meta copy, like every family. Tokens: the patch grid plus prefix tokens
  for ViT-like models, else the positions of the finest feature map (img / first reduction)^2.
- Checkpoints: read safely (vimbench.checkpoint), then passed through the model module's own
  `checkpoint_filter_fn` (timm's pos-embed resizing and key remapping), then loaded strictly.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import functools
import inspect
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .family import NOT_APPLICABLE, ModelFamily, ModelOption, ModelSpec, Options, ProfileScopes

PREFIX = "timm:"
INSTALL_HINT = "pip install 'vimbench[timm]' (README: which torch/torchvision pairs work)"
ATTN_CHOICES = ("auto", "sdpa", "math")
# create_model keywords vimbench sets itself (resolution the timm way, the head, random weights)
_RESERVED_KWARGS = {"img_size": "set by --res", "dynamic_img_size": "set by vimbench for --res",
                    "num_classes": "set by vimbench", "pretrained": "weights come from --checkpoint"}
_BARE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def _split_items(text: str) -> list[str]:
    """`a=1, b=(1, 2); c='x,y'` -> items split at top-level commas / semicolons (not inside brackets or
    quotes)."""
    items, current, stack, quote = [], [], [], ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif stack and char == stack[-1]:
            stack.pop()
        elif not stack and char in ",;":
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _literal(key: str, text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        if _BARE_WORD.match(text):
            return text  # global_pool=avg: a bare word is a string
        raise ValueError(f"timm kwargs: cannot parse the value of {key!r}: {text!r} (use a Python literal: "
                         "0.1, True, None, 'avg', (1, 2))") from None


def parse_timm_kwargs(text: str) -> dict[str, Any]:
    """ "drop_path_rate=0.1,global_pool=avg" (`,` or `;` between items) -> {"drop_path_rate": 0.1,
    "global_pool": "avg"}. ValueError (one line) for an item that is not KEY=VALUE, a value that does not
    parse, a key given twice, or a keyword vimbench sets itself."""
    kwargs: dict[str, Any] = {}
    for item in _split_items(str(text)):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"timm kwargs: {item!r} is not KEY=VALUE (e.g. drop_path_rate=0.1,"
                             "global_pool=avg)")
        if key in kwargs:
            raise ValueError(f"timm kwargs: {key!r} given twice")
        if key in _RESERVED_KWARGS:
            raise ValueError(f"timm kwargs: {key!r} cannot be given ({_RESERVED_KWARGS[key]})")
        kwargs[key] = _literal(key, value)
    return kwargs


def format_timm_kwargs(kwargs: Mapping[str, Any]) -> str:
    """The one spelling of a kwargs map (the results column): sorted, `key=repr(value)`, ";" between."""
    return ";".join(f"{key}={kwargs[key]!r}" for key in sorted(kwargs))


def normalize_timm_kwargs(text: str) -> str:
    return format_timm_kwargs(parse_timm_kwargs(text))


def import_timm() -> Any:
    """timm, or ValueError with one line saying how to get it (a torchvision built for another torch fails
    at import with an operator error rather than ImportError, hence the broad except)."""
    try:
        import timm
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"timm models need timm, which does not import here ({first}): {INSTALL_HINT}") \
            from None
    return timm


def timm_available() -> bool:
    try:
        import_timm()
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _Probe:
    """What a meta-device build and dry run at one resolution says about a timm model."""

    size_kwargs: tuple[tuple[str, Any], ...]
    tokens: int
    embed_dim: int
    has_attention: bool
    default_fused: bool
    error: str | None  # why the model cannot run this resolution


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _create(name: str, num_classes: int, size_kwargs: dict[str, Any], extra: Mapping[str, Any]) -> nn.Module:
    timm = import_timm()
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **size_kwargs, **extra)


def _create_at(name: str, img_size: int, num_classes: int, extra: Mapping) -> tuple[nn.Module, dict]:
    """The model built for `img_size` the timm way, and the size kwargs that worked."""
    errors = []
    for size_kwargs in ({"img_size": img_size}, {"dynamic_img_size": True}, {}):
        try:
            return _create(name, num_classes, size_kwargs, extra), size_kwargs
        except TypeError as exc:  # the constructor does not take this keyword
            if "unexpected keyword" not in str(exc) and "got an unexpected" not in str(exc):
                raise
            errors.append(exc)
    raise errors[-1]


def _tokens(model: nn.Module, img_size: int) -> int:
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None) if patch_embed is not None else None
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    if grid is not None and getattr(patch_embed, "dynamic_img_pad", False) is False:
        patch = getattr(patch_embed, "patch_size", None)
        if getattr(model, "dynamic_img_size", False) and patch is not None:
            return (img_size // patch[0]) * (img_size // patch[1]) + prefix
        return int(grid[0]) * int(grid[1]) + prefix
    info = getattr(model, "feature_info", None)
    if info:
        first = info[0] if isinstance(info, list) else None
        reduction = first.get("reduction") if isinstance(first, dict) else None
        if reduction:
            return (img_size // int(reduction)) ** 2
    return 0


def _width(model: nn.Module) -> int:
    """The token width for the cost estimate: embed_dim, else the final feature count."""
    for attr in ("embed_dim", "num_features"):
        value = getattr(model, attr, None)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, int) and value > 0:
            return value
    return 0


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]


@functools.lru_cache(maxsize=256)
def probe(name: str, img_size: int, kwargs: str = "") -> _Probe:
    """Build `name` (with the canonical `kwargs`) for `img_size` on meta and run a batch-1 forward there:
    shapes only, no memory."""
    import_timm()  # a missing timm is a usage error, not a property of the model
    try:
        with torch.device("meta"):
            model, size_kwargs = _create_at(name, img_size, 1000, parse_timm_kwargs(kwargs))
    except Exception as exc:
        return _Probe((), 0, 0, False, False, f"timm cannot build {name} at {img_size}px: {_first_line(exc)}")
    attn = _attention_modules(model)
    dim = _width(model)
    error = None
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, 3, img_size, img_size, device="meta"))
    except Exception as exc:
        error = f"{name} cannot run {img_size}px: {_first_line(exc)}"
    return _Probe(tuple(size_kwargs.items()), _tokens(model, img_size), dim, bool(attn),
                  any(m.fused_attn for m in attn), error)


@functools.lru_cache(maxsize=64)
def check_kwargs(name: str, kwargs: str) -> None:
    """ValueError (one line) unless timm builds `name` with the canonical `kwargs` (on meta: no memory)."""
    extra = parse_timm_kwargs(kwargs)
    if not extra:
        return
    import_timm()
    try:
        with torch.device("meta"):
            _create(name, 1000, {}, extra)
    except Exception as exc:
        hint = ""
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if bad:
            with torch.device("meta"):
                params = inspect.signature(type(_create(name, 1000, {}, {})).__init__).parameters
            close = difflib.get_close_matches(bad[1], [p for p in params if p != "self"], n=3, cutoff=0.6)
            hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"timm kwargs {kwargs!r} for {PREFIX}{name}: {_first_line(exc)}{hint}") from None


class TimmFamily(ModelFamily):
    name = "timm"
    description = "any timm model as `timm:NAME` (the `timm` extra); attention kernel where timm has one"
    prefix = PREFIX
    cls_position = "front"
    options = (
        ModelOption("attn_backend", "attention backend", "auto", ATTN_CHOICES,
                    "timm's fused_attn switch: sdpa (F.scaled_dot_product_attention) or math; auto: timm's "
                    "default; '-' for models without attention"),
        ModelOption("timm_kwargs", "timm kwargs", "", (),
                    "timm.create_model keyword arguments, e.g. drop_path_rate=0.1,global_pool=avg (Python "
                    "literals; a bare word is a string); empty: none",
                    normalize=normalize_timm_kwargs, absent=""),
    )

    def resolve(self, name: str) -> ModelSpec | None:
        timm = import_timm()
        arch = name[len(PREFIX):] if name.lower().startswith(PREFIX) else name
        if not arch or not timm.is_model(arch):
            return None
        return ModelSpec(f"{PREFIX}{arch}", "timm", arch, config=arch, patch_size=1, stride=1, owner=self)

    def available(self, pattern: str = "*") -> list[str]:
        return list(import_timm().list_models(pattern or "*"))

    def suggestions(self, name: str) -> list[str]:
        arch = name[len(PREFIX):] if name.lower().startswith(PREFIX) else name
        names = import_timm().list_models()
        close = difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
        if not close:  # a stem that prefixes real names: show some of those
            close = [n for n in names if fnmatch.fnmatchcase(n, f"{arch.split('_')[0]}*")][:3]
        return [f"{PREFIX}{n}" for n in close]

    def check_options(self, spec: ModelSpec, options: Options | None) -> dict[str, str]:
        values = self.option_values(options)
        check_kwargs(spec.config, values["timm_kwargs"])
        return values

    def resolve_options(self, spec: ModelSpec, options: Options | None, device: str) -> dict[str, str]:
        values = self.check_options(spec, options)
        info = probe(spec.config, 224)
        if not info.has_attention:
            attn = NOT_APPLICABLE
        elif values["attn_backend"] == "auto":
            attn = "sdpa" if info.default_fused else "math"
        else:
            attn = values["attn_backend"]
        return {"attn_backend": attn, "timm_kwargs": values["timm_kwargs"]}

    def _kwargs(self, options: Options | None) -> str:
        """The canonical timm kwargs of `options` (the other options, resolved or not, play no part)."""
        return normalize_timm_kwargs(str((options or {}).get("timm_kwargs", "")))

    # resolutions: any size is valid input; what a model cannot run becomes a skipped row
    def tokens(self, spec: ModelSpec, img_size: int, options: Options | None = None) -> int:
        return probe(spec.config, img_size, self._kwargs(options)).tokens

    def resolution_error(self, spec: ModelSpec, img_size: int) -> str | None:
        return None if img_size > 0 else f"image size must be positive, got {img_size}"

    def unsupported_reason(
        self, spec: ModelSpec, img_size: int, options: Options | None = None
    ) -> str | None:
        return probe(spec.config, img_size, self._kwargs(options)).error

    def build(self, spec: ModelSpec, img_size: int, num_classes: int, options: Options) -> nn.Module:
        values = self.option_values(options)
        extra = parse_timm_kwargs(values["timm_kwargs"])
        model, _ = _create_at(spec.config, img_size, num_classes, extra)
        if values["attn_backend"] != "auto":
            for module in _attention_modules(model):
                module.fused_attn = values["attn_backend"] == "sdpa"
        model.img_size = img_size
        return model

    def load_checkpoint(self, model: nn.Module, path: str | Path, pos_embed_resize: str) -> nn.Module:
        """timm's own filter resizes pos_embed (bicubic with antialias) and remaps old keys."""
        from vimbench.checkpoint import CheckpointError, read_state_dict

        state = read_state_dict(path)
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filter_fn is not None:
            state = filter_fn(state, model)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            name = type(model).__name__
            raise CheckpointError(f"checkpoint does not match {name}: {_first_line(exc)}") from None
        return model

    def pos_embed_resize_note(self, method: str) -> str:
        return "timm's checkpoint filter"

    def profile_scopes(self) -> ProfileScopes:
        return ProfileScopes(module_predicates=((_is_attention, "attention"),))

    def relative_cost(self, spec: ModelSpec, img_size: int) -> float:
        info = probe(spec.config, img_size)
        dim = info.embed_dim or 384
        attn = info.tokens * dim * 24 if info.has_attention else 0
        return float(info.tokens * (144 * dim * dim + attn))


def _is_attention(module: nn.Module) -> bool:
    return isinstance(getattr(module, "fused_attn", None), bool)
