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


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A tiny, randomly initialised ``ViTForImageClassification`` checkpoint and its image processor.

    Like ``google/vit-base-patch16-224`` it has a classifier and no pooler, so loading it as a
    backbone exercises the same ``transformers`` code path, with no download.
    """
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=10,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ViTForImageClassification(config)
    folder = tmp_path_factory.mktemp("tiny-vit")
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


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


def check_configuration_row(row: dict, seeds: list[int]) -> None:
    """A sweep configuration's summary row: the seeds kept and collapsed add up, and over the kept ones the level's
    interval (log scale, around the geometric mean) and the exponent's hold their centres. With fewer than two
    kept seeds there is no interval, and the summary says so with NaN ("nan" in JSON)."""
    assert row["seeds"] == seeds and set(row["kept_seeds"]) <= set(seeds)
    assert len(row["kept_seeds"]) + row["collapsed_seeds"] <= len(seeds)
    if len(row["kept_seeds"]) >= 2:
        low, high = row["level_ci95"]
        assert 0 < low <= row["level_geometric_mean"] <= high
        low, high = row["rate_exponent_ci95"]
        assert low <= row["rate_exponent"] <= high
    else:  # NaN: a float in Python, "nan" once written to summary.json
        assert [str(value) for value in row["level_ci95"]] == ["nan", "nan"]
