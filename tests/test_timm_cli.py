"""The timm family through the CLI: sweeps with skipped rows, compare, globs, `models --family timm`.

Skipped without timm; CI runs them in the timm venv (`pytest -m timm`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from vimbench.models import create_model
from vimbench.models.timm_family import timm_available

pytestmark = [
    pytest.mark.timm,
    pytest.mark.skipif(not timm_available(), reason="timm is not installed (pip install 'vimbench[timm]')"),
]
SCHEMA_2_RUN = Path(__file__).resolve().parents[1] / "results" / "cpu" / "xeon-2core-avx2-e2e-1thread"
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


def test_sweep_passes_timm_kwargs_and_records_them(cli, tmp_path):
    out = tmp_path / "kw"
    result = cli(["sweep", "--models", "timm:vit_tiny_patch16_224,deit-t", "--res", "64", "--out", out,
                  "--timm-kwargs", "global_pool=avg, class_token=False,drop_path_rate=0.1", *FAST])
    assert result.code == 0, result.err
    rows = pd.read_csv(out / "results.csv", keep_default_na=False).set_index("model")
    vit = rows.loc["timm:vit_tiny_patch16_224"]
    assert vit["status"] == "ok" and vit["schema_version"] == 3
    assert vit["timm_kwargs"] == "class_token=False;drop_path_rate=0.1;global_pool='avg'"
    assert vit["tokens"] == 16  # no class token: the 4x4 patch grid alone
    assert rows.loc["deit-t", "timm_kwargs"] == "" and rows.loc["deit-t", "tokens"] == 17
    model = create_model("timm:vit_tiny_patch16_224", img_size=64,
                         options={"timm_kwargs": vit["timm_kwargs"]})  # the column builds the same model
    assert model.cls_token is None and model.global_pool == "avg"


@pytest.mark.parametrize("args, message", [
    (["sweep", "--models", "timm:vit_tiny_patch16_224", "--timm-kwargs", "drop_path=0.1"],
     "unexpected keyword argument 'drop_path'; closest: drop_path_rate"),
    (["compare", "deit-t", "timm:vit_tiny_patch16_224", "--timm-kwargs", "depth='x'"],
     "timm kwargs \"depth='x'\" for timm:vit_tiny_patch16_224"),
    (["profile", "timm:vit_tiny_patch16_224", "--timm-kwargs", "no_such_thing=1"],
     "unexpected keyword argument 'no_such_thing'"),
    (["memory", "--models", "timm:vit_tiny_patch16_224", "--res", "224", "--timm-kwargs", "bogus=1"],
     "unexpected keyword argument 'bogus'"),
])
def test_kwargs_the_model_does_not_take_are_one_line_exit_2(cli, tmp_path, args, message):
    result = cli([*args, "--res", "64", "--device", "cpu"] if args[0] in ("sweep", "compare") else args)
    assert result.code == 2 and message in result.err, result.err
    assert result.err.strip().count("\n") == 0
    assert not list(tmp_path.iterdir())


def test_resuming_a_schema_2_run_with_kwargs_is_refused_before_measuring(cli, tmp_path):
    shutil.copytree(SCHEMA_2_RUN, tmp_path / "run")
    before = (tmp_path / "run" / "results.csv").read_bytes()
    result = cli(["sweep", "--models", "timm:vit_tiny_patch16_224", "--res", "64", "--out", tmp_path / "run",
                  "--resume", "--timm-kwargs", "drop_path_rate=0.1", *FAST])
    assert result.code == 2 and "older results schema without the column(s) timm_kwargs" in result.err
    assert (tmp_path / "run" / "results.csv").read_bytes() == before
