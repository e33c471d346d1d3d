"""Bad parameters, tried as a new user would, through papermill under the smoke profile.

For every case: the chapter fails; the error is one line that starts with the parameter's name; it
fails in the chapter's validation cell (the first code cell after the parameters), before any data
is loaded or any network trained; and nothing was written to ``output_dir`` or the results store.
The kernels cannot import torch, scipy, matplotlib or sympy (a ``sitecustomize`` refuses them), so
a validation cell that needed them would fail with an ImportError and its case would fail; each
run costs a kernel start and the light validation cell. They run two at a time.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from conftest import HIDE_MODULES

from lhlib.build.book import profile_parameters

ROOT = Path(__file__).resolve().parents[2]
NAN, INF = math.nan, math.inf
# What a validation cell must not need: the chapters' heavy imports.
HEAVY_MODULES = {"torch", "torchvision", "scipy", "matplotlib", "sympy", "sklearn", "transformers"}

# (chapter, parameter the error must name, overrides)
CASES = [
    ("01_loss_difference", "lr", {"lr": NAN}),
    ("01_loss_difference", "radius_max", {"radius_max": INF}),
    ("01_loss_difference", "radius_max", {"radius_min": 0.5, "radius_max": 0.1}),
    ("01_loss_difference", "k", {"k": 100000}),
    ("01_loss_difference", "seeds", {"seeds": []}),
    ("01_loss_difference", "dataset", {"dataset": "svhn"}),
    ("01_loss_difference", "num_radii", {"num_radii": 2}),
    ("01_loss_difference", "output_dir", {"output_dir": ""}),
    ("01_loss_difference", "hidden_size", {"hidden_size": 0}),
    ("01_loss_difference", "device", {"device": "gpu"}),
    ("02_hessian_bound", "dataset", {"dataset": "svhn"}),
    ("02_hessian_bound", "lr", {"lr": -1.0}),
    ("02_hessian_bound", "batch_size", {"batch_size": 0}),
    ("02_hessian_bound", "classes", {"classes": [1]}),
    ("02_hessian_bound", "num_inputs", {"num_inputs": 100000}),
    ("02_hessian_bound", "scale_range", {"scale_range": [2.0, 1.0]}),
    ("02_hessian_bound", "logit_scale_max", {"logit_scale_max": NAN}),
    ("02_hessian_bound", "output_dir", {"output_dir": "../../x"}),
    ("02_hessian_bound", "hidden_sizes", {"hidden_sizes": []}),
    ("02_hessian_bound", "seeds", {"seeds": [0, 0]}),
    ("03_hessian_in_practice", "top_k", {"top_k": 10000}),
    ("03_hessian_in_practice", "lemma_points", {"lemma_points": 100000}),
    ("03_hessian_in_practice", "lanczos_tol", {"lanczos_tol": NAN}),
    ("03_hessian_in_practice", "datasets", {"datasets": []}),
    ("03_hessian_in_practice", "extreme_samples", {"extreme_samples": -1}),
    ("03_hessian_in_practice", "full_hessian_samples", {"full_hessian_samples": 0}),
    ("03_hessian_in_practice", "seeds", {"seeds": [0, 0]}),
    ("03_hessian_in_practice", "hidden_sizes", {"hidden_sizes": "8"}),
    ("03_hessian_in_practice", "output_dir", {"output_dir": "."}),
    ("04_direct_classification", "fit_k_min", {"fit_k_min": 10000}),
    ("04_direct_classification", "train_size", {"train_size": 2}),
    ("04_direct_classification", "ema", {"ema": NAN}),
    ("04_direct_classification", "lr", {"lr": INF}),
    ("04_direct_classification", "permutations", {"permutations": 0}),
    ("04_direct_classification", "collapse_share", {"collapse_share": 2.0}),
    ("04_direct_classification", "datasets", {"datasets": ["digits", "digits"]}),
    ("04_direct_classification", "output_dir", {"output_dir": "notebooks"}),
    ("04_direct_classification", "seeds", {"seeds": [3]}),
    ("04_direct_classification", "device", {"device": "cuda:x"}),
    ("05_feature_extraction", "backbone", {"backbone": "../../etc"}),
    (
        "05_feature_extraction",
        "revision",
        {"backbone": "google/vit-base-patch16-224", "revision": "../../etc/hostname"},
    ),
    ("05_feature_extraction", "pooling", {"pooling": "max"}),
    ("05_feature_extraction", "feature_batch_size", {"feature_batch_size": 0}),
    ("05_feature_extraction", "fit_k_min", {"fit_k_min": 10000}),
    ("05_feature_extraction", "datasets", {"datasets": ["imagenet"]}),
    ("05_feature_extraction", "epochs", {"epochs": 0}),
    ("05_feature_extraction", "output_dir", {"output_dir": "results/../../x"}),
    ("06_convergence_in_a_ball", "slice_ks", {"slice_ks": 5}),
    ("06_convergence_in_a_ball", "slice_ks", {"slice_ks": [100, 5]}),
    ("06_convergence_in_a_ball", "eigen_samples", {"eigen_samples": 100000}),
    ("06_convergence_in_a_ball", "ascent_samples", {"ascent_samples": 1}),
    ("06_convergence_in_a_ball", "slice_span", {"slice_span": NAN}),
    ("06_convergence_in_a_ball", "configurations", {"configurations": [[16]]}),
    ("06_convergence_in_a_ball", "relative_radii", {"relative_radii": [-1.0]}),
    ("06_convergence_in_a_ball", "fit_k_min", {"fit_k_min": 100000}),
    ("06_convergence_in_a_ball", "output_dir", {"output_dir": "   "}),
    ("07_sample_size", "recipe_epsilon", {"recipe_epsilon": INF}),
    ("07_sample_size", "epsilons", {"epsilons": []}),
    ("07_sample_size", "epsilons", {"epsilons": [0.01, NAN]}),
    ("07_sample_size", "pilot_size", {"pilot_size": 100000}),
    ("07_sample_size", "bootstrap", {"bootstrap": 1}),
    ("07_sample_size", "confidence", {"confidence": 1.5}),
    ("07_sample_size", "bound_relative_radius", {"bound_relative_radius": -0.1}),
    ("07_sample_size", "output_dir", {"output_dir": "../outside"}),
    ("08_other_architectures", "sizes", {"sizes": {"mlp": [[8, 1]], "rnn": [[8, 1]]}}),
    ("08_other_architectures", "sizes", {"sizes": {"mlp": []}}),
    ("08_other_architectures", "hessian_samples", {"hessian_samples": 1000}),
    ("08_other_architectures", "curvature_samples", {"curvature_samples": 100000}),
    ("08_other_architectures", "scaling_factor", {"scaling_factor": 1.0}),
    ("08_other_architectures", "fit_k_min", {"fit_k_min": 100000}),
    ("08_other_architectures", "trend_permutations", {"trend_permutations": 10}),
    ("08_other_architectures", "output_dir", {"output_dir": "notebooks/../notebooks"}),
]


def _case_id(case) -> str:
    chapter, name, overrides = case
    return f"{chapter[:2]}-{name}-{'-'.join(re.sub(r'[^A-Za-z0-9.]+', '', repr(v))[:12] for v in overrides.values())}"


def _hide_heavy_modules(folder: Path) -> str:
    """A ``PYTHONPATH`` whose ``sitecustomize`` refuses :data:`HEAVY_MODULES`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HIDE_MODULES.format(hidden=HEAVY_MODULES))
    return os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))


def _validation_cell(notebook) -> int:
    return next(
        i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and "# Every parameter is checked" in c.source
    )


def _run(case, folder: Path) -> dict:
    import papermill

    chapter, _, overrides = case
    output_dir = folder / "results"
    parameters = {**profile_parameters("smoke", chapter), "output_dir": str(output_dir), **overrides}
    target = folder / f"{chapter}.ipynb"
    try:
        for attempt in range(3):
            try:
                papermill.execute_notebook(
                    str(ROOT / "notebooks" / f"{chapter}.ipynb"),
                    str(target),
                    parameters=parameters,
                    kernel_name="python3",
                    cwd=str(ROOT),
                    progress_bar=False,
                )
                break
            except RuntimeError as error:
                # Two kernels starting at once can draw the same free TCP port (jupyter_client picks it
                # before the kernel binds it); the loser dies before it replies. Start it again.
                if "Kernel died before replying to kernel_info" not in str(error) or attempt == 2:
                    raise
    except papermill.PapermillExecutionError as error:
        executed = nbformat.read(target, as_version=4)
        failed_cells = [
            i
            for i, c in enumerate(executed.cells)
            if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs)
        ]
        return {
            "failed": True,
            "message": f"{error.ename}: {error.evalue}",
            "evalue": error.evalue,
            "cell": failed_cells[0] if failed_cells else None,
            "validation_cell": _validation_cell(executed),
            "output_dir_written": output_dir.exists(),
        }
    return {"failed": False}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case, run two at a time with one empty results store that must stay empty."""
    store = tmp_path_factory.mktemp("bad-inputs-store")
    mp = pytest.MonkeyPatch()
    mp.setenv("LHLIB_CACHE", str(store))  # the kernels inherit both
    mp.setenv("PYTHONPATH", _hide_heavy_modules(tmp_path_factory.mktemp("hide-modules")))
    try:
        folders = [tmp_path_factory.mktemp(f"case{i}") for i in range(len(CASES))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(_run, CASES, folders))
    finally:
        mp.undo()
    yield dict(zip(map(_case_id, CASES), results)), store
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def test_there_are_at_least_sixty_cases_across_every_chapter():
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(CASES) >= 60 and {case[0] for case in CASES} == set(chapters)
    assert len({_case_id(case) for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_a_bad_parameter_is_refused_first_by_name(case, outcomes):
    results, _ = outcomes
    outcome = results[_case_id(case)]
    _, name, overrides = case
    assert outcome["failed"], f"{overrides} was accepted"
    assert re.match(rf"{name}[ \[]", outcome["evalue"]), outcome["message"]
    assert "\n" not in outcome["evalue"].strip(), "one line"
    assert outcome["cell"] == outcome["validation_cell"], f"failed in cell {outcome['cell']}, after the validation cell"
    assert not outcome["output_dir_written"], "output_dir was written to"


def test_nothing_reached_the_results_store(outcomes):
    _, store = outcomes
    assert list(store.iterdir()) == []


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
@pytest.mark.parametrize("chapter", sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_good_parameters_pass_the_validation_cell_without_torch(chapter, profile, tmp_path):
    """The validation cell accepts the profile's parameters in a Python that cannot import torch."""
    notebook = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    defaults = next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    overrides = "\n".join(f"{name} = {value!r}" for name, value in profile_parameters(profile, chapter).items())
    program = "\n".join([defaults, overrides, notebook.cells[_validation_cell(notebook)].source])
    env = {**os.environ, "PYTHONPATH": _hide_heavy_modules(tmp_path / "hide-modules")}
    completed = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
