"""timm kwargs as a family option, and results schema 3 that records them: parsing and its one spelling,
the option column, loading schema-1/2 files, resuming an older file, gates and compare keeping kwargs apart.

Needs no timm: the parser and the schema are plain Python; what needs timm is in tests/test_timm_cli.py."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pytest

from vimbench.measure.store import ResultsStore
from vimbench.models import get_spec, option_columns
from vimbench.models.timm_family import TimmFamily, format_timm_kwargs, parse_timm_kwargs
from vimbench.results import ALL_COLUMNS, CORE_COLUMNS, SCHEMA_VERSION, Run, point_key

REPO = Path(__file__).resolve().parents[1]
SCHEMA_2_RUN = REPO / "results" / "cpu" / "xeon-2core-avx2-e2e-1thread"  # committed, written with schema 2
SCHEMA_1_RUN = REPO / "results" / "cpu" / "amd-epyc-2core-fig1"
VIT = "timm:vit_tiny_patch16_224"


@pytest.mark.parametrize(
    ("text", "parsed", "canonical"),
    [
        ("", {}, ""),
        ("drop_path_rate=0.1", {"drop_path_rate": 0.1}, "drop_path_rate=0.1"),
        ("global_pool=avg, drop_path_rate=0.1", {"global_pool": "avg", "drop_path_rate": 0.1},
         "drop_path_rate=0.1;global_pool='avg'"),
        ("class_token=False;reg_tokens=4", {"class_token": False, "reg_tokens": 4},
         "class_token=False;reg_tokens=4"),
        ("act_layer='gelu',mlp_ratio=2.5,pool=None", {"act_layer": "gelu", "mlp_ratio": 2.5, "pool": None},
         "act_layer='gelu';mlp_ratio=2.5;pool=None"),
        ("out_indices=(1, 2),name='a,b;c'", {"out_indices": (1, 2), "name": "a,b;c"},
         "name='a,b;c';out_indices=(1, 2)"),
    ],
)  # fmt: skip
def test_kwargs_parse_to_one_spelling(text, parsed, canonical) -> None:
    assert parse_timm_kwargs(text) == parsed
    assert format_timm_kwargs(parsed) == canonical
    assert parse_timm_kwargs(canonical) == parsed  # the column's text parses back to the same kwargs
    option = next(o for o in TimmFamily.options if o.name == "timm_kwargs")
    assert option.check(text) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("drop_path_rate", "'drop_path_rate' is not KEY=VALUE"),
        ("1x=2", "'1x=2' is not KEY=VALUE"),
        ("drop_path_rate=0.1.2", "cannot parse the value of 'drop_path_rate'"),
        ("out_indices=(1,", "cannot parse the value of 'out_indices'"),
        ("drop_path_rate=", "cannot parse the value of 'drop_path_rate'"),
        ("a=1,a=2", "'a' given twice"),
        ("img_size=224", r"'img_size' cannot be given \(set by --res\)"),
        ("pretrained=True", "'pretrained' cannot be given"),
    ],
)
def test_bad_kwargs_are_one_line(text, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_timm_kwargs(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["sweep", "compare", "profile", "memory"])
def test_unparsable_kwargs_exit_2_before_anything_runs(cli, tmp_path, command) -> None:
    args = {"sweep": ["sweep", "--models", "vim-t,deit-t", "--res", "224", "--out", tmp_path / "run"],
            "compare": ["compare", "vim-t", "deit-t", "--res", "224", "--out", tmp_path / "run"],
            "profile": ["profile", "deit-t", "--res", "224"],
            "memory": ["memory", "--models", "deit-t", "--res", "224"]}[command]
    result = cli([*args, "--timm-kwargs", "drop_path_rate=(0.1"])
    assert result.code == 2
    assert "cannot parse the value of 'drop_path_rate'" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing measured, no run folder


def test_families_without_the_option_write_an_empty_column() -> None:
    assert option_columns(get_spec("vim-t"), {"scan_backend": "cpu"})["timm_kwargs"] == ""
    assert option_columns(get_spec("deit-t"), {"attn_backend": "sdpa"}) == {
        "scan_backend": "-", "attn_backend": "sdpa", "timm_kwargs": ""}


def test_schema_3_header_keeps_older_headers_as_core_prefix() -> None:
    assert SCHEMA_VERSION == 3
    assert "timm_kwargs" in ALL_COLUMNS and "timm_kwargs" not in CORE_COLUMNS  # older files lack it
    assert ALL_COLUMNS[-1] == "schema_version"


@pytest.mark.parametrize(("run_dir", "version"), [(SCHEMA_1_RUN, 1), (SCHEMA_2_RUN, 2)])
def test_committed_schema_1_and_2_runs_load_as_schema_3(run_dir, version) -> None:
    run = Run.load(run_dir)
    assert run.schema_version == version
    assert set(run.table["schema_version"]) == {3}
    assert set(run.table["timm_kwargs"]) == {""}
    assert len(run.results) > 0 and set(run.results["status"]) <= {"ok", "oom", "skipped-oom"}


def _row(model: str, kwargs: str = "", samples: tuple[float, ...] = (10.0, 10.1, 9.9, 10.2, 9.8)) -> dict:
    timm = model.startswith("timm:")
    return {
        "model": model, "family": model.split(":")[0] if timm else model.split("-")[0], "img_size": 224,
        "tokens": 197, "batch_size": 1, "dtype": "fp32", "device": "cpu", "device_name": "Intel Xeon",
        "mode": "infer", "scan_backend": "-" if timm else "reference",
        "attn_backend": "sdpa" if timm else "-",
        "timm_kwargs": kwargs, "compile": False, "channels_last": False, "status": "ok",
        "throughput": statistics.median(samples), "throughput_samples": list(samples), "error": "",
    }  # fmt: skip


def test_resuming_a_schema_2_file_keeps_its_schema(tmp_path) -> None:
    shutil.copytree(SCHEMA_2_RUN, tmp_path / "run")
    store = ResultsStore(tmp_path / "run")
    header = store.csv_path.read_text().splitlines()[0]
    before = len(store.rows())
    assert store.unrecordable(_row(VIT, "drop_path_rate=0.1")) == ["timm_kwargs"]
    assert store.unrecordable(_row(VIT)) == [] and store.unrecordable(_row("vim-t")) == []
    store.append(_row("vim-t"))
    assert store.csv_path.read_text().splitlines()[0] == header  # no column added to an old file
    run = Run.load(tmp_path / "run")  # one schema in the file: the appended row says 2 as well
    assert run.schema_version == 2 and len(run.table) == before + 1
    assert point_key(store.rows()[-1]) == point_key({**_row("vim-t"), "timm_kwargs": ""})


def test_gate_keeps_runs_with_different_kwargs_apart(cli, tmp_path) -> None:
    base, cur = ResultsStore(tmp_path / "base"), ResultsStore(tmp_path / "cur")
    base.append(_row(VIT, "drop_path_rate=0.1"))
    cur.append(_row(VIT, "drop_path_rate=0.2"))
    for store in (base, cur):
        store.write_run_json({"environment": {"cpu": "Intel Xeon"}, "config": {}})
    result = cli(["gate", "--baseline", tmp_path / "base", "--current", tmp_path / "cur"])
    assert result.code == 2 and "nothing to compare" in result.err and "timm_kwargs" in result.err
    cur.append(_row(VIT, "drop_path_rate=0.1", samples=(5.0, 5.1, 4.9, 5.2, 4.8)))
    result = cli(["gate", "--baseline", tmp_path / "base", "--current", tmp_path / "cur"])
    assert result.code == 1  # the same kwargs: compared, and half the throughput regresses
    assert "timm=drop_path_rate=0.1" in result.out


def test_compare_filters_on_kwargs_only_for_models_that_take_them(tmp_path) -> None:
    from vimbench.report.compare import matching_rows

    store = ResultsStore(tmp_path)
    for row in (_row("vim-t"), _row(VIT, "drop_path_rate=0.1"), _row(VIT)):
        store.append(row)
    frame = Run.load(tmp_path).table
    wanted = {"timm_kwargs": "drop_path_rate=0.1"}
    assert len(matching_rows(frame, "vim-t", wanted)) == 1  # Vim has no timm kwargs: the filter passes it
    assert matching_rows(frame, VIT, wanted)["timm_kwargs"].tolist() == ["drop_path_rate=0.1"]
