"""`reproduce fig1 --predict`: the fit recovers a known setting; the report says what it means for 86.8%."""

from __future__ import annotations

import json

import pytest

from vimbench.memory import fig1_fit
from vimbench.report import paper

TRUE_BATCH, TRUE_OVERHEAD_MIB = 64, 512.0


def _synthetic_reserved_gib(query) -> float:
    """Reserved memory that reproduces the paper exactly at batch 64 + 512 MiB overhead (math, fp32, ours)."""
    point = paper.paper_point(query.model, query.img_size)
    target = point["memory_gb"] if point["memory_gb"] is not None else 100.0
    wrong = query.dtype != "fp32" or query.vim_variant != "ours" or query.attn_backend == "sdpa"
    per_image = (target - TRUE_OVERHEAD_MIB / 1024) / TRUE_BATCH * (1.3 if wrong else 1.0)
    return per_image * query.batch_size


@pytest.fixture
def synthetic(monkeypatch):
    monkeypatch.setattr(fig1_fit, "_reserved_gib", _synthetic_reserved_gib)


RESOLUTIONS = list(paper.MEASURED_RESOLUTIONS)
PAPER_GB = {m: [p["memory_gb"] for p in paper.paper_points(m)] for m in fig1_fit.MODELS}


def test_fit_recovers_batch_and_overhead(synthetic):
    fits = fig1_fit.fit_fig1(RESOLUTIONS, PAPER_GB)
    best = fits[0]
    assert (best.batch_size, best.overhead_mib) == (TRUE_BATCH, TRUE_OVERHEAD_MIB)
    setting = best.setting
    assert (setting.dtype, setting.attn_backend, setting.vim_variant) == ("fp32", "math", "ours")
    assert best.mean_abs_error_pct == pytest.approx(0.0, abs=1e-6)
    assert len(fits) == 8 and fits[-1].mean_abs_error_pct >= best.mean_abs_error_pct
    for model in ("vim-t", "deit-t"):
        paper_gb = [p["memory_gb"] for p in paper.paper_points(model)]
        for ours, theirs in zip(best.predicted_gib[model], paper_gb, strict=True):
            if theirs is not None:
                assert ours == pytest.approx(theirs, rel=1e-6)


def test_statement_names_the_need_and_the_smaller_batch(synthetic):
    best = fig1_fit.fit_fig1(RESOLUTIONS, PAPER_GB, exact_top=1)[0]
    text = fig1_fit.headline_statement(best, paper.implied_deit_memory_gb())
    assert "DeiT-Ti at 1248 px would need 100.0 GiB" in text
    assert "consistent with the paper's OOM" in text  # 100 GiB > 80 GiB
    assert "84.4 GB" in text  # what 86.8% implies
    fit_batch = int((80 - 0.5) / ((100 - 0.5) / 64))
    assert f"At batch {fit_batch} or less" in text


def test_cli_predict_only_writes_report_and_figure(cli, synthetic, tmp_path):
    result = cli(["reproduce", "fig1", "--predict", "--out", tmp_path / "pred"])
    assert result.code == 0, result.err
    data = json.loads((tmp_path / "pred" / "fig1_predicted.json").read_text())
    assert data["fits"][0]["batch_size"] == TRUE_BATCH
    report = (tmp_path / "pred" / "report.md").read_text()
    assert "Best fit: **fp32, DeiT math, Vim ours, batch 64, overhead 512 MiB**" in report
    assert "What it says about 86.8%" in report
    assert (tmp_path / "pred" / "memory-predicted.png").stat().st_size > 0


def test_from_measured_run_gains_prediction_section_and_curves(cli, synthetic, tmp_path):
    from vimbench.testing.plot_runs import fig1_rows, write_run

    run = write_run(tmp_path / "fig1", fig1_rows("math", 2))
    result = cli(["reproduce", "fig1", "--from", run, "--predict"])
    assert result.code == 0, result.err
    report = (run / "report.md").read_text()
    assert "## Predicted memory (no GPU): which settings reproduce Fig. 1?" in report
    assert "## Memory: ours beside the paper's" in report  # the measured report is still there
    assert "DeiT-Ti predicted (fp32, DeiT math, Vim ours, batch 64" in (run / "memory.svg").read_text()
