"""The `ModelFamily` contract: everything the rest of vimbench may ask about a kind of model.

A family (Vim, DeiT, timm, ...) is one module defining a `ModelFamily` subclass, plus one line in
`registry.FAMILIES`. Code outside the family module never names a family: the sweep plan, the worker, the
executors, the profiler, the checkpoint loader and the reports ask the model's spec (and through it its
family) instead:

- how to build the model at a resolution, with its options (`options`: name, default, allowed values;
  Vim has a scan backend, DeiT an attention backend, timm its attention kernel and kwargs);
- how many tokens it sees at a resolution, which resolutions it refuses outright (off its patch grid: a
  usage error) and which it cannot run (a `skipped` row with the reason, never a crash);
- where its cls token sits (models also expose `cls_index`), how checkpoints load, what options FLOPs are
  counted with, which modules and functions the profiler scopes as which category;
- a rough relative cost, for largest-first scheduling on several GPUs.

Options travel as a plain mapping {option name: value}; each option name is also a results column
(scan_backend, attn_backend, timm_kwargs, ...), written "-" (the option's `absent` text) for models whose
family does not have it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from vimbench.layers import grid_size, img_size_error

NOT_APPLICABLE = "-"  # the value written for an option the model's family does not have
Options = Mapping[str, str]  # {option name: value}


@dataclass(frozen=True)
class ModelOption:
    """One knob of a family; `name` is also its results column. `choices` () means free-form."""

    name: str
    label: str  # in messages: "scan backend"
    default: str
    choices: tuple[str, ...]
    help: str
    # free-form options: the value's one spelling (ValueError, one line, when it does not parse)
    normalize: Callable[[str], str] | None = field(default=None, compare=False)
    absent: str = NOT_APPLICABLE  # its column's text for models whose family does not have it

    def check(self, value: str) -> str:
        if self.choices and value not in self.choices:
            raise ValueError(f"unknown {self.label} {value!r}; known: {', '.join(self.choices)}")
        return self.normalize(value) if self.normalize is not None else value


@dataclass(frozen=True)
class ProfileScopes:
    """What the profiler scopes as which category: module classes or predicates (forward hooks). Fused kernel
    calls inside a module scope themselves (vimbench.models.vim.ScopedKernels)."""

    modules: tuple[tuple[type[nn.Module], str], ...] = ()
    module_predicates: tuple[tuple[Callable[[nn.Module], bool], str], ...] = ()

    def category_of(self, module: nn.Module) -> str | None:
        for cls, category in self.modules:
            if isinstance(module, cls):
                return category
        for predicate, category in self.module_predicates:
            if predicate(module):
                return category
        return None


@dataclass(frozen=True)
class ModelSpec:
    """One named model: its family and what the family needs to build it (`config`)."""

    name: str
    family: str  # the family's name, as written to the results "family" column
    official_name: str
    config: Any = None  # family-specific: VimConfig, DeiTConfig, the timm model name...
    patch_size: int = 16
    stride: int = 16
    embed_dim: int = 0
    aliases: tuple[str, ...] = ()
    baseline: str | None = None  # the model a paired report compares this one with (vim-t -> deit-t)
    owner: ModelFamily | None = field(default=None, compare=False, repr=False)

    @property
    def contract(self) -> ModelFamily:
        assert self.owner is not None, f"spec {self.name} was not registered by a family"
        return self.owner

    def tokens(self, img_size: int, options: Options | None = None) -> int:
        return self.contract.tokens(self, img_size, options)

    def valid_img_size(self, img_size: int) -> bool:
        return self.contract.resolution_error(self, img_size) is None

    @property
    def options(self) -> tuple[ModelOption, ...]:
        return self.contract.options


class ModelFamily:
    """Base class of every family; the defaults fit a ViT-like model on a square patch grid."""

    name: str = ""
    description: str = ""
    options: tuple[ModelOption, ...] = ()
    cls_position: str = "front"  # "front" (index 0), "middle" (M // 2) or "none"
    prefix: str | None = None  # "timm:" for a family whose names are open-ended
    # its models run vimbench.kernels' selective scan (option scan_backend) and fused conv1d / add+RMSNorm
    # ops in bidirectional mixers (`model.layers[i].mixer`): the memory predictor swaps in allocation
    # stand-ins for those kernels and models upstream's flipped-copy mixer for such families only
    runs_selective_scan: bool = False

    # -- names --------------------------------------------------------------------------------------
    def specs(self) -> Sequence[ModelSpec]:
        """The fixed, registered models of this family (an open-ended family may have none)."""
        return ()

    def resolve(self, name: str) -> ModelSpec | None:
        """The spec for `name` if this open-ended family owns it (called for names with `prefix`)."""
        return None

    def available(self, pattern: str = "*") -> list[str]:
        """Names matching the glob `pattern`: what `--models` globs and `vimbench models` list."""
        names = [s.name for s in self.specs()]
        return [n for n in names if fnmatch.fnmatchcase(n, pattern)]

    def suggestions(self, name: str) -> list[str]:
        """Close matches for a name this family was asked about and does not know."""
        import difflib

        names = [s.name for s in self.specs()]
        return difflib.get_close_matches(name, names, n=3, cutoff=0.5)

    # -- options ------------------------------------------------------------------------------------
    def option_values(self, options: Options | None) -> dict[str, str]:
        """This family's options from `options` (others' are ignored), defaults filled, values checked."""
        given = options or {}
        return {opt.name: opt.check(str(given.get(opt.name, opt.default))) for opt in self.options}

    def check_options(self, spec: ModelSpec, options: Options | None) -> dict[str, str]:
        """This family's options from `options`, checked without a device (ValueError, one line: an unknown
        value, a keyword the model does not take); free-form ones in their one spelling."""
        return self.option_values(options)

    def resolve_options(self, spec: ModelSpec, options: Options | None, device: str) -> dict[str, str]:
        """Option values as they will run on `device` ("auto" made concrete); ValueError if one cannot."""
        return self.option_values(options)

    # -- resolutions --------------------------------------------------------------------------------
    def tokens(self, spec: ModelSpec, img_size: int, options: Options | None = None) -> int:
        """Sequence length at `img_size` (with `options` where they change it): patches plus a cls token."""
        grid = grid_size(img_size, spec.patch_size, spec.stride)
        return grid * grid + (0 if self.cls_position == "none" else 1)

    def resolution_error(self, spec: ModelSpec, img_size: int) -> str | None:
        """Why `img_size` is bad input for this model (a usage error), or None."""
        return img_size_error(img_size, spec.patch_size, spec.stride)

    def unsupported_reason(
        self, spec: ModelSpec, img_size: int, options: Options | None = None
    ) -> str | None:
        """Why this model (built with `options`) cannot run `img_size` although it is valid input (a
        `skipped` row), or None."""
        return None

    # -- building and weights -----------------------------------------------------------------------
    def build(self, spec: ModelSpec, img_size: int, num_classes: int, options: Options) -> nn.Module:
        raise NotImplementedError

    def load_checkpoint(self, model: nn.Module, path: str | Path, pos_embed_resize: str) -> nn.Module:
        from vimbench.checkpoint import load_checkpoint

        return load_checkpoint(model, path, pos_embed_resize)

    def pos_embed_resize_note(self, method: str) -> str:
        """How `load_checkpoint` resizes position embeddings with `method` (vimbench.checkpoint's names)."""
        from vimbench.checkpoint import POS_EMBED_RESIZE

        return POS_EMBED_RESIZE[method][1]

    # -- counting and profiling ---------------------------------------------------------------------
    # FLOPs are counted by vimbench.profile.flops with torch's FlopCounterMode on a meta copy of the model
    # built with `flop_options`; a family changes what is counted through these options and its own
    # registered flop formulas (Vim: the selective scan), never by a counter of its own.
    def flop_options(self, options: Options | None) -> dict[str, str]:
        """Options to build the model with for FLOP counting (e.g. a scan backend that counts)."""
        return self.option_values(options)

    def profile_scopes(self) -> ProfileScopes:
        """Category names are vimbench.profile.categories.CATEGORIES ("scan", "attention", ...)."""
        return ProfileScopes()

    def relative_cost(self, spec: ModelSpec, img_size: int) -> float:
        """Rough work per image (multiply-accumulates), only for ordering points largest-first."""
        tokens = self.tokens(spec, img_size)
        return float(tokens * 144 * spec.embed_dim * spec.embed_dim)
