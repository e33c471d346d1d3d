r"""Extreme eigenvalues of per-sample and dataset Hessians by Lanczos, on matrix-free products.

The full Hessian is indefinite in general (the H-term of a ReLU network has zero trace), so its spectral
norm is :math:`\max_j |\lambda_j|`. :func:`per_sample_hessian_norms` runs Lanczos for all samples of a batch
at once on the per-sample products of :func:`lhlib.engine.tangents.per_sample_matvec` and reports both
extreme eigenvalues and whether each sample's estimate converged, by the residual bound

.. math::

    |\beta_m s_m| \le \mathrm{tol} \cdot \lVert H_i \rVert_2,

with :math:`\beta_m` the last off-diagonal of the tridiagonal matrix and :math:`s_m` the last entry of the Ritz
vector. :func:`dataset_hessian_top_eigenvalues` gives the top eigenvalues of the averaged Hessian and
Gauss-Newton matrix by ARPACK (``scipy.sparse.linalg.eigsh``); :func:`lanczos_extremes` is Lanczos with full
reorthogonalisation on any symmetric product.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lhlib.engine.parameters import _check_data, _model_dtype_device
from lhlib.engine.tangents import OPERATORS, mean_matvec, per_sample_matvec
from lhlib.engine.validation import check_choice, check_float, check_int

__all__ = [
    "HessianNorms",
    "TopEigenvalues",
    "dataset_hessian_top_eigenvalues",
    "lanczos_extremes",
    "per_sample_hessian_norms",
]


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
    :func:`~lhlib.engine.tangents.per_sample_matvec` do): on these sizes the step is bound by memory traffic, not
    arithmetic.
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
    All samples of ``x`` run Lanczos together on per-sample Hessian-vector products
    (:func:`~lhlib.engine.tangents.per_sample_matvec`);
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
        operator: One of :data:`~lhlib.engine.tangents.OPERATORS`.
        max_iter: The most Lanczos steps per sample (at least 2); a sample still running then is reported with
            ``converged`` false.
        tol: The relative residual tolerance (positive).
        seed: The seed of the starting vectors.
        batch_size: Samples per ``vmap`` call of the generic products
            (:func:`~lhlib.engine.tangents.per_sample_matvec`).
        check_every: How many steps pass between convergence tests (also tested at ``max_iter`` and on
            breakdown).
        method: How the products are computed, as for :func:`~lhlib.engine.tangents.per_sample_matvec`.

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
    :func:`~lhlib.engine.tangents.mean_matvec`, in the model's dtype, vectors handed over in float64.

    Args:
        model: The network.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        k: How many eigenvalues (fewer than the ``P`` parameters).
        tol: ARPACK's relative tolerance (0 is machine precision).
        seed: The seed of the starting vector.
        batch_size: Samples per stored graph of :func:`~lhlib.engine.tangents.mean_matvec`.

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
