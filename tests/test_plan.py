"""Resolution specs, Point JSON, config validation and the plan (no subprocess, no model run)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from vimbench.measure.plan import (
    CPU_DEFAULTS,
    Point,
    SweepConfig,
    build_plan,
    parse_resolutions,
    validate_config,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("224..1248", [224, 352, 480, 608, 736, 864, 992, 1120, 1248]),
        ("224..512:64", [224, 288, 352, 416, 480, 512]),  # the range always ends at B
        ("224", [224]),
        ("512, 224,224", [224, 512]),
        ("32..64:16,224,1024..1248", [32, 48, 64, 224, 1024, 1152, 1248]),
        ("224..224", [224]),
    ],
)
def test_parse_resolutions(spec: str, expected: list[int]) -> None:
    assert parse_resolutions(spec) == expected


def test_parse_resolutions_other_patch() -> None:
    assert parse_resolutions("8..32:8", patch=8) == [8, 16, 24, 32]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("230", "nearest valid: 224 or 240"),
        ("8", "nearest valid: 16"),
        ("1248..224", "reversed resolution range"),
        ("224..x", "malformed resolution"),
        ("224...512", "malformed resolution"),
        ("-224", "malformed resolution"),
        ("224..512:0", "step must be positive"),
        ("224..512:24", "not a multiple of the 16-pixel patch"),
        ("224..1000", "1000 is not a multiple"),
        ("", "no resolution given"),
        ("224,,512", "empty item"),
    ],
)
def test_parse_resolutions_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_resolutions(spec)
    assert "\n" not in str(info.value)


def test_point_json_round_trip() -> None:
    point = Point(
        "vim-s",
        512,
        batch_size=4,
        dtype="bf16",
        device="cuda:1",
        mode="train",
        options={"scan_backend": "triton"},
        compile=True,
        channels_last=True,
        warmup=3,
        iters=7,
        min_time_s=0.25,
        repeats=2,
        timeout_s=60,
        threads=4,
        nvml_interval_ms=2.0,
    )
    again = Point.from_json(point.to_json())
    assert again == point
    assert again.option("scan_backend") == "triton" and again.option("attn_backend") == "auto"
    assert dataclasses.asdict(again)["compile"] is True
    with pytest.raises(ValueError, match="unknown Point fields: bogus"):
        Point.from_json('{"model": "vim-t", "img_size": 224, "bogus": 1}')


def test_point_json_of_the_flat_backend_fields_still_loads() -> None:
    """Points written before the options map (scan_backend / attn_backend as fields) load into it."""
    legacy = '{"model": "vim-t", "img_size": 224, "scan_backend": "cpu", "attn_backend": "sdpa"}'
    point = Point.from_json(legacy)
    assert point.options == {"scan_backend": "cpu", "attn_backend": "sdpa"}


def test_build_plan_cpu_defaults() -> None:
    points = build_plan(SweepConfig(models=["deit-ti", "vim-t"], resolutions=[64, 32], device="cpu"))
    assert [(p.model, p.img_size) for p in points] == [
        ("deit-t", 32),
        ("deit-t", 64),
        ("vim-t", 32),
        ("vim-t", 64),
    ]
    first = points[0]
    assert (first.warmup, first.iters, first.min_time_s, first.repeats) == dataclasses.astuple(CPU_DEFAULTS)
    assert first.device == "cpu" and first.threads >= 1


def test_build_plan_defaults_when_no_options() -> None:
    """`vimbench sweep` with no options on a CPU machine: vim-t and deit-t at the quick CPU resolutions."""
    config = validate_config(SweepConfig(device="cpu"))
    assert config.models == ["vim-t", "deit-t"]
    assert config.resolutions == [224, 320, 448]


def test_build_plan_explicit_knobs_win() -> None:
    points = build_plan(
        SweepConfig(
            models=["deit-t"],
            resolutions=[32],
            device="cpu",
            warmup=0,
            iters=5,
            min_time_s=0.0,
            repeats=7,
            threads=1,
        )
    )
    assert (
        points[0].warmup,
        points[0].iters,
        points[0].min_time_s,
        points[0].repeats,
        points[0].threads,
    ) == (0, 5, 0.0, 7, 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": ["resnet50"]}, "unknown model 'resnet50'; known: vim-t"),
        ({"batch_size": 0}, "--batch-size must be positive"),
        ({"dtype": "fp8"}, "unknown dtype"),
        ({"mode": "eval"}, "unknown mode"),
        ({"device": "tpu"}, "unknown device"),
        ({"iters": 0}, "--iters must be >= 1"),
        ({"repeats": 0}, "--repeats must be >= 1"),
        ({"min_time_s": -1.0}, "--min-time must be a finite number of seconds >= 0"),
        ({"compile": True, "warmup": 0}, "--compile needs --warmup >= 1"),
        ({"timeout_s": 0}, "--timeout must be a finite number of seconds > 0"),
        ({"scan_backend": "nope"}, "unknown scan backend"),
        ({"models": ["deit-t"], "attn_backend": "nope"}, "unknown attention backend"),
        ({"models": ["vim-t-stride8"], "resolutions": [36]}, "nearest valid"),
    ],
)
def test_validate_config_errors(changes: dict, message: str) -> None:
    config = dataclasses.replace(SweepConfig(models=["vim-t"], resolutions=[32], device="cpu"), **changes)
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_cuda_requested_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        validate_config(SweepConfig(models=["vim-t"], resolutions=[32], device="cuda:0"))


def test_point_backend_keywords_fold_into_options() -> None:
    """Point(..., scan_backend=...) as before the options map; reading it back and replace() agree."""
    point = Point("vim-t", 32, scan_backend="cpu")
    assert point.options == {"scan_backend": "cpu"}
    assert (point.scan_backend, point.attn_backend) == ("cpu", "auto")
    assert dataclasses.replace(point, img_size=64).options == {"scan_backend": "cpu"}
    assert dataclasses.replace(point, scan_backend="reference").option("scan_backend") == "reference"
    assert point == Point("vim-t", 32, options={"scan_backend": "cpu"})
    assert "scan_backend" not in json.loads(point.to_json())
