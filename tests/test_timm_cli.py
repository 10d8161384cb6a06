"""The timm family through the CLI: sweeps with skipped rows, compare, globs, `models --family timm`.

Skipped without timm; CI runs them in the timm venv (`pytest -m timm`)."""

from __future__ import annotations

import pandas as pd
import pytest

from vimbench.models.timm_family import timm_available

pytestmark = [
    pytest.mark.timm,
    pytest.mark.skipif(not timm_available(), reason="timm is not installed (pip install 'vimbench[timm]')"),
]
FAST = ["--iters", "1", "--repeats", "1", "--min-time", "0", "--warmup", "0", "--threads", "1", "--no-plots",
        "--device", "cpu"]


def test_sweep_records_a_skipped_row_where_a_model_cannot_run(cli, tmp_path):
    out = tmp_path / "run"
    result = cli(["sweep", "--models", "timm:vit_tiny_patch16_224,timm:crossvit_tiny_240", "--res", "64,240",
                  "--out", out, *FAST])
    assert result.code == 0, result.err
    rows = pd.read_csv(out / "results.csv").set_index(["model", "img_size"])
    vit = rows.loc[("timm:vit_tiny_patch16_224", 64)]
    assert vit["status"] == "ok" and vit["tokens"] == 17 and vit["attn_backend"] == "sdpa"
    assert vit["scan_backend"] == "-" and vit["family"] == "timm" and vit["gflops"] > 0
    skipped = rows.loc[("timm:crossvit_tiny_240", 64)]
    assert skipped["status"] == "skipped" and "cannot run 64px" in skipped["error"]
    assert rows.loc[("timm:crossvit_tiny_240", 240), "status"] == "ok"


def test_compare_vim_with_a_timm_convnet(cli, tmp_path):
    out = tmp_path / "cmp"
    result = cli(["compare", "vim-t", "timm:convnext_atto", "--res", "64", "--scan-backend", "reference",
                  "--out", out, *FAST])
    assert result.code == 0, result.err
    assert "timm:convnext_atto" in result.out and "speedup" in result.out
    rows = pd.read_csv(out / "results.csv").set_index("model")
    assert rows.loc["timm:convnext_atto", "attn_backend"] == "-"  # no attention, no kernel choice
    assert rows.loc["vim-t", "scan_backend"] == "reference"


@pytest.mark.parametrize("args, message", [
    (["sweep", "--models", "vim-t,timm:vit_smal_patch16_224"], "closest: timm:vit_small_patch16_224"),
    (["sweep", "--models", "timm:zzz_*"], "no model matches 'timm:zzz_*'"),
    (["sweep", "--models", "timm:*"], "more than the cap of 50"),
    (["compare", "vim-t", "timm:deit_*"], "one model per argument"),
    (["models", "--family", "timn"], "unknown family 'timn'; closest: timm"),
])
def test_bad_timm_input_is_one_line_exit_2(cli, args, message):
    result = cli(args)
    assert result.code == 2 and message in result.err
    assert result.err.strip().count("\n") == 0


def test_models_lists_timm_names_by_pattern(cli):
    result = cli(["models", "--family", "timm", "--pattern", "deit_tiny_*", "--format", "csv"])
    assert result.code == 0
    names = result.out.split()
    assert "timm:deit_tiny_patch16_224" in names and all(n.startswith("timm:deit_tiny_") for n in names)
    listing = cli(["models", "--res", "64"])
    assert listing.code == 0 and "timm:NAME" in listing.out and "auto|sdpa|math" in listing.out
