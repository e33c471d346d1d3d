r"""What training a seed ensemble will need in memory, estimated before any of it is allocated.

A chapter's validation cell runs before torch is imported, so the estimate is arithmetic on the
parameters. Training ``S`` seeds of a network with :math:`P` parameters on :math:`N` images of
:math:`n` inputs in batches of :math:`b` holds, in float32 (4 bytes each),

.. math::

    4 S P + \max(2 S b A,\; 2 S c a) + 2 N n

numbers: the weights, their gradients and Adam's two moments (:math:`4 S P`); the activations of a
training step or of an evaluation chunk, whichever is larger; the inputs and their copy on the device
(:math:`2 N n`). Here :math:`A` is the activations one sample keeps for the backward pass
(:func:`activations_per_sample`) and :math:`a` its widest single activation: the per-sample losses are
evaluated without gradients in chunks of :math:`c = 8192` samples, a layer's input and output alive at
a time. The estimate is of the order of the peak, not a bound on it (the allocator's slack and
torch's own workspace come on top): it exists to refuse, in one line and before any work, a
combination of sizes that cannot fit, such as a sweep whose every bound holds but whose widest and
deepest network would need tens of GiB.

The counts :func:`parameter_count` gives are those of :func:`lhlib.engine.architectures.build_network`'s
networks (``tests/engine/test_memory.py`` checks them against the built modules).
"""

from __future__ import annotations

import math
import os

from lhlib.engine.validation import check_choice

__all__ = [
    "FAMILIES",
    "activations_per_sample",
    "check_fits_in_memory",
    "parameter_count",
    "physical_memory_bytes",
    "training_bytes",
]

FAMILIES = ("mlp", "cnn", "vit")
"""The families :func:`lhlib.engine.architectures.build_network` builds."""

FLOAT_BYTES = 4
EVALUATION_CHUNK = 8192  # samples per forward pass when the per-sample losses are evaluated
VIT_GRID = 4  # the ViT's patch grid (lhlib.engine.architectures.VisionTransformer's default)


def _halvings(side: int, depth: int) -> int:
    for _ in range(depth):
        side = (side + 1) // 2
    return side


def parameter_count(family: str, image_shape: tuple[int, int, int], width: int, depth: int, classes: int) -> int:
    r"""The number of parameters :math:`P` of a network of ``family``.

    .. math::

        P_{\text{MLP}} = n h + L h^2 + h K, \qquad
        P_{\text{CNN}} = 9 C w + 9 (d - 1) w^2 + w H' W' K, \qquad
        P_{\text{ViT}} = (C p^2 + 1) w + 16 w + d (8 w^2 + 11 w) + 2 w + (w + 1) K,

    for the bias-free MLP (:math:`n = C H W` inputs, :math:`h` = ``width``, :math:`L` = ``depth``), the
    bias-free CNN (stride-2 :math:`3 \times 3` convolutions with padding 1, :math:`H', W'` the sides halved
    ``depth`` times) and the ViT (a :math:`4 \times 4` grid of :math:`p \times p` patches, pre-LN blocks
    with a :math:`2 w` MLP, biases and LayerNorms).

    Args:
        family: One of :data:`FAMILIES`.
        image_shape: ``(channels, height, width)``.
        width: The hidden size, the channels or the embedding dimension.
        depth: Hidden-to-hidden layers, convolutions or transformer blocks.
        classes: The number of logits :math:`K`.

    Returns:
        :math:`P`.
    """
    check_choice("family", family, FAMILIES)
    channels, height, side = image_shape
    if family == "mlp":
        return channels * height * side * width + depth * width * width + width * classes
    if family == "cnn":
        return (
            9 * channels * width
            + 9 * (depth - 1) * width * width
            + width * _halvings(height, depth) * _halvings(side, depth) * classes
        )
    patch = side // VIT_GRID
    tokens = VIT_GRID * VIT_GRID
    return (
        (channels * patch * patch + 1) * width
        + tokens * width
        + depth * (8 * width * width + 11 * width)
        + (2 * width + (width + 1) * classes)
    )


def activations_per_sample(
    family: str, image_shape: tuple[int, int, int], width: int, depth: int, *, widest: bool = False
) -> int:
    r"""The numbers one sample's forward pass keeps for the backward pass, roughly, or its widest one.

    .. math::

        A_{\text{MLP}} = h (L + 2), \qquad A_{\text{CNN}} = \sum_{j=1}^{d} w H_j W_j, \qquad
        A_{\text{ViT}} = 10\, T w d,

    MLP: :math:`h (L + 2)`, widest :math:`h`; CNN: each convolution's output, :math:`w H_j W_j` after
    :math:`j` halvings, widest the first; ViT: about ten :math:`T \times w` tensors per block with
    :math:`T = 16` tokens, widest the query-key-value projection, :math:`3 T w`.

    Args:
        family: One of :data:`FAMILIES`.
        image_shape: ``(channels, height, width)``.
        width: The hidden size, the channels or the embedding dimension.
        depth: Hidden-to-hidden layers, convolutions or transformer blocks.
        widest: Whether to count only the widest single activation (an evaluation without gradients).

    Returns:
        The count (numbers, not bytes).
    """
    check_choice("family", family, FAMILIES)
    _, height, side = image_shape
    tokens = VIT_GRID * VIT_GRID
    if family == "mlp":
        return width if widest else width * (depth + 2)
    if family == "cnn":
        outputs = [width * _halvings(height, j) * _halvings(side, j) for j in range(1, depth + 1)]
        return max(outputs) if widest else sum(outputs)
    return 3 * tokens * width if widest else 10 * tokens * width * depth


def training_bytes(
    family: str,
    image_shape: tuple[int, int, int],
    width: int,
    depth: int,
    classes: int,
    *,
    seeds: int,
    samples: int,
    batch_size: int,
) -> int:
    r"""The estimate of the module docstring, in bytes.

    .. math::

        4 \bigl(4 S P + \max(2 S b A,\; 2 S c a) + 2 N n\bigr).

    Args:
        family: One of :data:`FAMILIES`.
        image_shape: ``(channels, height, width)`` of the inputs.
        width: The family's width.
        depth: The family's depth.
        classes: The number of logits.
        seeds: Members trained together.
        samples: Training samples :math:`N`.
        batch_size: Samples per training step.

    Returns:
        Bytes.
    """
    parameters = parameter_count(family, image_shape, width, depth, classes)
    training_step = 2 * seeds * min(batch_size, samples) * activations_per_sample(family, image_shape, width, depth)
    widest = activations_per_sample(family, image_shape, width, depth, widest=True)
    evaluation_chunk = 2 * seeds * min(EVALUATION_CHUNK, samples) * widest
    numbers = 4 * seeds * parameters + max(training_step, evaluation_chunk) + 2 * samples * math.prod(image_shape)
    return FLOAT_BYTES * numbers


def physical_memory_bytes() -> int:
    """This machine's memory, from ``sysconf``: what a CPU run can use at most.

    Returns:
        Bytes of physical memory.
    """
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _format_bytes(count: float) -> str:
    """``count`` bytes in GiB with one decimal (MiB below one GiB)."""
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def check_fits_in_memory(needed: int, what: str, names: str, available: int | None = None) -> None:
    """Refuse, in one line, a run whose estimate exceeds this machine's memory.

    Args:
        needed: The estimate, in bytes (:func:`training_bytes`).
        what: What needs it, for the message ("training 5 seeds of the mlp of width 4096 and depth 5 ...").
        names: The parameters that set it, which the message starts with.
        available: The memory to compare with; this machine's (:func:`physical_memory_bytes`) by default.

    Raises:
        ValueError: when ``needed > available``.
    """
    available = physical_memory_bytes() if available is None else available
    if needed > available:
        raise ValueError(
            f"{names}: {what} needs about {_format_bytes(needed)}; this machine has {_format_bytes(available)}"
        )
