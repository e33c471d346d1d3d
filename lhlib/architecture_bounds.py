"""Theorem 1's structure beyond the MLP: a product-of-layer-norms bound for bias-free ReLU CNNs,
and the homogeneity test that tells whether such a product can follow a network's curvature.

*The bound.* A bias-free ReLU network whose linear maps ``C^(1), ..., C^(L)`` are matrices or
convolutions has logits ``z = C^(L) s(C^(L-1) ... s(C^(1) x))``. The Jacobian of ``z`` with
respect to layer ``p``'s weights maps a weight change ``V`` to ``G^(p) vec(V U^(p))``, where
``G^(p) = dz/dy^(p)`` (``y^(p)`` the layer's output) and ``U^(p)`` the layer's input arranged as
patches (``F.unfold``; for a matrix layer ``U^(p) = x^(p)``). Hence

    ||J J^T||_2 <= sum_p ||G^(p)||_2^2 ||U^(p)||_2^2,   ||G^(p)||_2 <= prod_{q>p} ||C^(q)||_op,
    ||U^(p)||_F^2 <= c_p ||x^(p)||^2,                    ||x^(p)|| <= ||x|| prod_{q<p} ||C^(q)||_op,

with ``c_p`` the largest number of patches that contain one input entry (``c_p = 1`` for a matrix,
``ceil(k/s)^2`` for a ``k x k`` convolution of stride ``s``). With ``||A||_2 <= 1/2`` for the
softmax Hessian this gives, per sample,

    ||J^T A J||_2 <= (1/2) ||x||^2 sum_p c_p prod_{q != p} ||C^(q)||_op^2,

the corrected Theorem 1 of chapter 02 with one overlap factor per layer (:func:`layer_norm_bound_per_sample`).
``||C^(q)||_op`` is the exact spectral norm of the convolution as a linear map on its input
(:func:`layer_operator_norms`, from the dense matrix of the map).

The proof uses only that the linear maps are linear and that the activation is 1-Lipschitz with
``s(0) = 0`` (ReLU here; ``tanh`` would do as well).

*Homogeneity.* Scaling every parameter of a bias-free ReLU network with ``L`` linear maps by ``c``
scales ``J`` by ``c^(L-1)``, so ``log(||J J^T||(c theta) / ||J J^T||(theta)) / log c = 2 (L - 1)``
for every sample: exactly the scaling of the product of layer norms, so for these networks the
bound and ``J J^T`` respond to the weights' scale alike. :func:`jjt_scaling_exponents` measures
this exponent for any model. LayerNorm, attention, GELU and biases make it differ from sample to
sample; that does not rule out some bound for such a network, but a product of layer norms, which
scales as one power of ``c``, cannot follow ``J J^T`` there.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from lhlib.architectures import ConvNet
from lhlib.bounds import SOFTMAX_HESSIAN_NORM_SHARP
from lhlib.hessian import per_sample_jjt
from lhlib.models import MLP
from lhlib.validation import check_float

__all__ = [
    "jjt_scaling_exponents",
    "layer_norm_bound_per_sample",
    "layer_operator_norms",
    "linear_maps",
    "patch_overlaps",
]


def linear_maps(model: nn.Module) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The linear maps ``C^(1), ..., C^(L)`` of an :class:`~lhlib.models.MLP` or a
    :class:`~lhlib.architectures.ConvNet`, each with the shape of one input to it (no batch axis).
    """
    if isinstance(model, MLP):
        return [(linear, (linear.in_features,)) for linear in model.linears]
    if isinstance(model, ConvNet):
        maps, (channels, height, width) = [], model.image_shape
        for conv in model.convs:
            maps.append((conv, (channels, height, width)))
            channels, height, width = conv.out_channels, (height + 1) // 2, (width + 1) // 2
        return [*maps, (model.head, (model.head.in_features,))]
    raise ValueError(f"model must be an lhlib MLP or ConvNet (a bias-free ReLU network), got {type(model).__name__}")


def layer_operator_norms(model: nn.Module) -> torch.Tensor:
    """``(L,)`` float64 exact spectral norms ``||C^(p)||_op`` of the linear maps, from their dense matrices."""
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
    """``(L,)`` the overlap factors ``c_p``: ``ceil(k / s)^2`` for a convolution, 1 for a matrix."""
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
    """``(N,)`` float64: ``a_norm ||x_i||^2 sum_p c_p prod_{q != p} ||C^(q)||_op^2``, a bound on every
    sample's G-term norm ``||J_i^T A_i J_i||_2`` (module docstring). For the MLP (all ``c_p = 1``) it
    is :func:`lhlib.bounds.corrected_bound_per_sample`.
    """
    check_float("a_norm", a_norm, minimum=0.0)
    squared = layer_operator_norms(model) ** 2
    overlaps = patch_overlaps(model)
    leave_one_out = sum(
        overlaps[p] * torch.prod(torch.cat([squared[:p], squared[p + 1 :]])) for p in range(len(squared))
    )
    return a_norm * (x.detach().double() ** 2).sum(1) * leave_one_out


def jjt_scaling_exponents(model: nn.Module, x: torch.Tensor, *, factor: float = 3.0) -> torch.Tensor:
    """``(N,)``: ``log(||J_i J_i^T||(c theta) / ||J_i J_i^T||(theta)) / log c`` with every parameter scaled
    by ``c = factor``; exactly ``2 (L - 1)`` for a bias-free ReLU network with ``L`` linear maps.
    NaN for a sample with ``J_i = 0`` (an input that switches off a whole ReLU layer).
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
