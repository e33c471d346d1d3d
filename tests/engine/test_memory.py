"""The memory estimate: parameter counts against the built networks, and the one-line refusal."""

import pytest

from lhlib.engine.architectures import build_network
from lhlib.engine.memory import activations_per_sample, check_fits_in_memory, parameter_count, training_bytes


@pytest.mark.parametrize(
    "family, image_shape, width, depth, classes",
    [
        ("mlp", (1, 8, 8), 5, 0, 10),
        ("mlp", (3, 4, 4), 7, 3, 4),
        ("cnn", (1, 8, 8), 3, 1, 10),
        ("cnn", (3, 9, 7), 4, 3, 5),
        ("cnn", (1, 28, 28), 2, 5, 10),
        ("vit", (1, 8, 8), 4, 1, 10),
        ("vit", (3, 16, 16), 6, 2, 3),
    ],
)
def test_parameter_counts_are_those_of_the_built_networks(family, image_shape, width, depth, classes):
    model = build_network(family, image_shape, width, depth, classes, seed=0)
    assert parameter_count(family, image_shape, width, depth, classes) == sum(p.numel() for p in model.parameters())


def test_the_estimate_grows_with_every_size():
    base = {"seeds": 2, "samples": 1000, "batch_size": 64}
    reference = training_bytes("mlp", (1, 28, 28), 16, 5, 10, **base)
    assert training_bytes("mlp", (1, 28, 28), 32, 5, 10, **base) > reference
    assert training_bytes("mlp", (1, 28, 28), 16, 6, 10, **base) > reference
    assert training_bytes("mlp", (1, 28, 28), 16, 5, 10, **{**base, "seeds": 3}) > reference
    assert training_bytes("mlp", (1, 28, 28), 16, 5, 10, **{**base, "samples": 2000}) > reference
    # 4 x S x P float32 is the training state alone: the estimate is never below it.
    assert reference >= 4 * 4 * 2 * parameter_count("mlp", (1, 28, 28), 16, 5, 10)


def test_a_run_that_cannot_fit_is_refused_in_one_line_with_the_estimate():
    check_fits_in_memory(2**30, "x", "sizes", available=2**31)
    with pytest.raises(ValueError, match=r"^sizes: x needs about 2\.0 GiB; this machine has 1\.0 GiB$"):
        check_fits_in_memory(2**31, "x", "sizes", available=2**30)


def test_the_widest_activation_is_a_layers_output():
    """An evaluation without gradients holds one layer at a time: h, the first convolution's output, 3 T w."""
    assert activations_per_sample("mlp", (1, 8, 8), 5, 3, widest=True) == 5
    assert activations_per_sample("cnn", (1, 8, 8), 4, 2, widest=True) == 4 * 4 * 4
    assert activations_per_sample("vit", (1, 8, 8), 6, 2, widest=True) == 3 * 16 * 6
    # With many samples the evaluation chunk, not the training step, sets the estimate.
    chunked = training_bytes("vit", (1, 8, 8), 64, 1, 10, seeds=1, samples=8192, batch_size=1)
    assert chunked >= 4 * 2 * 8192 * activations_per_sample("vit", (1, 8, 8), 64, 1, widest=True)
