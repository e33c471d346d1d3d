r"""Per-sample and dataset Hessians of the cross-entropy loss, without forming a :math:`P \times P` matrix.

For one sample with logits :math:`z = f_\theta(x) \in \mathbb{R}^K`, probabilities
:math:`p = \operatorname{softmax}(z)` and loss :math:`\ell = -\log p_y`, the Hessian with respect to the
:math:`P` parameters splits (paper, section 3.4) as

.. math::

    H_i = \underbrace{J_i^\top A_i J_i}_{\text{G-term (Gauss-Newton)}}
        + \underbrace{\sum_{k=1}^{K} (p_k - y_k) \, \nabla_\theta^2 z_k}_{\text{H-term}},

with :math:`J_i` the :math:`K \times P` Jacobian of the logits, :math:`y` one-hot and
:math:`A_i = \operatorname{diag}(p) - p p^\top`.

*G-term.* :math:`A = B B^\top` with :math:`s = \sqrt{p}` and :math:`B = \operatorname{diag}(s) - p s^\top`, so
the nonzero spectrum of :math:`J^\top A J = (B^\top J)^\top (B^\top J)` is that of the :math:`K \times K` matrix
:math:`B^\top (J J^\top) B`: the exact spectral norm of every sample's G-term is the largest eigenvalue of a
:math:`K \times K` matrix. For the bias-free MLP of :mod:`lhlib.models` (the paper's network) the columns of
:math:`J` that belong to layer :math:`p` are :math:`G^{(p)} \otimes x^{(p)\top}` (the paper's matrix :math:`F`;
:math:`G^{(p)} = \partial z / \partial z^{(p)}` is :math:`K \times n_{p+1}`, :math:`x^{(p)}` the layer's input),
hence

.. math::

    J J^\top = \sum_{p=1}^{L} \lVert x^{(p)} \rVert^2 \, G^{(p)} G^{(p)\top},

and :func:`per_sample_ggn_norms` computes all :math:`G^{(p)}` for a batch of samples by one backward recursion
:math:`G^{(p)} = G^{(p+1)} W^{(p+1)} D^{(p)}`: no object of size :math:`P` is formed at all. This structured
path serves any bias-free Linear/ReLU stack, whatever class holds it (:func:`linear_relu_weights`). Any other
model goes through ``torch.func`` (``vmap(jacrev(functional_call))``, :math:`K \times P` per sample, in chunks).

*Full Hessian.* It is indefinite in general (the H-term of a ReLU network has zero trace, see
:func:`hessian_trace`), so its spectral norm is :math:`\max_j |\lambda_j|`. :func:`per_sample_hessian_norms`
runs Lanczos for all samples of a batch at once on per-sample Hessian-vector products (for the bias-free MLP
the tangent of its forward and backward recursions as batched matrix products, for any other model ``vmap``
over samples of forward-over-reverse ``jvp(grad)``; :func:`per_sample_matvec`) and reports both extreme
eigenvalues and whether each sample's estimate converged (residual bound
:math:`|\beta_m s_m| \le \mathrm{tol} \cdot \lVert H_i \rVert_2`).

*Dataset level.* :func:`dataset_hessian_top_eigenvalues` gives the top eigenvalues of the averaged Hessian
and averaged Gauss-Newton matrix by ARPACK (``scipy.sparse.linalg.eigsh``) on matrix-free products;
:func:`hessian_trace` estimates their traces with Hutchinson's estimator, and :func:`ggn_trace` gives the
Gauss-Newton trace exactly; :func:`lemma_difference_norms` measures the lemma's
:math:`\lVert H_{k+1} - \frac{1}{k} \sum_{i \le k} H_i \rVert_2` (Lanczos with full reorthogonalisation,
:func:`lanczos_extremes`). :func:`mean_matvec` and :func:`per_sample_matvec` expose the products.

What chapter 03 measures on one network with these tools, and its comparison with every form of
Theorem 1, are in :mod:`lhlib.hessian_in_practice`.

Everything runs on the device of the model's parameters and in their dtype (use ``model.double()``
for float64); the layer factors (:func:`forward_factors`) and :func:`softmax_hessian` default to float64.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

from lhlib.models import MLP
from lhlib.validation import check_choice, check_float, check_int

__all__ = [
    "METHODS",
    "OPERATORS",
    "ForwardFactors",
    "HessianNorms",
    "TopEigenvalues",
    "TraceEstimate",
    "Weights",
    "computation_paths",
    "dataset_hessian_top_eigenvalues",
    "flat_parameters",
    "forward_factors",
    "gauss_newton_jacobian",
    "ggn_norms_from_jjt",
    "ggn_small_from_jjt",
    "ggn_trace",
    "hessian_trace",
    "lanczos_extremes",
    "lemma_difference_norms",
    "linear_relu_weights",
    "mean_matvec",
    "network_inputs",
    "per_sample_ggn_norms",
    "per_sample_ggn_small",
    "per_sample_ggn_traces",
    "per_sample_hessian_norms",
    "per_sample_jjt",
    "per_sample_matvec",
    "softmax_hessian",
    "softmax_hessian_factor",
    "unflatten",
    "weight_list",
]

# torch's first forward-mode product loads its jvp decompositions through the deprecated
# torch.jit.script, which warns in every chapter that uses jvp; load them once, quietly.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=FutureWarning)
    jvp(torch.sin, (torch.zeros(1),), (torch.ones(1),))

METHODS = ("auto", "structured", "generic")
"""How per-sample ``J J^T`` and curvature products are computed (the bias-free Linear/ReLU structure, ``torch.func``,
or whichever applies)."""

OPERATORS = ("hessian", "ggn", "hterm")
"""The curvature matrix an operator applies, by name (the full Hessian, its G-term, or its H-term)."""


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


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

    That order is the one every flat vector in this module uses.

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
    :math:`\sigma` = ReLU. An :class:`lhlib.models.MLP` without biases qualifies by its class. Any other module,
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
    samples of ``x``); the per-sample products recognise only an :class:`lhlib.models.MLP` without biases.

    Args:
        model: The network, or a list of weight matrices (always structured).
        x: The ``(N, n)`` inputs the functions would be called with.

    Returns:
        A dict from each family (``"per_sample_jjt"``, with :func:`per_sample_ggn_norms`,
        :func:`per_sample_ggn_small` and :func:`per_sample_ggn_traces`; ``"mean_matvec"``, with the dataset
        Hessian's eigenvalues and traces; ``"per_sample_matvec"``, with :func:`per_sample_hessian_norms`) to
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


# ----------------------------------------------------------------------------------------------
# The layer factors of a bias-free ReLU network (the paper's sections 3.3 and 4), and A = B B^T
# ----------------------------------------------------------------------------------------------

Weights = nn.Module | Sequence[torch.Tensor]


def weight_list(model: Weights, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    r"""The weight matrices :math:`[W^{(1)}, \dots, W^{(L)}]` of an MLP or of a sequence of matrices, detached.

    Args:
        model: An :class:`lhlib.models.MLP` (anything with ``.weights()``) or a sequence of ``(out, in)``
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


def network_inputs(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """``x`` as an ``(N, n)`` tensor in the dtype and on the device of ``weights`` (one sample may be 1-D).

    Args:
        x: The inputs, ``(N, n)`` or ``(n,)``.
        weights: The weight matrices; ``weights[0]`` gives ``n``, the dtype and the device.

    Returns:
        The detached ``(N, n)`` inputs.

    Raises:
        ValueError: when ``x`` does not have ``n`` features.
    """
    x = torch.as_tensor(x).detach().to(weights[0].dtype, copy=False)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != weights[0].shape[1]:
        raise ValueError(f"x must have shape (N, {weights[0].shape[1]}), got {tuple(x.shape)}")
    return x.to(weights[0].device)


@dataclass(frozen=True)
class ForwardFactors:
    r"""The layer factors of every sample: the G-term's pieces and the loss gradients (index 0 is the sample).

    The network is :math:`x^{(1)} = x`, :math:`z^{(p)} = W^{(p)} x^{(p)}`, :math:`x^{(p+1)} = \sigma(z^{(p)})`,
    logits :math:`z = z^{(L)}`, with :math:`n_p` the width of :math:`x^{(p)}` and :math:`n_{L+1} = K`.

    Attributes:
        activations: ``activations[p-1]`` is :math:`x^{(p)}`, ``(N, n_p)``, for :math:`p = 1, \dots, L`.
        masks: ``masks[p-1]`` is the diagonal of :math:`D^{(p)}`, ``(N, n_{p+1})``, for
            :math:`p = 1, \dots, L-1`.
        jacobians: ``jacobians[p-1]`` is :math:`G^{(p)} = \partial z / \partial z^{(p)}`, ``(N, K, n_{p+1})``,
            for :math:`p = 1, \dots, L` (:math:`G^{(L)} = I_K`).
        logits: The ``(N, K)`` logits :math:`z`.
        probs: The ``(N, K)`` probabilities :math:`p = \operatorname{softmax}(z)`.
    """

    activations: list[torch.Tensor]
    masks: list[torch.Tensor]
    jacobians: list[torch.Tensor]
    logits: torch.Tensor
    probs: torch.Tensor

    def jjt(self) -> torch.Tensor:
        r"""The per-sample :math:`J_i J_i^\top` (the paper's :math:`F_i F_i^\top`), no :math:`K \times P` object formed.

        .. math::

            J = [G^{(1)} \otimes x^{(1)\top}, \dots, G^{(L)} \otimes x^{(L)\top}]
            \quad\Longrightarrow\quad
            J J^\top = \sum_p \lVert x^{(p)} \rVert^2 \, G^{(p)} G^{(p)\top}.

        Returns:
            The ``(N, K, K)`` tensor of the matrices :math:`J_i J_i^\top`.
        """
        return sum(
            (a * a).sum(1)[:, None, None] * (g @ g.transpose(1, 2)) for g, a in zip(self.jacobians, self.activations)
        )

    def output_gradients(self, y: torch.Tensor) -> list[torch.Tensor]:
        r"""The gradients :math:`\delta^{(p)} = \partial \ell / \partial z^{(p)}` of every sample's loss, per layer.

        .. math::

            \delta^{(p)} = G^{(p)\top} (\operatorname{softmax}(z) - e_y), \qquad
            \nabla_{W^{(p)}} \ell = \delta^{(p)} x^{(p)\top}.

        Args:
            y: The ``(N,)`` labels.

        Returns:
            ``[delta^(1), ..., delta^(L)]``, ``delta^(p)`` of shape ``(N, n_{p+1})``.
        """
        residual = self.probs - F.one_hot(y.to(self.probs.device), self.probs.shape[1]).to(self.probs)
        return [torch.einsum("nk,nkj->nj", residual, g) for g in self.jacobians]


def forward_factors(model: Weights, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> ForwardFactors:
    r"""Activations, ReLU masks and :math:`G^{(p)} = \partial z / \partial z^{(p)}` of every sample, vectorised.

    .. math::

        x^{(p+1)} = \operatorname{ReLU}(W^{(p)} x^{(p)}), \qquad
        D^{(p)} = \operatorname{diag}\bigl[z^{(p)} > 0\bigr], \qquad
        G^{(L)} = I_K, \quad G^{(p)} = G^{(p+1)} W^{(p+1)} D^{(p)}.

    :math:`D^{(p)}` uses PyTorch's ReLU derivative (:math:`>`); the paper writes :math:`\ge`, which differs only
    where a pre-activation is exactly 0. The recursion is one ``(N K) x n_{p+2}`` by ``n_{p+2} x n_{p+1}``
    product per layer. Computed in ``dtype`` (float64 by default, for the bound checks;
    :func:`per_sample_jjt` uses the model's own dtype by default, for speed).

    Args:
        model: An :class:`lhlib.models.MLP` or a sequence of weight matrices (see :func:`weight_list`).
        x: The ``(N, n)`` inputs (or one ``(n,)`` sample).
        dtype: The precision of the computation.

    Returns:
        The :class:`ForwardFactors` of the ``N`` samples.

    Raises:
        ValueError: when the weights do not chain or ``x`` does not fit them.
    """
    weights = weight_list(model, dtype)
    x = network_inputs(x, weights)
    activations, masks = [x], []
    for w in weights[:-1]:
        z = activations[-1] @ w.T
        masks.append((z > 0).to(dtype))
        activations.append(torch.relu(z))
    logits = activations[-1] @ weights[-1].T
    n, k = logits.shape
    jacobians = [torch.eye(k, dtype=dtype, device=x.device).expand(n, k, k)]
    for w, mask in zip(reversed(weights[1:]), reversed(masks)):
        product = (jacobians[0].reshape(n * k, -1) @ w).view(n, k, -1)
        jacobians.insert(0, product * mask[:, None, :])
    return ForwardFactors(activations, masks, jacobians, logits, torch.softmax(logits, dim=1))


def _complement(p: torch.Tensor) -> torch.Tensor:
    """``1 - p_k`` for every class, accurate also when one ``p_k`` rounds to 1.

    ``1 - p_k`` is exact where ``p_k <= 1/2``; for the one class that may exceed it, the complement is
    the sum of the other (small, accurately known) probabilities instead of a cancelling difference.
    """
    complement = 1.0 - p
    top = p.argmax(dim=-1, keepdim=True)
    others = p.sum(-1, keepdim=True) - p.gather(-1, top)  # tiny cancellation only if p_top <= 1/2
    others = torch.where(p.gather(-1, top) > 0.5, (p.scatter(-1, top, 0.0)).sum(-1, keepdim=True), others)
    return complement.scatter(-1, top, others)


def _with_diagonal(matrix: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """``matrix`` (batched) with its diagonal replaced by ``diagonal``."""
    eye = torch.eye(matrix.shape[-1], dtype=torch.bool, device=matrix.device)
    return torch.where(eye, torch.diag_embed(diagonal), matrix)


def softmax_hessian(z: torch.Tensor) -> torch.Tensor:
    r"""The Hessian of cross-entropy with respect to the logits, independent of the label.

    .. math::

        A = \nabla_z^2 \ell(z, y) = \operatorname{diag}(p) - p p^\top, \qquad p = \operatorname{softmax}(z).

    The diagonal is formed as :math:`p_k (1 - p_k)` with an accurate complement, so saturated logits keep their
    small curvature.

    Args:
        z: The ``(..., K)`` logits.

    Returns:
        The ``(..., K, K)`` float64 matrices :math:`A`.
    """
    p = torch.softmax(torch.as_tensor(z).to(torch.float64), dim=-1)
    return _with_diagonal(-p[..., :, None] * p[..., None, :], p * _complement(p))


def softmax_hessian_factor(p: torch.Tensor) -> torch.Tensor:
    r"""The factor :math:`B` with :math:`B B^\top = \operatorname{diag}(p) - p p^\top`, batched over leading axes.

    .. math::

        B = \operatorname{diag}(s) - p s^\top, \qquad s = \sqrt{p}, \qquad
        B B^\top = \operatorname{diag}(p) - 2 p p^\top + p (s^\top s) p^\top = \operatorname{diag}(p) - p p^\top,

    since :math:`s^\top s = 1`. Column :math:`j` of :math:`B` is :math:`s_j (e_j - p)`. The diagonal
    :math:`s_j (1 - p_j)` uses an accurate complement.

    Args:
        p: The ``(..., K)`` probabilities (each row summing to 1).

    Returns:
        The ``(..., K, K)`` matrices :math:`B`, in ``p``'s dtype.
    """
    s = p.sqrt()
    return _with_diagonal(-p.unsqueeze(-1) * s.unsqueeze(-2), s * _complement(p))


def ggn_small_from_jjt(jjt: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    r"""The ``(N, K, K)`` symmetric matrices whose eigenvalues are the nonzero ones of the G-terms.

    With :math:`A_i = B_i B_i^\top` (:func:`softmax_hessian_factor`),
    :math:`J_i^\top A_i J_i = (B_i^\top J_i)^\top (B_i^\top J_i)` has the nonzero spectrum of

    .. math::

        M_i = B_i^\top \, J_i J_i^\top \, B_i \in \mathbb{R}^{K \times K}.

    Args:
        jjt: The ``(N, K, K)`` per-sample :math:`J_i J_i^\top`.
        logits: The ``(N, K)`` logits, which give :math:`p_i = \operatorname{softmax}(z_i)` and hence :math:`B_i`.

    Returns:
        The ``(N, K, K)`` tensor of the matrices :math:`M_i`, symmetrised.
    """
    factor = softmax_hessian_factor(torch.softmax(logits, dim=-1))
    small = factor.transpose(-1, -2) @ jjt @ factor
    return 0.5 * (small + small.transpose(-1, -2))


def ggn_norms_from_jjt(jjt: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    r"""Exact spectral norms of the per-sample G-terms from their :math:`J_i J_i^\top`.

    .. math::

        \lVert J_i^\top A_i J_i \rVert_2 = \lambda_{\max}\bigl(B_i^\top J_i J_i^\top B_i\bigr),

    the largest eigenvalue of each :func:`ggn_small_from_jjt` matrix (clamped at 0 against rounding).

    Args:
        jjt: The ``(N, K, K)`` per-sample :math:`J_i J_i^\top`.
        logits: The ``(N, K)`` logits.

    Returns:
        The ``(N,)`` tensor of norms.
    """
    return torch.linalg.eigvalsh(ggn_small_from_jjt(jjt, logits))[:, -1].clamp_min(0)


def gauss_newton_jacobian(model: Weights, x_i: torch.Tensor) -> torch.Tensor:
    r"""The dense :math:`K \times P` Jacobian :math:`F` of one sample's logits with respect to the weights.

    .. math::

        F = \bigl[G^{(1)} \otimes x^{(1)\top}, \dots, G^{(L)} \otimes x^{(L)\top}\bigr].

    Columns follow ``torch.cat([W.flatten() for W in weights])`` (row-major), so :math:`F` equals the Jacobian of
    the logits with respect to the flattened weights and :math:`F^\top A F` is the G-term. Dense: for tiny
    networks and tests.

    Args:
        model: An :class:`lhlib.models.MLP` or a sequence of weight matrices.
        x_i: One sample, ``(n,)`` or ``(1, n)``.

    Returns:
        The ``(K, P)`` float64 matrix :math:`F`.

    Raises:
        ValueError: when ``x_i`` holds more than one sample.
    """
    factors = forward_factors(model, x_i)
    if factors.logits.shape[0] != 1:
        raise ValueError("gauss_newton_jacobian takes one sample (x_i of shape (n,) or (1, n))")
    return torch.cat([torch.kron(g[0], a[0][None, :]) for g, a in zip(factors.jacobians, factors.activations)], dim=1)


# ----------------------------------------------------------------------------------------------
# Per-sample G-term: exact, through the K x K matrix B^T J J^T B
# ----------------------------------------------------------------------------------------------


def _generic_jjt(model: nn.Module, x: torch.Tensor, max_elements: int = 2**26) -> tuple[torch.Tensor, torch.Tensor]:
    """``J_i J_i^T`` of any model: ``vmap`` over samples of ``jacrev`` of the logits, in chunks of
    samples whose Jacobians hold at most ``max_elements`` numbers; no ``P x P`` object is formed.
    The parameters are used in ``x``'s dtype.
    """
    params, buffers = _params_buffers(model)
    params = {name: p.to(x.dtype) for name, p in params.items()}

    def logits_of(p, xi):
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    per_sample_jacobian = vmap(jacrev(logits_of), in_dims=(None, 0))
    with torch.no_grad():
        logits = torch.cat([functional_call(model, (params, buffers), (x[s],)) for s in _chunks(x.shape[0], 4096)])
    k = logits.shape[1]
    size = sum(p.numel() for p in params.values())
    chunk = max(1, max_elements // (k * size))
    blocks = []
    for s in _chunks(x.shape[0], chunk):
        # J J^T is the sum over parameter tensors of their blocks' J_p J_p^T: no concatenated copy.
        blocks.append(
            sum(
                j.reshape(j.shape[0], k, -1) @ j.reshape(j.shape[0], k, -1).transpose(1, 2)
                for j in per_sample_jacobian(params, x[s]).values()
            )
        )
    return torch.cat(blocks), logits


def per_sample_jjt(
    model: Weights, x: torch.Tensor, *, method: str = "auto", dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The pair :math:`(J_i J_i^\top, z_i)` for every sample, an ``(N, K, K)`` and an ``(N, K)`` tensor.

    :math:`J_i` is the :math:`K \times P` Jacobian of sample :math:`i`'s logits with respect to the parameters
    (the paper's :math:`F_i`). For a bias-free Linear/ReLU stack

    .. math::

        J_i J_i^\top = \sum_{p=1}^{L} \lVert x_i^{(p)} \rVert^2 \, G_i^{(p)} G_i^{(p)\top}

    (:meth:`ForwardFactors.jjt`), with no :math:`P`-sized object; any other model sums
    :math:`J_{i,t} J_{i,t}^\top` over its parameter tensors :math:`t`, from ``vmap(jacrev)`` in chunks.

    Args:
        model: Any ``nn.Module``, or a sequence of weight matrices :math:`[W^{(1)}, \dots, W^{(L)}]` of a
            bias-free ReLU network (:math:`L = 1` and modified weights included).
        x: The ``(N, n)`` inputs.
        method: ``"structured"`` (the layer factors; the stack is recognised by :func:`linear_relu_weights`
            on the first 64 samples, whatever class holds it), ``"generic"``
            (``vmap(jacrev(functional_call))``, any model) or ``"auto"`` (structured when it applies).
        dtype: The precision of the computation; ``None`` is the model's own.

    Returns:
        The tuple ``(jjt, logits)`` in ``dtype``.

    Raises:
        ValueError: when ``method`` is unknown, ``x`` is not a non-empty 2-D tensor, ``method="generic"`` is
            asked of a list of matrices, or ``method="structured"`` of a model that is not a bias-free
            Linear/ReLU stack.
    """
    check_choice("method", method, METHODS)
    _check_data(x, None)
    if not isinstance(model, nn.Module):
        if method == "generic":
            raise ValueError("method='generic' needs an nn.Module; a list of weight matrices is structured")
        weights = list(model)
    else:
        weights = linear_relu_weights(model, x[:64]) if method != "generic" else None
        if method == "structured" and weights is None:
            raise ValueError(
                "method='structured' needs a bias-free Linear/ReLU stack (see linear_relu_weights); "
                "use method='generic' or 'auto' for other models"
            )
    dtype = dtype or (weights[0].dtype if weights is not None else _model_dtype_device(model)[0])
    if weights is not None:
        factors = forward_factors([w.detach() for w in weights], x, dtype=dtype)
        return factors.jjt(), factors.logits
    return _generic_jjt(model, x.to(dtype))


def per_sample_ggn_small(
    model: Weights,
    x: torch.Tensor,
    *,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    r"""The per-sample :math:`K \times K` matrices whose eigenvalues are the nonzero ones of the G-terms.

    .. math::

        M_i = B_i^\top J_i J_i^\top B_i, \qquad A_i = B_i B_i^\top, \qquad
        \operatorname{spec}(M_i) \setminus \{0\} = \operatorname{spec}(J_i^\top A_i J_i) \setminus \{0\}

    (:func:`ggn_small_from_jjt` on :func:`per_sample_jjt`, in chunks of ``batch_size`` samples).

    Args:
        model: As for :func:`per_sample_jjt`.
        x: The ``(N, n)`` inputs.
        method: As for :func:`per_sample_jjt`.
        dtype: The precision of the computation; ``None`` is the model's own.
        batch_size: Samples per chunk.

    Returns:
        The ``(N, K, K)`` tensor of the matrices :math:`M_i`.

    Raises:
        ValueError: when ``batch_size`` is not a positive integer or ``x`` is not a non-empty 2-D tensor.
    """
    check_int("batch_size", batch_size, minimum=1)
    _check_data(x, None)
    return torch.cat(
        [
            ggn_small_from_jjt(*per_sample_jjt(model, x[s], method=method, dtype=dtype))
            for s in _chunks(x.shape[0], batch_size)
        ]
    )


def per_sample_ggn_norms(
    model: Weights,
    x: torch.Tensor,
    *,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    r"""Exact spectral norm of every sample's G-term, an ``(N,)`` tensor.

    It is the largest eigenvalue of a :math:`K \times K` matrix:

    .. math::

        \lVert J_i^\top A_i J_i \rVert_2 = \lambda_{\max}\bigl(B_i^\top J_i J_i^\top B_i\bigr).

    Args:
        model: As for :func:`per_sample_jjt`.
        x: The ``(N, n)`` inputs (no labels: :math:`A_i` does not depend on the label).
        method: As for :func:`per_sample_jjt`; :func:`computation_paths` says which one ``"auto"`` takes.
        dtype: The precision of the computation (``torch.float64`` for the bound checks); ``None`` is the
            model's own.
        batch_size: Samples per chunk.

    Returns:
        The ``(N,)`` tensor of norms, in ``dtype``.

    Raises:
        ValueError: when ``batch_size`` is not a positive integer, or ``x`` has the wrong shape.
    """
    check_int("batch_size", batch_size, minimum=1)
    _check_data(x, None)
    return torch.cat(
        [
            ggn_norms_from_jjt(*per_sample_jjt(model, x[s], method=method, dtype=dtype))
            for s in _chunks(x.shape[0], batch_size)
        ]
    )


def per_sample_ggn_traces(
    model: Weights, x: torch.Tensor, *, method: str = "auto", batch_size: int = 4096
) -> torch.Tensor:
    r"""Exact trace of every sample's G-term, from the :math:`K \times K` matrices of :func:`per_sample_ggn_small`.

    .. math::

        \operatorname{tr}(J_i^\top A_i J_i) = \operatorname{tr}(A_i J_i J_i^\top)
        = \operatorname{tr}(B_i^\top J_i J_i^\top B_i).

    Args:
        model: As for :func:`per_sample_jjt`.
        x: The ``(N, n)`` inputs.
        method: As for :func:`per_sample_jjt`.
        batch_size: Samples per chunk.

    Returns:
        The ``(N,)`` tensor of traces, in the model's dtype.
    """
    small = per_sample_ggn_small(model, x, method=method, batch_size=batch_size)
    return small.diagonal(dim1=1, dim2=2).sum(1)


# ----------------------------------------------------------------------------------------------
# Matrix-free products: per sample (batched) and averaged over a dataset
# ----------------------------------------------------------------------------------------------


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


def _stack_tangents(weights, point: ForwardFactors, deltas, operator: str, v_times, v_transposed_times, emit) -> None:
    """The tangent of a bias-free Linear/ReLU stack's forward and backward recursions along a direction ``V``.

    The recursions are stated in :func:`per_sample_matvec`; ``point`` holds the activations and masks,
    ``deltas`` the :meth:`ForwardFactors.output_gradients`. ``v_times(p, rows)`` gives the rows
    ``V^(p) r``, ``v_transposed_times(p, rows)`` the rows ``V^(p)T r`` (layers counted from 0), and
    ``emit(p, delta_dot, tangent)`` receives layer ``p``'s tangent of ``delta`` and of its input (``None`` when
    there is no ``delta x_dot^T`` part: for the G-term, and for the first layer, whose input does not move) to
    form its block, per sample or summed over samples.
    """
    tangents = [None]  # the input does not move: its tangent is zero, and skipping it saves the widest products
    for p, w in enumerate(weights):
        z_dot = v_times(p, point.activations[p])
        if p:
            z_dot = z_dot + tangents[p] @ w.T
        if p < len(weights) - 1:
            tangents.append(z_dot * point.masks[p])
    prob = point.probs
    delta_dot = torch.zeros_like(prob) if operator == "hterm" else prob * z_dot - prob * (prob * z_dot).sum(1, True)
    for p in range(len(weights) - 1, -1, -1):
        emit(p, delta_dot, None if operator == "ggn" else tangents[p])  # None: no delta x_dot^T part
        if p:
            back = delta_dot @ weights[p]
            if operator != "ggn":
                back = back + v_transposed_times(p, deltas[p])
            delta_dot = back * point.masks[p - 1]


def _stack_matvec(weights: list[torch.Tensor], operator: str) -> Callable:
    """:func:`per_sample_matvec`'s structured path: :func:`_stack_tangents` with one direction per sample."""
    sizes = [w.numel() for w in weights]

    def matvec(vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n, point = x.shape[0], forward_factors(weights, x, dtype=x.dtype)
        deltas = None if operator == "ggn" else point.output_gradients(y)  # the G-term needs no label
        v = [piece.view(n, *w.shape) for piece, w in zip(vectors.split(sizes, dim=1), weights)]
        product = torch.empty_like(vectors)
        # Each layer's block is written straight into its columns of the result, with no concatenation.
        blocks = [piece.view(n, *w.shape) for piece, w in zip(product.split(sizes, dim=1), weights)]

        def emit(p, delta_dot, tangent):
            if tangent is None:
                torch.mul(delta_dot.unsqueeze(2), point.activations[p].unsqueeze(1), out=blocks[p])
            else:
                left = torch.stack([delta_dot, deltas[p]], 2)
                torch.bmm(left, torch.stack([point.activations[p], tangent], 1), out=blocks[p])

        _stack_tangents(
            weights,
            point,
            deltas,
            operator,
            lambda p, rows: torch.bmm(v[p], rows.unsqueeze(2)).squeeze(2),
            lambda p, rows: torch.bmm(rows.unsqueeze(1), v[p]).squeeze(1),
            emit,
        )
        return product

    return matvec


def _stack_mean_matvec(weights: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, operator: str) -> Callable:
    """:func:`mean_matvec`'s structured path: :func:`_stack_tangents` with one direction for all samples, the
    point's activations, masks and first-order deltas computed once.
    """
    sizes, point = [w.numel() for w in weights], forward_factors(weights, x, dtype=x.dtype)
    deltas = None if operator == "ggn" else point.output_gradients(y)  # the G-term needs no label

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        v = [piece.view(w.shape) for piece, w in zip(vector.split(sizes), weights)]
        product = torch.empty_like(vector)
        blocks = [piece.view(w.shape) for piece, w in zip(product.split(sizes), weights)]

        def emit(p, delta_dot, tangent):
            torch.mm(delta_dot.T, point.activations[p], out=blocks[p])
            if tangent is not None:
                blocks[p].addmm_(deltas[p].T, tangent)

        _stack_tangents(
            weights, point, deltas, operator, lambda p, rows: rows @ v[p].T, lambda p, rows: rows @ v[p], emit
        )
        return product.div_(x.shape[0])

    return matvec


def per_sample_matvec(
    model: nn.Module, operator: str = "hessian", batch_size: int = 128, *, method: str = "auto"
) -> Callable:
    r"""A batched product with the per-sample curvature matrices: row :math:`i` of the result is :math:`C_i v_i`.

    .. math::

        \operatorname{matvec}(V, x, y)_i = C_i V_i, \qquad
        C_i \in \bigl\{H_i,\; J_i^\top A_i J_i,\; H_i - J_i^\top A_i J_i\bigr\},

    for ``operator`` ``"hessian"``, ``"ggn"`` or ``"hterm"``. The generic path works for any model: ``vmap``
    over samples of forward-over-reverse ``jvp(grad)`` for the Hessian, of one ``jvp`` for :math:`J_i v`, then
    :math:`A_i`, then one ``vjp`` for :math:`J_i^\top` for the G-term, and for the H-term ``jvp(grad)`` of
    :math:`\sum_k r_k z_k(\theta)` with the residual :math:`r = p - e_y` held fixed, which is
    :math:`\sum_k r_k \nabla^2_\theta z_k` computed directly: the difference :math:`H_i v - J_i^\top A_i J_i v`
    would cancel in float32 where the H-term is far smaller than the G-term.
    The structured path, for an :class:`lhlib.models.MLP` without biases (the paper's network), runs the
    tangent of the forward and backward recursions as batched matrix products over all samples at once: the
    same numbers without per-sample graphs (``benchmarks/bench_products.py`` times the two side by side).
    With the notation of :class:`ForwardFactors`, :math:`\delta^{(p)} = \partial \ell / \partial z^{(p)}`, the
    direction :math:`v = (V^{(1)}, \dots, V^{(L)})` and dots for tangents (ReLU's :math:`D^{(p)}` is locally
    constant),

    .. math::

        \dot x^{(1)} = 0, \quad \dot z^{(p)} = V^{(p)} x^{(p)} + W^{(p)} \dot x^{(p)}, \quad
        \dot x^{(p+1)} = D^{(p)} \dot z^{(p)}, \qquad J v = \dot z^{(L)},

        \dot\delta^{(L)} = A \dot z^{(L)}, \quad
        \dot\delta^{(p)} = D^{(p)} \bigl(W^{(p+1)\top} \dot\delta^{(p+1)} + V^{(p+1)\top} \delta^{(p+1)}\bigr),
        \qquad (H v)^{(p)} = \dot\delta^{(p)} x^{(p)\top} + \delta^{(p)} \dot x^{(p)\top};

    the G-term keeps the source :math:`A \dot z^{(L)}` alone, the H-term the rest. Vectors are flat in
    :func:`flat_parameters` order.

    Args:
        model: The network (its parameters are captured, detached, when this is called).
        operator: One of :data:`OPERATORS`.
        batch_size: Samples per ``vmap`` call of the generic path (the structured one needs no more memory
            than a few copies of the ``(N, P)`` vectors, and takes all samples at once).
        method: ``"structured"`` (an MLP without biases only), ``"generic"`` (``torch.func``, any model) or
            ``"auto"`` (structured when it applies).

    Returns:
        The function ``matvec(V, x, y)`` taking ``(N, P)`` vectors, ``(N, n)`` inputs and ``(N,)`` labels and
        returning the ``(N, P)`` products.

    Raises:
        ValueError: when ``operator`` or ``method`` is unknown, ``batch_size`` is not a positive integer, or
            ``method="structured"`` is asked of a model that is not a bias-free :class:`lhlib.models.MLP`.
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
    check_choice("method", method, METHODS)
    weights = linear_relu_weights(model) if method != "generic" else None
    if method == "structured" and weights is None:
        raise ValueError("method='structured' needs an lhlib MLP without biases; use method='generic' or 'auto'")
    if weights is not None:
        return _stack_matvec([w.detach() for w in weights], operator)
    params, buffers = _params_buffers(model)
    unflatten, flatten, _ = _flatteners(params)

    def logits_of(p, xi):
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)

    def loss_of(p, xi, yi):
        return F.cross_entropy(logits_of(p, xi).unsqueeze(0), yi.unsqueeze(0))

    def hvp(v, xi, yi):
        return jvp(lambda p: grad(loss_of)(p, xi, yi), (params,), (v,))[1]

    def gvp(v, xi, yi):
        z, jv = jvp(lambda p: logits_of(p, xi), (params,), (v,))
        prob = torch.softmax(z, dim=0)
        u = prob * jv - prob * (prob @ jv)
        return vjp(lambda p: logits_of(p, xi), params)[1](u)[0]

    def htv(v, xi, yi):
        # sum_k r_k grad^2 z_k with r = p - e_y held fixed: computed directly, not as the difference H v - G v,
        # which cancels in float32 when the H-term is far smaller than the G-term (well-fitted samples).
        z = logits_of(params, xi)
        residual = torch.softmax(z, dim=0) - (torch.arange(z.shape[0], device=z.device) == yi).to(z.dtype)
        return jvp(lambda p: grad(lambda q: (residual * logits_of(q, xi)).sum())(p), (params,), (v,))[1]

    single = {"hessian": hvp, "ggn": gvp, "hterm": htv}[operator]
    batched = vmap(single, in_dims=(0, 0, 0))

    def matvec(vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = [flatten(batched(unflatten(vectors[s]), x[s], y[s]), 1) for s in _chunks(x.shape[0], batch_size)]
        return torch.cat(out)

    return matvec


def _autograd_mean_matvec(model: nn.Module, x, y, operator: str, batch_size: int) -> Callable:
    """:func:`mean_matvec`'s generic path: one stored graph per chunk, products by backward passes through them."""
    params, buffers = _params_buffers(model)
    unflatten, flatten, _ = _flatteners(params)
    names = list(params)
    leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
    leaf_list = [leaves[name] for name in names]
    n = x.shape[0]
    chunks = []
    with torch.enable_grad():
        for s in _chunks(n, batch_size):
            logits = functional_call(model, (leaves, buffers), (x[s],))
            chunk = {}
            if operator == "hessian":
                loss = F.cross_entropy(logits, y[s], reduction="sum")
                chunk["grad"] = torch.autograd.grad(loss, leaf_list, create_graph=True)
            elif operator == "hterm":
                # sum_k r_k z_k with the residual r = p - e_y held fixed: its Hessian is the H-term, computed
                # directly rather than as H v - G v, which cancels in float32 (as in per_sample_matvec).
                residual = torch.softmax(logits.detach(), dim=1) - F.one_hot(y[s], logits.shape[1]).to(logits)
                chunk["grad"] = torch.autograd.grad((residual * logits).sum(), leaf_list, create_graph=True)
            else:
                dummy = torch.zeros_like(logits, requires_grad=True)
                chunk["jt"] = torch.autograd.grad(logits, leaf_list, grad_outputs=dummy, create_graph=True)
                chunk["dummy"], chunk["logits"] = dummy, logits
                chunk["prob"] = torch.softmax(logits.detach(), dim=1)
            chunks.append(chunk)

    def ggn_part(chunk, v_list):
        jv = torch.autograd.grad(chunk["jt"], chunk["dummy"], grad_outputs=v_list, retain_graph=True)[0]
        prob = chunk["prob"]
        u = prob * jv - prob * (prob * jv).sum(1, keepdim=True)
        return torch.autograd.grad(chunk["logits"], leaf_list, grad_outputs=u, retain_graph=True)

    def matvec(vector: torch.Tensor) -> torch.Tensor:
        v = unflatten(vector.detach())
        v_list = [v[name] for name in names]
        total = torch.zeros_like(vector)
        for chunk in chunks:
            if operator == "ggn":
                total += flatten(dict(zip(names, ggn_part(chunk, v_list))), 0)
            else:
                hv = torch.autograd.grad(chunk["grad"], leaf_list, grad_outputs=v_list, retain_graph=True)
                total += flatten(dict(zip(names, hv)), 0)
        return total / n

    return matvec


def mean_matvec(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    operator: str = "hessian",
    batch_size: int = 4096,
    *,
    method: str = "auto",
) -> Callable:
    r"""The product with the averaged Hessian, G-term or H-term of the loss on ``(x, y)``.

    .. math::

        \operatorname{matvec}(v) = \frac{1}{N} \sum_{i=1}^{N} C_i v, \qquad
        C_i \in \bigl\{H_i,\; J_i^\top A_i J_i,\; H_i - J_i^\top A_i J_i\bigr\}.

    The generic path (any model) builds the forward pass and the differentiable gradient (Hessian; for the
    H-term, of :math:`\sum_k r_k z_k` with the residual :math:`r = p - e_y` held fixed) or transposed-Jacobian
    product (G-term, the double-vjp trick) once per chunk of ``batch_size`` samples and keeps
    them, so every product afterwards costs only backward passes through the stored graphs (memory: the
    activations of all samples, twice). The structured path, for a bias-free Linear/ReLU stack (recognised by
    :func:`linear_relu_weights` on the first 64 samples), keeps the activations, ReLU masks and loss gradients
    with respect to every layer's output, and forms each product from the tangent of the forward and
    backward recursions (:func:`per_sample_matvec` states them) as a few matrix products over all samples.

    Args:
        model: The network (its parameters are captured, detached, when this is called).
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels (needed for the Hessian and the H-term).
        operator: One of :data:`OPERATORS`.
        batch_size: Samples per stored graph (the generic path).
        method: ``"structured"`` (a bias-free Linear/ReLU stack only), ``"generic"`` (``torch.autograd``, any
            model) or ``"auto"`` (structured when it applies).

    Returns:
        The function ``matvec(v)`` mapping a flat ``(P,)`` vector to the ``(P,)`` product.

    Raises:
        ValueError: when ``operator`` or ``method`` is unknown, ``batch_size`` is not a positive integer, ``x``
            or ``y`` has the wrong shape, or ``method="structured"`` is asked of a model that is not a bias-free
            Linear/ReLU stack.
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
    check_choice("method", method, METHODS)
    _check_data(x, y)
    weights = linear_relu_weights(model, x[:64]) if method != "generic" else None
    if method == "structured" and weights is None:
        raise ValueError(
            "method='structured' needs a bias-free Linear/ReLU stack (see linear_relu_weights); "
            "use method='generic' or 'auto' for other models"
        )
    if weights is not None:
        return _stack_mean_matvec([w.detach() for w in weights], x, y, operator)
    return _autograd_mean_matvec(model, x, y, operator, batch_size)


# ----------------------------------------------------------------------------------------------
# Per-sample spectral norms by batched Lanczos
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HessianNorms:
    r"""Per-sample spectral norms of a curvature matrix and the Lanczos diagnostics behind them.

    The per-sample Hessian is in general indefinite, so ``lambda_min`` is typically negative. All fields are
    ``(N,)`` CPU tensors.

    Attributes:
        norms: :math:`\max(|\lambda_{\min}|, |\lambda_{\max}|)` of each sample (float64).
        lambda_min: The smallest Ritz value of each sample (float64).
        lambda_max: The largest Ritz value of each sample (float64).
        converged: Whether both extreme Ritz values of sample :math:`i` have residual bound
            :math:`|\beta_m s_m| \le \mathrm{tol} \cdot \mathrm{norms}_i` (then an eigenvalue lies within that
            distance of each), or the recurrence broke down on an invariant subspace (bool).
        iterations: The number of Lanczos steps sample :math:`i` took (int64).
    """

    norms: torch.Tensor
    lambda_min: torch.Tensor
    lambda_max: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor


def _tridiagonal(alphas: list[torch.Tensor], betas: list[torch.Tensor]) -> torch.Tensor:
    alpha = torch.stack(alphas, dim=1)
    t = torch.diag_embed(alpha)
    if len(betas):
        beta = torch.stack(betas, dim=1)
        t = t + torch.diag_embed(beta, offset=1) + torch.diag_embed(beta, offset=-1)
    return t


def _random_unit_rows(n: int, size: int, seed: int, dtype, device) -> torch.Tensor:
    """``n`` Gaussian starting vectors of length ``size``, drawn in float64 from ``seed``, normalised."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(n, size, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    return q / q.norm(dim=1, keepdim=True)


def _row_dots(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The dot product of each row of ``a`` with the same row of ``b``, without an ``N x P`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _lanczos_vectors(matvec: Callable, q, q_prev, beta_prev, x, y):
    """One three-term Lanczos step for every row: the next unnormalised vectors, ``alpha`` and ``beta``.

    The ``N x P`` updates run in place (``matvec`` must return a new tensor, as both paths of
    :func:`per_sample_matvec` do): on these sizes the step is bound by memory traffic, not arithmetic.
    """
    w = matvec(q, x, y)
    alpha = _row_dots(w, q)
    w.addcmul_(alpha.unsqueeze(1), q, value=-1).addcmul_(beta_prev.unsqueeze(1), q_prev, value=-1)
    # One pass of local reorthogonalisation against the last two vectors keeps the recurrence tidy.
    along_q, along_prev = _row_dots(w, q), _row_dots(w, q_prev)
    w.addcmul_(along_q.unsqueeze(1), q, value=-1).addcmul_(along_prev.unsqueeze(1), q_prev, value=-1)
    return w, alpha, w.norm(dim=1)


def _extreme_ritz_values(t: torch.Tensor, beta: torch.Tensor, tol: float, breakdown: torch.Tensor):
    """The extreme Ritz values of each tridiagonal ``t`` and whether both meet the residual test."""
    evals, evecs = torch.linalg.eigh(t)
    lo, hi = evals[:, 0], evals[:, -1]
    norm = torch.maximum(lo.abs(), hi.abs())
    residual_lo, residual_hi = (beta * evecs[:, -1, 0]).abs(), (beta * evecs[:, -1, -1]).abs()
    return lo, hi, breakdown | ((residual_lo <= tol * norm) & (residual_hi <= tol * norm))


def per_sample_hessian_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    operator: str = "hessian",
    max_iter: int = 60,
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 128,
    check_every: int = 4,
    method: str = "auto",
) -> HessianNorms:
    r"""Spectral norm of each sample's Hessian (or G-term, or H-term) by batched Lanczos.

    .. math::

        \lVert C_i \rVert_2 = \max\bigl(|\lambda_{\min}(C_i)|, |\lambda_{\max}(C_i)|\bigr), \qquad
        C_i \in \bigl\{H_i,\; J_i^\top A_i J_i,\; H_i - J_i^\top A_i J_i\bigr\},

    with the extreme eigenvalues estimated by the extreme Ritz values of the Lanczos tridiagonal :math:`T_m`.
    All samples of ``x`` run Lanczos together on per-sample Hessian-vector products (:func:`per_sample_matvec`);
    samples leave
    the batch as soon as both extreme Ritz values meet the residual test
    :math:`|\beta_m s_m| \le \mathrm{tol} \cdot \lVert C_i \rVert_2` (:math:`s_m` the last entry of the Ritz
    vector in the Krylov basis). Three-term Lanczos with only local reorthogonalisation against the last two
    vectors: losing orthogonality only duplicates converged Ritz values, it does not spoil the extreme ones.
    Starting vectors are Gaussian, drawn from ``seed``. Memory: a few ``N x P`` tensors.

    Args:
        model: The network, in the dtype and on the device the products run in.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        operator: One of :data:`OPERATORS`.
        max_iter: The most Lanczos steps per sample (at least 2); a sample still running then is reported with
            ``converged`` false.
        tol: The relative residual tolerance (positive).
        seed: The seed of the starting vectors.
        batch_size: Samples per ``vmap`` call of the generic products (:func:`per_sample_matvec`).
        check_every: How many steps pass between convergence tests (also tested at ``max_iter`` and on
            breakdown).
        method: How the products are computed, as for :func:`per_sample_matvec`.

    Returns:
        The :class:`HessianNorms` of the ``N`` samples.

    Raises:
        ValueError: when ``x`` or ``y`` has the wrong shape or an option is out of range.
    """
    _check_data(x, y)
    check_choice("operator", operator, OPERATORS)
    check_int("max_iter", max_iter, minimum=2)
    check_float("tol", tol, minimum=0.0, strict_minimum=True)
    check_int("seed", seed, minimum=0)
    check_int("check_every", check_every, minimum=1)
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    n, matvec = x.shape[0], per_sample_matvec(model, operator, batch_size, method=method)
    q = _random_unit_rows(n, sum(p.numel() for p in model.parameters()), seed, dtype, device)
    result_min, result_max = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    converged, iterations = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.int64)
    active, q_prev, beta_prev = torch.arange(n), torch.zeros_like(q), torch.zeros(n, dtype=dtype, device=device)
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    for step in range(1, max_iter + 1):
        w, alpha, beta = _lanczos_vectors(matvec, q, q_prev, beta_prev, x[active.to(device)], y[active.to(device)])
        alphas.append(alpha.double().cpu())
        t = _tridiagonal(alphas, betas)
        scale = t.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(torch.float64).tiny)
        breakdown = beta.double().cpu() <= 10 * torch.finfo(dtype).eps * scale
        if step % check_every == 0 or step == max_iter or bool(breakdown.any()):
            lo, hi, done = _extreme_ritz_values(t, beta.double().cpu(), tol, breakdown)
            finished = done | (step == max_iter)
            index = active[finished]
            result_min[index], result_max[index] = lo[finished], hi[finished]
            converged[index], iterations[index] = done[finished], step
            keep = ~finished
            if not bool(keep.any()):
                break
            active, keep_d = active[keep], keep.to(device)
            alphas, betas = [a[keep] for a in alphas], [b[keep] for b in betas]
            w, q, beta = w[keep_d], q[keep_d], beta[keep_d]
        betas.append(beta.double().cpu())
        q_prev, q, beta_prev = q, w.div_(beta.unsqueeze(1)), beta
    norms = torch.maximum(result_min.abs(), result_max.abs())
    return HessianNorms(norms, result_min, result_max, converged, iterations)


# ----------------------------------------------------------------------------------------------
# Dataset level: top eigenvalues, traces, the lemma's difference term
# ----------------------------------------------------------------------------------------------


def _eigsh(matvec: Callable, size: int, k: int, which: str, dtype, device, tol: float, seed: int) -> np.ndarray:
    from scipy.sparse.linalg import LinearOperator, eigsh

    def apply(vector: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(vector).reshape(-1), dtype=dtype, device=device)
        return matvec(v).detach().cpu().double().numpy()

    operator = LinearOperator((size, size), matvec=apply, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(size)
    values = eigsh(
        operator, k=k, which=which, tol=tol, v0=v0, return_eigenvectors=False, ncv=min(size, max(2 * k + 1, 20))
    )
    return np.sort(values)[::-1]


@dataclass(frozen=True)
class TopEigenvalues:
    r"""Top-``k`` eigenvalues (descending) of the averaged Hessian and of the averaged G-term.

    Attributes:
        hessian: The ``(k,)`` float64 eigenvalues of :math:`\frac{1}{N} \sum_i H_i`, largest first.
        ggn: The ``(k,)`` float64 eigenvalues of :math:`\frac{1}{N} \sum_i J_i^\top A_i J_i`, largest first.
    """

    hessian: np.ndarray
    ggn: np.ndarray


def dataset_hessian_top_eigenvalues(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    k: int = 5,
    *,
    tol: float = 1e-6,
    seed: int = 0,
    batch_size: int = 2048,
) -> TopEigenvalues:
    r"""The ``k`` largest (algebraic) eigenvalues of the averaged Hessian and of the averaged G-term.

    .. math::

        \lambda_1 \ge \dots \ge \lambda_k \ \text{of}\ \ \frac{1}{N} \sum_{i=1}^{N} H_i
        \quad\text{and of}\quad \frac{1}{N} \sum_{i=1}^{N} J_i^\top A_i J_i.

    ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``) on matrix-free products from
    :func:`mean_matvec`, in the model's dtype, vectors handed over in float64.

    Args:
        model: The network.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        k: How many eigenvalues (fewer than the ``P`` parameters).
        tol: ARPACK's relative tolerance (0 is machine precision).
        seed: The seed of the starting vector.
        batch_size: Samples per stored graph of :func:`mean_matvec`.

    Returns:
        The :class:`TopEigenvalues` of both matrices.

    Raises:
        ValueError: when ``x`` or ``y`` has the wrong shape, an option is out of range, or ``k >= P``.
    """
    _check_data(x, y)
    check_int("k", k, minimum=1)
    check_float("tol", tol, minimum=0.0)
    check_int("seed", seed, minimum=0)
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    size = sum(p.numel() for p in model.parameters())
    if k >= size:
        raise ValueError(f"k must be smaller than the number of parameters ({size}), got {k}")
    values = {
        operator: _eigsh(mean_matvec(model, x, y, operator, batch_size), size, k, "LA", dtype, device, tol, seed)
        for operator in ("hessian", "ggn")
    }
    return TopEigenvalues(values["hessian"], values["ggn"])


@dataclass(frozen=True)
class TraceEstimate:
    r"""Hutchinson estimate of a trace, the mean of :math:`v^\top C v` over Rademacher vectors :math:`v`.

    Attributes:
        estimate: The mean of :math:`v^\top C v` over the ``probes`` vectors.
        stderr: Its standard error, the sample standard deviation over :math:`\sqrt{\mathrm{probes}}`.
        probes: The number of Rademacher vectors.
    """

    estimate: float
    stderr: float
    probes: int


def _quadratic_forms(model, x, y, operator, vectors, batch_size):
    """``v^T C v`` for each row ``v`` of ``vectors``: second directional derivatives by
    forward-over-forward mode (Hessian) or ``||B^T J v||^2`` (G-term); no reverse pass.
    """
    params, buffers = _params_buffers(model)
    unflatten, _, _ = _flatteners(params)
    n = x.shape[0]

    def logits_of(p, xb):
        return functional_call(model, (p, buffers), (xb,))

    def loss_sum(p, xb, yb):
        return F.cross_entropy(logits_of(p, xb), yb, reduction="sum")

    out = []
    for vector in vectors:
        v = unflatten(vector)
        total = 0.0
        for s in _chunks(n, batch_size):
            xb, yb = x[s], y[s]
            if operator == "hessian":
                value = jvp(
                    lambda p, xb=xb, yb=yb, v=v: jvp(lambda q: loss_sum(q, xb, yb), (p,), (v,))[1], (params,), (v,)
                )[1]
            else:
                z, jv = jvp(lambda p, xb=xb: logits_of(p, xb), (params,), (v,))
                prob = torch.softmax(z, dim=1)
                value = (prob * jv * jv).sum() - ((prob * jv).sum(1) ** 2).sum()
            total += float(value)
        out.append(total / n)
    return np.asarray(out)


def hessian_trace(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    probes: int = 100,
    seed: int = 0,
    *,
    operator: str = "hessian",
    batch_size: int = 2048,
) -> TraceEstimate:
    r"""Hutchinson's estimate of the trace of the averaged Hessian or G-term.

    .. math::

        \operatorname{tr}\Bigl(\frac{1}{N} \sum_{i=1}^{N} C_i\Bigr)
        \approx \frac{1}{S} \sum_{s=1}^{S} v_s^\top \Bigl(\frac{1}{N} \sum_{i=1}^{N} C_i\Bigr) v_s,
        \qquad v_s \in \{-1, 1\}^P \ \text{Rademacher}, \quad C_i \in \{H_i,\; J_i^\top A_i J_i\},

    with :math:`S` = ``probes``. Each probe costs one forward-over-forward pass over the data (the Hessian) or
    one forward-mode pass, :math:`(J_i v)^\top A_i (J_i v)` (the G-term). For the bias-free ReLU MLP the logits
    are multilinear in the weight matrices (activation pattern fixed), so the H-term has a zero diagonal and
    :math:`\operatorname{tr} H = \operatorname{tr} G` exactly; :func:`ggn_trace` gives that value without noise.

    Args:
        model: The network.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        probes: The number :math:`S` of Rademacher vectors (at least 2).
        seed: The seed of the vectors.
        operator: ``"hessian"`` or ``"ggn"``.
        batch_size: Samples per forward pass.

    Returns:
        The :class:`TraceEstimate`.

    Raises:
        ValueError: when ``x`` or ``y`` has the wrong shape or an option is out of range.
    """
    _check_data(x, y)
    check_int("probes", probes, minimum=2)
    check_int("seed", seed, minimum=0)
    check_choice("operator", operator, ("hessian", "ggn"))
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    size = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(seed)
    vectors = (torch.randint(0, 2, (probes, size), generator=generator) * 2 - 1).to(device=device, dtype=dtype)
    values = _quadratic_forms(model, x, y, operator, vectors, batch_size)
    return TraceEstimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(probes)), probes)


def ggn_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, method: str = "auto") -> float:
    r"""The exact trace of the averaged G-term, from the per-sample :math:`K \times K` matrices.

    .. math::

        \operatorname{tr}\Bigl(\frac{1}{N} \sum_{i=1}^{N} J_i^\top A_i J_i\Bigr)
        = \frac{1}{N} \sum_{i=1}^{N} \operatorname{tr}(A_i J_i J_i^\top).

    Args:
        model: As for :func:`per_sample_jjt`.
        x: The ``(N, n)`` inputs.
        y: Unused (the G-term does not depend on the labels); accepted for symmetry with :func:`hessian_trace`.
        method: As for :func:`per_sample_jjt`.

    Returns:
        The trace, a float.
    """
    return float(per_sample_ggn_traces(model, x, method=method).double().mean())


def lanczos_extremes(
    matvec: Callable,
    size: int,
    *,
    dtype=torch.float64,
    device="cpu",
    max_iter: int = 200,
    tol: float = 1e-6,
    seed: int = 0,
    stall: int = 5,
) -> tuple[float, float, bool]:
    r"""The extreme eigenvalues of a symmetric operator by Lanczos with full reorthogonalisation.

    .. math::

        \lambda_{\min}, \lambda_{\max} \approx \text{the extreme eigenvalues of }
        T_m = Q_m^\top C Q_m, \qquad Q_m \ \text{an orthonormal basis of}\
        \operatorname{span}\{q, C q, \dots, C^{m-1} q\},

    for the operator :math:`C` that ``matvec`` applies to flat vectors of length ``size``. It stops when both
    extreme Ritz values have residual bound :math:`|\beta_m s_m| \le \mathrm{tol} \cdot
    \max(|\lambda_{\min}|, |\lambda_{\max}|)`, or when :math:`\max(|\lambda_{\min}|, |\lambda_{\max}|)` moved by
    less than ``tol / 10`` (relative) over the last ``stall`` steps (``stall=0`` disables that: clustered
    extreme eigenvalues make residuals shrink slowly while the Ritz values, accurate to the squared residual,
    have long settled), or when the Krylov space is exhausted (breakdown, or ``size`` steps).

    Kept beside ``scipy.sparse.linalg.eigsh(k=2, which="BE")`` because, on chapter 03's lemma operator, it
    reaches the same extremes with fewer operator products and in less time; ``benchmarks/bench_lanczos.py``
    measures both side by side and prints the ratio.

    Args:
        matvec: The product :math:`v \mapsto C v` on ``(size,)`` tensors.
        size: The dimension of the operator.
        dtype: The dtype of the Krylov vectors.
        device: The device of the Krylov vectors.
        max_iter: The most Lanczos steps (at least 1).
        tol: The relative residual tolerance.
        seed: The seed of the Gaussian starting vector.
        stall: The number of steps over which a stalled norm counts as converged (0 disables it).

    Returns:
        The tuple ``(lambda_min, lambda_max, converged)``; ``converged`` is false when ``max_iter`` steps ran
        out first.

    Raises:
        ValueError: when ``max_iter`` is not a positive integer.
    """
    check_int("max_iter", max_iter, minimum=1)
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(size, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    basis = [q / q.norm()]
    alphas, betas, history = [], [], []
    low = high = 0.0
    for step in range(1, min(max_iter, size) + 1):
        w = matvec(basis[-1])
        alphas.append(float(w @ basis[-1]))
        stacked = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice is enough
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t = t + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)
        low, high = float(evals[0]), float(evals[-1])
        scale = max(abs(low), abs(high), torch.finfo(torch.float64).tiny)
        if beta <= 10 * torch.finfo(dtype).eps * scale or step == size:
            return low, high, True
        if abs(beta * float(evecs[-1, 0])) <= tol * scale and abs(beta * float(evecs[-1, -1])) <= tol * scale:
            return low, high, True
        history.append(scale)
        if stall and len(history) > stall and abs(history[-1] - history[-1 - stall]) <= 0.1 * tol * scale:
            return low, high, True
        betas.append(beta)
        basis.append(w / beta)
    return low, high, False


def lemma_difference_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ks: Sequence[int],
    *,
    operator: str = "hessian",
    tol: float = 1e-4,
    seed: int = 0,
    batch_size: int = 2048,
) -> np.ndarray:
    r"""The lemma's Hessian term for each ``k`` in ``ks``, samples taken in the order of ``x``.

    .. math::

        \Bigl\lVert C_{k+1} - \frac{1}{k} \sum_{i=1}^{k} C_i \Bigr\rVert_2
        = \max\bigl(|\lambda_{\min}|, |\lambda_{\max}|\bigr), \qquad C_i \in \{H_i,\; J_i^\top A_i J_i\},

    with sample :math:`i` the row ``x[i - 1]`` (shuffle first for a random order). The difference is indefinite,
    hence both extremes, from :func:`lanczos_extremes` (full reorthogonalisation, relative residual ``tol``,
    at most 200 steps).

    Args:
        model: The network.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        ks: The sample counts :math:`k`, each in :math:`1, \dots, N - 1`.
        operator: ``"hessian"`` or ``"ggn"``.
        tol: The relative residual tolerance of :func:`lanczos_extremes`.
        seed: The seed of its starting vector.
        batch_size: Samples per stored graph of :func:`mean_matvec`.

    Returns:
        The ``(len(ks),)`` float64 array of norms.

    Raises:
        ValueError: when ``x`` or ``y`` has the wrong shape, ``operator`` is unknown or a ``k`` is out of range.
    """
    _check_data(x, y)
    check_choice("operator", operator, ("hessian", "ggn"))
    ks = [check_int("ks", k, minimum=1, maximum=x.shape[0] - 1) for k in ks]
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    size = sum(p.numel() for p in model.parameters())
    out = []
    for k in ks:
        new = mean_matvec(model, x[k : k + 1], y[k : k + 1], operator, batch_size)
        old = mean_matvec(model, x[:k], y[:k], operator, batch_size)
        low, high, _ = lanczos_extremes(
            lambda v, new=new, old=old: new(v) - old(v), size, dtype=dtype, device=device, tol=tol, seed=seed
        )
        out.append(max(abs(low), abs(high)))
    return np.asarray(out)
