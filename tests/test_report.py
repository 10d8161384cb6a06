"""`vimbench report RUN_DIR`: environment, knobs, one table per configuration, errors, embedded plots."""

from __future__ import annotations

import re

from vimbench.report.markdown import fmt_num, md_table, write_run_report
from vimbench.testing.plot_runs import FAKE_ENV, fig1_rows, make_row, write_run


def _links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_report_of_a_run_with_failures(tmp_path):
    rows = [*fig1_rows("math"), make_row("vim-t", 1024, "error", error="RuntimeError: boom | bad\nTraceback")]
    rows = [r for r in rows if not (r["model"] == "vim-t" and r["img_size"] == 1024 and r["status"] == "ok")]
    run = write_run(tmp_path / "run", rows)
    path = write_run_report(run)
    text = path.read_text()
    assert path == run / "run-report.md"
    # environment and knobs from run.json
    assert "| torch | 2.13.0+cpu |" in text and "| matmul_allow_tf32 | False |" in text
    assert "vimbench sweep --device cpu" in text and "| models | vim-t, deit-t |" in text
    # one table per configuration, with the numbers of the CSV
    assert "### deit-t, bs 1, fp32, infer, attn math, eager, contiguous, Test CPU" in text
    assert "### vim-t, bs 1, fp32, infer, scan cpu, eager, contiguous, Test CPU" in text
    vim_512 = next(line for line in text.splitlines() if line.startswith("| 512 | 1,025 | ok | 40.0 |"))
    assert "23.8 - 27.5" in vim_512  # p10 - p90 latency: 25 ms * 0.95 and * 1.1
    assert "| yes |" in vim_512 and "500 (rss)" in vim_512  # noisy flag, memory with its source
    assert "Memory sources: `rss`: process RSS" in text
    # failed points listed with the first line of their error, pipes escaped
    assert "| vim-t | 1024 | 1 | fp32 | cpu | - | error | RuntimeError: boom \\| bad |" in text
    assert "| deit-t | 1248 | 1 | fp32 | - | math | oom | out of memory |" in text
    # Vim vs DeiT and the plots, generated because they were missing
    assert "### vim-t (scan cpu) vs deit-t (attn math)" in text
    links = _links(text)
    assert links == ["throughput.png", "memory.png", "speedup.png"]
    assert all((run / link).stat().st_size > 10_000 for link in links)


def test_report_environment_names_the_simd_level(tmp_path):
    flags = {"avx2": True, "fma": True, "avx512f": False}
    env = {**FAKE_ENV, "cpu_capability": "AVX2", "cpu_simd_flags": flags}
    meta = {"argv": ["vimbench", "sweep"], "config": {}, "environment": env}
    run = write_run(tmp_path / "run", [make_row("vim-t", 224, "ok", 5.0, 300.0)], meta=meta)
    text = write_run_report(run).read_text()
    assert "| cpu_capability | AVX2 |" in text
    assert "| cpu_simd_flags | avx2=True, fma=True, avx512f=False |" in text


def test_report_elsewhere_links_back_and_tolerates_missing_run_json(cli, tmp_path):
    run = write_run(tmp_path / "runs" / "r1", [make_row("vim-t", 224, "ok", 5.0, 300.0)])
    (run / "run.json").unlink()
    out = tmp_path / "reports" / "r1.md"
    result = cli(["report", run, "--out", out])
    assert result.code == 0, result.err
    text = out.read_text()
    assert "Environment: not recorded" in text and "Command: not recorded" in text
    assert "None: every point has status ok." in text
    links = _links(text)
    assert links and all((out.parent / link).resolve().is_file() for link in links)
    assert links[0] == "../runs/r1/throughput.png"


def test_report_cli_bad_dir(cli, tmp_path):
    result = cli(["report", tmp_path / "nope"])
    assert result.code == 2 and "does not exist" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_markdown_helpers():
    assert md_table(("a", "b"), [(1, "x|y")]) == "| a | b |\n|---|---|\n| 1 | x\\|y |"
    assert [fmt_num(v) for v in (1234.5, 56.78, 1.234, float("nan"), None, "")] == [
        "1,234", "56.8", "1.23", "-", "-", "-",
    ]  # fmt: skip
