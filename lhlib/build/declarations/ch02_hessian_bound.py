"""Chapter 02's parameters: Theorem 1's bound on random, tiny, grid and trained networks."""

from __future__ import annotations

from lhlib.build.declarations import DATASET, TRAIN_SIZE, Allocation, fits_in_memory, increasing, output_dir, sweep
from lhlib.engine.declarations import Parameter

__all__ = ["PARAMETERS", "PROFILES", "RELATIONS"]


def _range(name: str, default: list[float], help: str, low: float, high: float) -> Parameter:
    """A ``[low, high]`` range of numbers in ``[low, high]``: per-layer scales from 0.01 (a product of many smaller
    ones underflows), input norms from 1e-6.
    """
    return Parameter(name, "list[float]", default, help, low, high, entries=(2, 2), check=increasing)


PARAMETERS = (
    *sweep("seeds", seeds="trained nets; random studies: the first"),
    Parameter("classes", "list[int]", [2, 3, 10, 100], "K for ||diag(p) - p p^T||_2", 2, 1000, entries=(1, 16)),
    Parameter("num_logits", "int", 20000, "random logit vectors per K", 10, 100_000),
    Parameter("logit_scale_max", "float", 20.0, "logits N(0, s^2 I), s in [0.1, this]", 0.1, 100.0, above=True),
    DATASET.but(help="inputs for the grid networks and the trained network"),
    TRAIN_SIZE,
    *sweep("hidden_sizes", "num_layers", num_layers="num_layers + 2 matrices"),  # two widths at least: a fit
    Parameter("num_inputs", "int", 256, "images fed to every grid network", 1, "min(train_size, 10000)"),
    Parameter("num_random_networks", "int", 300, "small networks with random per-layer scales", 1, 100_000),
    _range("scale_range", [0.05, 2.0], "range of those scales (log-uniform)", 0.01, 100.0),
    Parameter("num_dense_networks", "int", 40, "tiny networks, full Hessian formed densely", 1, 10_000),
    Parameter("num_full_networks", "int", 400, "random networks against the corrected constant", 1, 100_000),
    _range("full_scale_range", [0.05, 5.0], "their weight scales: wide", 0.01, 100.0),
    _range("full_input_norm_range", [0.1, 10.0], "max_i ||x_i||", 1e-6, 1000.0),
    Parameter("num_moderate_networks", "int", 50, "moderate weights, inputs in the ball", 1, 100_000),
    _range("moderate_scale_range", [1.0, 3.0], "their weight scales", 0.01, 100.0),
    _range("moderate_input_norm_range", [0.01, 1.0], "their max_i ||x_i||", 1e-6, 1000.0),
    Parameter("trained_hidden_size", "int", 16, "the trained network (the paper's middle one)", 1, 4096),
    Parameter("trained_num_layers", "int", 5, "its hidden-to-hidden layers", 0, 64),
    *sweep("epochs", "batch_size", "lr", "device"),
    output_dir("02_hessian_bound"),
)

SOFTMAX_HESSIANS = Allocation(
    "the softmax Hessians (num_logits x K x K float64, two copies)",
    ("classes", "num_logits"),
    lambda values: 16 * values["num_logits"] * max(values["classes"]) ** 2,
)

RELATIONS = (fits_in_memory(allocations=(SOFTMAX_HESSIANS,)),)

PROFILES = {
    "smoke": {
        "classes": [2, 10],
        "num_logits": 500,
        "dataset": "digits",
        "train_size": 400,
        "hidden_sizes": [4, 8],
        "num_layers": [1, 2],
        "num_inputs": 32,
        "num_random_networks": 30,
        "num_dense_networks": 4,
        "trained_hidden_size": 8,
        "trained_num_layers": 1,
        "epochs": 5,
        "lr": 0.01,
        "seeds": [0, 1],
        "num_full_networks": 40,
        "num_moderate_networks": 10,
    },
}
