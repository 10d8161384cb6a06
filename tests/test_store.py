"""results.csv: column order, atomic appends (torn tails, concurrent writers), resume keys, the reader."""

from __future__ import annotations

import csv
import multiprocessing

import pytest

from vimbench.measure.store import ALL_COLUMNS, ResultsStore, format_value
from vimbench.results import CORE_COLUMNS as RESULT_COLUMNS
from vimbench.results import Run, point_key


def _row(model: str = "vim-t", img_size: int = 224, **extra) -> dict:
    row = {
        "model": model,
        "family": model.split("-")[0],
        "img_size": img_size,
        "tokens": 197,
        "batch_size": 1,
        "dtype": "fp32",
        "device": "cpu",
        "device_name": "AMD EPYC",
        "mode": "infer",
        "scan_backend": "reference" if model.startswith("vim") else "-",
        "attn_backend": "-" if model.startswith("vim") else "sdpa",
        "compile": False,
        "channels_last": False,
        "status": "ok",
        "throughput": 123.456789,
        "throughput_samples": [120.0, 123.456789, 130.5],
        "noisy": False,
        "peak_mem_mib": 512.25,
        "params": 7_000_000,
        "error": "",
    }
    row.update(extra)
    return row


def test_append_writes_contract_header_and_values(tmp_path) -> None:
    store = ResultsStore(tmp_path / "run")
    store.append(_row(img_size=224))
    store.append(_row(img_size=352, error="multi\nline, with comma"))
    lines = store.csv_path.read_text().splitlines()
    header = next(csv.reader([lines[0]]))
    assert tuple(header[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert tuple(header) == ALL_COLUMNS
    assert len(lines) == 3
    rows = store.rows()
    assert [r["img_size"] for r in rows] == ["224", "352"]
    assert rows[0]["throughput"] == "123.457"
    assert rows[0]["throughput_samples"] == "120 123.457 130.5"
    assert rows[0]["compile"] == "false"
    assert rows[1]["error"] == "multi line, with comma"
    assert rows[0]["nvml_peak_mib"] == ""


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (None, ""),
        (float("nan"), ""),
        (3.0, "3"),
        (0.000123456789, "0.000123457"),
        ([1, 2.5], "1 2.5"),
        ("a\nb", "a b"),
    ],
)
def test_format_value(value, text) -> None:
    assert format_value(value) == text


def test_torn_tail_is_ignored_and_repaired(tmp_path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row(img_size=224))
    with open(store.csv_path, "a") as fh:  # a writer killed mid-line
        fh.write("vim-t,vim,352,197,1,fp3")
    assert [r["img_size"] for r in store.rows()] == ["224"]
    assert list(Run.load(tmp_path).table["img_size"]) == [224]  # the reader skips the torn tail too
    store.append(_row(img_size=480))
    assert [r["img_size"] for r in store.rows()] == ["224", "480"]
    assert "fp3\n" not in store.csv_path.read_text()


def _append_many(run_dir: str, worker: int, count: int) -> None:
    store = ResultsStore(run_dir)
    for i in range(count):
        store.append(_row(img_size=16 * (1 + i), error="x" * 3000, host=f"w{worker}"))


def test_concurrent_appends_from_processes_never_interleave(tmp_path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 25)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    rows = ResultsStore(tmp_path).rows()
    assert len(rows) == 75
    assert all(r["error"] == "x" * 3000 and r["model"] == "vim-t" for r in rows)
    assert sorted(r["host"] for r in rows) == sorted(f"w{w}" for w in range(3) for _ in range(25))
    assert store_header_count(tmp_path) == 1


def store_header_count(run_dir) -> int:
    return sum(1 for line in (run_dir / "results.csv").read_text().splitlines() if line.startswith("model,"))


def test_done_keys_match_in_memory_rows(tmp_path) -> None:
    store = ResultsStore(tmp_path)
    rows = [_row(img_size=224), _row("deit-t", 224, status="oom"), _row(img_size=352, compile=True)]
    for r in rows:
        store.append(r)
    assert store.done_keys() == {point_key(r) for r in rows}
    assert store.done_keys(statuses=["oom"]) == {point_key(rows[1])}


def test_existing_header_is_kept(tmp_path) -> None:
    """A results.csv written with fewer extra columns keeps its own header; appends follow it."""
    path = tmp_path / "results.csv"
    path.write_text(",".join(RESULT_COLUMNS) + "\n")
    ResultsStore(tmp_path).append(_row(warmup=3))
    rows = ResultsStore(tmp_path).rows()
    assert rows[0]["model"] == "vim-t" and "warmup" not in rows[0]


def test_refuses_to_append_to_foreign_csv(tmp_path) -> None:
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"does not start with the results\.csv header"):
        ResultsStore(tmp_path).append(_row())


def test_run_json_round_trip(tmp_path) -> None:
    store = ResultsStore(tmp_path / "new")
    store.write_run_json({"command": ["vimbench", "sweep"], "path": tmp_path})
    assert store.read_run_json()["command"] == ["vimbench", "sweep"]
    assert not [p for p in (tmp_path / "new").iterdir() if ".tmp" in p.name]


def test_rows_of_a_read_only_run(tmp_path) -> None:
    store = ResultsStore(tmp_path)
    store.append(_row())
    store.csv_path.chmod(0o444)
    try:
        assert [r["model"] for r in ResultsStore(tmp_path).rows()] == ["vim-t"]
    finally:
        store.csv_path.chmod(0o644)
