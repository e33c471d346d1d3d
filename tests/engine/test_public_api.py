"""``import lhlib`` exports the engine's public names, lazily, and nothing of the chapters or the build."""

import subprocess
import sys

import lhlib


def test_every_export_is_the_engine_function_it_names():
    import importlib

    assert 25 <= len(lhlib.__all__) <= 40
    for name in lhlib.__all__:
        value = getattr(lhlib, name)
        module = importlib.import_module(value.__module__)
        assert value.__module__.startswith("lhlib.engine."), f"lhlib.{name} comes from {value.__module__}"
        assert name in module.__all__ and getattr(module, name) is value


def test_an_unknown_name_says_so():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'hessian_trace'"):
        lhlib.hessian_trace  # noqa: B018  (deleted: curvlinops has Hutchinson traces)


def test_importing_lhlib_loads_no_torch():
    """The chapters' check cells import lhlib.engine.validation, which runs lhlib/__init__.py first."""
    code = "import sys, lhlib, lhlib.engine.validation; print(sorted({'torch', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
