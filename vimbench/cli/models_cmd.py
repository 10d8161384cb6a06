"""`vimbench models`: the model families with their options, the registered models with params, tokens and
scan-aware GFLOPs at a resolution, and (with `--family timm`) the timm models a name pattern matches.
`vimbench models --checkpoint FILE --model NAME` loads a checkpoint at `--res` and says what was resized."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from .common import UsageError, console


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def model_rows(img_size: int, family: str | None = None) -> list[dict]:
    import torch

    from vimbench.models import create_model, get_spec, list_models
    from vimbench.profile.flops import count_flops

    rows = []
    for name in list_models():
        spec = get_spec(name)
        if family is not None and spec.family != family:
            continue
        error = spec.contract.resolution_error(spec, img_size)
        if error is not None:
            raise UsageError(f"--res {img_size} for {name}: {error}")
        options = spec.contract.flop_options(None)
        with torch.device("meta"):
            model = create_model(name, img_size=img_size, options=options)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "official_name": spec.official_name,
                "params": sum(p.numel() for p in model.parameters()),
                "img_size": img_size,
                "tokens": spec.tokens(img_size),
                "gflops": round(count_flops(model, img_size)["total"] / 1e9, 3),
            }
        )
    return rows


def family_rows() -> list[dict]:
    """Each family: its options (default and allowed values), cls position, and how many models it has."""
    from vimbench.models import list_families

    rows = []
    for family in list_families():
        try:
            count = str(len(family.available()))
        except ValueError:  # an optional family whose package is missing
            count = f"not installed (pip install 'vimbench[{family.name}]')"
        rows.append({
            "family": family.name,
            "names": f"{family.prefix}NAME" if family.prefix else ", ".join(s.name for s in family.specs()),
            "models": count,
            "cls": family.cls_position,
            "options": [
                {"name": o.name, "default": o.default, "choices": list(o.choices), "help": o.help}
                for o in family.options
            ],
            "description": family.description,
        })
    return rows


def _options_cell(options: list[dict]) -> str:
    parts = []
    for o in options:
        allowed = "|".join(o["choices"]) if o["choices"] else "free-form"
        parts.append(f"--{o['name'].replace('_', '-')} {allowed} (default {o['default'] or 'none'})")
    return "\n".join(parts) or "-"


def _print_families(fmt: Format) -> None:
    rows = family_rows()
    if fmt is Format.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="model families (a family's options apply to its models only; other models write "
                        "'-' or nothing)")
    for col in ("family", "models", "names", "cls token", "options"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(escape(c) for c in (r["family"], r["models"], r["names"], r["cls"],
                                             _options_cell(r["options"]))))
    console.print(table)


def _print_family_names(family_name: str, pattern: str, fmt: Format) -> None:
    from vimbench.models import get_family

    try:
        family = get_family(family_name)
        names = [f"{family.prefix or ''}{n}" for n in family.available(pattern)]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not names:
        raise UsageError(f"no {family.name} model matches {pattern!r}")
    if fmt is Format.json:
        typer.echo(json.dumps(names, indent=2))
    else:
        typer.echo("\n".join(names))
        if fmt is Format.table:
            console.print(f"[dim]{len(names)} {family.name} models match {pattern!r}[/]", highlight=False)


def _load_checkpoint(name: str, path: Path, img_size: int, method: str) -> None:
    from vimbench.checkpoint import CheckpointError, read_state_dict
    from vimbench.models import create_model, get_spec

    try:
        spec = get_spec(name)
        model = create_model(spec.name, img_size=img_size, checkpoint=path, pos_embed_resize=method)
        stored = read_state_dict(path).get("pos_embed")
    except (ValueError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    params = sum(p.numel() for p in model.parameters())
    line = f"loaded {path} into {spec.name} at {img_size}px: {params:,} parameters"
    own = getattr(model, "pos_embed", None)
    if stored is not None and own is not None and stored.shape != own.shape:
        how = spec.contract.pos_embed_resize_note(method)
        line += f"; pos_embed {stored.shape[1]} -> {own.shape[1]} tokens ({how})"
    console.print(line, highlight=False, soft_wrap=True)


def models(
    res: int = typer.Option(224, "--res", help="Resolution for tokens and GFLOPs (and --checkpoint)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    family: str | None = typer.Option(
        None, "--family", help="Only this family (vim, deit, timm). timm: list the names --pattern matches."
    ),
    pattern: str = typer.Option("*", "--pattern", help="With --family: a name glob, e.g. 'vit_small_*'."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Load this checkpoint into --model at --res and say what was resized."
    ),
    model: str | None = typer.Option(None, "--model", help="The model --checkpoint is loaded into."),
    pos_embed_resize: str = typer.Option(
        "timm", "--pos-embed-resize",
        help="How --checkpoint's position embeddings are resized to --res: timm (default; bicubic with "
        "antialias, as timm's checkpoint filter) or deit (bicubic without antialias, as "
        "facebookresearch/deit main.py). Vim's middle cls token is kept in place either way.",
    ),
) -> None:
    """List the model families and their options, then the registered models. GFLOPs are FLOPs (2 per
    multiply-accumulate), batch 1, with the selective scan counted as 9*B*L*E*N per direction; papers quoting
    DeiT-Ti at 1.3 G count MACs (half of ours)."""
    from vimbench.checkpoint import check_pos_embed_resize

    if res <= 0:
        raise UsageError(f"--res must be positive, got {res}")
    if checkpoint is not None or model is not None:
        if checkpoint is None or model is None:
            raise UsageError("--checkpoint and --model go together")
        try:
            check_pos_embed_resize(pos_embed_resize)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        _load_checkpoint(model, checkpoint, res, pos_embed_resize)
        return
    if family is not None:
        from vimbench.models import get_family

        try:
            chosen = get_family(family)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if chosen.prefix or pattern != "*":
            _print_family_names(chosen.name, pattern, fmt)
            return
    rows = model_rows(res, family)
    if fmt is Format.json:
        typer.echo(json.dumps(rows, indent=2))
    elif fmt is Format.csv:
        import pandas as pd

        typer.echo(pd.DataFrame(rows).to_csv(index=False), nl=False)
    else:
        if family is None:
            _print_families(fmt)
        table = Table(title=f"models at {res}x{res} (GFLOPs = 2 x MACs, scan included)")
        for col in ("name", "family", "params", "tokens", "GFLOPs", "official name"):
            table.add_column(col, justify="right" if col in ("params", "tokens", "GFLOPs") else "left")
        for r in rows:
            table.add_row(r["name"], r["family"], f"{r['params']:,}", str(r["tokens"]), f"{r['gflops']:.2f}",
                          r["official_name"])
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
