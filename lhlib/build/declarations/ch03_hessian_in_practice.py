"""Chapter 03's parameters: the bound's terms measured on the paper's sweep."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lhlib.build.declarations import DATASETS_PARAMETER, TRAIN_SIZE, fits_in_memory, output_dir, sweep
from lhlib.engine.data import DATASETS
from lhlib.engine.declarations import Parameter
from lhlib.engine.settings import SweepSettings, sweep_configurations

__all__ = ["PARAMETERS", "PROFILES", "RELATIONS"]

PARAMETERS = (
    DATASETS_PARAMETER,
    TRAIN_SIZE,
    *sweep(
        "epochs",
        "batch_size",
        "lr",
        "hidden_sizes",
        "num_layers",
        "fixed_hidden_size",
        "fixed_num_layers",
        num_layers="hidden-to-hidden; Theorem 1's L is this + 2",
        fixed_hidden_size="h in the number-of-layers sweep",
        fixed_num_layers="num_layers in the hidden-size sweep",
    ),
    Parameter("full_hessian_samples", "int", 256, "random samples whose FULL Hessian norm is found", 1, "train_size"),
    Parameter(
        "extreme_samples",
        "int",
        16,
        "plus those of largest G-term: bounds at most risk",
        0,
        "train_size - full_hessian_samples",
    ),
    Parameter("top_k", "int", 5, "top eigenvalues of the averaged Hessian and G-term", 1, 100),
    # Above about 0.1 a Lanczos run "converges" before it has found anything.
    Parameter("lanczos_tol", "float", 1e-3, "relative residual at which a Lanczos run converged", 1e-6, 0.1),
    # Distinct log-spaced k in [1, train_size - 1]: there are only train_size - 1 of them.
    Parameter(
        "lemma_points", "int", 13, "values of k, log-spaced, for the lemma's term", 2, "min(train_size - 1, 1000)"
    ),
    *sweep("seeds", "device", seeds="every seed: G-term norms; the first: the rest"),
    output_dir("03_hessian_in_practice"),
)


def _top_k_fits_every_network(values: Mapping[str, Any]) -> None:
    """Lanczos finds at most P - 1 eigenvalues of a network with P parameters: the smallest network decides."""
    configurations = sweep_configurations(SweepSettings.from_values(values))
    smallest = min(
        DATASETS[name].input_dim * h + n * h * h + h * DATASETS[name].num_classes
        for name in values["datasets"]
        for h, n in configurations
    )
    if values["top_k"] > smallest - 1:
        raise ValueError(
            f"top_k must be at most {smallest - 1} (the smallest network's parameters - 1), got {values['top_k']}"
        )


RELATIONS = (_top_k_fits_every_network, fits_in_memory())

PROFILES = {
    "smoke": {
        "datasets": ["digits"],
        "train_size": 400,
        "epochs": 5,
        "lr": 0.01,
        "hidden_sizes": [4, 8],
        "num_layers": [1, 2],
        "fixed_hidden_size": 8,
        "fixed_num_layers": 1,
        "full_hessian_samples": 16,
        "extreme_samples": 4,
        "top_k": 2,
        "lemma_points": 4,
        "seeds": [0, 1],
    },
    "cpu": {"datasets": ["mnist", "fashion_mnist"], "full_hessian_samples": 128},
}
