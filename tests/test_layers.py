"""The layers the code keeps: every `vimbench` import in every module (module level or inside a function),
read from the source's AST, must follow ALLOWED. A back-edge (measure importing cli or report, the op
library importing its harness, models and baselines importing each other...) fails here, naming the line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# package-dir of pyproject: where each installed package's source lives
SOURCE_ROOTS = {"vimbench": REPO / "vimbench", "vimbench.kernels": REPO / "kernels",
                "vimbench.baselines": REPO / "baselines"}

# Base modules: no vimbench imports of their own beyond other base modules; anyone may use them.
BASE = {"dtypes", "devices", "console", "layers", "checkpoint", "__version__"}
# Leaf modules of the op library that base modules may build on: the one dtype table lives in the bottom
# layer (so the kernels share it) and vimbench.dtypes is its name for the layers above.
BASE_MAY_IMPORT = {"vimbench.kernels.dtypes"}

# layer -> the layers it may import (besides itself and BASE). Lower layers first.
ALLOWED: dict[str, set[str]] = {
    "kernels": set(),  # the op library
    "metrics": set(),  # metric declarations, collectors, timing statistics
    "results": {"metrics"},  # column spec, schema, Run.load
    "baselines": {"kernels"},
    "models": {"kernels", "baselines"},
    "memory": {"kernels", "models", "baselines"},  # predicted memory: fake-tensor traces, allocator model
    "profile": {"kernels", "models", "baselines", "metrics"},
    "kernelbench": {"kernels", "models", "metrics", "profile", "measure"},  # the op library's harness
    "measure": {"kernels", "models", "baselines", "profile", "metrics", "results", "vimbench", "memory"},
    "report": {"metrics", "results", "models"},  # models: pairing a model with its baseline (spec.baseline)
    "gate": {"metrics", "results", "models"},
    "reproduce": {"measure", "report", "results", "metrics", "memory"},
    "cli": {"kernels", "models", "baselines", "profile", "kernelbench", "measure", "report", "gate",
            "reproduce", "metrics", "results", "vimbench", "memory"},
    # helpers the test suite shares (synthetic runs, a recording executor, kernel-check numerics); nothing
    # in vimbench imports it
    "testing": {"kernels", "models", "measure", "results", "metrics"},
    "vimbench": {"models"},  # the package's __init__ (__version__, create_model): for the layers above models
}


def _modules(roots: dict[str, Path]) -> list[tuple[str, Path]]:
    found = []
    for prefix, root in roots.items():
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if prefix == "vimbench" and rel.parts[0] in ("kernels", "baselines"):
                continue  # not there in a source tree; installed from kernels/ and baselines/
            parts = [p for p in rel.with_suffix("").parts if p != "__init__"]
            found.append((".".join([prefix, *parts]), path))
    return found


MODULES = _modules(SOURCE_ROOTS)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vimbench"


def imported_modules(module: str, path: Path, names: set[str]) -> list[tuple[int, str]]:
    """(line, vimbench module) for every import in the file; `from pkg import name` resolves to the
    submodule when `pkg.name` is one, else to `pkg`."""
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_package else -1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in names else target))
    return [(line, name) for line, name in found if name == "vimbench" or name.startswith("vimbench.")]


def back_edges(modules: list[tuple[str, Path]], repo: Path = REPO) -> list[str]:
    names = {name for name, _ in modules}
    problems = []
    for module, path in modules:
        source = layer_of(module)
        allowed = ALLOWED.get(source)
        where = path.relative_to(repo)
        for line, target in imported_modules(module, path, names):
            dest = layer_of(target)
            if dest == source or dest in BASE:
                continue
            if source in BASE:
                if target not in BASE_MAY_IMPORT:
                    problems.append(f"{where}:{line}: base module imports {target}")
            elif allowed is None:
                problems.append(f"{where}:{line}: layer {source!r} is not in ALLOWED")
            elif dest not in allowed:
                problems.append(f"{where}:{line}: {source} -> {dest} ({target}) is a back-edge")
    return problems


def test_every_import_follows_the_layers() -> None:
    assert back_edges(MODULES) == []


def test_the_dtype_table_is_a_leaf_every_layer_shares() -> None:
    """kernels/dtypes.py imports nothing of vimbench; no kernel module spells its own dtype tuple."""
    names = {name for name, _ in MODULES}
    for target in BASE_MAY_IMPORT:
        path = dict(MODULES)[target]
        assert imported_modules(target, path, names) == []
    for name, path in MODULES:
        if name.startswith("vimbench.kernels.") and name != "vimbench.kernels.dtypes":
            text = path.read_text()
            assert "(torch.float32, torch.float16, torch.bfloat16)" not in text, f"{path}: use .dtypes"


def test_allowed_table_has_no_cycle() -> None:
    """The table itself is a DAG (so the code, following it, has no package cycle)."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            pytest.fail(f"cycle in ALLOWED: {' -> '.join([*path, node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(ALLOWED.get(node, ())):
            visit(nxt, [*path, node])
        state[node] = 2

    for node in ALLOWED:
        visit(node, [])


def test_the_checker_catches_a_back_edge(tmp_path) -> None:
    """A measure module importing the CLI (inside a function), and the op library importing its harness,
    are reported with file and line."""
    (tmp_path / "vimbench" / "measure").mkdir(parents=True)
    (tmp_path / "vimbench" / "measure" / "bad.py").write_text(
        "def f():\n    from vimbench.cli.common import console\n"
    )
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "bad.py").write_text("from vimbench.kernelbench import bench\n")
    roots = {"vimbench": tmp_path / "vimbench", "vimbench.kernels": tmp_path / "kernels"}
    problems = back_edges(_modules(roots), tmp_path)
    assert "vimbench/measure/bad.py:2: measure -> cli (vimbench.cli.common) is a back-edge" in problems
    assert "kernels/bad.py:1: kernels -> kernelbench (vimbench.kernelbench) is a back-edge" in problems


def test_tests_never_import_each_other() -> None:
    """Shared test helpers live in conftest.py fixtures or vimbench.testing: a test module importing a
    sibling (`from test_gate import point`) breaks when pytest runs one file or collects in another order."""
    siblings = {p.stem for p in (REPO / "tests").glob("test_*.py")}
    problems = []
    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            problems += [f"{path.name}:{node.lineno}: imports {n}" for n in names
                         if n.split(".")[0] in siblings | {"tests", "conftest"}]
    assert problems == []


def test_pyproject_lists_every_package() -> None:
    """A package missing from pyproject's list is missing from a wheel (its imports then fail installed)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in MODULES if path.name == "__init__.py"}
    assert packages - listed == set()


# ------------------------------------------------------------------------------------- families by name

FAMILY_MODULES = {"vimbench.models"}  # the contract, one module per family, the registry and definitions
_FAMILY_NAME = re.compile(r"^(vim|deit|timm)([-_:]|$)", re.IGNORECASE)


def _strings(node: ast.AST) -> list[str]:
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def family_decisions(path: Path, root: Path = REPO) -> list[str]:
    """Lines that decide by a family's name: a comparison with "vim" / "deit" / "timm" (also inside a
    tuple), or startswith/endswith a family name (`name.startswith("vim")`, `"DeiT-Ti"`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        texts: list[str] = []
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                texts += [t for t in _strings(side) if t.lower() in ("vim", "deit", "timm")]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith") and node.args):
            texts += [t for t in _strings(node.args[0]) if _FAMILY_NAME.match(t)]
        found += [f"{path.relative_to(root)}:{node.lineno}: decides by family name {t!r}" for t in texts]
    return found


def test_no_code_outside_a_family_module_names_a_family() -> None:
    """What differs between families is asked of the family (vimbench.models.family.ModelFamily): the sweep,
    worker, executors, memory predictor, profiler, reports and gates never branch on "vim" / "deit"."""
    outside = [path for name, path in MODULES
               if not any(name == m or name.startswith(m + ".") for m in FAMILY_MODULES)]
    assert any(p.parts[-2] == "memory" for p in outside)  # the memory predictor is covered
    problems = [line for path in outside for line in family_decisions(path)]
    assert problems == []


def test_the_family_name_check_catches_a_branch(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('def f(spec, q):\n    if spec.family == "vim":\n        pass\n'
                   '    return q.model.startswith("deit") or spec.family in ("timm", "x")\n')
    assert sorted(family_decisions(bad, tmp_path)) == [
        "bad.py:2: decides by family name 'vim'", "bad.py:4: decides by family name 'deit'",
        "bad.py:4: decides by family name 'timm'"]
