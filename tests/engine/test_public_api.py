"""``import lhlib`` exports the engine's public names, lazily, and nothing of the chapters or the build."""

import subprocess
import sys

import lhlib


def test_every_export_is_the_engine_function_it_names():
    import importlib

    assert 25 <= len(lhlib.__all__) <= 40 and lhlib.__all__ == sorted(lhlib._EXPORTS)
    for name in lhlib.__all__:
        value = getattr(lhlib, name)
        module = importlib.import_module(value.__module__)
        assert value.__module__.startswith("lhlib.engine."), f"lhlib.{name} comes from {value.__module__}"
        assert name in module.__all__ and getattr(module, name) is value


def test_static_tools_see_the_same_names():
    """The TYPE_CHECKING block (what IDEs and type checkers read) imports exactly the exported names."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(lhlib.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "_TYPE_CHECKING")
    imported = {alias.name: node.module.removeprefix("lhlib.engine.") for node in block.body for alias in node.names}
    assert imported == lhlib._EXPORTS


def test_dir_lists_each_name_once():
    lhlib.train  # noqa: B018  (loaded, and so cached in the module)
    names = dir(lhlib)
    assert len(names) == len(set(names)) and set(lhlib.__all__) <= set(names)
    assert not {"importlib", "Any", "annotations"} & set(names)


def test_an_unknown_name_says_so():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'hessian_trace'"):
        lhlib.hessian_trace  # noqa: B018  (deleted: curvlinops has Hutchinson traces)


def test_importing_lhlib_loads_no_torch():
    """The chapters' check cells import lhlib.engine.validation, which runs lhlib/__init__.py first."""
    code = "import sys, lhlib, lhlib.engine.validation; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
