"""Chapter 04's parameters: the paper's Figure 3, across seeds."""

from __future__ import annotations

from lhlib.build.declarations import (
    CURVES,
    DATASETS_PARAMETER,
    SWEEP,
    TRAIN_SIZE,
    fits_in_memory,
    output_dir,
    sweep,
    trend_tests,
)
from lhlib.engine.declarations import Parameter

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
        "permutations",
        "ema",
    ),
    SWEEP["fit_k_min"].but(maximum="train_size - 2"),  # at least two values of k to fit
    *sweep("seeds", "collapse_share", seeds="training seeds per configuration (the paper: one)"),
    Parameter("ordering_permutations", "int", 10000, "permutations of the trend tests", 100, 1_000_000),
    *sweep("device"),
    output_dir("04_direct_classification"),
)

RELATIONS = (fits_in_memory(allocations=(CURVES, trend_tests("ordering_permutations"))),)

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
        "permutations": 8,
        "seeds": [0, 1],
        "ordering_permutations": 200,
    },
    "cpu": {"datasets": ["mnist", "fashion_mnist"]},
}
