"""The chapters' parameters, declared once, with what each profile changes.

``chNN_<notebook stem>.py`` beside this file declares chapter NN's parameters: ``PARAMETERS``, a tuple of
:class:`lhlib.engine.declarations.Parameter` in the order of the chapter's ``parameters`` cell (name,
type, default, bounds, one line of help); ``RELATIONS``, the checks that tie parameters together or to
the data; and ``PROFILES``, what the ``smoke`` and ``cpu`` profiles set (the ``paper`` profile is the
defaults). From it come:

- the ``parameters`` cell, which must read as :func:`lhlib.engine.declarations.parameters_cell` writes
  it (``python -m lhlib.build.book write-parameters`` rewrites it);
- the validation cell after it, one call of :func:`check_chapter`;
- the check of every profile when it is loaded (:func:`profile_overrides`);
- the cases of the bad-input tests.

Nothing here imports torch, so the validation cell refuses a bad value before the chapter's heavy imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from lhlib.engine.data import DATASETS, check_dataset
from lhlib.engine.declarations import Parameter, check_parameters
from lhlib.engine.memory import check_fits_in_memory, training_bytes
from lhlib.engine.settings import SWEEP_PARAMETERS as SWEEP
from lhlib.engine.validation import check_choice, check_choices, check_output_dir

__all__ = [
    "CURVES",
    "Allocation",
    "DATASET",
    "DATASETS_PARAMETER",
    "DATASET_NAMES",
    "PROFILE_NAMES",
    "SWEEP",
    "TRAIN_SIZE",
    "check_chapter",
    "fits_in_memory",
    "largest_training",
    "chapter_defaults",
    "declaration",
    "increasing",
    "is_declared",
    "one_of",
    "output_dir",
    "profile_overrides",
    "sweep",
    "trend_tests",
]

PROFILE_NAMES = ("smoke", "cpu", "paper")
"""The profiles a chapter can be built with; ``paper`` runs the declared defaults."""


def one_of(accepted: tuple[str, ...]) -> Any:
    """A declaration's ``check`` that accepts only the strings ``accepted``.

    Args:
        accepted: The values allowed.

    Returns:
        ``check(name, value, values)``, which returns ``value`` or raises :class:`ValueError` listing them.
    """
    return lambda name, value, values: check_choice(name, value, accepted)


def increasing(name: str, value: list, values: Mapping[str, Any]) -> list:
    """A declaration's ``check`` for ``[low, high]``: two entries, ``low < high``.

    Args:
        name: The parameter's name.
        value: Its value, already a list of two numbers.
        values: The parameters checked before it (unused).

    Returns:
        ``value``.

    Raises:
        ValueError: when ``value`` is not increasing.
    """
    if list(value) != sorted(value):
        raise ValueError(f"{name} must be [low, high] with low < high, got {value!r}")
    return value


def _fits_the_data(name: str, value: int, values: Mapping[str, Any]) -> int:
    """``train_size`` checked against every dataset declared before it (``dataset`` or ``datasets``)."""
    for dataset in [values["dataset"]] if "dataset" in values else values.get("datasets", []):
        check_dataset(dataset, value)
    return value


DATASET_NAMES = tuple(DATASETS)
"""The datasets a chapter can load."""

DATASET = Parameter("dataset", "str", "mnist", "one of " + ", ".join(DATASET_NAMES), check=one_of(DATASET_NAMES))
"""A chapter's one dataset."""

DATASETS_PARAMETER = Parameter(
    "datasets",
    "list[str]",
    ["mnist", "fashion_mnist", "cifar10", "cifar100"],
    "the paper's four",
    entries=(1, len(DATASET_NAMES)),
    check=lambda name, value, values: check_choices(name, value, DATASET_NAMES),
)
"""A chapter's datasets, each at most once."""

TRAIN_SIZE = Parameter(
    "train_size",
    "int",
    10000,
    "the first train_size training images, as the authors",
    3,
    max(spec.train_available for spec in DATASETS.values()),
    check=_fits_the_data,
)
"""How many training images, at most what every dataset of the chapter has."""


def _networks(values: Mapping[str, Any]) -> tuple[list[tuple[str, int, int]], tuple[str, ...]]:
    """The ``(family, width, depth)`` of every network a chapter's parameters ask it to train, and those parameters."""
    if "sizes" in values:
        return [(family, w, d) for family, pairs in values["sizes"].items() for w, d in pairs], ("sizes",)
    if "configurations" in values:
        return [("mlp", h, n) for h, n in values["configurations"]], ("configurations",)
    if "trained_hidden_size" in values:  # chapter 02 trains one network; its grid networks are only evaluated
        pair = ("trained_hidden_size", "trained_num_layers")
        return [("mlp", values[pair[0]], values[pair[1]])], pair
    if "hidden_sizes" in values:
        networks = [("mlp", h, values["fixed_num_layers"]) for h in values["hidden_sizes"]] + [
            ("mlp", values["fixed_hidden_size"], n) for n in values["num_layers"]
        ]
        return networks, ("hidden_sizes", "num_layers", "fixed_hidden_size", "fixed_num_layers")
    return [("mlp", values["hidden_size"], values["num_layers"])], ("hidden_size", "num_layers")


def largest_training(values: Mapping[str, Any], features: int | None = None) -> tuple[int, str]:
    """The largest training a chapter's parameters ask for, by :mod:`lhlib.engine.memory`'s estimate.

    Every network the parameters name (``hidden_size``/``num_layers``, ``trained_*``, the sweep's panels,
    ``configurations`` or chapter 08's ``sizes``) is estimated on every dataset, all its seeds trained
    together; with ``features``, on the backbone's features as well as on the pixels.

    Args:
        values: The chapter's checked parameters.
        features: The input size when the networks also read a backbone's features.

    Returns:
        The estimate in bytes, and what it is for, in words.
    """
    datasets = [values["dataset"]] if "dataset" in values else values["datasets"]
    seeds = len(values.get("seeds", [0]))
    estimates = []
    for dataset in datasets:
        spec = DATASETS[dataset]
        for shape in [spec.image_shape, *([(1, 1, features)] if features else [])]:
            for family, width, depth in _networks(values)[0]:
                needed = training_bytes(
                    family, shape, width, depth, spec.num_classes,
                    seeds=seeds, samples=values["train_size"], batch_size=values.get("batch_size", 64),
                )  # fmt: skip
                estimates.append((needed, family, width, depth, dataset))
    needed, family, width, depth, dataset = max(estimates)
    return needed, (
        f"training {seeds} seed(s) of the {family} of width {width} and depth {depth} on "
        f"{values['train_size']} {dataset} samples"
    )


@dataclass(frozen=True)
class Allocation:
    """A large array a chapter makes besides training, and what it costs.

    Attributes:
        what: What it is, for the message.
        names: The parameters that size it, named first in the message.
        size: Its bytes (about), from the checked parameters.
    """

    what: str
    names: tuple[str, ...]
    size: Callable[[Mapping[str, Any]], float]


CURVES = Allocation(
    "the loss-difference curves (permutations x train_size float64, five copies at the peak)",
    ("permutations", "train_size"),
    lambda values: 40 * values["permutations"] * values["train_size"],
)
""":func:`lhlib.engine.landscape.loss_difference_curves` over every order at once."""


def trend_tests(name: str) -> Allocation:
    """The permutations of a trend test across seeds: ``name`` x (panel entries x seeds) float64, five copies.

    Args:
        name: The parameter that counts the permutations.

    Returns:
        Its :class:`Allocation`.
    """

    def size(values: Mapping[str, Any]) -> float:
        if "sizes" in values:
            entries = max(len(pairs) for pairs in values["sizes"].values())
        else:
            entries = max(len(values["hidden_sizes"]), len(values["num_layers"]))
        return 40 * values[name] * entries * len(values["seeds"])

    return Allocation(f"the trend tests ({name} x networks x seeds float64)", (name, "seeds"), size)


def fits_in_memory(features: int | None = None, allocations: tuple[Allocation, ...] = ()) -> Any:
    """A relation that refuses a run too large for this machine's memory, before any of it is allocated.

    Args:
        features: The input size when the networks also read a backbone's features (:func:`largest_training`).
        allocations: The chapter's other large arrays.

    Returns:
        ``relation(values)``, which raises :class:`ValueError` naming the parameters and the estimate
        (:func:`lhlib.engine.memory.check_fits_in_memory`).
    """

    def relation(values: Mapping[str, Any]) -> None:
        names = ", ".join((*_networks(values)[1], *(name for name in ("seeds", "train_size") if name in values)))
        check_fits_in_memory(*largest_training(values, features), names)
        for allocation in allocations:
            check_fits_in_memory(int(allocation.size(values)), allocation.what, ", ".join(allocation.names))

    return relation


def output_dir(chapter: str) -> Parameter:
    """The folder a chapter writes its summary and figures into (``results/paper/<chapter>`` by default).

    Args:
        chapter: The chapter's name, ``NN_stem``.

    Returns:
        Its ``output_dir`` declaration.
    """
    return Parameter(
        "output_dir",
        "str",
        f"results/paper/{chapter}",
        "where the summary and figures go",
        check=lambda name, value, values: check_output_dir(name, value),
    )


def sweep(*names: str, **helps: str) -> tuple[Parameter, ...]:
    """The declarations of the sweep's fields ``names`` (:data:`lhlib.engine.settings.SWEEP_PARAMETERS`).

    Args:
        *names: Fields of :class:`lhlib.engine.settings.SweepSettings`, in the order the chapter shows them.
        **helps: A chapter's own line of help for some of them.

    Returns:
        The declarations, in the order given.
    """
    return tuple(_in_a_chapter(SWEEP[name]).but(help=helps.get(name, SWEEP[name].help)) for name in names)


def _in_a_chapter(parameter: Parameter) -> Parameter:
    """A sweep field as a chapter takes it: a panel holds two networks at least, or it has no trend to test."""
    return parameter.but(entries=(2, 16)) if parameter.name in ("hidden_sizes", "num_layers") else parameter


def is_declared(chapter: str) -> bool:
    """Whether ``chapter`` has a declaration module beside this file.

    Args:
        chapter: A chapter's name, ``NN_stem``.

    Returns:
        ``True`` when ``ch<chapter>.py`` exists here.
    """
    return isinstance(chapter, str) and (Path(__file__).parent / f"ch{chapter}.py").is_file()


def declaration(chapter: str) -> ModuleType:
    """The module that declares ``chapter``'s parameters.

    Args:
        chapter: The chapter's name, ``NN_stem`` (its notebook's stem).

    Returns:
        ``lhlib.build.declarations.chNN_stem``.

    Raises:
        ValueError: when no chapter has that name.
    """
    if not is_declared(chapter):
        raise ValueError(f"chapter must name a chapter such as '04_direct_classification', got {chapter!r}")
    return importlib.import_module(f"{__name__}.ch{chapter}")


def check_chapter(chapter: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``chapter`` checked against its declaration: what the validation cell runs.

    Args:
        chapter: The chapter's name.
        namespace: The notebook's globals (a name papermill was given that the chapter does not declare is
            refused), or a dict of the values.

    Returns:
        Each parameter's checked value, by name.

    Raises:
        ValueError: one line naming the first unknown or bad parameter.
    """
    module = declaration(chapter)
    return check_parameters(module.PARAMETERS, namespace, module.RELATIONS)


def chapter_defaults(chapter: str) -> dict[str, Any]:
    """The values ``chapter`` runs with unless told otherwise (the paper's settings).

    Args:
        chapter: The chapter's name.

    Returns:
        Each declared parameter's default, by name.
    """
    return {parameter.name: parameter.default for parameter in declaration(chapter).PARAMETERS}


def profile_overrides(chapter: str, profile: str) -> dict[str, Any]:
    """What ``profile`` sets for ``chapter``, checked with the defaults as every other value.

    Args:
        chapter: The chapter's name.
        profile: One of :data:`PROFILE_NAMES`.

    Returns:
        A new dict of the parameters the profile changes (empty for ``paper``).

    Raises:
        ValueError: when ``profile`` is unknown, or its values break the chapter's declaration; the message
            names the profile, the chapter and the parameter.
    """
    check_choice("profile", profile, PROFILE_NAMES)
    module = declaration(chapter)
    overrides = dict(module.PROFILES.get(profile, {}))
    try:
        check_parameters(
            module.PARAMETERS, {**chapter_defaults(chapter), **overrides}, module.RELATIONS, submitted=list(overrides)
        )
    except ValueError as error:
        raise ValueError(f"profile {profile}, chapter {chapter}: {error}") from None
    return overrides
