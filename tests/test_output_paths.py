"""Output paths are checked before any work, and no command writes over a run's results.csv or run.json
(or its own inputs): one line, exit 2, the run untouched."""

from __future__ import annotations

import hashlib
import json

import pytest

from vimbench.measure.plan import Point
from vimbench.measure.rows import identity_row
from vimbench.measure.store import ResultsStore


@pytest.fixture
def run(tmp_path):
    """A tiny run folder (two ok rows and a run.json) and a digest of its files, to prove them untouched."""
    folder = tmp_path / "run"
    store = ResultsStore(folder)
    for model, fps in (("vim-t", 100.0), ("deit-t", 50.0)):
        row = identity_row(Point(model, 32, device="cpu"))
        row.update(status="ok", throughput=fps, throughput_samples=[fps] * 3, peak_mem_mib=100.0,
                   peak_mem_source="rss")
        store.append(row)
    store.write_run_json({"command": "test"})
    return folder


def _digest(folder) -> dict[str, str]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _one_line_exit_2(result, message: str) -> None:
    assert result.code == 2, result.out + result.err
    assert message in result.err, result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "{run}", "--out", "{run}/results.csv"], "refusing to write over a run's results.csv"),
        (["report", "{run}", "--out", "{run}/run.json"], "refusing to write over a run's run.json"),
        (["report", "{run}", "--out", "{run}"], "is a folder; give a file name"),
        (["plot", "{run}", "--out", "{run}/results.csv"], "is a file; give a folder"),
        (["gate", "--current", "{run}", "--ratio", "vim-t/deit-t@32>=1", "--json", "{run}/results.csv"],
         "refusing to write over a run's results.csv"),
        (["gate", "--current", "{run}", "--ratio", "vim-t/deit-t@32>=1", "--junit", "{run}/run.json"],
         "refusing to write over a run's run.json"),
        (["check", "--backends", "reference", "--quick", "--json", "{run}/results.csv"],
         "refusing to write over a run's results.csv"),
        (["kernels", "bench", "--backends", "reference", "--csv", "{run}/results.csv"],
         "refusing to write over a run's results.csv"),
        (["profile", "deit-t", "--res", "32", "--trace", "{run}/results.csv"],
         "refusing to write over a run's results.csv"),
        (["profile", "deit-t", "--res", "32", "--json", "{run}/run.json"], "refusing to write over a run's"),
    ],
)
def test_no_command_writes_over_a_run(cli, run, args, message) -> None:
    before = _digest(run)
    _one_line_exit_2(cli([a.format(run=run) for a in args]), message)
    assert _digest(run) == before


def test_gate_output_may_not_be_one_of_its_inputs(cli, run, tmp_path) -> None:
    bare = tmp_path / "current.csv"
    bare.write_bytes((run / "results.csv").read_bytes())
    before = bare.read_bytes()
    result = cli(["gate", "--current", bare, "--ratio", "vim-t/deit-t@32>=1", "--json", bare])
    _one_line_exit_2(result, "is an input of this command")
    assert bare.read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--backends", "reference", "--quick", "--json", "{bad}/j"],
        ["kernels", "bench", "--backends", "reference", "--csv", "{bad}/c"],
        ["profile", "deit-t", "--res", "32", "--json", "{bad}/j"],
        ["profile", "deit-t", "--res", "32", "--trace", "{bad}/t"],
        ["report", "{run}", "--out", "{bad}/r.md"],
    ],
)
def test_unwritable_output_fails_before_the_work(cli, run, tmp_path, args) -> None:
    blocker = tmp_path / "a-file"  # a path under a regular file can never be created
    blocker.write_text("")
    result = cli([a.format(run=run, bad=blocker) for a in args])
    _one_line_exit_2(result, "cannot write there")
    assert "checking" not in result.out and "benchmarking" not in result.out


def test_plot_out_under_a_file_and_report_of_a_results_csv(cli, run, tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _one_line_exit_2(cli(["plot", run, "--out", blocker / "figs"]), "cannot create a folder there")
    monkeypatch.chdir(run)  # a run given as the results.csv in the current folder
    result = cli(["plot", "results.csv", "--metric", "throughput"])
    assert result.code == 0, result.err
    assert (run / "throughput.png").is_file()
    result = cli(["report", "results.csv"])
    assert result.code == 0, result.err
    assert (run / "run-report.md").is_file()


@pytest.mark.parametrize("content", [None, "other.txt"])
def test_profile_trace_into_a_folder_writes_a_named_file_there(cli, tmp_path, content) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    if content:
        (folder / content).write_text("keep")
    result = cli(["profile", "deit-t", "--res", "32", "--warmup", "0", "--iters", "1", "--trace", folder])
    assert result.code == 0, result.err
    trace = folder / "trace-deit-t-32px.json"
    assert folder.is_dir() and json.loads(trace.read_text())["traceEvents"]
    assert str(trace) in result.out.replace("\n", "")
    if content:
        assert (folder / content).read_text() == "keep"


def test_kernels_bench_refuses_a_size_that_cannot_fit(cli) -> None:
    result = cli(["kernels", "bench", "--res", "100000", "--backends", "reference"])
    _one_line_exit_2(result, "--res 100000 (L=39062501) needs about")
    assert "benchmarking" not in result.out


def test_output_probe_leaves_nothing_behind(tmp_path) -> None:
    from vimbench.cli.common import UsageError, check_output_file

    target = tmp_path / "a" / "b" / "out.json"
    assert check_output_file(target, "--json") == target
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match=r"directory .* does not exist"):
        check_output_file(target, "--json", parents=False)
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    check_output_file(kept, "--json")
    assert kept.read_text() == "old"


def test_fig1_and_compare_out_must_be_folders(cli, run) -> None:
    before = _digest(run)
    _one_line_exit_2(cli(["reproduce", "fig1", "--device", "cpu", "--out", run / "results.csv"]),
                     "is a file; give a folder")
    _one_line_exit_2(cli(["compare", "vim-t", "deit-t", "--device", "cpu", "--out", run / "run.json"]),
                     "is a file; give a folder")
    _one_line_exit_2(cli(["reproduce", "fig1", "--device", "cpu", "--resume"]), "--resume needs --out")
    assert _digest(run) == before
