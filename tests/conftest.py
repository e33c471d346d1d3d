"""Shared test fixtures: a private cache per test session and a papermill smoke runner."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

ROOT = Path(__file__).resolve().parent.parent
# One thread for torch's kernels in the tests and in the chapters they run (training sets its own two):
# the xdist workers are one per core, and two workers with two threads each oversubscribe the cores
# (some tests ran ten times slower). It also makes the smoke summaries the same on every machine: a
# reduction split over as many threads as cores rounds differently in the last digit.
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
# Every chapter's summary.json under the smoke profile, as the code before the layout change wrote it. A plain
# smoke run must reproduce it exactly, timing and paths aside; `pytest --update-smoke-summaries` rewrites them
# (for a change that means to change a number, said so in its commit).
SMOKE_SUMMARIES = Path(__file__).resolve().parent / "chapters" / "smoke_summaries"
NOT_COMPARED = re.compile(r"^(seconds|.*_seconds|.*_per_second|output_dir)$")


def pytest_addoption(parser):
    parser.addoption(
        "--update-smoke-summaries",
        action="store_true",
        help="rewrite tests/chapters/smoke_summaries from plain smoke runs",
    )


def _comparable(value):
    """``value`` without its timing fields and paths (they change from run to run)."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if not NOT_COMPARED.match(k)}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _differences(expected, actual, path="") -> list[str]:
    """Where two JSON values differ, as paths with both values (NaN equals NaN)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        keys = sorted(set(expected) | set(actual))
        return [
            d
            for k in keys
            for d in _differences(expected.get(k, "<missing>"), actual.get(k, "<missing>"), f"{path}/{k}")
        ]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in _differences(e, a, f"{path}[{i}]")]
    return [] if json.dumps(expected) == json.dumps(actual) else [f"{path}: {expected!r} -> {actual!r}"]


def check_smoke_summary(chapter: str, summary: dict, update: bool) -> None:
    """A plain smoke run's summary is the stored one, number for number (timing and paths aside)."""
    path = SMOKE_SUMMARIES / f"{chapter}.json"
    text = json.dumps(_comparable(summary), indent=1, sort_keys=True) + "\n"
    if update:
        path.write_text(text)
    assert path.is_file(), f"no stored smoke summary for {chapter}: record it with pytest --update-smoke-summaries"
    differences = _differences(json.loads(path.read_text()), json.loads(text))
    assert not differences, f"{chapter}'s smoke summary changed: " + "; ".join(differences[:10])


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


BOOK_ITEMS = ("_config.yml", "_toc.yml", "book", "notebooks", "README.md")


def _run_folder(tmp_path_factory) -> Path:
    """This test run's temporary folder, shared by its xdist workers (each worker's own is one level down)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


class SmokeBook:
    """A copy of the book's sources in which every chapter runs under the ``smoke`` profile once per test run.

    The chapters' smoke tests and the ``-W`` build of the smoke book (``tests/build/test_book.py``) share these
    executions, across xdist workers too: a lock file per chapter lets one worker execute it while the others
    execute other chapters or wait, and :func:`lhlib.build.book.run_chapters` reuses an executed chapter. They
    all use one results store, ``store``, so a network trained for one chapter serves the next.
    """

    def __init__(self, folder: Path):
        self.root, self.store = folder / "smoke-book", folder / "smoke-store"
        with FileLock(folder / "smoke-book.lock"):
            if not (self.root / ".copied").exists():
                self.root.mkdir(exist_ok=True)
                for item in BOOK_ITEMS:
                    source = ROOT / item
                    (shutil.copytree if source.is_dir() else shutil.copy2)(source, self.root / item)
                (self.root / ".copied").touch()

    @contextlib.contextmanager
    def environment(self):
        """``LHLIB_CACHE`` set to the shared store (the chapters' records depend on it, through the data folder)."""
        mp = pytest.MonkeyPatch()
        mp.setenv("LHLIB_CACHE", str(self.store))
        try:
            yield
        finally:
            mp.undo()

    def execute(self, chapters: list[str]) -> None:
        """Each of ``chapters`` executed (or found executed), those no other worker holds first."""
        from lhlib.build import book

        pending = list(chapters)
        while pending:
            for chapter in list(pending):
                lock = FileLock(self.root.parent / f"smoke-{chapter}.lock")
                try:
                    lock.acquire(timeout=0)
                except Timeout:  # another worker is executing it: come back to it
                    continue
                try:
                    with self.environment():
                        book.run_chapters([chapter], "smoke", self.root)  # reused when it already ran
                finally:
                    lock.release()
                pending.remove(chapter)
            if pending:
                time.sleep(0.5)

    def outputs(self, chapter: str) -> tuple[Path, dict]:
        """``chapter``'s executed notebook and its summary.json, executing it first if needed."""
        self.execute([chapter])
        summary = json.loads((self.root / "results" / "smoke" / chapter / "summary.json").read_text())
        return self.root / "_build" / "executed" / "smoke" / f"{chapter}.ipynb", summary


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory) -> SmokeBook:
    """The book's copy whose smoke executions this run shares (:class:`SmokeBook`)."""
    return SmokeBook(_run_folder(tmp_path_factory))


@pytest.fixture
def run_chapter_smoke(tmp_path, monkeypatch, request, smoke_book):
    """A chapter's summary.json under the ``smoke`` profile, its executed notebook copied to ``tmp_path``.

    With the profile's own parameters the chapter runs once a test run, in :func:`smoke_book`, and must
    reproduce ``tests/chapters/smoke_summaries`` (:func:`check_smoke_summary`). With ``overrides``, ``hide`` or
    ``fresh=True`` it runs now with papermill, into ``tmp_path``: with the smoke runs' results store unless
    ``fresh`` (then with the test's own ``LHLIB_CACHE``).
    ``hide`` names top-level packages the chapter's kernel must not be able to import (a
    ``sitecustomize`` on the kernel's ``PYTHONPATH`` refuses them), as on a machine without them.
    """
    import papermill

    from lhlib.build import book

    def run(chapter: str, *, hide: tuple[str, ...] = (), fresh: bool = False, **overrides) -> dict:
        if not (overrides or hide or fresh):
            executed, summary = smoke_book.outputs(chapter)
            shutil.copy2(executed, tmp_path)
            check_smoke_summary(chapter, summary, request.config.getoption("--update-smoke-summaries"))
            return summary
        output_dir = tmp_path / "results" / chapter
        parameters = {**book.profile_parameters("smoke", chapter), "output_dir": str(output_dir), **overrides}
        if hide:
            site = tmp_path / "hide-modules"
            site.mkdir(exist_ok=True)
            (site / "sitecustomize.py").write_text(HIDE_MODULES.format(hidden=set(hide)))
            monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
        with contextlib.nullcontext() if fresh else smoke_book.environment():  # networks the smoke runs trained
            papermill.execute_notebook(
                str(ROOT / "notebooks" / f"{chapter}.ipynb"),
                str(tmp_path / f"{chapter}.ipynb"),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(ROOT),
                progress_bar=False,
            )
        summary = json.loads((output_dir / "summary.json").read_text())
        if not (overrides or hide):
            check_smoke_summary(chapter, summary, request.config.getoption("--update-smoke-summaries"))
        return summary

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


def assert_glue_complete(executed: Path) -> None:
    """Every {glue:text}`key` of the prose was glued by the executed notebook, and no cell failed."""
    notebook = json.loads(executed.read_text())
    glued = {
        o["metadata"]["scrapbook"]["name"]
        for c in notebook["cells"]
        for o in c.get("outputs", [])
        if "scrapbook" in o.get("metadata", {})
    }
    used = {
        m
        for c in notebook["cells"]
        if c["cell_type"] == "markdown"
        for m in re.findall(r"\{glue:text\}`([A-Za-z0-9_]+)", "".join(c["source"]))
    }
    assert used and used <= glued, sorted(used - glued)
    assert not any(o.get("output_type") == "error" for c in notebook["cells"] for o in c.get("outputs", []))


@pytest.fixture(scope="session")
def toy_sweep():
    """A small sweep (three configurations, three seeds each) on separable toy data, and its settings."""
    import torch

    from lhlib.engine.settings import check_sweep_settings
    from lhlib.engine.sweep import run_sweep

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(240, 6, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    settings = check_sweep_settings(  # trained long enough that the networks learn (collapsed ones are left out)
        epochs=5,
        lr=3e-2,
        batch_size=32,
        hidden_sizes=[3, 6],
        num_layers=[0, 1],
        fixed_hidden_size=6,
        fixed_num_layers=1,
        permutations=4,
        seeds=[0, 1, 2],
        device="cpu",
    )
    return run_sweep(x, y, 4, settings), settings


@pytest.fixture
def collapsed_configuration():
    """Four hand-made seeds of one configuration, two of them collapsed, their combined result and settings."""
    import math

    import torch

    from lhlib.engine.experiment import TrainedNetwork
    from lhlib.engine.models import build_mlp
    from lhlib.engine.settings import check_sweep_settings
    from lhlib.engine.sweep import combine_members, measure_member

    settings = check_sweep_settings(permutations=30, seeds=[0, 1, 2, 3], fit_k_min=2)
    generator = torch.Generator().manual_seed(0)

    def member(seed, losses):
        network = TrainedNetwork(
            seed, build_mlp(4, 2, 0, 10, seed=seed), losses, float(losses.mean()), 0.5, [1.0], False
        )
        return measure_member(network, settings, torch.arange(60) % 10, 10)

    collapsed = torch.full((60,), math.log(10.0))
    collapsed[:25] = torch.rand(25, generator=generator)  # most losses at ln K, some learned: collapsed, yet fitted
    members = [member(0, torch.rand(60, generator=generator) * 3), member(1, collapsed),
               member(2, torch.rand(60, generator=generator) * 0.3), member(3, collapsed.clone())]  # fmt: skip
    return members, combine_members(4, 0, 2, members, settings), settings


# ---- dense ground truth for the engine's curvature (tests/engine) and chapter 03's measurements ----


def dense_problem(
    seed: int = 3, n: int = 7, input_dim: int = 6, hidden: int = 8, num_layers: int = 2, classes: int = 4
):
    """A small float64 bias-free MLP and random data for it."""
    import torch

    from lhlib.engine.models import build_mlp

    model = build_mlp(input_dim, hidden, num_layers, classes, seed=seed).double()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, input_dim, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=generator)
    return model, x, y


def dense_hessians(model, x, y):
    """Per-sample dense Hessians and G-terms (P x P) by torch.func, in float64."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, hessian, jacrev

    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)
    flat0 = torch.cat([params[k].reshape(-1) for k in names])
    sizes = [params[k].numel() for k in names]

    def unflat(flat):
        return {k: piece.reshape(params[k].shape) for k, piece in zip(names, flat.split(sizes))}

    hessians, ggns = [], []
    for i in range(x.shape[0]):
        xi, yi = x[i : i + 1], y[i : i + 1]
        hessians.append(
            hessian(lambda f, xi=xi, yi=yi: F.cross_entropy(functional_call(model, unflat(f), (xi,)), yi))(flat0)
        )
        jac = jacrev(lambda f, xi=xi: functional_call(model, unflat(f), (xi,))[0])(flat0)
        p = torch.softmax(functional_call(model, params, (xi,))[0], 0)
        ggns.append(jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac)
    return torch.stack(hessians), torch.stack(ggns)


def spectral_norms(matrices):
    """The spectral norm of each of a stack of symmetric matrices, from its eigenvalues."""
    import torch

    return torch.linalg.eigvalsh(matrices).abs().amax(-1)


@pytest.fixture(scope="module")
def problem():
    """A small float64 MLP, its data, and every sample's dense Hessian and G-term: the ground truth."""
    model, x, y = dense_problem()
    dense_h, dense_g = dense_hessians(model, x, y)
    return model, x, y, dense_h, dense_g
