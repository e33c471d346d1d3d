"""Chapter 01's parameters: one network, frozen at theta-hat, and the loss difference around it."""

from __future__ import annotations

from lhlib.build.declarations import DATASET, TRAIN_SIZE, fits_in_memory, output_dir, sweep
from lhlib.engine.declarations import Parameter

__all__ = ["PARAMETERS", "PROFILES", "RELATIONS"]

PARAMETERS = (
    *sweep("seeds", seeds="training seeds; the first kept is the worked one"),
    DATASET.but(help="the paper's Figure 2 dataset"),
    TRAIN_SIZE,
    Parameter("hidden_size", "int", 16, "h, the width of every hidden layer", 1, 4096),
    Parameter("num_layers", "int", 5, "hidden-to-hidden layers; Theorem 1 has num_layers + 2", 0, 64),
    *sweep("epochs", "batch_size", "lr"),
    Parameter("k", "int", 5000, "compare L_{k+1} with L_k on the first k + 1 objects", 1, "train_size - 1"),
    Parameter("num_directions", "int", 8, "random unit directions in parameter space", 1, 1024),
    # Below 1e-10 a float32 step vanishes against theta-hat; within a decade the log-spaced radii blur.
    Parameter("radius_min", "float", 1e-6, "distances ||theta - theta_hat|| probed", 1e-10, 1e3),
    Parameter("radius_max", "float", 1.0, "the largest distance probed", "10 * radius_min", 1e4),
    Parameter("num_radii", "int", 25, "distances, log-spaced between the two", 3, 1000),
    *sweep("device"),
    output_dir("01_loss_difference"),
)

RELATIONS = (fits_in_memory(),)

PROFILES = {
    "smoke": {
        "dataset": "digits",
        "train_size": 400,
        "hidden_size": 8,
        "num_layers": 1,
        "epochs": 5,
        "lr": 0.01,
        "k": 200,
        "num_directions": 2,
        "num_radii": 16,
        "seeds": [0, 1],
    },
}
