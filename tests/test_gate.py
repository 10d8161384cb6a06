"""`vimbench gate` baseline vs current: verdicts, exit codes, unusable inputs, JSON/JUnit/summary outputs."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from vimbench.testing.gate_runs import ENV, H100, point, wobble, write_run


def gate_json(cli, tmp_path: Path, *args: Any) -> tuple[int, dict[str, Any], str]:
    out = tmp_path / "verdicts.json"
    result = cli(["gate", *args, "--json", out])
    return result.code, json.loads(out.read_text()), result.out + result.err


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {p["label"]: p["verdict"] for p in report["points"]}


def test_clear_regression_fails(cli, tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [point("vim-s", 224, wobble(1000, seed=1)),
                                          point("deit-s", 224, wobble(2000, seed=2))])
    cur = write_run(tmp_path / "cur", [point("vim-s", 224, wobble(850, seed=3)),
                                        point("deit-s", 224, wobble(2000, seed=4))])
    code, report, text = gate_json(cli, tmp_path, "--baseline", base, "--current", cur)
    assert code == 1
    assert report["outcome"] == "fail"
    vim = next(p for p in report["points"] if p["model"] == "vim-s")
    assert vim["verdict"] == "regression"
    assert vim["change"] == pytest.approx(-0.15, abs=0.02)
    assert vim["pvalue"] == pytest.approx(1 / 252)  # five vs five, fully separated
    assert next(p for p in report["points"] if p["model"] == "deit-s")["verdict"] == "unchanged"
    assert "regression" in text and "FAIL" in text


def test_improvement_passes(cli, tmp_path: Path) -> None:
    base = write_run(tmp_path / "base", [point("vim-s", 512, wobble(300, seed=1))])
    cur = write_run(tmp_path / "cur", [point("vim-s", 512, wobble(400, seed=2))])
    code, report, _ = gate_json(cli, tmp_path, "--baseline", base, "--current", cur)
    assert code == 0
    assert verdicts(report) == {"vim-s 512px b64 bf16 infer scan=cuda": "improved"}
    assert report["points"][0]["pvalue"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(6))
def test_noise_alone_passes(cli, tmp_path: Path, seed: int) -> None:
    """A few % wobble on both sides, 5 samples a side, same true throughput: never a regression."""
    rows_base = [point(m, r, wobble(1000 * r / 224, pct=4, seed=seed * 10 + i))
                 for i, (m, r) in enumerate([("vim-s", 224), ("vim-s", 512), ("deit-s", 224)])]
    rows_cur = [point(m, r, wobble(1000 * r / 224, pct=4, seed=seed * 10 + i + 5))
                for i, (m, r) in enumerate([("vim-s", 224), ("vim-s", 512), ("deit-s", 224)])]
    base, cur = write_run(tmp_path / "b", rows_base), write_run(tmp_path / "c", rows_cur)
    code, report, _ = gate_json(cli, tmp_path, "--baseline", base, "--current", cur)
    assert code == 0, verdicts(report)


def test_drop_past_threshold_without_significance_passes(cli, tmp_path: Path) -> None:
    base = write_run(tmp_path / "b", [point("vim-s", 224, [100, 108, 92, 104, 97])])
    cur = write_run(tmp_path / "c", [point("vim-s", 224, [94, 99, 90, 103, 88])])  # median -6%, overlapping
    code, report, _ = gate_json(cli, tmp_path, "--baseline", base, "--current", cur)
    assert code == 0
    [only] = report["points"]
    assert only["verdict"] == "not significant"
    assert only["change"] == pytest.approx(-0.06)
    assert only["pvalue"] > 0.01


@pytest.mark.parametrize("current,expected_code,verdict", [(90.0, 1, "regression"), (97.0, 0, "unchanged")])
def test_fewer_than_five_samples_threshold_alone_decides(cli, tmp_path: Path, current: float,
                                                          expected_code: int, verdict: str) -> None:
    base = write_run(tmp_path / "b", [point("deit-s", 224, [100.0, 100.0, 100.0])])
    cur = write_run(tmp_path / "c", [point("deit-s", 224, [current] * 3)])
    code, report, _ = gate_json(cli, tmp_path, "--baseline", base, "--current", cur)
    assert code == expected_code
    assert report["points"][0]["verdict"] == verdict
    assert report["points"][0]["pvalue"] is None


def test_threshold_is_configurable(cli, tmp_path: Path) -> None:
    base = write_run(tmp_path / "b", [point("vim-s", 224, wobble(1000, seed=1))])
    cur = write_run(tmp_path / "c", [point("vim-s", 224, wobble(920, seed=2))])  # about -8%
    assert cli(["gate", "--baseline", base, "--current", cur, "--max-regression", "10%"]).code == 0
    assert cli(["gate", "--baseline", base, "--current", cur, "--max-regression", "0.05"]).code == 1


def test_status_changes(cli, tmp_path: Path) -> None:
    """ok -> oom fails; oom -> ok and oom -> oom pass; points on one side only are listed, not failed."""
    base = write_run(tmp_path / "b", [
        point("vim-s", 224, wobble(1000)), point("vim-s", 1024, wobble(50)),
        point("deit-s", 1024, None, "oom"), point("deit-s", 1248, None, "oom"),
        point("vim-s", 736, wobble(90)),
    ])
    cur = write_run(tmp_path / "c", [
        point("vim-s", 224, wobble(1000, seed=9)),
        point("vim-s", 1024, None, "oom", error="CUDA out of memory. Tried to allocate 2.00 GiB"),
        point("deit-s", 1024, wobble(20)), point("deit-s", 1248, None, "skipped-oom"),
        point("vim-s", 1248, wobble(30)),
    ])
    code, report, text = gate_json(cli, tmp_path, "--baseline", base, "--current", cur)
    assert code == 1
    assert verdicts(report) == {
        "deit-s 1024px b64 bf16 infer attn=sdpa": "fixed",
        "deit-s 1248px b64 bf16 infer attn=sdpa": "failing in both",
        "vim-s 224px b64 bf16 infer scan=cuda": "unchanged",
        "vim-s 736px b64 bf16 infer scan=cuda": "baseline only",
        "vim-s 1024px b64 bf16 infer scan=cuda": "now failing",
        "vim-s 1248px b64 bf16 infer scan=cuda": "current only",
    }
    assert "out of memory" in text


def test_matching_ignores_device_name_but_uses_backends(cli, tmp_path: Path) -> None:
    base = write_run(tmp_path / "b", [point("vim-s", 224, wobble(1000), scan="triton")])
    cur = write_run(tmp_path / "c", [point("vim-s", 224, wobble(1000), scan="cuda")])
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 2
    assert "nothing to compare" in result.err and "scan_backend" in result.err


@pytest.mark.parametrize("content", ["", "not,a,results\nfile,at,all\n", "\x00\x01garbage\xff"])
def test_corrupt_results_exit_2(cli, tmp_path: Path, content: str) -> None:
    good = write_run(tmp_path / "good", [point("vim-s", 224, wobble(1000))])
    bad = tmp_path / "bad" / "results.csv"
    bad.parent.mkdir()
    bad.write_text(content, encoding="latin-1")
    result = cli(["gate", "--baseline", good, "--current", bad])
    assert result.code == 2
    assert result.err.count("\n") == 1 and "Traceback" not in result.err


def test_non_numeric_throughput_exit_2(cli, tmp_path: Path) -> None:
    good = write_run(tmp_path / "good", [point("vim-s", 224, wobble(1000))])
    bad = write_run(tmp_path / "bad", [{**point("vim-s", 224, wobble(1000)), "throughput_samples": "12 x 3"}])
    result = cli(["gate", "--baseline", good, "--current", bad])
    assert result.code == 2 and "'x' is not a number" in result.err


def test_missing_inputs_and_corrupt_run_json_exit_2(cli, tmp_path: Path) -> None:
    good = write_run(tmp_path / "good", [point("vim-s", 224, wobble(1000))])
    assert "no such file" in cli(["gate", "--baseline", tmp_path / "nope", "--current", good]).err
    (tmp_path / "empty").mkdir()
    result = cli(["gate", "--baseline", tmp_path / "empty", "--current", good])
    assert result.code == 2 and "no results.csv" in result.err
    broken = write_run(tmp_path / "broken", [point("vim-s", 224, wobble(1000))])
    (broken / "run.json").write_text("{ truncated")
    result = cli(["gate", "--baseline", broken, "--current", good])
    assert result.code == 2 and "run.json" in result.err
    assert cli(["gate", "--current", good]).code == 2  # neither --baseline nor --ratio
    assert cli(["gate", "--baseline", good]).code == 2  # no --current


def test_fingerprint_mismatch_exit_2_names_fields_and_force_overrides(cli, tmp_path: Path) -> None:
    other_env = copy.deepcopy(ENV)
    other_env.update(torch="2.12.0+cu128", nvidia_driver="575.51.03")
    base = write_run(tmp_path / "b", [point("vim-s", 224, wobble(1000))])
    cur = write_run(tmp_path / "c", [point("vim-s", 224, wobble(1000, seed=5))], env=other_env)
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 2
    assert "torch: 2.11.0+cu128 (baseline) vs 2.12.0+cu128 (current)" in result.err
    assert "nvidia_driver" in result.err and "--force" in result.err and "triton" not in result.err
    forced = cli(["gate", "--baseline", base, "--current", cur, "--force"])
    assert forced.code == 0 and "--force: comparing despite" in forced.out


def test_different_gpu_in_bare_csv_exit_2(cli, tmp_path: Path) -> None:
    """A bare results.csv has no run.json: the device_name column is the fingerprint, and we say so."""
    base = write_run(tmp_path / "b", [point("vim-s", 224, wobble(1000))], env=None) / "results.csv"
    cur = write_run(tmp_path / "c", [point("vim-s", 224, wobble(1000), device_name="NVIDIA A100-SXM4-80GB")],
                    env=None) / "results.csv"
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 2 and f"gpu: {H100} (baseline) vs NVIDIA A100-SXM4-80GB (current)" in result.err
    same = write_run(tmp_path / "c2", [point("vim-s", 224, wobble(1000))], env=None) / "results.csv"
    result = cli(["gate", "--baseline", base, "--current", same])
    assert result.code == 0 and "no run.json" in result.out


def test_cpu_runs_compare_cpu_model_and_threads(cli, tmp_path: Path) -> None:
    cpu_env = {**ENV, "nvidia_driver": None, "cuda_runtime": None, "gpus_nvml": [], "gpus_torch": []}
    row = point("vim-t", 224, wobble(50), device="cpu", device_name="AMD EPYC 9654", batch=2, dtype="fp32")
    base = write_run(tmp_path / "b", [row], env=cpu_env)
    cur = write_run(tmp_path / "c", [row], env={**cpu_env, "torch_threads": 2})
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 2 and "cpu_threads: 16 (baseline) vs 2 (current)" in result.err
    # the workers' own thread count (CSV "threads") wins over the parent process's
    base = write_run(tmp_path / "b1", [{**row, "threads": 1}], env=cpu_env)
    cur = write_run(tmp_path / "c1", [{**row, "threads": 2}], env=cpu_env)
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 2 and "cpu_threads: 1 (baseline) vs 2 (current)" in result.err
    assert cli(["gate", "--baseline", base, "--current", base]).code == 0


def test_cpu_runs_at_different_simd_levels_exit_2(cli, tmp_path: Path) -> None:
    """AVX2 and AVX-512 CPU numbers do not compare; a run from before the field is unknown, not an error."""
    cpu_env = {**ENV, "nvidia_driver": None, "cuda_runtime": None, "gpus_nvml": [], "gpus_torch": []}
    row = point("vim-t", 224, wobble(50), device="cpu", device_name="AMD EPYC 9654", batch=1, dtype="fp32")
    base = write_run(tmp_path / "b", [{**row, "cpu_capability": "AVX2"}],
                     env={**cpu_env, "cpu_capability": "AVX2"})
    cur = write_run(tmp_path / "c", [{**row, "cpu_capability": "AVX512"}],
                    env={**cpu_env, "cpu_capability": "AVX512"})
    result = cli(["gate", "--baseline", base, "--current", cur])
    assert result.code == 2 and "cpu_capability: AVX2 (baseline) vs AVX512 (current)" in result.err
    old = write_run(tmp_path / "old", [row], env=cpu_env)  # neither run.json nor rows know the level
    result = cli(["gate", "--baseline", old, "--current", cur])
    assert result.code == 0 and "cpu_capability" in result.out


@pytest.mark.parametrize("value", ["-5%", "100%", "1.5", "abc", "nan"])
def test_nonsense_threshold_exit_2(cli, tmp_path: Path, value: str) -> None:
    run = write_run(tmp_path / "r", [point("vim-s", 224, wobble(1000))])
    result = cli(["gate", "--baseline", run, "--current", run, "--max-regression", value])
    assert result.code == 2 and "--max-regression" in result.err


@pytest.mark.parametrize("alpha", ["0", "1", "-0.1"])
def test_nonsense_alpha_exit_2(cli, tmp_path: Path, alpha: str) -> None:
    run = write_run(tmp_path / "r", [point("vim-s", 224, wobble(1000))])
    assert cli(["gate", "--baseline", run, "--current", run, "--alpha", alpha]).code == 2


def test_duplicate_points_keep_the_last_ok_measurement(cli, tmp_path: Path) -> None:
    base = write_run(tmp_path / "b", [point("vim-s", 224, wobble(1000))])
    cur = write_run(tmp_path / "c", [point("vim-s", 224, wobble(700)),
                                     point("vim-s", 224, wobble(1000, seed=3)),
                                     point("vim-s", 224, None, "error", error="retry crashed")])
    code, report, _ = gate_json(cli, tmp_path, "--baseline", base, "--current", cur)
    assert code == 0 and report["points"][0]["verdict"] == "unchanged"
    assert any("repeated point" in note for note in report["notes"])


def test_junit_and_step_summary(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    base = write_run(tmp_path / "b", [point("vim-s", 224, wobble(1000)), point("deit-s", 224, wobble(900)),
                                      point("vim-s", 736, wobble(90))])
    cur = write_run(tmp_path / "c", [point("vim-s", 224, wobble(700)),
                                     point("deit-s", 224, wobble(900, seed=4))])
    junit = tmp_path / "out" / "gate.xml"
    result = cli(["gate", "--baseline", base, "--current", cur, "--junit", junit])
    assert result.code == 1
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    [failure] = suite.iter("failure")
    assert "vim-s 224px" in failure.get("message", "") and "-30.0%" in failure.get("message", "")
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, never overwritten
    assert "❌ vimbench gate: FAIL" in text and "### Regressions" in text and "| -30.0% |" in text
    cli(["gate", "--baseline", base, "--current", cur])
    assert summary.read_text().count("vimbench gate:") == 2


@pytest.mark.parametrize("bad", [["--max-regression", "abc"], ["--ratio", "vim-t/deit-t"], []])
def test_unusable_input_still_writes_machine_readable_outputs(cli, tmp_path: Path, bad: list[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    junit, out = tmp_path / "gate.xml", tmp_path / "gate.json"
    result = cli(["gate", "--baseline", tmp_path / "nope", "--current", tmp_path / "nope",
                  "--junit", junit, "--json", out, *bad])
    assert result.code == 2 and result.err.startswith("error: ")
    assert json.loads(out.read_text())["outcome"] == "unusable input"
    assert ET.parse(junit).getroot().get("errors") == "1"
    assert "⚠️ vimbench gate: unusable input: " in (tmp_path / "summary.md").read_text()


def test_help_explains_the_small_sample_rule(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per paragraph: nothing split by the help box
    result = cli(["gate", "--help"])
    text = " ".join(result.out.split())
    assert result.code == 0
    assert "threshold alone decides" in text and "vim-t[scan=cpu]/vim-t[scan=reference]@224>=3" in text


@pytest.mark.parametrize(
    ("metric", "column", "base_value", "cur_value", "verdict", "code"),
    [
        ("memory", "peak_mem_mib", 1000.0, 1200.0, "regression", 1),  # lower is better: a rise regresses
        ("memory", "peak_mem_mib", 1000.0, 800.0, "improved", 0),
        ("latency", "latency_ms", 10.0, 10.2, "unchanged", 0),
        ("latency", "latency_ms", 10.0, 13.0, "regression", 1),
        ("throughput", "throughput", 1000.0, 1200.0, "improved", 0),
    ],
)
def test_gate_on_another_metric(cli, tmp_path: Path, metric, column, base_value, cur_value, verdict,
                                code) -> None:
    """--metric gates any gate-eligible registered metric in its own direction; without per-repeat samples
    (memory, latency here) the threshold alone decides."""
    def run(name: str, value: float) -> Path:
        row = point("vim-s", 224, wobble(1000, seed=1))
        if column == "throughput":
            row.update(throughput=value, throughput_samples=None)
        else:
            row[column] = value
        return write_run(tmp_path / name, [row])

    base, cur = run("base", base_value), run("cur", cur_value)
    args = ("--baseline", base, "--current", cur, "--metric", metric)
    result_code, report, text = gate_json(cli, tmp_path, *args)
    assert result_code == code, text
    assert report["metric"] == metric
    (only,) = report["points"]
    assert only["verdict"] == verdict
    assert only[f"baseline_{column}"] == pytest.approx(base_value)
    assert only["change"] == pytest.approx(cur_value / base_value - 1)


def test_gate_rejects_unknown_metric_in_one_line(cli, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [point("vim-s", 224, wobble(1000))])
    result = cli(["gate", "--baseline", run, "--current", run, "--metric", "bogus"])
    assert result.code == 2 and "unknown metric 'bogus'" in result.err and "throughput" in result.err
