r"""Theorem 1's structure beyond the MLP: a product-of-layer-norms bound for bias-free ReLU CNNs,
and the homogeneity test that tells whether such a product can follow a network's curvature.

*The bound.* A bias-free ReLU network whose linear maps :math:`C^{(1)}, \dots, C^{(L)}` are matrices or
convolutions has logits :math:`z = C^{(L)} \sigma(C^{(L-1)} \cdots \sigma(C^{(1)} x))`. The Jacobian of
:math:`z` with respect to layer :math:`p`'s weights maps a weight change :math:`V` to
:math:`G^{(p)} \operatorname{vec}(V U^{(p)})`, where :math:`G^{(p)} = \partial z / \partial y^{(p)}`
(:math:`y^{(p)}` the layer's output) and :math:`U^{(p)}` the layer's input arranged as patches
(``F.unfold``; for a matrix layer :math:`U^{(p)} = x^{(p)}`). Hence

.. math::

    \lVert J J^\top \rVert_2 \le \sum_p \lVert G^{(p)} \rVert_2^2 \, \lVert U^{(p)} \rVert_2^2, \qquad
    \lVert G^{(p)} \rVert_2 \le \prod_{q>p} \lVert C^{(q)} \rVert_{\mathrm{op}},

    \lVert U^{(p)} \rVert_F^2 \le c_p \lVert x^{(p)} \rVert^2, \qquad
    \lVert x^{(p)} \rVert \le \lVert x \rVert \prod_{q<p} \lVert C^{(q)} \rVert_{\mathrm{op}},

with :math:`c_p` an upper bound on the number of patches that contain one input entry (:math:`c_p = 1` for a
matrix, :math:`\lceil k/s \rceil^2` for a :math:`k \times k` convolution of stride :math:`s`, the count itself
when every spatial side of the input is at least :math:`k`). With
:math:`\lVert A \rVert_2 \le \frac12` for the softmax Hessian this gives, per sample,

.. math::

    \lVert J^\top A J \rVert_2 \le \tfrac12 \lVert x \rVert^2 \sum_p c_p \prod_{q \ne p}
    \lVert C^{(q)} \rVert_{\mathrm{op}}^2,

the corrected Theorem 1 of chapter 02 with one overlap factor per layer (:func:`layer_norm_bound_per_sample`).
:math:`\lVert C^{(q)} \rVert_{\mathrm{op}}` is the exact spectral norm of the convolution as a linear map on
its input (:func:`layer_operator_norms`, from the dense matrix of the map).

The proof uses only that the linear maps are linear and that the activation is 1-Lipschitz with
:math:`\sigma(0) = 0` (ReLU here; ``tanh`` would do as well).

*Homogeneity.* Scaling every parameter of a bias-free ReLU network with :math:`L` linear maps by :math:`c`
scales :math:`J` by :math:`c^{L-1}`, so
:math:`\log\bigl(\lVert J J^\top \rVert(c\theta) / \lVert J J^\top \rVert(\theta)\bigr) / \log c = 2 (L - 1)`
for every sample: exactly the scaling of the product of layer norms, so for these networks the bound and
:math:`J J^\top` respond to the weights' scale alike. :func:`jjt_scaling_exponents` measures this exponent
for any model. LayerNorm, attention, GELU and biases make it differ from sample to sample; that does not rule
out some bound for such a network, but a product of layer norms, which scales as one power of :math:`c`,
cannot follow :math:`J J^\top` there.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from lhlib.engine.architectures import ConvNet
from lhlib.engine.bounds import SOFTMAX_HESSIAN_NORM_SHARP
from lhlib.engine.models import MLP
from lhlib.engine.per_sample import per_sample_jjt
from lhlib.engine.validation import check_float

__all__ = [
    "jjt_scaling_exponents",
    "layer_norm_bound_per_sample",
    "layer_operator_norms",
    "linear_maps",
    "patch_overlaps",
]


def linear_maps(model: nn.Module) -> list[tuple[nn.Module, tuple[int, ...]]]:
    r"""The linear maps :math:`C^{(1)}, \dots, C^{(L)}` of an MLP or a ConvNet, each with the shape of its input.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a :class:`~lhlib.engine.architectures.ConvNet`.

    Returns:
        The list of ``(layer, input_shape)`` pairs in order, the shape of one input to the layer without the
        batch axis.

    Raises:
        ValueError: when ``model`` is neither an MLP nor a ConvNet, or one of its convolutions is dilated,
            grouped or pads other than with zeros: the overlap factor of :func:`patch_overlaps` and the
            shapes here count neither (a dilated stride-2 convolution breaks the bound).
    """
    if isinstance(model, MLP):
        return [(linear, (linear.in_features,)) for linear in model.linears]
    if isinstance(model, ConvNet):
        maps, (channels, height, width) = [], model.image_shape
        for index, conv in enumerate(model.convs):
            if conv.dilation != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
                raise ValueError(
                    f"convs[{index}] must be undilated, ungrouped and zero-padded for the layer-norm bound, got "
                    f"dilation={conv.dilation}, groups={conv.groups}, padding_mode={conv.padding_mode!r}"
                )
            maps.append((conv, (channels, height, width)))
            channels, height, width = conv.out_channels, (height + 1) // 2, (width + 1) // 2
        return [*maps, (model.head, (model.head.in_features,))]
    raise ValueError(f"model must be an lhlib MLP or ConvNet (a bias-free ReLU network), got {type(model).__name__}")


def layer_operator_norms(model: nn.Module) -> torch.Tensor:
    r"""The exact spectral norms of the linear maps, from their dense matrices.

    .. math::

        \lVert C^{(p)} \rVert_{\mathrm{op}} = \max_{\lVert u \rVert_2 = 1} \lVert C^{(p)} u \rVert_2
        = \sigma_{\max}\bigl(M^{(p)}\bigr), \qquad p = 1, \dots, L,

    with :math:`M^{(p)}` the matrix of the map on its (flattened) input: the weight of a linear layer, or the
    images of the unit basis under a convolution (with its stride and padding).

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a :class:`~lhlib.engine.architectures.ConvNet`.

    Returns:
        The ``(L,)`` float64 tensor of norms.

    Raises:
        ValueError: as :func:`linear_maps`.
    """
    norms = []
    for layer, shape in linear_maps(model):
        weight = layer.weight.detach().double()
        if isinstance(layer, nn.Linear):
            matrix = weight
        else:
            basis = torch.eye(math.prod(shape), dtype=torch.float64).reshape(-1, *shape)
            images = nn.functional.conv2d(basis, weight, stride=layer.stride, padding=layer.padding)
            matrix = images.reshape(basis.shape[0], -1).T
        norms.append(torch.linalg.matrix_norm(matrix, ord=2))
    return torch.stack(norms)


def patch_overlaps(model: nn.Module) -> torch.Tensor:
    r"""The overlap factors :math:`c_p` of the linear maps.

    .. math::

        c_p = \prod_{d} \Bigl\lceil \frac{k_d}{s_d} \Bigr\rceil \ \text{for a convolution with kernel } k
        \text{ and stride } s, \qquad c_p = 1 \ \text{for a matrix},

    which is :math:`\lceil k/s \rceil^2` for a square kernel and stride.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a :class:`~lhlib.engine.architectures.ConvNet`.

    Returns:
        The ``(L,)`` float64 tensor of the factors.

    Raises:
        ValueError: as :func:`linear_maps`.
    """
    factors = []
    for layer, _ in linear_maps(model):
        if isinstance(layer, nn.Linear):
            factors.append(1.0)
        else:
            factors.append(float(math.prod(math.ceil(k / s) for k, s in zip(layer.kernel_size, layer.stride))))
    return torch.tensor(factors, dtype=torch.float64)


def layer_norm_bound_per_sample(
    model: nn.Module, x: torch.Tensor, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP
) -> torch.Tensor:
    r"""A bound on every sample's G-term norm :math:`\lVert J_i^\top A_i J_i \rVert_2` (module docstring).

    .. math::

        a \, \lVert x_i \rVert^2 \sum_{p=1}^{L} c_p \prod_{q \ne p} \lVert C^{(q)} \rVert_{\mathrm{op}}^2,
        \qquad a = \tfrac12.

    For the MLP (all :math:`c_p = 1`) it is :func:`lhlib.engine.bounds.corrected_bound_per_sample`.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a :class:`~lhlib.engine.architectures.ConvNet`.
        x: The ``(N, d)`` inputs (flattened images for a ConvNet).
        a_norm: The factor :math:`a` bounding :math:`\lVert A \rVert_2`; the sharp :math:`\frac12` by default.

    Returns:
        The ``(N,)`` float64 tensor of bounds.

    Raises:
        ValueError: when ``a_norm`` is negative or ``model`` is neither an MLP nor a ConvNet.
    """
    check_float("a_norm", a_norm, minimum=0.0)
    squared = layer_operator_norms(model) ** 2
    overlaps = patch_overlaps(model)
    leave_one_out = sum(
        overlaps[p] * torch.prod(torch.cat([squared[:p], squared[p + 1 :]])) for p in range(len(squared))
    )
    return a_norm * (x.detach().double() ** 2).sum(1) * leave_one_out


def jjt_scaling_exponents(model: nn.Module, x: torch.Tensor, *, factor: float = 3.0) -> torch.Tensor:
    r"""The exponent with which each sample's :math:`\lVert J_i J_i^\top \rVert_2` follows a scaling of all parameters.

    .. math::

        \frac{\log\bigl(\lVert J_i J_i^\top \rVert_2(c\theta) / \lVert J_i J_i^\top \rVert_2(\theta)\bigr)}{\log c},
        \qquad c = \mathrm{factor},

    exactly :math:`2 (L - 1)` for a bias-free ReLU network with :math:`L` linear maps. NaN for a sample with
    :math:`J_i = 0` (an input that switches off a whole ReLU layer).

    Args:
        model: Any network :func:`lhlib.engine.per_sample.per_sample_jjt` accepts (it is copied, not changed).
        x: The ``(N, d)`` inputs.
        factor: The scale :math:`c > 0`, not 1.

    Returns:
        The ``(N,)`` float64 tensor of exponents.

    Raises:
        ValueError: when ``factor`` is not positive or equals 1.
    """
    check_float("factor", factor, minimum=0.0, strict_minimum=True)
    if factor == 1.0:
        raise ValueError("factor must differ from 1 (the exponent is a ratio of logarithms), got 1.0")
    norms = torch.linalg.matrix_norm(per_sample_jjt(model, x)[0].double(), ord=2)
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in scaled.parameters():
            parameter.mul_(factor)
    scaled_norms = torch.linalg.matrix_norm(per_sample_jjt(scaled, x)[0].double(), ord=2)
    return torch.log(scaled_norms / norms) / math.log(factor)
