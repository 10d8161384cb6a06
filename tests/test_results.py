"""vimbench.results: the column spec, schema versions and migration, Run.load (the committed CPU run
included), errors, and the one speedup / saving definition."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from vimbench.measure.store import ResultsStore
from vimbench.metrics import all_metrics
from vimbench.report import paper
from vimbench.report.runs import vim_deit_pairs
from vimbench.results import (
    ALL_COLUMNS,
    CORE_COLUMNS,
    SCHEMA_VERSION,
    Run,
    cell_text,
    column,
    saving_pct,
    speedup,
)

REPO = Path(__file__).resolve().parents[1]
COMMITTED_CPU_RUN = REPO / "results" / "cpu" / "amd-epyc-2core-fig1"
# results.csv's header before the column spec existed (schema 1): new files must keep it as their prefix
SCHEMA_1_HEADER = """model family img_size tokens batch_size dtype device device_name device_uuid mode
scan_backend attn_backend compile channels_last status throughput throughput_samples latency_ms latency_ms_p10
latency_ms_p90 iqr_pct noisy iters repeats peak_mem_mib peak_mem_source torch_peak_alloc_mib
torch_peak_reserved_mib nvml_peak_mib nvml_interval_ms rss_peak_mib params gflops host timestamp duration_s
error warmup min_time_s threads precision nvml_baseline_mib rss_baseline_mib torch_version""".split()  # noqa: SIM905


def _row(model: str = "vim-t", img_size: int = 224, **extra) -> dict:
    row = {
        "model": model, "family": model.split("-")[0], "img_size": img_size, "tokens": 197, "batch_size": 1,
        "dtype": "fp32", "device": "cpu", "device_name": "AMD EPYC", "mode": "infer",
        "scan_backend": "reference" if model.startswith("vim") else "-",
        "attn_backend": "-" if model.startswith("vim") else "sdpa", "compile": False, "channels_last": False,
        "status": "ok", "throughput": 123.456789, "throughput_samples": [120.0, 123.456789, 130.5],
        "noisy": False, "peak_mem_mib": 512.25, "params": 7_000_000, "error": "",
    }  # fmt: skip
    row.update(extra)
    return row


def test_header_keeps_schema_1_order_as_its_prefix() -> None:
    assert list(CORE_COLUMNS) == SCHEMA_1_HEADER[: len(CORE_COLUMNS)]
    assert list(ALL_COLUMNS[: len(SCHEMA_1_HEADER)]) == SCHEMA_1_HEADER
    assert ALL_COLUMNS[-1] == "schema_version"
    assert len(set(ALL_COLUMNS)) == len(ALL_COLUMNS)


def test_every_metric_column_is_in_the_spec_with_its_unit() -> None:
    for metric in all_metrics():
        head = column(metric.value_column)
        assert (head is not None and head.unit == metric.unit.split("/")[0]) or head.unit == metric.unit
        assert head.direction == metric.direction
        for col in metric.columns:
            assert column(col.name) == col
    assert column("throughput").direction == "higher" and column("peak_mem_mib").direction == "lower"
    assert column("img_size").kind == "int" and column("model").kind == "text"


def test_committed_cpu_run_loads_through_the_migration() -> None:
    run = Run.load(COMMITTED_CPU_RUN)
    assert run.schema_version == 1 and run.meta_schema_version == 1  # written before schema_version
    assert len(run.table) == 15 and list(run.table.columns[: len(CORE_COLUMNS)]) == list(CORE_COLUMNS)
    assert set(ALL_COLUMNS) <= set(run.table.columns)
    assert run.table["img_size"].tolist()[:5] == [512, 640, 736, 1024, 1248]
    assert run.table["throughput"].iloc[4] == pytest.approx(0.833395)
    assert run.table["compile"].unique().tolist() == ["false"]
    assert run.device_names() == ["AMD EPYC"]
    pairs = {p.deit.config["attn_backend"]: p.table.set_index("img_size") for p in vim_deit_pairs(run)}
    # the README's numbers at 1248 px: 5.9x over math attention, 2.1x over sdpa; 53.6% less memory vs math
    assert pairs["math"].loc[1248, "speedup"] == pytest.approx(0.833395 / 0.140789)
    assert round(pairs["math"].loc[1248, "speedup"], 1) == 5.9
    assert round(pairs["sdpa"].loc[1248, "speedup"], 1) == 2.1
    assert round(pairs["math"].loc[1248, "memory_saving_pct"], 1) == 53.6


def test_new_runs_carry_the_schema_version(tmp_path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row())
    store.write_run_json({"command": "x"})
    header = store.csv_path.read_text().splitlines()[0].split(",")
    assert header == list(ALL_COLUMNS)
    assert json.loads(store.run_json_path.read_text())["schema_version"] == SCHEMA_VERSION
    run = Run.load(tmp_path)
    assert run.schema_version == SCHEMA_VERSION == run.meta_schema_version
    assert run.table["schema_version"].tolist() == [SCHEMA_VERSION]


def test_a_newer_schema_is_refused_in_one_line(tmp_path) -> None:
    ResultsStore(tmp_path).append(_row())
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1][: lines[1].rfind(",")] + ",99"]) + "\n")
    with pytest.raises(ValueError, match="schema_version 99, newer than this vimbench reads") as info:
        Run.load(tmp_path)
    assert "\n" not in str(info.value)


def test_typed_columns(tmp_path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row(img_size=224))
    store.append(_row("deit-t", 1248, status="oom", throughput=None, error="CUDA out of memory"))
    frame = Run.load(store.csv_path).table
    assert list(frame.columns[: len(CORE_COLUMNS)]) == list(CORE_COLUMNS)
    assert frame["img_size"].tolist() == [224, 1248]
    assert frame["throughput"].iloc[0] == pytest.approx(123.457)
    assert frame["throughput"].isna().iloc[1]
    assert frame["status"].tolist() == ["ok", "oom"]
    assert frame["compile"].tolist() == ["false", "false"]
    assert frame["throughput_samples"].iloc[0] == "120 123.457 130.5"


def test_results_view_keeps_the_latest_row_of_each_point(tmp_path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row(img_size=352, status="error", throughput=None))
    store.append(_row(img_size=224))
    store.append(_row(img_size=352, throughput=50.0))
    run = Run.load(tmp_path)
    assert len(run.table) == 3
    assert run.results["img_size"].tolist() == [224, 352]
    assert run.results["throughput"].tolist() == pytest.approx([123.457, 50.0])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no results.csv"),
        ("", "is empty"),
        ("model,img_size\nvim-t,224\n", "missing column"),
        (b"\xff\xfe\x00garbage\n", "missing column"),
    ],
)
def test_load_errors_are_one_line(tmp_path, content, message) -> None:
    if content is not None:
        path = tmp_path / "results.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message) as info:
        Run.load(tmp_path)
    assert "\n" not in str(info.value)


def test_load_missing_paths(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"no results\.csv at .* does not exist"):
        Run.load(tmp_path / "nope.csv")
    os.makedirs(tmp_path / "empty_run")
    with pytest.raises(ValueError, match=r"no results\.csv in"):
        Run.load(tmp_path / "empty_run")
    ResultsStore(tmp_path / "bad").append(_row())
    (tmp_path / "bad" / "run.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        Run.load(tmp_path / "bad")


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), ("False", "false"), (None, ""), (math.nan, ""), (224.0, "224"), (3, "3"),
     (0.000123456789, "0.000123457"), ([1, 2.5], "1 2.5"), ("a\nb", "a b"), ("-", "-")],
)  # fmt: skip
def test_cell_text(value, text) -> None:
    assert cell_text(value) == text
    assert cell_text(text) == text  # CSV text maps to itself


@pytest.mark.parametrize(
    ("a", "b", "ratio", "saving"),
    [(10.0, 4.0, 2.5, -150.0), (1.0, 4.0, 0.25, 75.0), (0.0, 2.0, None, 100.0), (3.0, 0.0, None, None),
     (None, 2.0, None, None), (math.nan, 2.0, None, None), ("5", "2", 2.5, -150.0)],
)  # fmt: skip
def test_speedup_and_saving(a, b, ratio, saving) -> None:
    assert speedup(a, b) == (pytest.approx(ratio) if ratio is not None else None)
    assert saving_pct(a, b) == (pytest.approx(saving) if saving is not None else None)


def test_paper_speedup_is_one_number_everywhere() -> None:
    """compare and the Fig. 1 report used to disagree in the third digit (rounded FPS vs plotted logs)."""
    from vimbench.report.compare import _paper

    for size in paper.MEASURED_RESOLUTIONS[:-1]:
        entry = _paper("vim-t", "deit-t", size)
        assert entry["paper_speedup"] == paper.paper_speedup(size)
        assert entry["paper_mem_saving_pct"] == paper.paper_memory_saving_pct(size)
    assert paper.paper_speedup(1248) == pytest.approx(10 ** (1.71 - 1.26))
    assert _paper("vim-t", "deit-t", 1248)["paper_speedup"] == paper.paper_speedup(1248)
    assert _paper("vim-t", "deit-t", 1248)["paper_mem_saving_pct"] is None  # DeiT-Ti OOM in Fig. 1
    reverse = _paper("deit-t", "vim-t", 512)["paper_speedup"]
    assert reverse == pytest.approx(1 / paper.paper_speedup(512))


# ------------------------------------------------------------------------------------------ typed row


def test_result_row_has_a_typed_key_per_column() -> None:
    from vimbench.results.row import KIND_TYPES, SIDE_KEYS, ResultRow

    hints = ResultRow.__annotations__
    assert [k for k in hints if k not in SIDE_KEYS] == list(ALL_COLUMNS)
    assert hints["img_size"] == int | None and hints["throughput"] == float | None
    assert hints["compile"] == bool | None and hints["model"] == str | None
    assert all(hints[c] == KIND_TYPES[column(c).kind] | None for c in ALL_COLUMNS)


@pytest.mark.parametrize(
    ("values", "message"),
    [({"throughput_img_s": 1.0}, "'throughput_img_s' is not a results.csv column"),
     ({"img_size": "224"}, r"img_size \(int\) cannot hold '224'"),
     ({"img_size": 224.5}, r"img_size \(int\) cannot hold 224.5"),
     ({"throughput": "fast"}, r"throughput \(float\) cannot hold 'fast'"),
     ({"compile": "false"}, r"compile \(bool\) cannot hold 'false'"),
     ({"model": 3}, r"model \(text\) cannot hold 3"),
     ({"throughput_samples": 3.0}, r"throughput_samples \(floats\) cannot hold 3.0"),
     ({"metric_notes": "x"}, "holds a mapping")],
)  # fmt: skip
def test_typed_row_refuses_unknown_columns_and_wrong_kinds(values, message) -> None:
    from vimbench.results import typed_row

    with pytest.raises(ValueError, match=message) as info:
        typed_row(values)
    assert "\n" not in str(info.value)


def test_typed_row_keeps_the_csv_text(tmp_path) -> None:
    import numpy as np

    from vimbench.results import typed_row

    row = _row(throughput=np.float64(123.456789), params=np.int64(7_000_000), tokens=197.0,
               peak_mem_mib=1_000_000, noisy=np.bool_(False), metric_notes={"energy_per_image": "no RAPL"})
    typed = typed_row(row)
    assert type(typed["throughput"]) is float and type(typed["params"]) is int and typed["tokens"] == 197
    assert type(typed["peak_mem_mib"]) is int  # an int stays an int: "1000000", not "1e+06"
    plain, checked = ResultsStore(tmp_path / "plain"), ResultsStore(tmp_path / "typed")
    plain.append({k: v for k, v in row.items() if k != "metric_notes"})
    checked.append(typed)
    assert checked.csv_path.read_text() == plain.csv_path.read_text()
    assert ",1000000," in checked.csv_path.read_text()


@pytest.mark.parametrize("run_dir",
                         ["amd-epyc-2core-fig1", "xeon-2core-avx2-fig1", "xeon-2core-avx2-e2e-1thread"])
def test_parsed_rows_give_back_every_cell_of_the_committed_runs(run_dir) -> None:
    run = Run.load(REPO / "results" / "cpu" / run_dir)
    typed = run.rows()
    assert len(typed) == len(run.text_table)
    for text, row in zip(run.text_table.to_dict("records"), typed, strict=True):
        assert {c: cell_text(row[c]) for c in text} == text
    first = typed[0]
    assert isinstance(first["img_size"], int) and isinstance(first["throughput"], float)
    assert first["compile"] is False and isinstance(first["throughput_samples"], list)
