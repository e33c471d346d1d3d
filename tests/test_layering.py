"""lhlib's layering: the engine never imports what is built on it, and there are no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lhlib"

# Lower layers first; a module may import only modules of its own layer or lower ones.
LAYERS = [
    {"validation", "settings", "cache", "progress", "glue", "repository", "symbolic"},
    {"data"},
    {"models"},
    {"architectures", "train", "ensemble"},
    {"landscape", "hessian"},
    {"bounds", "ball", "architecture_bounds", "sample_size", "seed_stats"},
    {"experiment"},
    {
        "sweep",
        "features",
        "hessian_in_practice",
        "other_architectures",
        "sample_size_study",
        "loss_difference",
        "ball_study",
        "bound_study",
    },
    {"report", "figures", "pages", "html_check", "intro_findings"},
    {"book"},
]


def _imports() -> dict[str, set[str]]:
    """Every lhlib module and the lhlib modules it imports (anywhere in its source)."""
    graph = {}
    for path in PACKAGE.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lhlib":
                parts = node.module.split(".")
                imported |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("lhlib.")}
        graph[path.stem] = imported - {path.stem}
    return graph


def test_every_module_has_a_layer():
    modules = set(_imports()) - {"__init__"}
    placed = set().union(*LAYERS)
    assert modules == placed, f"unplaced: {sorted(modules - placed)}; gone: {sorted(placed - modules)}"


@pytest.mark.parametrize("module", sorted(set().union(*LAYERS)))
def test_no_module_imports_a_higher_layer(module):
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    higher = {name for name in _imports()[module] if level[name] > level[module]}
    assert not higher, f"lhlib.{module} (layer {level[module]}) imports {sorted(higher)} from above it"


def test_there_are_no_import_cycles():
    graph = _imports()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for name in sorted(graph.get(module, ())):
            if state.get(name) == "open":
                raise AssertionError(f"import cycle: {' -> '.join([*path, module, name])}")
            if name not in state:
                visit(name, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
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
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _code_lines(node) > 60:
                long.append(f"{path.stem}.{node.name}: {_code_lines(node)} lines")
    assert not long, "; ".join(long)
