"""Bad parameters, tried as a new user would.

Every chapter checks all its parameters with one call, :func:`lhlib.build.declarations.check_chapter`,
in its validation cell (the first code cell after the parameters). So each bad value is tried twice:

* in this process, against ``check_chapter`` with the smoke profile's other values: the hand-picked
  :data:`CASES` below, and cases drawn from every declaration (below the minimum, above the maximum,
  the wrong type, NaN, too many entries, a repeat, a misspelt name). Each must fail with one line that
  starts with the parameter's name.
* through papermill, one case per chapter and a misspelt ``-p`` name: the chapter fails in its validation
  cell, before any data is loaded or any network trained, and nothing reaches ``output_dir`` or the
  results store. The kernels cannot import torch, scipy, matplotlib or sympy (a ``sitecustomize``
  refuses them), so a validation cell that needed them would fail with an ImportError.
"""

from __future__ import annotations

import ast
import functools
import math
import os
import re
import reprlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from conftest import HIDE_MODULES

from lhlib.build import book
from lhlib.build.book import profile_parameters
from lhlib.build.declarations import chapter_defaults, check_chapter, declaration
from lhlib.engine.declarations import Parameter, _evaluate, check_parameters

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
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
    # What a hostile user got through before every parameter had bounds on both sides (issue 28).
    ("01_loss_difference", "num_directions", {"num_directions": 4611686018427387904}),
    ("01_loss_difference", "batch_size", {"batch_size": 2**63 - 1}),
    ("01_loss_difference", "radius_max", {"radius_max": 1e308}),
    ("01_loss_difference", "train_size", {"dataset": "digits", "train_size": 5000}),
    ("01_loss_difference", "epoch", {"epoch": 1}),
    ("02_hessian_bound", "lr", {"lr": 1e308}),
    ("02_hessian_bound", "classes", {"classes": [2, 10**6]}),
    ("03_hessian_in_practice", "lanczos_tol", {"lanczos_tol": 1e10}),
    ("03_hessian_in_practice", "top_k", {"hidden_sizes": [1, 2], "top_k": 75}),  # the smallest network has 75
    ("04_direct_classification", "ema", {"ema": 1.0}),
    ("04_direct_classification", "hidden_sizes", {"hidden_sizes": [8, 10**9]}),
    ("06_convergence_in_a_ball", "gaussian_k_points", {"gaussian_k_points": 5000}),
    ("06_convergence_in_a_ball", "slice_points", {"slice_points": 10**6}),
    ("06_convergence_in_a_ball", "relative_radii", {"relative_radii": [0.1, 1e300]}),
    ("07_sample_size", "epsilons", {"epsilons": [1e300]}),
    ("07_sample_size", "confidence", {"confidence": 1.0}),
    ("07_sample_size", "confidence", {"confidence": 0.0}),
    ("07_sample_size", "bound_relative_radius", {"bound_relative_radius": 0.0}),
    ("07_sample_size", "bootstrap", {"bootstrap": 10**9}),
    ("08_other_architectures", "scaling_factor", {"scaling_factor": 1.0000000000000002}),
    ("08_other_architectures", "sizes", {"sizes": {"cnn": [[4, 4]]}}),  # digits are 8 pixels wide
    ("08_other_architectures", "sizes", {"sizes": {"vit": [[10**6, 1]]}}),
    # A second hostile pass (session 12): values at the float limits, text that does not parse into the type,
    # panels that cannot be tested, paths that mean something else.
    ("01_loss_difference", "train_size", {"train_size": "{[]: 0}"}),
    ("08_other_architectures", "sizes", {"sizes": "{[1]: 2}"}),
    ("05_feature_extraction", "backbone", {"backbone": "a" * 300 + "/vit"}),
    ("05_feature_extraction", "backbone", {"backbone": "g\u043e\u043egle/vit-base-patch16-224"}),
    ("05_feature_extraction", "revision", {"revision": "main.lock"}),
    ("04_direct_classification", "hidden_sizes", {"hidden_sizes": functools.reduce(lambda a, _: [a], range(5000), [])}),
    ("01_loss_difference", "radius_min", {"radius_min": 1e-300}),
    ("01_loss_difference", "radius_max", {"radius_min": 0.5, "radius_max": 0.50000001}),
    ("02_hessian_bound", "scale_range", {"scale_range": [1e-300, 2e-300]}),
    ("02_hessian_bound", "hidden_sizes", {"hidden_sizes": [8]}),
    ("03_hessian_in_practice", "lanczos_tol", {"lanczos_tol": 5e-324}),
    ("04_direct_classification", "ema", {"ema": 0.9999999999999999}),
    ("04_direct_classification", "lr", {"lr": 5e-324}),
    ("04_direct_classification", "hidden_sizes", {"hidden_sizes": [16], "num_layers": [5]}),
    ("06_convergence_in_a_ball", "relative_radii", {"relative_radii": [1e-300, 1.0]}),
    ("06_convergence_in_a_ball", "slice_span", {"slice_span": 1e-300}),
    ("07_sample_size", "epsilons", {"epsilons": [1e-3, 1e-300]}),
    ("07_sample_size", "recipe_epsilon", {"recipe_epsilon": 5e-324}),
    ("07_sample_size", "bound_relative_radius", {"bound_relative_radius": 1e-320}),
    ("08_other_architectures", "scaling_factor", {"scaling_factor": 1e-300}),
    ("08_other_architectures", "sizes", {"sizes": {"mlp": [[16, 5], [8, 3]]}}),
    ("08_other_architectures", "sizes", {"sizes": {"mlp": [[w, 1] for w in range(1, 18)]}}),
    ("01_loss_difference", "output_dir", {"output_dir": str(ROOT)}),
    ("01_loss_difference", "output_dir", {"output_dir": "~/lhlib-results"}),
    ("05_feature_extraction", "output_dir", {"output_dir": "/proc/lhlib"}),
    ("01_loss_difference", "output_dir", {"output_dir": "README.md/x"}),
]

# Values at the edge of what the declarations accept, which must pass: the checks are not stricter
# than they say.
ACCEPTED = [
    ("03_hessian_in_practice", {"hidden_sizes": [1, 2], "top_k": 74}),
    ("08_other_architectures", {"sizes": {"cnn": [[4, 3]]}, "scaling_factor": 1.2}),
    ("08_other_architectures", {"scaling_factor": 0.8}),
    ("04_direct_classification", {"ema": 0.0, "fit_k_min": 398}),
    ("07_sample_size", {"confidence": 0.999, "epsilons": [1.0, 1e-9], "recipe_epsilon": 1e-9}),
    ("01_loss_difference", {"radius_min": 1e-10, "radius_max": 1e-9}),
    ("04_direct_classification", {"lr": 1e-6, "ema": 0.999, "hidden_sizes": [4, 8], "num_layers": [0, 1]}),
    ("03_hessian_in_practice", {"lanczos_tol": 1e-6}),
    ("06_convergence_in_a_ball", {"relative_radii": [1e-6], "slice_span": 1e-3}),
    ("08_other_architectures", {"scaling_factor": 0.01, "sizes": {"mlp": [[w, 1] for w in range(1, 17)]}}),
    ("05_feature_extraction", {"backbone": "a" * 96 + "/" + "b" * 96, "revision": "v1.locked"}),
]


def _case_id(case) -> str:
    chapter, name, overrides = case
    shown = [re.sub(r"[^A-Za-z0-9.]+", "", reprlib.repr(v))[:12] for v in overrides.values()]  # reprlib: deep lists
    return f"{chapter[:2]}-{name}-{'-'.join(shown)}"


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


KERNEL_CASES = [
    *{case[0]: case for case in reversed(CASES)}.values(),  # each chapter's first case
    ("04_direct_classification", "epoch", {"epoch": 1}),  # papermill -p epoch 1: a misspelt name
    # -p In 0 replaces the notebook's In; the names are read from IPython's own history all the same.
    ("03_hessian_in_practice", "In", {"In": 0, "topk": 3}),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Each of :data:`KERNEL_CASES`, run two at a time with one empty results store that must stay empty."""
    store = tmp_path_factory.mktemp("bad-inputs-store")
    mp = pytest.MonkeyPatch()
    mp.setenv("LHLIB_CACHE", str(store))  # the kernels inherit both
    mp.setenv("PYTHONPATH", _hide_heavy_modules(tmp_path_factory.mktemp("hide-modules")))
    try:
        folders = [tmp_path_factory.mktemp(f"case{i}") for i in range(len(KERNEL_CASES))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(_run, KERNEL_CASES, folders))
    finally:
        mp.undo()
    yield dict(zip(map(_case_id, KERNEL_CASES), results)), store
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def test_there_are_at_least_sixty_cases_across_every_chapter():
    chapters = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(CASES) >= 60 and {case[0] for case in CASES} == set(chapters)
    assert len({_case_id(case) for case in CASES}) == len(CASES)


def _refusal(chapter: str, overrides: dict) -> str:
    """The message ``check_chapter`` refuses the smoke profile's values with ``overrides`` by."""
    values = {**chapter_defaults(chapter), **profile_parameters("smoke", chapter), **overrides}
    with pytest.raises(ValueError) as refused:
        check_parameters(
            declaration(chapter).PARAMETERS, values, declaration(chapter).RELATIONS, submitted=list(overrides)
        )
    return str(refused.value)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_a_bad_parameter_is_refused_by_name_in_one_line(case):
    chapter, name, overrides = case
    message = _refusal(chapter, overrides)
    assert re.match(rf"{name}[ \[]", message) and "\n" not in message.strip(), message


def _bound(bound, values):
    return _evaluate(ast.parse(bound, mode="eval").body, values) if isinstance(bound, str) else bound


def _bad_values(parameter: Parameter, values: dict) -> list:
    """Values ``parameter``'s declaration refuses: out of bounds, of the wrong type, malformed lists."""
    wrong_type = {"int": 2.5, "float": "x", "str": 3}.get(parameter.type, 5 if "list" in parameter.type else [1])
    bad = [wrong_type]
    scalar = parameter.type.removeprefix("list[").removesuffix("]")
    low, high = _bound(parameter.minimum, values), _bound(parameter.maximum, values)
    if scalar in ("int", "float"):
        below = [low if parameter.above else low - 1] if low is not None else []
        above = [high if parameter.below else high + 1] if high is not None else []
        nonfinite = [math.nan, math.inf, -math.inf] if scalar == "float" else []
        good = values[parameter.name]  # a list keeps its other entries, so only the bound is broken
        bad += [[v, *good[1:]] if parameter.type.startswith("list") else v for v in below + above + nonfinite]
    if parameter.type.startswith(("list", "dict")):
        fewest, most = parameter.entries
        bad.append([] if parameter.type.startswith("list") else {})
        if parameter.type.startswith("list") and most >= 2 and scalar in ("int", "float", "str"):
            bad.append([parameter.default[0]] * 2)
        if parameter.type == "list[int]":
            bad.append(list(range(1, most + 2)))
    return bad


DRAWN = [
    (chapter, parameter.name, {parameter.name: value})
    for chapter in CHAPTERS
    for parameter in declaration(chapter).PARAMETERS
    for value in _bad_values(parameter, {**chapter_defaults(chapter), **profile_parameters("smoke", chapter)})
]


def test_every_parameter_has_bounds_on_both_sides_or_a_check():
    for chapter in CHAPTERS:
        for parameter in declaration(chapter).PARAMETERS:
            numeric = parameter.type.removeprefix("list[").removesuffix("]") in ("int", "float")
            bounded = parameter.minimum is not None and parameter.maximum is not None
            assert bounded if numeric else parameter.check is not None, f"{chapter}: {parameter.name}"


@pytest.mark.parametrize("case", DRAWN, ids=_case_id)
def test_a_value_the_declaration_refuses_is_refused_by_name(case):
    chapter, name, overrides = case
    message = _refusal(chapter, overrides)
    assert re.match(rf"{name}[ \[]", message) and "\n" not in message.strip(), message


@pytest.mark.parametrize(("chapter", "overrides"), ACCEPTED, ids=[f"{c[:2]}-{'-'.join(o)}" for c, o in ACCEPTED])
def test_values_at_the_edge_of_the_declaration_are_accepted(chapter, overrides):
    values = {**chapter_defaults(chapter), **profile_parameters("smoke", chapter), **overrides}
    checked = check_parameters(declaration(chapter).PARAMETERS, values, declaration(chapter).RELATIONS)
    assert all(name == "sizes" or checked[name] == pytest.approx(value) for name, value in overrides.items())


def test_a_misspelt_name_is_refused_with_the_closest_one():
    assert _refusal("04_direct_classification", {"epoch": 1}).startswith(
        "epoch is not a parameter of this chapter; did you mean epochs?"
    )


@pytest.mark.parametrize("case", KERNEL_CASES, ids=_case_id)
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


@pytest.mark.parametrize(
    "chapter, overrides, first",
    [
        ("01_loss_difference", {"hidden_size": 4096, "num_layers": 64}, "hidden_size"),
        ("02_hessian_bound", {"trained_hidden_size": 4096, "trained_num_layers": 64}, "trained_hidden_size"),
        ("02_hessian_bound", {"classes": [2, 1000]}, "classes"),
        ("04_direct_classification", {"hidden_sizes": [4096, 8], "fixed_num_layers": 64}, "hidden_sizes"),
        ("04_direct_classification", {"permutations": 100_000}, "permutations"),
        ("04_direct_classification",
         {"hidden_sizes": list(range(1, 17)), "seeds": list(range(64)), "ordering_permutations": 1_000_000},
         "ordering_permutations"),
        ("05_feature_extraction", {"fixed_hidden_size": 4096, "num_layers": [64, 1]}, "hidden_sizes"),
        ("05_feature_extraction", {"feature_batch_size": 4096}, "feature_batch_size"),
        ("05_feature_extraction",  # the pixels, not the 1024 features, make this one too large
         {"datasets": ["cifar10"], "train_size": 50000, "hidden_sizes": [4096, 8], "num_layers": [0, 1],
          "fixed_hidden_size": 4096, "fixed_num_layers": 0, "seeds": list(range(64))}, "hidden_sizes"),
        ("06_convergence_in_a_ball", {"configurations": [[4096, 64]]}, "train_size"),
        ("06_convergence_in_a_ball", {"configurations": [[256, 5], [16, 5]], "gaussian_samples": 10_000},
         "gaussian_samples"),
        ("07_sample_size", {"bootstrap": 100_000}, "bootstrap"),
        ("08_other_architectures", {"sizes": {"vit": [[1024, 32]]}, "seeds": list(range(64))}, "train_size"),
        ("08_other_architectures", {"sizes": {"vit": [[1024, 32]]}, "seeds": [0, 1]}, "sizes"),
    ],
)  # fmt: skip
def test_every_chapter_refuses_what_this_machine_cannot_hold(chapter, overrides, first):
    """Each value is within its bounds; together they need more memory than the machine has."""
    values = {**chapter_defaults(chapter), **overrides}
    with pytest.raises(ValueError, match=rf"^[a-z_, ]*\b{first}\b.*needs about [0-9.]+ GiB; this machine has"):
        check_chapter(chapter, values)


@pytest.mark.parametrize("chapter", [f"0{n}" for n in range(1, 9)])
def test_every_chapter_checks_memory_and_the_papers_settings_fit_in_4_gib(chapter, monkeypatch):
    """The paper's settings fit here and on a Colab machine (12.7 GiB), with room to spare."""
    from lhlib.engine import memory

    name = next(c for c in book.chapters() if c.startswith(chapter))
    assert any(getattr(r, "__qualname__", "").startswith("fits_in_memory") for r in declaration(name).RELATIONS)
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 4 * 2**30)
    check_chapter(name, chapter_defaults(name))
    monkeypatch.setattr(memory, "physical_memory_bytes", lambda: 2**20)
    with pytest.raises(ValueError, match="needs about"):
        check_chapter(name, chapter_defaults(name))
