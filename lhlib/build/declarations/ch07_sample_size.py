"""Chapter 07's parameters: the sample size k* a tolerance needs, predicted and checked."""

from __future__ import annotations

from lhlib.build.declarations import (
    CURVES,
    DATASETS_PARAMETER,
    TRAIN_SIZE,
    Allocation,
    fits_in_memory,
    output_dir,
    sweep,
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
        fixed_hidden_size="the paper's reference network (h 16, num_layers 5)",
        fixed_num_layers="and its depth",
        permutations="random orders averaged, as in the paper",
    ),
    Parameter(
        "epsilons",
        "list[float]",
        [1e-3, 3e-4, 1e-4, 3e-5, 1e-5],
        "tolerances on E|L_{k+1} - L_k| (nats)",
        1e-9,  # below it k* = 2M / epsilon runs past 1e9 objects: an extrapolation, not a measurement
        1.0,
        entries=(1, 32),
        order="descending",
    ),
    Parameter("recipe_epsilon", "float", 1e-4, "the tolerance of the worked example (nats)", 1e-9, 1.0),
    Parameter("pilot_size", "int", 1000, "hold-out: predict k* from the first pilot_size", 3, "train_size - 3"),
    # At R = 0 the lemma's ball is the point theta-hat and its bound says nothing new.
    Parameter("bound_relative_radius", "float", 0.01, "R / ||theta-hat|| of the lemma's ball", 1e-6, 10.0),
    Parameter("bootstrap", "int", 200, "bootstrap resamples of the pilot", 2, 100_000),
    # An interval of confidence 0 or 1 is a point or everything.
    Parameter("confidence", "float", 0.95, "of the bootstrap intervals", 0.0, 1.0, above=True, below=True),
    *sweep("seeds", "device"),
    output_dir("07_sample_size"),
)

BOOTSTRAP = Allocation(
    "the bootstrap resamples (bootstrap x train_size indices and values, four 8-byte copies)",
    ("bootstrap", "train_size"),
    lambda values: 32 * values["bootstrap"] * values["train_size"],
)

RELATIONS = (fits_in_memory(allocations=(CURVES, BOOTSTRAP)),)

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
        "epsilons": [0.01, 0.001],
        "pilot_size": 100,
        "bootstrap": 20,
        "seeds": [0, 1],
    },
    "cpu": {"datasets": ["mnist", "fashion_mnist"]},
}
