"""`vimbench reproduce fig1` with the sweep engine replaced by a quick fake: configs, report, verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vimbench import reproduce
from vimbench.measure.plan import SweepConfig
from vimbench.report.paper import MEASURED_RESOLUTIONS
from vimbench.testing.plot_runs import fig1_rows, write_run


def test_fig1_configs_both_runs_deit_twice_into_one_folder(tmp_path):
    configs = reproduce.fig1_configs(tmp_path, "cpu", 2, "bf16", "both", scan_backend="reference", iters=3)
    assert [(c.models, c.attn_backend, c.resume) for c in configs] == [
        (["vim-t", "deit-t"], "math", False),
        (["deit-t"], "sdpa", True),
    ]
    for config in configs:
        assert config.resolutions == list(MEASURED_RESOLUTIONS) == [512, 640, 736, 1024, 1248]
        assert (config.out_dir, config.batch_size, config.dtype) == (tmp_path, 2, "bf16")
        assert (config.device, config.scan_backend, config.iters) == ("cpu", "reference", 3)
        assert (config.mode, config.plots) == ("infer", False)
    single = reproduce.fig1_configs(tmp_path, attn_backend="sdpa")
    assert len(single) == 1 and single[0].attn_backend == "sdpa"
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        reproduce.fig1_configs(tmp_path, attn_backend="flash")


@pytest.fixture
def fake_sweep(monkeypatch):
    """Stands in for run_sweep: writes the config's rows at once (DeiT math OOM at 1248), records calls."""
    calls: list[SweepConfig] = []

    def run(config: SweepConfig) -> Path:
        calls.append(config)
        rows = fig1_rows(config.attn_backend, config.batch_size, models=tuple(config.models),
                         resolutions=tuple(config.resolutions))  # fmt: skip
        return write_run(Path(config.out_dir), rows, append=config.resume)

    monkeypatch.setattr(reproduce, "run_sweep", run)
    return calls


def test_reproduce_fig1_cli_writes_report_and_figures(cli, tmp_path, fake_sweep):
    out = tmp_path / "fig1"
    result = cli(["reproduce", "fig1", "--device", "cpu", "--batch-size", "2", "--attn-backend", "both",
                  "--out", out])  # fmt: skip
    assert result.code == 0, result.err
    assert "738 px is off the 16-pixel patch grid; measured at 736 px" in result.out
    assert [c.attn_backend for c in fake_sweep] == ["math", "sdpa"]
    for name in ("throughput", "memory", "speedup"):
        assert (out / f"{name}.png").stat().st_size > 10_000 and (out / f"{name}.svg").exists()
    assert "paper Vim-Ti (Fig. 1)" in (out / "throughput.svg").read_text()
    record = json.loads((out / "reproduce.json").read_text())
    assert [s["attn_backend"] for s in record["sweeps"]] == ["math", "sdpa"]

    text = (out / "report.md").read_text()
    lines = text.splitlines()
    # ours beside the paper's, per resolution; 738 measured at 736
    throughput_736 = next(ln for ln in lines if ln.startswith("| 738 | 736 | 2117 |"))
    # scale (736/512)^2: Vim 40/scale = 19.4 img/s; DeiT 60/scale^1.5: sdpa 20.2, math a third; paper 117.5
    assert throughput_736 == "| 738 | 736 | 2117 | 19.4 | 118 | 6.73 | 20.2 | 112 |"
    memory_1248 = next(ln for ln in lines if ln.startswith("| 1248 | 1248 | 6085 |") and "GiB" in ln)
    assert "| OOM |" in memory_1248 and "11.14 GB" in memory_1248
    # speedup and saving per DeiT attention backend beside the paper's
    ratio_1024 = next(ln for ln in lines if ln.startswith("| 1024 | 4.00x | 1.33x | 2.19x |"))
    assert "79.7%" in ratio_1024
    ratio_1248 = next(ln for ln in lines if ln.startswith("| 1248 | DeiT OOM | 1.63x | 2.82x |"))
    assert "DeiT OOM (headline: 86.8%)" in ratio_1248
    # the headline and how the paper's 86.8% relates to its own OOM
    assert "1 - 11.14 GB / 84.4 GB" in text and "more than an 80 GB GPU holds" in text
    # verdicts in plain language, per attention backend, and the kernel dependence
    assert "With DeiT attention **math**" in text and "DeiT-Ti does not fit at all" in text
    assert "With DeiT attention **sdpa**" in text and "1.63x, but **short of 2.8x**" in text
    assert "depends on the attention kernel (only with attn math)" in text
    assert "memory is process RSS, not GPU memory" in text
    # every setting used
    for setting in ("| batch size | 2 |", "| DeiT attention backend | math, sdpa |", "| torch | 2.13.0+cpu |",
                    "| TF32 matmul | False |", "| device name | Test CPU |", "| memory source | rss |"):
        assert setting in text, setting  # fmt: skip
    assert "Command:\n\n```\n" in text  # the recorded command line (pytest's argv here)
    assert "| deit-t | 1248 | 2 | fp32 | - | math | oom |" in text


def test_reproduce_from_dir_rewrites_report(cli, tmp_path):
    run = write_run(tmp_path / "run", fig1_rows("sdpa", deit_oom_at=None))
    result = cli(["reproduce", "fig1", "--from", run])
    assert result.code == 0, result.err
    text = (run / "report.md").read_text()
    assert "| 1248 | 1.63x | 2.82x |" in text and "short of 2.8x" in text
    assert (run / "speedup.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--attn-backend", "flash"], "unknown attention backend 'flash'"),
        (["--dtype", "fp64"], "unknown dtype 'fp64'"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_reproduce_bad_input_is_one_line(cli, tmp_path, fake_sweep, args, message):
    result = cli(["reproduce", "fig1", "--device", "cpu", "--out", tmp_path / "x", *args])
    assert result.code == 2, result.out
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not fake_sweep and not (tmp_path / "x").exists()


def test_verdict_when_both_ran_at_1248(tmp_path):
    from vimbench.report.fig1_report import write_fig1_report

    rows = fig1_rows("math", deit_oom_at=None) + fig1_rows("sdpa", models=("deit-t",), deit_oom_at=None)
    text = write_fig1_report(write_run(tmp_path / "run", rows)).read_text()
    # math: Vim 40/scale vs DeiT 20/scale^1.5 -> 2 * 1248/512 = 4.88x; sdpa a third of that
    assert "Vim-Ti is 4.88x faster: the 2.8x claim **holds**" in text
    assert "Vim-Ti is faster, 1.63x, but **short of 2.8x**" in text
    assert "at 1248 px the speedup is 4.88x with attn math, 1.63x with attn sdpa" in text
    assert "Vim-Ti is faster from 512 px on" in text and "Vim-Ti is faster from 1024 px on" in text
    assert "## Figures" not in text  # none drawn for this run: no dangling links
