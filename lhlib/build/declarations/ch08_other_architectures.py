"""Chapter 08's parameters: the experiment and the bound on CNNs and a small vision transformer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lhlib.build.declarations import (
    DATASETS_PARAMETER,
    SWEEP,
    TRAIN_SIZE,
    Allocation,
    fits_in_memory,
    output_dir,
    sweep,
    trend_tests,
)
from lhlib.engine.data import DATASETS
from lhlib.engine.declarations import Parameter
from lhlib.engine.memory import parameter_count
from lhlib.engine.settings import check_family_sizes

__all__ = ["PARAMETERS", "PROFILES", "RELATIONS"]

_MAX_WIDTH, _MAX_DEPTH, _MAX_SIZES = 1024, 32, 16


def _family_sizes(name: str, value: dict, values: Mapping[str, Any]) -> dict[str, tuple[tuple[int, int], ...]]:
    """:func:`lhlib.engine.settings.check_family_sizes`, with every width and depth bounded."""
    sizes = check_family_sizes(value)
    for family, pairs in sizes.items():
        if len(pairs) > _MAX_SIZES:
            raise ValueError(f"{name}[{family!r}] must hold at most {_MAX_SIZES} sizes, got {len(pairs)}")
        outside = [list(p) for p in pairs if p[0] != pairs[0][0] and p[1] != pairs[0][1]]
        if outside:  # the chapter's panels vary the width at the first size's depth, or the depth at its width
            raise ValueError(
                f"{name}[{family!r}] sizes must share the width or the depth of the first, {list(pairs[0])}; "
                f"got {outside[0]}"
            )
        for width, depth in pairs:
            if width > _MAX_WIDTH or depth > _MAX_DEPTH:
                raise ValueError(
                    f"{name}[{family!r}] needs width <= {_MAX_WIDTH} and depth <= {_MAX_DEPTH}, got {[width, depth]}"
                )
    return sizes


def _cnn_fits_the_images(values: Mapping[str, Any]) -> None:
    """Each stride-2 convolution halves the side: past ``ceil(log2(side))`` of them the image is one pixel."""
    for dataset in values["datasets"]:
        side = min(DATASETS[dataset].image_shape[1:])
        deepest = math.ceil(math.log2(side))
        for width, depth in values["sizes"].get("cnn", ()):
            if depth > deepest:
                raise ValueError(
                    f"sizes['cnn'] depth must be at most {deepest} for {dataset}'s {side}-pixel side "
                    f"(each convolution halves it), got {[width, depth]}"
                )


def _scaling_factor(name: str, value: float, values: Mapping[str, Any]) -> float:
    """A factor far enough from 1 that the scaling exponent, a ratio of logarithms, is measured."""
    if abs(math.log(value)) < math.log(1.1):
        raise ValueError(
            f"{name} must be at most 1/1.1 or at least 1.1 (the exponent divides by its logarithm), got {value}"
        )
    return value


PARAMETERS = (
    DATASETS_PARAMETER.but(default=["mnist", "fashion_mnist", "cifar10"]),
    TRAIN_SIZE.but(help="the first train_size training images, as the paper"),
    *sweep("epochs", "batch_size", "lr", lr="Adam, constant: the paper's recipe for every family"),
    Parameter(
        "sizes",
        "dict[str, list[list[int]]]",
        {"mlp": [[16, 5], [64, 5], [16, 10]], "cnn": [[16, 2], [32, 2], [16, 3]], "vit": [[32, 2], [64, 2], [32, 4]]},
        "family: [width, depth] pairs, the first the reference: mlp h and num_layers, cnn channels and "
        "stride-2 blocks, vit embedding width and blocks",
        entries=(1, 3),
        check=_family_sizes,
    ),
    *sweep("permutations", permutations="random orders averaged"),
    SWEEP["fit_k_min"].but(maximum="train_size - 2"),  # at least two values of k to fit
    *sweep("seeds", "collapse_share"),
    Parameter("curvature_samples", "int", 2000, "G-term norms and bounds on the first images", 1, "train_size"),
    Parameter(
        "hessian_samples",
        "int",
        32,
        "full Hessians and the scaling test on the first",
        1,
        "min(curvature_samples, 1000)",
    ),
    Parameter(
        "scaling_factor",
        "float",
        3.0,
        "every parameter is multiplied by this",
        0.01,  # below, a deep network's logits underflow float32
        100.0,
        check=_scaling_factor,
    ),
    Parameter("trend_permutations", "int", 10000, "permutations of the trend tests", 100, 1_000_000),
    *sweep("device"),
    output_dir("08_other_architectures"),
)


def _jacobians(values: Mapping[str, Any]) -> float:
    """The per-sample Jacobians of the largest network, K x P float32 for 128 samples at a time, two copies."""
    return max(
        8 * 128 * DATASETS[dataset].num_classes
        * parameter_count(family, DATASETS[dataset].image_shape, width, depth, DATASETS[dataset].num_classes)
        for dataset in values["datasets"]
        for family, pairs in values["sizes"].items()
        for width, depth in pairs
    )  # fmt: skip


JACOBIANS = Allocation("the per-sample Jacobians (128 samples x K x P float32)", ("sizes",), _jacobians)

RELATIONS = (_cnn_fits_the_images, fits_in_memory(allocations=(trend_tests("trend_permutations"), JACOBIANS)))

PROFILES = {
    "smoke": {
        "datasets": ["digits"],
        "train_size": 400,
        "epochs": 5,
        "lr": 0.01,
        "sizes": {"mlp": [[8, 1], [16, 1], [8, 2]], "cnn": [[4, 1], [8, 1], [4, 2]], "vit": [[8, 1], [16, 1], [8, 2]]},
        "permutations": 8,
        "seeds": [0, 1],
        "curvature_samples": 100,
        "hessian_samples": 4,
        "trend_permutations": 200,
    },
    "cpu": {
        "datasets": ["mnist", "fashion_mnist"],
        "sizes": {
            "mlp": [[16, 5], [64, 5], [16, 10]],
            "cnn": [[8, 2], [16, 2], [8, 3]],
            "vit": [[16, 1], [32, 1], [16, 2]],
        },
        "seeds": [0, 1, 2, 3],
    },
}
