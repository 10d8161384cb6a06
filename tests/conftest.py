"""Shared test helpers: run the CLI in-process with its real error handling, find the committed fixtures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
OFFICIAL_FIXTURES = ("vim_t_official_224.pt", "deit_t_official_224.pt")


def pytest_collection_modifyitems(config, items) -> None:
    """`@pytest.mark.gpu` tests skip themselves without CUDA (test modules never import this file)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def pytest_collection_finish(session) -> None:
    """Start the Triton-interpreter checks now, in the background, beside the rest of the suite (one
    subprocess at a time: the interpreter is single-threaded and most tests leave the second core idle)."""
    from vimbench.testing import interpreter

    if not session.config.option.collectonly:
        interpreter.start_selected(session.items)


def pytest_sessionfinish(session) -> None:
    from vimbench.testing import interpreter

    interpreter.stop_all()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread_in_this_process():
    """One intra-op thread for every test in this process: tests run tiny shapes that gain nothing from
    threads, while a second thread fighting a busy core (the interpreter checks run beside the suite) makes
    each op wait: building a DeiT-Ti took 22 s with 2 threads on the loaded 2-core VM, 1.4 s with one. Tests
    of multi-threaded kernels set their thread counts themselves; subprocesses are not affected."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """cli(["sweep", ...]) -> CliResult(code, out, err), through `vimbench.cli.app.main` as users run it."""
    from vimbench.cli.app import main

    def run(args: list[str]) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny shapes gain nothing from intra-op threads, and on a busy 2-core runner they cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """tests/fixtures, committed with the repository: a clone without them fails (never skips) the exactness
    tests, so "logits equal the official definitions" is checked everywhere the suite runs."""
    missing = [n for n in OFFICIAL_FIXTURES if not (FIXTURES / n).is_file()]
    if missing:
        pytest.fail(f"official-output fixtures missing from {FIXTURES}: {', '.join(missing)}", pytrace=False)
    return FIXTURES
