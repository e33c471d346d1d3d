r"""Per-sample G-term norms of the cross-entropy Hessian, exact, without a :math:`P \times P` matrix.

For one sample with logits :math:`z = f_\theta(x) \in \mathbb{R}^K`, probabilities
:math:`p = \operatorname{softmax}(z)` and loss :math:`\ell = -\log p_y`, the Hessian with respect to the
:math:`P` parameters splits (paper, section 3.4) as

.. math::

    H_i = \underbrace{J_i^\top A_i J_i}_{\text{G-term (Gauss-Newton)}}
        + \underbrace{\sum_{k=1}^{K} (p_k - y_k) \, \nabla_\theta^2 z_k}_{\text{H-term}},

with :math:`J_i` the :math:`K \times P` Jacobian of the logits, :math:`y` one-hot and
:math:`A_i = \operatorname{diag}(p) - p p^\top` (:func:`softmax_hessian`).

:math:`A = B B^\top` with :math:`s = \sqrt{p}` and :math:`B = \operatorname{diag}(s) - p s^\top`, so the nonzero
spectrum of :math:`J^\top A J = (B^\top J)^\top (B^\top J)` is that of the :math:`K \times K` matrix
:math:`B^\top (J J^\top) B`: the exact spectral norm of every sample's G-term is the largest eigenvalue of a
:math:`K \times K` matrix (:func:`ggn_norms_from_jjt`). For the bias-free MLP the columns of :math:`J` that
belong to layer :math:`p` are :math:`G^{(p)} \otimes x^{(p)\top}` (the paper's matrix :math:`F`), hence

.. math::

    J J^\top = \sum_{p=1}^{L} \lVert x^{(p)} \rVert^2 \, G^{(p)} G^{(p)\top},

and :func:`per_sample_jjt` computes it for a batch from :func:`lhlib.engine.tangents.forward_factors`: no
object of size :math:`P` is formed. Any other model goes through ``torch.func``
(``vmap(jacrev(functional_call))``, :math:`K \times P` per sample, in chunks). :func:`per_sample_ggn_norms`,
:func:`per_sample_ggn_traces` and :func:`per_sample_ggn_small` build on it; :func:`lemma_difference_norms`
measures the lemma's :math:`\lVert H_{k+1} - \frac{1}{k} \sum_{i \le k} H_i \rVert_2`.

Everything runs on the device of the model's parameters and in their dtype (use ``model.double()`` for
float64); the layer factors and :func:`softmax_hessian` default to float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from lhlib.engine.parameters import (
    METHODS,
    Weights,
    _check_data,
    _chunks,
    _model_dtype_device,
    _params_buffers,
    linear_relu_weights,
)
from lhlib.engine.spectral import lanczos_extremes
from lhlib.engine.tangents import forward_factors, mean_matvec
from lhlib.engine.validation import check_choice, check_int

__all__ = [
    "gauss_newton_jacobian",
    "ggn_norms_from_jjt",
    "ggn_small_from_jjt",
    "lemma_difference_norms",
    "per_sample_ggn_norms",
    "per_sample_ggn_small",
    "per_sample_ggn_traces",
    "per_sample_jjt",
    "softmax_hessian",
    "softmax_hessian_factor",
]


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
        model: An :class:`lhlib.engine.models.MLP` or a sequence of weight matrices.
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

    (:meth:`~lhlib.engine.tangents.ForwardFactors.jjt`), with no :math:`P`-sized object; any other model sums
    :math:`J_{i,t} J_{i,t}^\top` over its parameter tensors :math:`t`, from ``vmap(jacrev)`` in chunks.

    Args:
        model: Any ``nn.Module``, or a sequence of weight matrices :math:`[W^{(1)}, \dots, W^{(L)}]` of a
            bias-free ReLU network (:math:`L = 1` and modified weights included).
        x: The ``(N, n)`` inputs.
        method: ``"structured"`` (the layer factors; the stack is recognised by
            :func:`~lhlib.engine.parameters.linear_relu_weights`
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
        method: As for :func:`per_sample_jjt`; :func:`~lhlib.engine.parameters.computation_paths` says which one
            ``"auto"`` takes.
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
    hence both extremes, from :func:`~lhlib.engine.spectral.lanczos_extremes` (full reorthogonalisation, relative
    residual ``tol``,
    at most 200 steps).

    Args:
        model: The network.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        ks: The sample counts :math:`k`, each in :math:`1, \dots, N - 1`.
        operator: ``"hessian"`` or ``"ggn"``.
        tol: The relative residual tolerance of :func:`~lhlib.engine.spectral.lanczos_extremes`.
        seed: The seed of its starting vector.
        batch_size: Samples per stored graph of :func:`~lhlib.engine.tangents.mean_matvec`.

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
