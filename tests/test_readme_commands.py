"""What a newcomer runs is what CI runs: README's test command verbatim, and a suite that collects with it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_test_command() -> list[str]:
    """The `&&`-separated steps of the bash block under README's "Install and run the tests"."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"Install and run the tests[^\n]*\n+```bash\n(?P<cmd>[^\n]+)\n```", text)
    assert match, "README lost its 'Install and run the tests' bash block"
    return [step.strip() for step in match["cmd"].split("&&")]


def test_ci_runs_readme_install_and_test_commands_verbatim() -> None:
    steps = readme_test_command()
    install = next(s for s in steps if s.startswith("pip install"))
    tests = next(s for s in steps if s.startswith("pytest"))
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert install in ci_lines, f".ci/run must run README's install line verbatim: {install}"
    assert tests in ci_lines, f".ci/run must run README's test command verbatim: {tests}"
    assert ci_lines.index(install) < ci_lines.index(tests)


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_test_module_imports_the_tests_folder_or_conftest() -> None:
    """`tests.*` only resolves when the repo root is on sys.path (`python -m pytest`), not with `pytest`."""
    offenders = {
        path.name: sorted(m for m in _imported_modules(path) if m == "conftest" or m.split(".")[0] == "tests")
        for path in sorted((REPO / "tests").glob("*.py"))
    }
    offenders = {name: mods for name, mods in offenders.items() if mods}
    assert not offenders, f"use conftest fixtures or markers instead: {offenders}"


def test_plain_pytest_collects_every_test_module() -> None:
    """Like the `pytest` script (not `python -m pytest`): the current directory is not on sys.path."""
    proc = subprocess.run(
        [sys.executable, "-P", "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower()
