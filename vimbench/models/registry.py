"""The registry of model families and `create_model` (the timm pattern): short names, official names too.

A family is one module (see family.py for the contract) plus one line in FAMILIES below. Fixed families
(Vim, DeiT) register their models by name; an open-ended family (timm) owns every name with its prefix.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from .deit_family import DeiTFamily
from .family import ModelFamily, ModelOption, ModelSpec, Options
from .timm_family import TimmFamily
from .vim_family import VimFamily

FAMILIES: tuple[ModelFamily, ...] = (VimFamily(), DeiTFamily(), TimmFamily())
MAX_GLOB_MATCHES = 50  # a `--models` glob matching more than this is refused (a typo, not a plan)

_REGISTRY: dict[str, ModelSpec] = {}
_ALIASES: dict[str, str] = {}


def _canon(name: str) -> str:
    return name.strip().lower().replace("_", "-")


for _family in FAMILIES:
    for _spec in _family.specs():
        _REGISTRY[_spec.name] = _spec
        for _alias in (_spec.name, _spec.official_name, *_spec.aliases):
            _ALIASES[_canon(_alias)] = _spec.name


def list_models() -> list[str]:
    """The registered (fixed) models; open-ended families list theirs with `get_family(f).available()`."""
    return list(_REGISTRY)


def list_families() -> list[ModelFamily]:
    return list(FAMILIES)


def get_family(name: str) -> ModelFamily:
    for family in FAMILIES:
        if family.name == name.strip().lower():
            return family
    close = difflib.get_close_matches(name, [f.name for f in FAMILIES], n=3, cutoff=0.4)
    hint = f"closest: {', '.join(close)}; " if close else ""
    raise ValueError(f"unknown family {name!r}; {hint}known: {', '.join(f.name for f in FAMILIES)}")


def _prefixed_family(name: str) -> ModelFamily | None:
    for family in FAMILIES:
        if family.prefix and name.strip().lower().startswith(family.prefix):
            return family
    return None


def get_spec(name: str) -> ModelSpec:
    """The spec for `name` (short, official, alias or `prefix:name`); ValueError naming the closest."""
    family = _prefixed_family(name)
    if family is not None:
        spec = family.resolve(name.strip())
        if spec is not None:
            return spec
        close = family.suggestions(name.strip())
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown {family.name} model {name.strip()!r}{hint}")
    try:
        return _REGISTRY[_ALIASES[_canon(name)]]
    except KeyError:
        pass
    if ":" in name:  # a family prefix none of the families has
        prefixes = [f.prefix for f in FAMILIES if f.prefix]
        given = name.strip().split(":", 1)[0] + ":"
        close = difflib.get_close_matches(given.lower(), prefixes, n=1, cutoff=0.5)
        hint = f"closest: {close[0]}; " if close else ""
        raise ValueError(f"unknown model family prefix {given!r} in {name.strip()!r}; {hint}"
                         f"prefixes: {', '.join(prefixes)} (other models have no prefix: vimbench models)")
    close = difflib.get_close_matches(_canon(name), list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}; " if close else ""
    opened = [f"{f.prefix}NAME" for f in FAMILIES if f.prefix]
    raise ValueError(f"unknown model {name!r}; {hint}known: {', '.join([*_REGISTRY, *opened])}")


def expand_model_patterns(names: list[str], cap: int = MAX_GLOB_MATCHES) -> list[str]:
    """Model names with globs (`timm:deit_*`, `vim-*`) expanded, in order, without duplicates.

    ValueError (one line) for a glob that matches nothing (naming the closest names) or more than `cap`.
    """
    out: list[str] = []
    for name in names:
        if not any(ch in name for ch in "*?["):
            resolved = [get_spec(name).name]
        else:
            family = _prefixed_family(name)
            if family is not None:
                pattern = name.strip()[len(family.prefix):]
                resolved = [f"{family.prefix}{n}" for n in family.available(pattern)]
            else:
                resolved = [n for n in _REGISTRY if fnmatch.fnmatchcase(n, _canon(name))]
            if not resolved:
                raise ValueError(f"no model matches {name!r}" + _closest_hint(name))
            if len(resolved) > cap:
                raise ValueError(
                    f"{name!r} matches {len(resolved)} models, more than the cap of {cap}: narrow it "
                    f"(first: {', '.join(resolved[:3])})"
                )
        out.extend(n for n in resolved if n not in out)
    return out


def _closest_hint(pattern: str) -> str:
    family = _prefixed_family(pattern)
    stem = pattern.strip().split(":", 1)[-1].replace("*", "").replace("?", "")
    if family is not None:
        close = family.suggestions(family.prefix + stem) if stem else []
    else:
        close = difflib.get_close_matches(_canon(stem), list(_REGISTRY), n=3, cutoff=0.3)
    return f"; closest: {', '.join(close)}" if close else ""


def all_options() -> list[ModelOption]:
    """Every option of every family, first declaration of a name wins (the results columns, in order)."""
    seen: dict[str, ModelOption] = {}
    for family in FAMILIES:
        for opt in family.options:
            seen.setdefault(opt.name, opt)
    return list(seen.values())


def option_columns(spec: ModelSpec, values: Mapping[str, str]) -> dict[str, str]:
    """{column: value} for every option column: the model's own from `values`, the option's `absent`
    text ("-") for the others."""
    own = {opt.name for opt in spec.options}
    return {opt.name: str(values.get(opt.name, opt.default)) if opt.name in own else opt.absent
            for opt in all_options()}


def create_model(
    name: str,
    img_size: int = 224,
    num_classes: int = 1000,
    scan_backend: str = "auto",
    attn_backend: str = "auto",
    checkpoint: str | Path | None = None,
    options: Options | None = None,
    pos_embed_resize: str | None = None,
) -> nn.Module:
    """Build a model at `img_size`; with `checkpoint`, load its weights (pos-embed resized to `img_size`).

    Options: `scan_backend` / `attn_backend` as keywords (kept for callers), any family option in `options`;
    each family takes its own and ignores the others'. `pos_embed_resize`: see vimbench.checkpoint.
    """
    from vimbench.checkpoint import DEFAULT_POS_EMBED_RESIZE

    spec = get_spec(name)
    merged = {"scan_backend": scan_backend, "attn_backend": attn_backend, **(options or {})}
    error = spec.contract.resolution_error(spec, img_size)
    if error is not None:
        raise ValueError(error)
    model = spec.contract.build(spec, img_size, num_classes, merged)
    model.vimbench_name = spec.name
    if checkpoint is not None:
        spec.contract.load_checkpoint(model, checkpoint, pos_embed_resize or DEFAULT_POS_EMBED_RESIZE)
    return model
