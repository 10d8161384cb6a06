"""Messages that say what is wrong: refused pickle globals by name (no ANSI codes), checkpoint folders and
truncated .safetensors as CheckpointError, and a ratio gate of a point with itself refused."""

from __future__ import annotations

import builtins
import os
import pickle

import pytest
import torch

from vimbench.checkpoint import CheckpointError, read_state_dict
from vimbench.measure.plan import Point
from vimbench.measure.rows import identity_row
from vimbench.measure.store import ResultsStore

MARKER = "VIMBENCH_PWNED_MARKER"


class _System:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class _Eval:
    def __reduce__(self):
        return (builtins.eval, ("__import__('os').system('touch " + MARKER + "')",))


@pytest.mark.parametrize(
    ("payload", "save", "refused"),
    [
        (_System, "torch", "posix.system"),
        (_Eval, "pickle", "eval"),
        (_System, "pickle", "posix.system"),
    ],
)
def test_malicious_pickle_names_the_refused_global_in_plain_text(tmp_path, monkeypatch, payload, save,
                                                                 refused) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    if save == "torch":
        torch.save({"model": {"w": torch.zeros(1)}, "extra": payload()}, path)
    else:
        path.write_bytes(pickle.dumps({"model": payload()}, protocol=2))
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert f"the global {refused}, which is refused" in message
    assert "\x1b" not in message and "\n" not in message and "weights_only` set to `False`" not in message
    assert not (tmp_path / MARKER).exists()


def test_checkpoint_folder_and_truncated_safetensors(tmp_path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(CheckpointError, match="is a folder; give the file"):
        read_state_dict(tmp_path)
    whole = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(100)}, str(whole))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot read .*cut\.safetensors as safetensors"):
        read_state_dict(cut)
    assert set(read_state_dict(whole)) == {"w"}


def test_ratio_gate_of_a_point_with_itself_is_refused(cli, tmp_path) -> None:
    store = ResultsStore(tmp_path)
    for backend, fps in (("cpu", 30.0), ("reference", 10.0)):
        row = identity_row(Point("vim-t", 32, device="cpu", options={"scan_backend": backend}))
        row.update(status="ok", throughput=fps, throughput_samples=[fps] * 5, peak_mem_mib=1.0,
                   peak_mem_source="rss", scan_backend=backend)
        store.append(row)
    result = cli(["gate", "--current", tmp_path, "--ratio", "vim-t/vim-t@32>=1"])
    assert result.code == 2 and "select the same point at 32px" in result.err
    assert len(result.err.strip().splitlines()) == 1
    # one side pinned, the other free: the pair of a point with itself is dropped, the real pair judged
    result = cli(["gate", "--current", tmp_path, "--ratio", "vim-t[scan=cpu]/vim-t@32>=2"])
    assert result.code == 0, result.out + result.err
    assert "gate PASS: 0 of 1 ratio check(s) failed" in result.out
