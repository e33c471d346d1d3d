"""Shared test fixtures: a private cache per test session and a papermill smoke runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep tests away from the user's results store (and each run independent of earlier ones)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LHLIB_CACHE", str(tmp_path_factory.mktemp("lhlib-cache")))
    yield
    mp.undo()


HIDE_MODULES = """
import sys
from importlib.abc import MetaPathFinder

HIDDEN = {hidden!r}


class HideModules(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, HideModules())
"""


@pytest.fixture
def run_chapter_smoke(tmp_path, monkeypatch):
    """Execute a chapter with papermill under the ``smoke`` profile; returns its summary.json.

    ``hide`` names top-level packages the chapter's kernel must not be able to import (a
    ``sitecustomize`` on the kernel's ``PYTHONPATH`` refuses them), as on a machine without them.
    """
    import papermill

    from lhlib.book import profile_parameters

    def run(chapter: str, *, hide: tuple[str, ...] = (), **overrides) -> dict:
        output_dir = tmp_path / "results" / chapter
        parameters = {**profile_parameters("smoke", chapter), "output_dir": str(output_dir), **overrides}
        if hide:
            site = tmp_path / "hide-modules"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text(HIDE_MODULES.format(hidden=set(hide)))
            monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{chapter}.ipynb"),
            str(tmp_path / f"{chapter}.ipynb"),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(ROOT),
            progress_bar=False,
        )
        return json.loads((output_dir / "summary.json").read_text())

    return run
