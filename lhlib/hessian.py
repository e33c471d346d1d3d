"""Per-sample and dataset Hessians of the cross-entropy loss, without forming a P x P matrix.

For one sample with logits ``z = f_theta(x) in R^K``, probabilities ``p = softmax(z)`` and loss
``l = -log p_y``, the Hessian with respect to the ``P`` parameters splits (paper, section 3.4) as

    H_i = J_i^T A_i J_i  +  sum_k (p_k - y_k) d^2 z_k / d theta^2
          (G-term, Gauss-Newton)  (H-term)

with ``J_i`` the ``K x P`` Jacobian of the logits and ``A_i = diag(p) - p p^T``.

*G-term.* ``A = B B^T`` with ``s = sqrt(p)`` and ``B = diag(s) - p s^T``, so the nonzero spectrum
of ``J^T A J = (B^T J)^T (B^T J)`` is that of the ``K x K`` matrix ``B^T (J J^T) B``: the exact
spectral norm of every sample's G-term is the largest eigenvalue of a ``K x K`` matrix. For the
bias-free MLP of :mod:`lhlib.models` (the paper's network) the rows of ``J`` that belong to layer
``p`` are ``G^(p) (x) x^(p)^T`` (the paper's matrix ``F``; ``G^(p) = dz/dz^(p)`` is ``K x h_p``,
``x^(p)`` the layer's input), hence

    J J^T = sum_p ||x^(p)||^2 G^(p) G^(p)^T,

and :func:`per_sample_ggn_norms` computes all ``G^(p)`` for a batch of samples by one backward
recursion ``G^(p) = (G^(p+1) W^(p+1)) D^(p)``: no object of size ``P`` is formed at all. This
structured path serves any bias-free Linear/ReLU stack, whatever class holds it
(:func:`linear_relu_weights`). Any other model goes through ``torch.func``
(``vmap(jacrev(functional_call))``, ``K x P`` per sample, in chunks).

*Full Hessian.* It is indefinite in general (the H-term of a ReLU network has zero trace, see
:func:`hessian_trace`), so its spectral norm is ``max |lambda|``. :func:`per_sample_hessian_norms`
runs Lanczos for all samples of a batch at once on per-sample Hessian-vector products
(``vmap`` over samples of forward-over-reverse ``jvp(grad)``) and reports both extreme eigenvalues
and whether each sample's estimate converged (residual bound ``|beta_m s_m| <= tol * norm``).

*Dataset level.* :func:`dataset_hessian_top_eigenvalues` gives the top eigenvalues of the averaged
Hessian and averaged Gauss-Newton matrix by ARPACK (``scipy.sparse.linalg.eigsh``) on matrix-free
products; :func:`hessian_trace` estimates their traces with Hutchinson's estimator, and
:func:`ggn_trace` gives the Gauss-Newton trace exactly; :func:`lemma_difference_norms` measures
the lemma's ``||H_{k+1} - (1/k) sum_{i<=k} H_i||_2`` (Lanczos with full reorthogonalisation,
:func:`lanczos_extremes`). :func:`mean_matvec` and :func:`per_sample_matvec` expose the products.

What chapter 03 measures on one network with these tools, and its comparison with every form of
Theorem 1, are in :mod:`lhlib.hessian_in_practice`.

Everything runs on the device of the model's parameters and in their dtype (use ``model.double()``
for float64).
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
"""How per-sample ``J J^T`` is computed: the bias-free Linear/ReLU structure, ``torch.func``, or whichever applies."""

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
    """All parameters of ``model`` as one vector, in ``named_parameters()`` order (the order every
    flat vector in this module uses).
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split ``flat`` (``(..., P)``) into ``{name: (..., *shape)}`` in ``named_parameters()`` order:
    the inverse of :func:`flat_parameters`, batched over leading axes.
    """
    split, _, size = _flatteners(dict(model.named_parameters()))
    if flat.shape[-1] != size:
        raise ValueError(f"flat must have {size} entries in its last axis, got {flat.shape[-1]}")
    return split(flat)


# Modules that a bias-free Linear/ReLU stack may hold besides its Linear layers (the ReLUs may
# equally be applied in ``forward`` with ``torch.relu``).
_STACK_PASSIVE = (nn.ReLU, nn.Identity, nn.Flatten)


def linear_relu_weights(model: nn.Module, probe: torch.Tensor | None = None) -> list[torch.Tensor] | None:
    """``[W^(1), ..., W^(L)]`` when ``model`` computes ``z = W^(L) s(W^(L-1) ... s(W^(1) x))`` (``s`` = ReLU),
    else ``None``.

    An :class:`lhlib.models.MLP` without biases qualifies by its class. Any other module, whatever
    class holds it (an ``nn.Sequential``, a class written like the authors', with the ReLUs as
    modules or called in ``forward``), qualifies when its only parameters are the weights of
    bias-free ``nn.Linear`` layers whose shapes chain in registration order, it has no buffers and
    no modules other than ``nn.ReLU``, ``nn.Identity`` and ``nn.Flatten``, and its output on
    ``probe`` and on ``-probe`` (2-D inputs) equals the stack's: modules alone do not say what
    ``forward`` does with them.
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


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ----------------------------------------------------------------------------------------------
# The layer factors of a bias-free ReLU network (the paper's sections 3.3 and 4), and A = B B^T
# ----------------------------------------------------------------------------------------------

Weights = nn.Module | Sequence[torch.Tensor]


def weight_list(model: Weights, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    """``[W^(1), ..., W^(L)]`` (detached, in ``dtype``) of an MLP, or of a sequence of matrices."""
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
    """``x`` as an ``(N, n)`` tensor in the dtype and on the device of ``weights`` (one sample may be 1-D)."""
    x = torch.as_tensor(x).detach().to(weights[0].dtype, copy=False)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != weights[0].shape[1]:
        raise ValueError(f"x must have shape (N, {weights[0].shape[1]}), got {tuple(x.shape)}")
    return x.to(weights[0].device)


@dataclass(frozen=True)
class ForwardFactors:
    """The pieces of the G-term of every sample (index 0 of each tensor is the sample).

    ``activations[p-1]`` is ``x^(p)`` ``(N, n_p)`` for ``p = 1..L``; ``masks[p-1]`` is the diagonal of
    ``D^(p)`` ``(N, n_{p+1})`` for ``p = 1..L-1``; ``jacobians[p-1]`` is ``G^(p)`` ``(N, K, n_{p+1})``
    for ``p = 1..L`` (``G^(L) = I``); ``logits`` ``(N, K)`` and ``probs = softmax(logits)``.
    """

    activations: list[torch.Tensor]
    masks: list[torch.Tensor]
    jacobians: list[torch.Tensor]
    logits: torch.Tensor
    probs: torch.Tensor

    def jjt(self) -> torch.Tensor:
        r"""The ``(N, K, K)`` per-sample ``J_i J_i^T`` (the paper's ``F_i F_i^T``), no ``K x P`` object formed.

        .. math::

            J = [G^{(1)} \otimes x^{(1)\top}, \dots, G^{(L)} \otimes x^{(L)\top}]
            \quad\Longrightarrow\quad
            J J^\top = \sum_p \lVert x^{(p)} \rVert^2 \, G^{(p)} G^{(p)\top}.
        """
        return sum(
            (a * a).sum(1)[:, None, None] * (g @ g.transpose(1, 2)) for g, a in zip(self.jacobians, self.activations)
        )


def forward_factors(model: Weights, x: torch.Tensor, dtype: torch.dtype = torch.float64) -> ForwardFactors:
    """Activations, ReLU masks and ``G^(p) = dz/dz^(p)`` of every sample, vectorised over samples.

    ``D^(p) = diag[z^(p) > 0]`` (PyTorch's ReLU derivative; the paper writes ``>=``, which differs
    only where a pre-activation is exactly 0). ``G^(p) = (G^(p+1) W^(p+1)) D^(p)``: one
    ``(N K) x h`` by ``h x h`` product per layer. Computed in ``dtype`` (float64 by default, for the
    bound checks; :mod:`lhlib.hessian` uses the model's own dtype for speed).
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
    """``A = diag(p) - p p^T`` with ``p = softmax(z)``: the Hessian of cross-entropy w.r.t. the logits
    (independent of the label). ``z`` is ``(..., K)``; returns ``(..., K, K)``. The diagonal is formed
    as ``p_k (1 - p_k)`` with an accurate complement, so saturated logits keep their small curvature.
    """
    p = torch.softmax(torch.as_tensor(z).to(torch.float64), dim=-1)
    return _with_diagonal(-p[..., :, None] * p[..., None, :], p * _complement(p))


def softmax_hessian_factor(p: torch.Tensor) -> torch.Tensor:
    """``B`` with ``B B^T = diag(p) - p p^T`` (batched over leading axes): column ``j`` of ``B`` is
    ``s_j (e_j - p)``, ``s = sqrt(p)``, i.e. ``B = diag(s) - p s^T``. Proof: ``B B^T = diag(p) - 2 p p^T
    + p (s^T s) p^T`` and ``s^T s = 1``. The diagonal ``s_j (1 - p_j)`` uses an accurate complement.
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
        jjt: ``(N, K, K)`` per-sample ``J_i J_i^T``.
        logits: ``(N, K)`` logits, which give ``p_i = softmax(z_i)`` and hence ``B_i``.

    Returns:
        ``(N, K, K)`` tensor ``M_i``, symmetrised.
    """
    factor = softmax_hessian_factor(torch.softmax(logits, dim=-1))
    small = factor.transpose(-1, -2) @ jjt @ factor
    return 0.5 * (small + small.transpose(-1, -2))


def ggn_norms_from_jjt(jjt: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    r"""Exact spectral norms :math:`\lVert J_i^\top A_i J_i \rVert_2`, the largest eigenvalue of each
    :func:`ggn_small_from_jjt` matrix: an ``(N,)`` tensor.
    """
    return torch.linalg.eigvalsh(ggn_small_from_jjt(jjt, logits))[:, -1].clamp_min(0)


def gauss_newton_jacobian(model: Weights, x_i: torch.Tensor) -> torch.Tensor:
    """The ``K x P`` matrix ``F = [G^(1) kron x^(1)T, ..., G^(L) kron x^(L)T]`` of one sample.

    Columns follow ``torch.cat([W.flatten() for W in weights])`` (row-major), so ``F`` equals the
    Jacobian of the logits with respect to the flattened weights and ``F^T A F`` is the G-term.
    Dense: for tiny networks and tests.
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
    r"""``(J_i J_i^T, logits)`` for every sample: an ``(N, K, K)`` and an ``(N, K)`` tensor.

    ``J_i`` is the ``K x P`` Jacobian of sample ``i``'s logits with respect to the parameters (the
    paper's ``F_i``). For a bias-free Linear/ReLU stack

    .. math::

        J_i J_i^\top = \sum_{p=1}^{L} \lVert x_i^{(p)} \rVert^2 \, G_i^{(p)} G_i^{(p)\top}

    (:meth:`ForwardFactors.jjt`), with no ``P``-sized object.

    Args:
        model: any ``nn.Module``, or a sequence of weight matrices ``[W^(1), ..., W^(L)]`` of a
            bias-free ReLU network (``L = 1`` and modified weights included).
        x: ``(N, n)`` inputs.
        method: ``"structured"`` (the layer factors; the stack is recognised by
            :func:`linear_relu_weights` whatever class holds it), ``"generic"``
            (``vmap(jacrev(functional_call))``, any model) or ``"auto"`` (structured when it applies).
        dtype: the precision of the computation; ``None`` is the model's own.

    Returns:
        ``(jjt, logits)`` in ``dtype``.
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
    r"""The ``(N, K, K)`` matrices :math:`M_i = B_i^\top J_i J_i^\top B_i` whose eigenvalues are the
    nonzero eigenvalues of the per-sample G-terms :math:`J_i^\top A_i J_i` (:math:`A_i = B_i B_i^\top`,
    :func:`ggn_small_from_jjt`); arguments as :func:`per_sample_jjt`, in chunks of
    ``batch_size`` samples.
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
    y: torch.Tensor | None = None,
    *,
    method: str = "auto",
    dtype: torch.dtype | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    r"""Exact spectral norm of every sample's G-term, an ``(N,)`` tensor.

    It is the largest eigenvalue of a ``K x K`` matrix:

    .. math::

        \lVert J_i^\top A_i J_i \rVert_2 = \lambda_{\max}\bigl(B_i^\top J_i J_i^\top B_i\bigr).

    Args:
        model: as for :func:`per_sample_jjt`.
        x: ``(N, n)`` inputs.
        y: accepted for symmetry with the other per-sample functions and not used: ``A_i`` does
            not depend on the label.
        method: as for :func:`per_sample_jjt`.
        dtype: the precision of the computation (``torch.float64`` for the bound checks);
            ``None`` is the model's own.
        batch_size: samples per chunk.

    Returns:
        ``(N,)`` tensor of norms, in ``dtype``.
    """
    check_int("batch_size", batch_size, minimum=1)
    _check_data(x, y)
    return torch.cat(
        [
            ggn_norms_from_jjt(*per_sample_jjt(model, x[s], method=method, dtype=dtype))
            for s in _chunks(x.shape[0], batch_size)
        ]
    )


def per_sample_ggn_traces(
    model: Weights, x: torch.Tensor, *, method: str = "auto", batch_size: int = 4096
) -> torch.Tensor:
    """Exact trace of every sample's G-term, ``tr(A_i J_i J_i^T)``, an ``(N,)`` tensor."""
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


def per_sample_matvec(model: nn.Module, operator: str = "hessian", batch_size: int = 128) -> Callable:
    """``matvec(V, x, y) -> (N, P)``: row ``i`` is ``C_i V[i]`` for the per-sample curvature ``C_i``.

    ``operator`` is ``"hessian"`` (``H_i``, forward-over-reverse ``jvp(grad)``), ``"ggn"``
    (``J_i^T A_i J_i``, one ``jvp`` and one ``vjp``) or ``"hterm"`` (their difference). Vectors are
    flat in :func:`flat_parameters` order; samples are processed ``batch_size`` at a time with
    ``vmap``.
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
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
        hv, gv = hvp(v, xi, yi), gvp(v, xi, yi)
        return {name: hv[name] - gv[name] for name in hv}

    single = {"hessian": hvp, "ggn": gvp, "hterm": htv}[operator]
    batched = vmap(single, in_dims=(0, 0, 0))

    def matvec(vectors: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = [flatten(batched(unflatten(vectors[s]), x[s], y[s]), 1) for s in _chunks(x.shape[0], batch_size)]
        return torch.cat(out)

    return matvec


def mean_matvec(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, operator: str = "hessian", batch_size: int = 4096
) -> Callable:
    """``matvec(v) -> (1/N) sum_i C_i v`` for a flat vector ``v`` (the averaged Hessian, G-term
    or H-term of the loss on ``(x, y)``).

    The forward pass and the differentiable gradient (Hessian) or transposed-Jacobian product
    (G-term, the double-vjp trick) are built once per chunk of ``batch_size`` samples and kept, so
    every product afterwards costs only backward passes through the stored graphs (memory: the
    activations of all samples, twice).
    """
    check_choice("operator", operator, OPERATORS)
    check_int("batch_size", batch_size, minimum=1)
    _check_data(x, y)
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
            if operator in ("hessian", "hterm"):
                loss = F.cross_entropy(logits, y[s], reduction="sum")
                chunk["grad"] = torch.autograd.grad(loss, leaf_list, create_graph=True)
            if operator in ("ggn", "hterm"):
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
            if operator in ("hessian", "hterm"):
                hv = torch.autograd.grad(chunk["grad"], leaf_list, grad_outputs=v_list, retain_graph=True)
                total += flatten(dict(zip(names, hv)), 0)
            if operator in ("ggn", "hterm"):
                gv = flatten(dict(zip(names, ggn_part(chunk, v_list))), 0)
                total += gv if operator == "ggn" else -gv
        return total / n

    return matvec


# ----------------------------------------------------------------------------------------------
# Per-sample spectral norms by batched Lanczos
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HessianNorms:
    """Per-sample spectral norms of a curvature matrix and the Lanczos diagnostics behind them.

    ``norms = max(|lambda_min|, |lambda_max|)``; ``lambda_min``/``lambda_max`` are the extreme
    Ritz values (the per-sample Hessian is indefinite, so ``lambda_min`` is typically negative);
    ``converged[i]`` says whether both extreme Ritz values of sample ``i`` have residual bound
    ``|beta_m s_m| <= tol * norms[i]`` (then an eigenvalue lies within that distance of each);
    ``iterations[i]`` is the number of Lanczos steps sample ``i`` took.
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


def _lanczos_vectors(matvec: Callable, q, q_prev, beta_prev, x, y):
    """One three-term Lanczos step for every row: the next unnormalised vectors, ``alpha`` and ``beta``."""
    w = matvec(q, x, y)
    alpha = (w * q).sum(1)
    w = w - alpha.unsqueeze(1) * q - beta_prev.unsqueeze(1) * q_prev
    # One pass of local reorthogonalisation against the last two vectors keeps the recurrence tidy.
    w = w - (w * q).sum(1, keepdim=True) * q - (w * q_prev).sum(1, keepdim=True) * q_prev
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
) -> HessianNorms:
    """Spectral norm of each sample's Hessian (or G-term, or H-term) by batched Lanczos.

    All samples of ``x`` run Lanczos together on per-sample Hessian-vector products (``vmap``);
    samples leave the batch as soon as both extreme Ritz values meet the residual test. Plain
    three-term Lanczos without reorthogonalisation: losing orthogonality only duplicates converged
    Ritz values, it does not spoil the extreme ones. Starting vectors are Gaussian, drawn from
    ``seed``. Memory: a few ``N x P`` tensors.
    """
    _check_data(x, y)
    check_choice("operator", operator, OPERATORS)
    check_int("max_iter", max_iter, minimum=2)
    check_float("tol", tol, minimum=0.0, strict_minimum=True)
    check_int("seed", seed, minimum=0)
    check_int("check_every", check_every, minimum=1)
    dtype, device = _model_dtype_device(model)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    n, matvec = x.shape[0], per_sample_matvec(model, operator, batch_size)
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
        q_prev, q, beta_prev = q, w / beta.unsqueeze(1), beta
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
    """Top-``k`` eigenvalues (descending) of the averaged Hessian and of the averaged G-term."""

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
    """The ``k`` largest (algebraic) eigenvalues of ``(1/N) sum_i H_i`` and ``(1/N) sum_i G_i``.

    ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``) on matrix-free products
    from :func:`mean_matvec`, in the model's dtype, vectors handed over in float64.
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
    """Hutchinson estimate of a trace: ``estimate`` is the mean of ``v^T C v`` over ``probes``
    Rademacher vectors ``v``, ``stderr`` its standard error (std / sqrt(probes)).
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
    """Hutchinson's estimate of ``tr((1/N) sum_i C_i)`` for ``operator`` ``"hessian"`` or ``"ggn"``.

    Each probe costs one forward-over-forward pass over the data. For the bias-free ReLU MLP the
    logits are multilinear in the weight matrices (activation pattern fixed), so the H-term has a
    zero diagonal and ``tr H = tr G`` exactly; :func:`ggn_trace` gives that value without noise.
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
    """Exact ``tr((1/N) sum_i J_i^T A_i J_i)`` (``y`` unused), from the per-sample ``K x K`` matrices."""
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
    """``(lambda_min, lambda_max, converged)`` of a symmetric operator given by ``matvec`` on flat
    vectors of length ``size``: Lanczos with full reorthogonalisation, stopped when both extreme
    Ritz values have residual bound ``|beta_m s_m| <= tol * max(|lambda_min|, |lambda_max|)``, or
    when ``max(|lambda_min|, |lambda_max|)`` moved by less than ``tol / 10`` (relative) over the last
    ``stall`` steps (``stall=0`` disables that: clustered extreme eigenvalues make residuals shrink
    slowly while the Ritz values, accurate to the squared residual, have long settled).

    Kept beside ``scipy.sparse.linalg.eigsh(k=2, which="BE")`` because, on chapter 03's lemma
    operator, it reaches the same extremes with fewer operator products and in less time;
    ``benchmarks/bench_lanczos.py`` measures both side by side and prints the ratio.
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
    """``||C_{k+1} - (1/k) sum_{i<=k} C_i||_2`` for each ``k`` in ``ks`` (samples in the order of
    ``x``; shuffle first for a random order), ``C`` the Hessian or G-term: the lemma's term.

    The difference is indefinite, so this is ``max(|lambda_min|, |lambda_max|)`` from
    :func:`lanczos_extremes` (full reorthogonalisation, relative residual ``tol``).
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
