"""Chapter 05's parameters: the paper's Figure 4, heads on a pretrained backbone's features."""

from __future__ import annotations

from lhlib.build.declarations import (
    CURVES,
    DATASETS_PARAMETER,
    SWEEP,
    TRAIN_SIZE,
    Allocation,
    fits_in_memory,
    one_of,
    output_dir,
    sweep,
    trend_tests,
)
from lhlib.engine.declarations import Parameter
from lhlib.engine.settings import DEFAULT_BACKBONE, POOLINGS, check_backbone, check_revision

__all__ = ["PARAMETERS", "PROFILES", "RELATIONS"]

FEATURES = 1024  # the heads' input for the memory estimate: ViT-base gives 768 features, ViT-large 1024

PARAMETERS = (
    DATASETS_PARAMETER,
    TRAIN_SIZE,
    Parameter(
        "backbone",
        "str",
        DEFAULT_BACKBONE,
        '"offline-cnn" (trained by this book) or a local checkpoint folder also work',
        check=lambda name, value, values: check_backbone(value),
    ),
    Parameter(
        "revision",
        "str",
        "main",
        "hub revision; resolved to a commit in the cache key",
        check=lambda name, value, values: check_revision(value),
    ),
    Parameter(
        "pooling", "str", "pooler", '"pooler": the authors\' pipeline; "cls": final [CLS]', check=one_of(POOLINGS)
    ),
    Parameter("feature_batch_size", "int", 64, "images per backbone forward pass", 1, 4096),
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
    *sweep("seeds", "collapse_share", seeds="the heads' seeds; the first seeds the backbone too"),
    Parameter("ordering_permutations", "int", 10000, "permutations of the trend tests", 100, 1_000_000),
    *sweep("device"),
    output_dir("05_feature_extraction"),
)

# A batch through a ViT-base at 224 x 224 without gradients: the images, one layer's 197 x 3072 activations
# and its 12 heads' 197 x 197 attention scores and probabilities, about 2.5 million float32 numbers an image.
BACKBONE_BATCH = Allocation(
    "a batch through the backbone (feature_batch_size x 2.5e6 float32)",
    ("feature_batch_size",),
    lambda values: 4 * 2.5e6 * values["feature_batch_size"],
)

RELATIONS = (fits_in_memory(FEATURES, (CURVES, trend_tests("ordering_permutations"), BACKBONE_BATCH)),)

PROFILES = {
    "smoke": {
        "datasets": ["digits"],
        "train_size": 400,
        "backbone": "offline-cnn",
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
    "cpu": {"datasets": ["mnist", "fashion_mnist"], "backbone": "offline-cnn"},
}
