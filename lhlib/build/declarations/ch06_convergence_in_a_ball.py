"""Chapter 06's parameters: the lemma away from theta-hat, in balls and Gaussian neighbourhoods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lhlib.build.declarations import (
    CURVES,
    DATASETS_PARAMETER,
    SWEEP,
    TRAIN_SIZE,
    Allocation,
    fits_in_memory,
    increasing,
    output_dir,
    sweep,
)
from lhlib.engine.data import DATASETS
from lhlib.engine.declarations import Parameter
from lhlib.engine.memory import parameter_count
from lhlib.engine.validation import check_configurations

__all__ = ["PARAMETERS", "PROFILES", "RELATIONS"]


def _configurations(name: str, value: list, values: Mapping[str, Any]) -> list[tuple[int, int]]:
    """Distinct ``[h, num_layers]`` pairs within the sweep's bounds, as tuples."""
    pairs = check_configurations(name, value)
    for h, n in pairs:
        if h > SWEEP["fixed_hidden_size"].maximum or n > SWEEP["fixed_num_layers"].maximum:
            raise ValueError(
                f"{name} must hold pairs with h <= {SWEEP['fixed_hidden_size'].maximum} and "
                f"num_layers <= {SWEEP['fixed_num_layers'].maximum}, got {[h, n]}"
            )
    return pairs


def _radii(name: str, default: list[float], help: str) -> Parameter:
    """Relative radii in [1e-6, 100] (float32 resolves theta-hat to about 1e-7 of its norm), sorted."""
    return Parameter(name, "list[float]", default, help, 1e-6, 100.0, entries=(1, 32), order="ascending")


PARAMETERS = (
    DATASETS_PARAMETER,
    TRAIN_SIZE,
    *sweep("epochs", "batch_size", "lr", epochs="training as in chapter 04 (the networks are shared)"),
    Parameter(
        "configurations",
        "list[list[int]]",
        [[16, 5], [4, 5], [64, 5], [16, 1], [16, 10]],
        "[h, num_layers]; the first is the reference",
        entries=(1, 16),
        check=_configurations,
    ),
    _radii("relative_radii", [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0], "R / ||theta||"),
    *sweep("permutations", permutations="random orders averaged, as in the paper"),
    # At least three values of k to fit.
    SWEEP["fit_k_min"].but(maximum="train_size - 3", help="power laws are fitted on k in [fit_k_min, N - 1]"),
    Parameter("eigen_samples", "int", 2000, "samples for the top Hessian eigenvector", 2, "train_size"),
    Parameter("ascent_samples", "int", 2000, "samples for the worst-case (ascent) direction", 2, "train_size"),
    Parameter("ascent_steps", "int", 8, "gradient-ascent steps on the sphere", 0, 1000),
    Parameter("gradient_orders", "int", 10, "random orders for ||grad L_k(theta-hat)|| against k", 1, 10_000),
    Parameter("slice_points", "int", 31, "grid points per axis of the Figure 1 slice", 3, 201),
    Parameter("slice_span", "float", 1.0, "alpha, beta in [-slice_span, slice_span]", 1e-3, 100.0),
    Parameter(
        "slice_ks",
        "list[int]",
        [10, 1000],
        "a small and a large k for the slice",
        1,
        "train_size - 1",
        entries=(2, 2),
        check=increasing,
    ),
    _radii("gaussian_relative_radii", [0.01, 0.1, 0.5], "sigma sqrt(P) / ||theta-hat||"),
    Parameter("gaussian_samples", "int", 64, "Monte Carlo draws of theta", 2, 10_000),
    Parameter("gaussian_orders", "int", 4, "random orders averaged in the Gaussian criterion", 1, 1000),
    # Distinct log-spaced k in [1, train_size - 1]: more points than that would be cut silently.
    Parameter("gaussian_k_points", "int", 10, "log-spaced k values", 2, "min(train_size - 1, 200)"),
    Parameter("gaussian_probes", "int", 8, "Hutchinson probes for ||H||_F^2", 2, 1000),
    *sweep("seeds", "device", seeds="constants for every seed, the balls for the first"),
    output_dir("06_convergence_in_a_ball"),
)


def _gaussian_draws(values: Mapping[str, Any]) -> float:
    """gaussian_samples draws of the largest network's parameters, float64, two copies."""
    largest = max(
        parameter_count("mlp", DATASETS[dataset].image_shape, h, n, DATASETS[dataset].num_classes)
        for dataset in values["datasets"]
        for h, n in values["configurations"]
    )
    return 16 * values["gaussian_samples"] * largest


GAUSSIAN_DRAWS = Allocation(
    "the Gaussian criterion's draws (gaussian_samples x P float64)",
    ("gaussian_samples", "configurations"),
    _gaussian_draws,
)

RELATIONS = (fits_in_memory(allocations=(CURVES, GAUSSIAN_DRAWS)),)

PROFILES = {
    "smoke": {
        "datasets": ["digits"],
        "train_size": 400,
        "epochs": 5,
        "lr": 0.01,
        "configurations": [[8, 1], [4, 1]],
        "relative_radii": [0.01, 0.1, 1.0],
        "permutations": 8,
        "eigen_samples": 200,
        "ascent_samples": 200,
        "ascent_steps": 2,
        "gradient_orders": 2,
        "slice_points": 7,
        "slice_ks": [5, 100],
        "gaussian_relative_radii": [0.01, 0.3],
        "gaussian_samples": 8,
        "gaussian_orders": 1,
        "gaussian_k_points": 4,
        "gaussian_probes": 2,
        "seeds": [0, 1],
    },
    "cpu": {"datasets": ["mnist", "fashion_mnist"]},
}
