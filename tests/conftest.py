"""Shared test fixtures: a private cache per test session and a papermill smoke runner."""

from __future__ import annotations

import json
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


@pytest.fixture
def run_chapter_smoke(tmp_path):
    """Execute a chapter with papermill under the ``smoke`` profile; returns its summary.json."""
    import papermill

    from lhlib.book import profile_parameters

    def run(chapter: str, **overrides) -> dict:
        output_dir = tmp_path / "results" / chapter
        parameters = {**profile_parameters("smoke", chapter), "output_dir": str(output_dir), **overrides}
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{chapter}.ipynb"), str(tmp_path / f"{chapter}.ipynb"),
            parameters=parameters, kernel_name="python3", cwd=str(ROOT / "notebooks"), progress_bar=False,
        )
        return json.loads((output_dir / "summary.json").read_text())

    return run
