"""`vimbench models`: the registry with params, tokens and scan-aware GFLOPs at a resolution."""

from __future__ import annotations

import json
from enum import StrEnum

import typer
from rich.table import Table

from .common import UsageError, console


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def model_rows(img_size: int) -> list[dict]:
    import torch

    from vimbench.models import create_model, get_spec, list_models
    from vimbench.profile.flops import count_flops

    rows = []
    for name in list_models():
        spec = get_spec(name)
        if not spec.valid_img_size(img_size):
            lower = max(16, img_size - img_size % 16)
            raise UsageError(
                f"--res {img_size} is off the 16-pixel patch grid of {name}; "
                f"nearest valid: {lower} or {lower + 16}"
            )
        with torch.device("meta"):
            model = create_model(name, img_size=img_size, scan_backend="reference")
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


def models(
    res: int = typer.Option(224, "--res", help="Resolution for tokens and GFLOPs."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
) -> None:
    """List the models. GFLOPs are FLOPs (2 per multiply-accumulate), batch 1, with the selective scan
    counted as 9*B*L*E*N per direction; papers quoting DeiT-Ti at 1.3 G count MACs (half of ours)."""
    if res <= 0:
        raise UsageError(f"--res must be positive, got {res}")
    rows = model_rows(res)
    if fmt is Format.json:
        typer.echo(json.dumps(rows, indent=2))
    elif fmt is Format.csv:
        import pandas as pd

        typer.echo(pd.DataFrame(rows).to_csv(index=False), nl=False)
    else:
        table = Table(title=f"models at {res}x{res} (GFLOPs = 2 x MACs, scan included)")
        for col in ("name", "family", "params", "tokens", "GFLOPs", "official name"):
            table.add_column(col, justify="right" if col in ("params", "tokens", "GFLOPs") else "left")
        for r in rows:
            table.add_row(r["name"], r["family"], f"{r['params']:,}", str(r["tokens"]), f"{r['gflops']:.2f}",
                          r["official_name"])
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)
