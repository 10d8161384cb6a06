"""The CLI skeleton: --version, env, models, and one-line exit-2 errors."""

from __future__ import annotations

import io
import json

import pandas as pd

import vimbench


def test_version(cli):
    result = cli(["--version"])
    assert result.code == 0 and result.out.strip() == f"vimbench {vimbench.__version__}"


def test_env_json_has_the_fields_run_json_records(cli):
    result = cli(["env", "--json"])
    assert result.code == 0
    info = json.loads(result.out)
    keys = ("python", "torch", "triton", "cuda_runtime", "cpu", "gpus_nvml", "nvidia_driver", "precision")
    for key in keys:
        assert key in info
    assert "matmul_allow_tf32" in info["precision"]


def test_env_table_works_without_gpu(cli):
    result = cli(["env"])
    assert result.code == 0 and "torch" in result.out


def test_models_csv(cli):
    result = cli(["models", "--res", "1248", "--format", "csv"])
    assert result.code == 0
    df = pd.read_csv(io.StringIO(result.out)).set_index("name")
    assert df.loc["vim-t", "tokens"] == 6085 and df.loc["vim-t-stride8", "tokens"] == 155 * 155 + 1
    assert df.loc["deit-t", "gflops"] > df.loc["vim-t", "gflops"] * 4  # quadratic attention at 1248


def test_models_json_at_224(cli):
    rows = {r["name"]: r for r in json.loads(cli(["models", "--format", "json"]).out)}
    assert rows["vim-s"]["params"] == 25_796_584
    assert rows["deit-t"]["gflops"] == 2.507  # 2 x 1.254 GMACs (timm's 1.3 G)


def test_models_help_says_flops_not_macs(cli):
    result = cli(["models", "--help"])
    assert result.code == 0 and "MACs" in result.out


def test_bad_inputs_are_one_line_exit_2(cli):
    bad = (["models", "--res", "250"], ["models", "--format", "xml"], ["nosuch"], ["models", "--res", "0"])
    for args in bad:
        result = cli(args)
        assert result.code == 2, args
        assert result.err.strip().count("\n") == 0 and result.err.startswith("error:"), result.err
        assert "Traceback" not in result.err
    assert "240 or 256" in cli(["models", "--res", "250"]).err


def test_kernels_list_names_every_backend_and_the_auto_pick(cli):
    from vimbench.kernels import all_backends, resolve_backend

    result = cli(["kernels", "list"])
    assert result.code == 0
    for backend in all_backends():
        assert backend.name in result.out
    assert f"auto on cpu: {resolve_backend('auto', 'cpu')}" in result.out
