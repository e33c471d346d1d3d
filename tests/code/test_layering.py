"""lhlib's layout: three layers as folders, one rule per folder, and no import cycles.

- ``lhlib/engine/``: general and reusable; imports nothing of the other two layers.
- ``lhlib/build/``: the runner, the pages, the figure style; imports the engine and itself.
- ``lhlib/chapters/chNN_<notebook>.py``: one module per chapter; imports the engine and the build layer,
  never another chapter.

A new module needs no entry here: its folder says what it may import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lhlib"
NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
LAYERS = ("engine", "build", "chapters")
# What each layer may import; a chapter module imports no chapter module, and the package exports the engine.
ALLOWED = {"engine": {"engine"}, "build": {"engine", "build"}, "chapters": {"engine", "build"}, "": {"engine"}}


def _name(path: Path) -> str:
    """A module's dotted name under lhlib: ``engine.per_sample``; the package itself is ``""``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """The lhlib modules ``path`` imports anywhere in its source, by their dotted names under lhlib."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lhlib":
            base = node.module.split(".")[1:]
            if len(base) == 1:  # from lhlib.engine import bounds: bounds is a module
                imported |= {f"{base[0]}.{alias.name}" for alias in node.names}
            else:
                imported.add(".".join(base))
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("lhlib.")}
    return imported - ({_name(path)} if path.is_relative_to(PACKAGE) else set())


GRAPH = {_name(path): _imported(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_package_is_three_folders():
    loose = sorted(p.name for p in PACKAGE.iterdir() if p.is_file() and p.name != "__init__.py")
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert loose == [] and folders == sorted(LAYERS), f"loose files {loose}, folders {folders}"


def test_every_chapter_has_its_module():
    """``chNN_<stem>.py`` for every notebook ``NN_<stem>.ipynb``, and no other chapter module."""
    expected = {f"ch{p.stem}.py" for p in NOTEBOOKS.glob("*.ipynb")}
    modules = {p.name for p in (PACKAGE / "chapters").glob("ch*.py")}
    assert modules == expected


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_module_imports_only_what_its_layer_may(module):
    layer = module.split(".")[0]
    refused = sorted(name for name in GRAPH[module] if name.split(".")[0] not in ALLOWED[layer])
    assert not refused, f"lhlib.{module or '__init__'} ({layer or 'the package'}) imports {refused}"


def test_there_are_no_import_cycles():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(GRAPH.get(module, ())):
            if state.get(name) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*path, module, name])}")
            if name not in state:
                visit(name, [*path, module])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [])


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines, signature included, less its docstring (documentation is not a step)."""
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_is_longer_than_sixty_lines():
    """Long functions hide steps that deserve a name (signature included, docstring not)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _code_lines(node) > 60:
                long.append(f"{_name(path)}.{node.name}: {_code_lines(node)} lines")
    assert not long, "; ".join(long)


def test_the_engine_tests_stay_in_the_engine():
    """tests/engine/ tests the engine alone, as the engine imports nothing above it."""
    tests = Path(__file__).resolve().parents[1] / "engine"
    offenders = sorted(
        f"{path.name}: lhlib.{name}"
        for path in tests.glob("test_*.py")
        for name in _imported(path) if name.split(".")[0] in ("chapters", "build")
    )  # fmt: skip
    assert not offenders, offenders
