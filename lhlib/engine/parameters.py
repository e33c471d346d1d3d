r"""A model's parameters as one vector, and the weight matrices of a bias-free Linear/ReLU stack.

Every curvature method of the engine works on the :math:`P` parameters :math:`\theta` of a model as one
flat vector: :func:`flat_parameters` and :func:`unflatten` go between it and the model's named tensors.
The fast paths apply to networks that compute

.. math::

    f_\theta(x) = W^{(L)} \sigma\bigl(W^{(L-1)} \cdots \sigma(W^{(1)} x)\bigr), \qquad \sigma = \operatorname{ReLU},

with no biases, whatever class holds them: :func:`linear_relu_weights` finds their matrices
:math:`W^{(p)}` (or says there are none) and :func:`weight_list` returns them in float64;
:func:`computation_paths` says which path each engine function takes for a model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from lhlib.engine.models import MLP

__all__ = [
    "METHODS",
    "Weights",
    "computation_paths",
    "flat_parameters",
    "linear_relu_weights",
    "unflatten",
    "weight_list",
]


METHODS = ("auto", "structured", "generic")
"""How per-sample ``J J^T`` and curvature products are computed (the bias-free Linear/ReLU structure, ``torch.func``,
or whichever applies)."""


def _check_data(x: torch.Tensor, y: torch.Tensor | None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D tensor (samples x features), got {getattr(x, 'shape', x)!r}")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],)):
        raise ValueError(f"y must be a 1-D tensor of {x.shape[0]} class labels, got {getattr(y, 'shape', y)!r}")


def _model_dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    parameter = next(model.parameters())
    return parameter.dtype, parameter.device


def _params_buffers(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    return params, buffers


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All parameters of ``model`` as one vector, in ``named_parameters()`` order.

    That order is the one every flat vector of the engine uses.

    Args:
        model: The network.

    Returns:
        The ``(P,)`` detached vector of its parameters.
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a flat ``(..., P)`` vector into ``{name: (..., *shape)}`` in ``named_parameters()`` order.

    The inverse of :func:`flat_parameters`, batched over leading axes.

    Args:
        model: The network whose parameter names and shapes define the split.
        flat: The ``(..., P)`` tensor to split.

    Returns:
        The dictionary from parameter name to a ``(..., *shape)`` view of ``flat``.

    Raises:
        ValueError: when the last axis of ``flat`` does not have ``P`` entries.
    """
    split, _, size = _flatteners(dict(model.named_parameters()))
    if flat.shape[-1] != size:
        raise ValueError(f"flat must have {size} entries in its last axis, got {flat.shape[-1]}")
    return split(flat)


# Modules that a bias-free Linear/ReLU stack may hold besides its Linear layers (the ReLUs may
# equally be applied in ``forward`` with ``torch.relu``).
_STACK_PASSIVE = (nn.ReLU, nn.Identity, nn.Flatten)


def linear_relu_weights(model: nn.Module, probe: torch.Tensor | None = None) -> list[torch.Tensor] | None:
    r"""The weights :math:`[W^{(1)}, \dots, W^{(L)}]` of a bias-free Linear/ReLU stack, or ``None``.

    A model qualifies when it computes :math:`z = W^{(L)} \sigma(W^{(L-1)} \cdots \sigma(W^{(1)} x))` with
    :math:`\sigma` = ReLU. An :class:`lhlib.engine.models.MLP` without biases qualifies by its class. Any other module,
    whatever class holds it (an ``nn.Sequential``, a class written like the authors', with the ReLUs as modules
    or called in ``forward``), qualifies when its only parameters are the weights of bias-free ``nn.Linear``
    layers whose shapes chain in registration order, it has no buffers and no modules other than ``nn.ReLU``,
    ``nn.Identity`` and ``nn.Flatten``, and its output on ``probe`` and on ``-probe`` (2-D inputs) equals the
    stack's: modules alone do not say what ``forward`` does with them.

    Args:
        model: The network to recognise.
        probe: The ``(N, n)`` inputs the output check runs on; without them only an MLP can qualify.

    Returns:
        The list of the ``L`` weight tensors (the parameters themselves), or ``None`` when ``model`` is not
        such a stack.
    """
    if type(model) is MLP:
        return model.weights() if all(linear.bias is None for linear in model.linears) else None
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    linears = [m for m in leaves if isinstance(m, nn.Linear)]
    if (
        not linears
        or any(not isinstance(m, (nn.Linear, *_STACK_PASSIVE)) for m in leaves)
        or any(linear.bias is not None for linear in linears)
        or next(model.buffers(), None) is not None
    ):
        return None
    weights = [linear.weight for linear in linears]
    if {id(p) for p in model.parameters()} != {id(w) for w in weights}:
        return None
    if any(nxt.shape[1] != w.shape[0] for w, nxt in itertools.pairwise(weights)):
        return None
    if probe is None:
        return None
    with torch.no_grad():
        inputs = torch.cat([probe, -probe]).to(weights[0])
        hidden = inputs
        for w in weights[:-1]:
            hidden = torch.relu(hidden @ w.T)
        expected = hidden @ weights[-1].T
        try:
            actual = model(inputs)
        except (RuntimeError, ValueError, TypeError):
            return None
    if actual.shape != expected.shape or not torch.allclose(
        actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max().clamp_min(1))
    ):
        return None
    return weights


def computation_paths(model: Weights, x: torch.Tensor) -> dict[str, str]:
    r"""Which way each family of curvature functions computes for ``model`` under ``method="auto"``.

    ``"structured"``: from the layer factors of a bias-free Linear/ReLU stack
    (:math:`J_iJ_i^\top = \sum_p \lVert x_i^{(p)} \rVert^2 G_i^{(p)} G_i^{(p)\top}` and tangent recursions), no
    object of size :math:`P` per sample; ``"generic"``: ``torch.func`` (or ``torch.autograd``) on any model. The
    Jacobian-based functions recognise a stack in any module (:func:`linear_relu_weights`, checked on the first 64
    samples of ``x``); the per-sample products recognise only an :class:`lhlib.engine.models.MLP` without biases.

    Args:
        model: The network, or a list of weight matrices (always structured).
        x: The ``(N, n)`` inputs the functions would be called with.

    Returns:
        A dict from each family (``"per_sample_jjt"``, with :func:`~lhlib.engine.per_sample.per_sample_ggn_norms`,
        :func:`~lhlib.engine.per_sample.per_sample_ggn_small` and
        :func:`~lhlib.engine.per_sample.per_sample_ggn_traces`; ``"mean_matvec"``, with the dataset
        Hessian's eigenvalues and traces; ``"per_sample_matvec"``, with
        :func:`~lhlib.engine.spectral.per_sample_hessian_norms`) to
        ``"structured"`` or ``"generic"``.

    Raises:
        ValueError: when ``x`` is not a non-empty 2-D tensor.
    """
    _check_data(x, None)
    if not isinstance(model, nn.Module):
        return dict.fromkeys(("per_sample_jjt", "mean_matvec", "per_sample_matvec"), "structured")
    probed = "structured" if linear_relu_weights(model, x[:64]) is not None else "generic"
    by_class = "structured" if linear_relu_weights(model) is not None else "generic"
    return {"per_sample_jjt": probed, "mean_matvec": probed, "per_sample_matvec": by_class}


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


Weights = nn.Module | Sequence[torch.Tensor]


def weight_list(model: Weights, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    r"""The weight matrices :math:`[W^{(1)}, \dots, W^{(L)}]` of an MLP or of a sequence of matrices, detached.

    Args:
        model: An :class:`lhlib.engine.models.MLP` (anything with ``.weights()``) or a sequence of ``(out, in)``
            weight matrices.
        dtype: The dtype of the returned copies.

    Returns:
        The list of the ``L`` detached weight matrices in ``dtype``.

    Raises:
        ValueError: when ``model`` is a module without ``.weights()``, has no weight matrix, or its
            matrices do not chain (``W^(p+1)`` must take ``W^(p)``'s output).
    """
    if isinstance(model, nn.Module):
        if not hasattr(model, "weights"):
            raise ValueError("model must be an lhlib MLP (with .weights()) or a sequence of weight matrices")
        weights = list(model.weights())
    else:
        weights = list(model)
    if not weights:
        raise ValueError("model must have at least one weight matrix")
    weights = [w.detach().to(dtype) for w in weights]
    for p, (w, nxt) in enumerate(itertools.pairwise(weights), start=1):
        if w.ndim != 2 or nxt.ndim != 2 or nxt.shape[1] != w.shape[0]:
            raise ValueError(
                f"weight matrices {p} and {p + 1} do not chain: shapes {tuple(w.shape)}, {tuple(nxt.shape)}"
            )
    return weights


def _flatteners(params: dict[str, torch.Tensor]):
    names = list(params)
    shapes = [params[name].shape for name in names]
    sizes = [math.prod(shape) for shape in shapes]

    def unflatten(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        lead = flat.shape[:-1]
        return {
            name: piece.reshape(*lead, *shape) for name, piece, shape in zip(names, flat.split(sizes, dim=-1), shapes)
        }

    def flatten(tree: dict[str, torch.Tensor], lead: int) -> torch.Tensor:
        return torch.cat([tree[name].reshape(*tree[name].shape[:lead], -1) for name in names], dim=-1)

    return unflatten, flatten, sum(sizes)
