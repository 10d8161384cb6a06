"""Ratio gates within one run: syntax, selectors, pairing, OOM semantics, bounds, and both outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vimbench.gate.inputs import GateInputError
from vimbench.gate.ratio import parse_ratio_gate
from vimbench.testing.gate_runs import point, wobble, write_run


def _cpu(model: str, img_size: int, samples: list[float] | None, status: str = "ok", **kw) -> dict:
    return point(model, img_size, samples, status, device="cpu", device_name="AMD EPYC", batch=2,
                 dtype="fp32", **kw)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """One CPU run: vim-t with two scan backends, deit-t with two attention backends, at two sizes."""
    return write_run(tmp_path / "run", [
        _cpu("vim-t", 224, wobble(40, seed=1), scan="cpu"),
        _cpu("vim-t", 224, wobble(4, seed=2), scan="reference"),
        _cpu("deit-t", 224, wobble(100, seed=3), attn="sdpa"),
        _cpu("deit-t", 224, wobble(90, seed=4), attn="math"),
        _cpu("vim-t", 1248, wobble(3.0, seed=5), scan="cpu"),
        _cpu("deit-t", 1248, None, "oom", attn="sdpa"),
        _cpu("deit-t", 1248, wobble(1.0, seed=6), attn="math"),
    ])


def ratio_report(cli, tmp_path: Path, *args: str) -> tuple[int, dict, str]:
    out = tmp_path / "ratios.json"
    result = cli(["gate", *args, "--json", out])
    report = json.loads(out.read_text())
    return result.code, report, result.out + result.err


def test_parse_full_syntax() -> None:
    gate = parse_ratio_gate(" vim-t[scan=cpu, batch=2]/vim-t[scan=reference] @ 224px >= 3 ")
    assert (gate.num.model, gate.num.selectors) == ("vim-t", {"scan_backend": "cpu", "batch_size": "2"})
    assert (gate.den.model, gate.den.selectors) == ("vim-t", {"scan_backend": "reference"})
    assert (gate.img_size, gate.op, gate.value) == (224, ">=", 3.0)
    assert str(gate.num) == "vim-t[scan=cpu,batch=2]"
    assert parse_ratio_gate("deit-t/vim-t@1248<0.5").holds(0.4)


@pytest.mark.parametrize("text", ["vim-t/deit-t>=2", "vim-t/deit-t@1248=2", "vim-t@1248>=2",
                                  "vim-t/deit-t@x>=2", "vim-t[scan]/deit-t@224>=1",
                                  "vim-t[color=red]/deit-t@224>=1",
                                  "vim-t/deit-t@224>=0", "vim-t/deit-t@224>=two"])
def test_bad_syntax_exit_2_with_expected_form(cli, run: Path, text: str) -> None:
    result = cli(["gate", "--current", run, "--ratio", text])
    assert result.code == 2
    assert "NUM/DEN@RES OP VALUE" in result.err or "selector" in result.err or "positive" in result.err
    with pytest.raises(GateInputError):
        parse_ratio_gate(text)


def test_scan_backend_ratio_both_ways(cli, tmp_path: Path, run: Path) -> None:
    code, report, _ = ratio_report(cli, tmp_path, "--current", run,
                                   "--ratio", "vim-t[scan=cpu]/vim-t[scan=reference]@224>=3")
    assert code == 0
    [check] = report["ratios"]
    assert check["ratio"] == pytest.approx(10, rel=0.05) and check["verdict"] == "pass"
    lo = min(wobble(40, seed=1)) / max(wobble(4, seed=2))  # 5 samples a side: min/max order statistics
    assert check["bound"] == pytest.approx(lo)
    code, report, text = ratio_report(cli, tmp_path, "--current", run,
                                      "--ratio", "vim-t[scan=cpu]/vim-t[scan=reference]@224>=12")
    assert code == 1 and report["ratios"][0]["failed"] and "FAIL" in text


def test_vim_vs_deit_pairs_across_families(cli, tmp_path: Path, run: Path) -> None:
    """No selector on deit-t: one check per attention backend, all must hold."""
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "deit-t/vim-t[scan=cpu]@224>=2")
    assert code == 0
    assert sorted(r["ratio"] for r in report["ratios"]) == pytest.approx([90 / 40, 100 / 40], rel=0.05)
    assert {r["context"] for r in report["ratios"]} == {
        "b2 fp32 infer cpu (AMD EPYC): attn=sdpa / scan=cpu",
        "b2 fp32 infer cpu (AMD EPYC): attn=math / scan=cpu",
    }
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "deit-t/vim-t[scan=cpu]@224>=2.4")
    assert code == 1 and [r["verdict"] for r in report["ratios"]].count("fail") == 1
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio", "deit-t/vim-t@224>=2")
    assert code == 0 and len(report["ratios"]) == 4  # every attention backend x every scan backend


def test_attention_backend_ratio_and_ratio_only_mode(cli, tmp_path: Path, run: Path) -> None:
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "deit-t[attn=sdpa]/deit-t[attn=math]@224>=1",
                                   "--ratio", "vim-t[scan=cpu]/deit-t@224<1")
    assert code == 0 and report["points"] == [] and len(report["ratios"]) == 3


def test_oom_counts_as_zero_throughput(cli, tmp_path: Path, run: Path) -> None:
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "vim-t/deit-t[attn=sdpa]@1248>=2")
    assert code == 0 and report["ratios"][0]["ratio"] == "inf"
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "deit-t[attn=sdpa]/vim-t@1248>=0.5")
    assert code == 1 and report["ratios"][0]["ratio"] == 0
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "vim-t/deit-t[attn=math]@1248>=2")
    assert code == 0 and report["ratios"][0]["ratio"] == pytest.approx(3, rel=0.05)


def test_error_status_cannot_pass(cli, tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", [_cpu("vim-t", 224, wobble(40)),
                                     _cpu("deit-t", 224, None, "error", error="RuntimeError: boom")])
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio", "vim-t/deit-t@224>=0.1")
    detail = report["ratios"][0]["detail"]
    assert code == 1 and "cannot evaluate" in detail and "boom" in detail


def test_marginal_pass_when_the_bound_misses(cli, tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", [_cpu("vim-t", 224, [20, 21, 22, 23, 30], scan="cpu"),
                                     _cpu("vim-t", 224, [10, 10.5, 11, 11.5, 12], scan="reference")])
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "vim-t[scan=cpu]/vim-t[scan=reference]@224>=1.9")
    [check] = report["ratios"]
    assert code == 0 and check["verdict"] == "pass (marginal)"
    assert check["ratio"] == pytest.approx(2.0) and check["bound"] == pytest.approx(20 / 12)


def test_few_samples_no_bound(cli, tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", [_cpu("vim-t", 224, [20, 21], scan="cpu"),
                                     _cpu("vim-t", 224, [10, 11], scan="reference")])
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "vim-t[scan=cpu]/vim-t[scan=reference]@224>=1.5")
    assert code == 0 and report["ratios"][0]["bound"] is None


@pytest.mark.parametrize("text,message", [("vim-s/deit-t@224>=1", "no vim-s points"),
                                          ("vim-t/deit-t@512>=1", "no vim-t point at 512px"),
                                          ("vim-t[batch=4]/deit-t@224>=1", "no vim-t[batch=4] point")])
def test_missing_points_exit_2(cli, run: Path, text: str, message: str) -> None:
    result = cli(["gate", "--current", run, "--ratio", text])
    assert result.code == 2 and message in result.err


def test_unpairable_configurations_exit_2(cli, tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", [_cpu("vim-t", 224, wobble(40)), {**_cpu("deit-t", 224, wobble(90)),
                                                                       "batch_size": 4}])
    result = cli(["gate", "--current", run, "--ratio", "vim-t/deit-t@224>=0.1"])
    assert result.code == 2 and "share no configuration" in result.err


def test_ratio_gates_run_next_to_the_baseline_comparison(cli, tmp_path: Path, run: Path) -> None:
    code, report, _ = ratio_report(cli, tmp_path, "--baseline", run, "--current", run,
                                   "--ratio", "vim-t[scan=cpu]/vim-t[scan=reference]@224>=100")
    assert code == 1
    assert {p["verdict"] for p in report["points"]} == {"unchanged", "failing in both"}
    assert report["ratios"][0]["failed"]


def test_selectors_can_split_any_knob(cli, tmp_path: Path) -> None:
    """Batch 4 vs batch 2 of the same model: the pair names both batch sizes."""
    run = write_run(tmp_path / "r", [_cpu("vim-t", 224, wobble(40)), {**_cpu("vim-t", 224, wobble(60)),
                                                                       "batch_size": 4}])
    code, report, _ = ratio_report(cli, tmp_path, "--current", run, "--ratio",
                                   "vim-t[batch=4]/vim-t[batch=2]@224>1.2")
    [check] = report["ratios"]
    assert code == 0 and check["ratio"] == pytest.approx(1.5, rel=0.03)
    assert check["context"].startswith("b4/2 fp32 infer cpu")


def test_timm_model_names_parse_and_gate(cli, tmp_path: Path) -> None:
    """`timm:NAME` sides: the colon is part of the model name; no timm import is needed to gate its rows."""
    gate = parse_ratio_gate("vim-t[scan=cpu]/timm:convnext_tiny[attn=-]@224>=0.5")
    assert (gate.den.model, gate.den.selectors) == ("timm:convnext_tiny", {"attn_backend": "-"})
    timm_row = _cpu("deit-t", 224, wobble(20, seed=7), attn="-")
    timm_row.update(model="timm:convnext_tiny", family="timm")
    run = write_run(tmp_path / "run", [_cpu("vim-t", 224, wobble(40, seed=1), scan="cpu"), timm_row])
    code, report, _ = ratio_report(cli, tmp_path, "--current", run,
                                   "--ratio", "vim-t/timm:convnext_tiny@224>=1.5")
    assert code == 0 and [r["ratio"] for r in report["ratios"]] == [pytest.approx(2, rel=0.05)]
