"""The loss landscape away from the trained point: points at distance ``R`` from ``theta-hat``.

Lemma 1 of the paper bounds ``|L_{k+1}(theta) - L_k(theta)|`` for every ``theta`` with
``||theta - theta*|| <= R``, but the paper's figures only look at ``theta = theta-hat``. At *any*
fixed ``theta`` the identity

    L_{k+1}(theta) - L_k(theta) = (l_{k+1}(theta) - L_k(theta)) / (k + 1)

holds, so the curves at ``theta != theta-hat`` are :func:`lhlib.landscape.loss_difference_curves`
applied to the per-sample losses *at theta*; this module supplies those losses, vectorised over many
parameter vectors with ``torch.func.functional_call`` + ``vmap``, and the directions to place the
points along:

* :func:`isotropic_direction`: uniform on the unit sphere of ``R^P``;
* :func:`filter_normalized_direction`: Gaussian, each row ("filter": the incoming weights of one
  neuron) rescaled to the norm of the same row of the trained weights (Li et al. 2018); then
  ``||d|| = ||theta-hat||`` exactly, so a step ``alpha d`` moves a relative distance ``alpha``;
* :func:`top_hessian_direction`: the top eigenvector of the dataset Hessian at ``theta-hat``;
* :func:`ascent_direction`: a few steps of projected ascent on the sphere ``||theta - theta-hat|| = R``
  of the mean absolute deviation of the per-sample losses, the quantity that sets the large-``k``
  level of ``E |L_{k+1}(theta) - L_k(theta)| ~ MAD(l(theta)) / (k + 1)``.

It also computes the two-dimensional slices of Figure 1 (:func:`loss_slice`), the gradient of
``L_k`` at ``theta-hat`` against ``k`` (Assumption 1 says it is zero; :func:`gradient_norms_over_k`,
:func:`per_sample_gradient_stats`), and the Gaussian-ball criterion
``E_{theta ~ N(theta-hat, sigma^2 I)} (L_{k+1}(theta) - L_k(theta))^2`` by Monte Carlo
(:func:`gaussian_mean_square_mc`) and by its second-order closed form (:func:`gaussian_mean_square_taylor`),
and chapter 01's second-order expansion of ``L_{k+1} - L_k`` along one direction
(:func:`difference_expansion`).

Flat parameter vectors follow :func:`lhlib.hessian.flat_parameters` (``model.parameters()`` order).
Everything runs on the device of the model's parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from lhlib.hessian import flat_parameters, mean_matvec, per_sample_ggn_traces, unflatten
from lhlib.landscape import RateFit, fit_rate_exponent, loss_difference_curves, mean_abs_deviation
from lhlib.validation import check_float, check_int

__all__ = [
    "BallPoint",
    "DifferenceExpansion",
    "GaussianCriterion",
    "GradientStats",
    "LossSlice",
    "ascent_direction",
    "difference_expansion",
    "expected_gradient_norm",
    "filter_normalized_direction",
    "gaussian_mean_square_mc",
    "gaussian_mean_square_taylor",
    "gaussian_sigma",
    "gradient_norms_over_k",
    "isotropic_direction",
    "loss_slice",
    "losses_at",
    "measure_ball",
    "per_sample_gradient_stats",
    "top_hessian_direction",
]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D tensor (samples x features), got {getattr(x, 'shape', x)!r}")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"y must be a 1-D tensor of {x.shape[0]} class labels, got {getattr(y, 'shape', y)!r}")


def _on_model(model: nn.Module, *tensors: torch.Tensor) -> list[torch.Tensor]:
    p = next(model.parameters())
    return [t.to(device=p.device, dtype=p.dtype) if t.is_floating_point() else t.to(p.device) for t in tensors]


# ----------------------------------------------------------------------------------------------
# Directions
# ----------------------------------------------------------------------------------------------


def isotropic_direction(model: nn.Module, seed: int) -> torch.Tensor:
    """A unit vector uniform on the sphere of ``R^P`` (normalised Gaussian), drawn from ``seed``."""
    check_int("seed", seed, minimum=0)
    theta = flat_parameters(model)
    generator = torch.Generator().manual_seed(seed)
    d = torch.randn(theta.numel(), generator=generator, dtype=torch.float64)
    return (d / d.norm()).to(device=theta.device, dtype=theta.dtype)


def filter_normalized_direction(model: nn.Module, seed: int, *, unit: bool = False) -> torch.Tensor:
    """Li et al.'s filter-normalised random direction (2018), flat.

    A Gaussian direction in which the ``j``-th row of each weight matrix (the incoming weights of
    neuron ``j``, a "filter" of a fully connected layer) is rescaled to the norm of row ``j`` of the
    trained matrix; one-dimensional parameters (biases) get zero. Then ``||d|| = ||theta-hat||`` for
    a bias-free network, so ``theta-hat + alpha d`` is at relative distance ``|alpha|``. With
    ``unit=True`` the direction is returned normalised to length one.
    """
    check_int("seed", seed, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for p in model.parameters():
        w = p.detach().double().cpu()
        d = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        if w.ndim <= 1:
            d = torch.zeros_like(w)
        else:
            rows, drows = w.reshape(w.shape[0], -1), d.reshape(d.shape[0], -1)
            d = (drows * (rows.norm(dim=1, keepdim=True) / drows.norm(dim=1, keepdim=True).clamp_min(1e-300))).reshape(
                w.shape
            )
        pieces.append(d.reshape(-1))
    d = torch.cat(pieces)
    if unit:
        d = d / d.norm()
    theta = flat_parameters(model)
    return d.to(device=theta.device, dtype=theta.dtype)


def top_hessian_direction(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seed: int = 0, tol: float = 1e-4, batch_size: int = 2048
) -> tuple[torch.Tensor, float]:
    """``(v, lambda)``: unit top eigenvector and top eigenvalue of the mean Hessian of the loss on
    ``(x, y)`` at the model's parameters (ARPACK on :func:`lhlib.hessian.mean_matvec` products).
    The sign of ``v`` is fixed so that its largest-magnitude entry is positive.
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    _check_xy(x, y)
    check_int("seed", seed, minimum=0)
    x, y = _on_model(model, x, y)
    theta = flat_parameters(model)
    matvec = mean_matvec(model, x, y, "hessian", batch_size)

    def apply(vector: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.ascontiguousarray(vector).reshape(-1), dtype=theta.dtype, device=theta.device)
        return matvec(v).detach().cpu().double().numpy()

    size = theta.numel()
    operator = LinearOperator((size, size), matvec=apply, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(size)
    values, vectors = eigsh(operator, k=1, which="LA", tol=tol, v0=v0, ncv=min(size, 20))
    v = torch.as_tensor(vectors[:, 0])
    v = v / v.norm()
    v = v * torch.sign(v[v.abs().argmax()])
    return v.to(device=theta.device, dtype=theta.dtype), float(values[0])


def _losses_fn(model: nn.Module):
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def losses(params, xb, yb):
        return F.cross_entropy(functional_call(model, (params, buffers), (xb,)), yb, reduction="none")

    return losses


def ascent_direction(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    radius: float,
    *,
    start: torch.Tensor,
    steps: int = 8,
    step_angle: float = 0.5,
) -> tuple[torch.Tensor, list[float]]:
    """A direction ``d`` (unit) that makes the per-sample losses at ``theta-hat + radius d`` as unequal
    as a few ascent steps can: projected (Riemannian) gradient ascent on the unit sphere of the mean
    absolute deviation ``MAD(l(theta))``, the large-``k`` constant of ``E|L_{k+1} - L_k|`` at ``theta``.

    Each step moves ``d`` by the geodesic angle ``step_angle`` along the tangent gradient; a step
    that does not increase the objective is retried with half the angle. Returns the best direction
    and the objective after every step (``[MAD at start, ...]``). Use a subsample of the data for
    ``(x, y)`` to keep this cheap.
    """
    _check_xy(x, y)
    check_float("radius", radius, minimum=0.0, strict_minimum=True)
    check_int("steps", steps, minimum=0)
    check_float("step_angle", step_angle, minimum=0.0, strict_minimum=True)
    x, y = _on_model(model, x, y)
    theta = flat_parameters(model)
    losses = _losses_fn(model)

    def objective(direction: torch.Tensor) -> torch.Tensor:
        return mean_abs_deviation(losses(unflatten(model, theta + radius * direction), x, y))

    d = (start / start.norm()).to(theta)
    with torch.no_grad():
        best = float(objective(d))
    history = [best]
    angle = step_angle
    for _ in range(steps):
        direction = d.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(objective(direction), direction)
        tangent = gradient - (gradient @ d) * d
        if float(tangent.norm()) == 0.0:
            break
        tangent = tangent / tangent.norm()
        while angle > 1e-3:
            candidate = math.cos(angle) * d + math.sin(angle) * tangent
            candidate = candidate / candidate.norm()
            with torch.no_grad():
                value = float(objective(candidate))
            if value > best:
                d, best = candidate, value
                break
            angle /= 2
        history.append(best)
    return d.detach(), history


# ----------------------------------------------------------------------------------------------
# Per-sample losses at many parameter vectors
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def losses_at(
    model: nn.Module,
    thetas: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 4096,
    max_elements: int = 2**24,
) -> torch.Tensor:
    """``(S, N)`` per-sample cross-entropies at each of the ``S`` flat parameter vectors ``thetas``.

    ``vmap`` over parameter vectors of ``functional_call(model, params, x)``; samples go
    ``batch_size`` at a time and parameter vectors in chunks sized so that one layer's activations
    stay below ``max_elements`` numbers.
    """
    _check_xy(x, y)
    if thetas.ndim == 1:
        thetas = thetas[None]
    x, y = _on_model(model, x, y)
    thetas = thetas.to(flat_parameters(model))
    width = max(max(p.shape[0] for p in model.parameters()), 1)
    batched = vmap(_losses_fn(model), in_dims=(0, None, None))
    out = torch.empty(thetas.shape[0], x.shape[0], dtype=thetas.dtype, device=thetas.device)
    for s in range(0, x.shape[0], batch_size):
        xb, yb = x[s : s + batch_size], y[s : s + batch_size]
        chunk = max(1, max_elements // (xb.shape[0] * width))
        for t in range(0, thetas.shape[0], chunk):
            out[t : t + chunk, s : s + batch_size] = batched(unflatten(model, thetas[t : t + chunk]), xb, yb)
    return out


@dataclass(frozen=True)
class BallPoint:
    """The loss-difference statistics at ``theta = theta-hat + radius * direction``.

    ``mean`` is ``E|L_{k+1}(theta) - L_k(theta)|`` over random orders, ``k = 1 .. N-1``; ``fit`` its
    power-law fit; ``tail_constant`` the mean of ``(k+1) mean_k`` over the last ``tail_fraction`` of
    the ``k`` range (the empirical constant ``C`` in ``E|..| ~ C/(k+1)``); ``max_scaled`` the largest
    ``(k+1)|L_{k+1} - L_k|`` over the sampled orders and all ``k``, to be compared with the lemma's
    ``2 (M_l + M_H R^2)``; ``loss_range`` the largest value ``(k+1)|L_{k+1} - L_k|`` takes over *every*
    order (``max_i l_i - min_i l_i``); ``max_loss``, ``mean_loss`` and ``mad`` describe the losses at theta.
    """

    kind: str
    radius: float
    mean: np.ndarray
    fit: RateFit
    tail_constant: float
    max_scaled: float
    loss_range: float
    max_loss: float
    mean_loss: float
    mad: float


def measure_ball(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    directions: dict[str, torch.Tensor],
    radii: Sequence[float],
    *,
    permutations: int = 100,
    seed: int = 0,
    fit_k_min: int = 10,
    tail_fraction: float = 0.1,
    bootstrap: int = 1000,
) -> list[BallPoint]:
    """Loss-difference curves at ``theta-hat + R d`` for every direction ``d`` (unit vectors, keyed by
    kind) and radius ``R``: one :class:`BallPoint` per pair, in the order directions x radii.
    A direction may also be a ``(len(radii), P)`` tensor with one unit direction per radius.
    """
    _check_xy(x, y)
    radii = [check_float("radii", r, minimum=0.0) for r in radii]
    check_int("permutations", permutations, minimum=2)
    check_float("tail_fraction", tail_fraction, minimum=0.0, strict_minimum=True, maximum=1.0)
    theta = flat_parameters(model)
    r = torch.tensor(radii, dtype=theta.dtype, device=theta.device)
    points = []
    for kind, direction in directions.items():
        direction = direction.to(theta)
        if direction.ndim == 1:
            direction = direction.expand(len(radii), -1)
        if direction.shape != (len(radii), theta.numel()):
            raise ValueError(
                f"direction {kind!r} must have shape ({theta.numel()},) or ({len(radii)}, {theta.numel()})"
            )
        all_losses = losses_at(model, theta + r[:, None] * direction, x, y).double().cpu()
        for radius, losses in zip(radii, all_losses):
            curves = loss_difference_curves(losses, permutations, seed).numpy()
            mean = curves.mean(axis=0)
            k = np.arange(1, mean.size + 1)
            tail = slice(-max(1, round(mean.size * tail_fraction)), None)
            points.append(
                BallPoint(
                    kind,
                    radius,
                    mean,
                    fit_rate_exponent(curves, k_min=min(fit_k_min, mean.size - 1), bootstrap=bootstrap, seed=seed),
                    float((mean[tail] * (k[tail] + 1)).mean()),
                    float((curves * (k + 1)).max()),
                    float(losses.max() - losses.min()),
                    float(losses.max()),
                    float(losses.mean()),
                    float(mean_abs_deviation(losses)),
                )
            )
    return points


# ----------------------------------------------------------------------------------------------
# Figure 1: a two-dimensional slice
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossSlice:
    """``L_k`` and ``L_{k+1}`` on the plane ``theta-hat + alpha d1 + beta d2``.

    ``values[j, 0]`` is ``L_{ks[j]}`` and ``values[j, 1]`` is ``L_{ks[j]+1}``, each of shape
    ``(len(alphas), len(betas))`` (first index ``alpha``), for the samples in the order ``order``.
    """

    alphas: np.ndarray
    betas: np.ndarray
    ks: list[int]
    values: np.ndarray


def loss_slice(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    d1: torch.Tensor,
    d2: torch.Tensor,
    alphas: Sequence[float],
    betas: Sequence[float],
    ks: Sequence[int],
    *,
    order: torch.Tensor | None = None,
) -> LossSlice:
    """``L_k`` and ``L_{k+1}`` for each ``k`` in ``ks`` on a grid of the plane through ``theta-hat``
    spanned by ``d1`` and ``d2`` (e.g. two filter-normalised directions), samples taken in ``order``
    (default: as given). Only the first ``max(ks) + 1`` samples are evaluated.
    """
    _check_xy(x, y)
    ks = [check_int("ks", k, minimum=1, maximum=x.shape[0] - 1) for k in ks]
    order = torch.arange(x.shape[0]) if order is None else order
    needed = order[: max(ks) + 1].to(x.device)
    theta = flat_parameters(model)
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float64)).to(theta)
    b = torch.as_tensor(np.asarray(betas, dtype=np.float64)).to(theta)
    grid = theta + a[:, None, None] * d1.to(theta) + b[None, :, None] * d2.to(theta)
    losses = losses_at(model, grid.reshape(-1, theta.numel()), x[needed], y[needed]).double().cpu()
    running = losses.cumsum(dim=1) / torch.arange(1, losses.shape[1] + 1, dtype=torch.float64)
    values = torch.stack([torch.stack([running[:, k - 1], running[:, k]]) for k in ks])
    return LossSlice(
        np.asarray(alphas, dtype=np.float64),
        np.asarray(betas, dtype=np.float64),
        ks,
        values.reshape(len(ks), 2, len(alphas), len(betas)).numpy(),
    )


# ----------------------------------------------------------------------------------------------
# Assumption 1: the gradient of L_k at theta-hat
# ----------------------------------------------------------------------------------------------


def gradient_norms_over_k(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, ks: Sequence[int], orders: torch.Tensor
) -> np.ndarray:
    """``(len(orders), len(ks))`` array of ``||grad L_k(theta-hat)||_2``, ``L_k`` the mean loss over the
    first ``k`` samples of each order (rows of ``orders``). One backward pass per order: the
    gradient sums over consecutive blocks ``k_{j-1} < i <= k_j`` are accumulated.
    """
    _check_xy(x, y)
    ks = sorted(check_int("ks", k, minimum=1, maximum=x.shape[0]) for k in ks)
    x, y = _on_model(model, x, y)
    params = {name: p.detach() for name, p in model.named_parameters()}
    losses = _losses_fn(model)
    block_grad = grad(lambda p, xb, yb: losses(p, xb, yb).sum())
    out = np.zeros((orders.shape[0], len(ks)))
    for row, order in enumerate(orders):
        total = torch.zeros_like(flat_parameters(model))
        previous = 0
        for j, k in enumerate(ks):
            if k > previous:
                idx = order[previous:k].to(x.device)
                g = block_grad(params, x[idx], y[idx])
                total += torch.cat([g[name].reshape(-1) for name in params])
                previous = k
            out[row, j] = float(total.norm()) / k
    return out


@dataclass(frozen=True)
class GradientStats:
    """Per-sample gradients at ``theta-hat``: ``norms`` ``||grad l_i||`` (``(N,)``), ``full_norm``
    ``||grad L_N||`` and ``trace_cov`` ``(1/N) sum_i ||grad l_i - grad L_N||^2``.
    """

    norms: torch.Tensor
    full_norm: float
    trace_cov: float


def per_sample_gradient_stats(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_elements: int = 2**24
) -> GradientStats:
    """Per-sample gradient norms (``vmap(grad)`` in chunks), the full-batch gradient norm and the
    trace of the per-sample gradient covariance.
    """
    _check_xy(x, y)
    x, y = _on_model(model, x, y)
    params = {name: p.detach() for name, p in model.named_parameters()}
    size = sum(p.numel() for p in params.values())
    losses = _losses_fn(model)
    single = vmap(grad(lambda p, xi, yi: losses(p, xi[None], yi[None]).sum()), in_dims=(None, 0, 0))
    chunk = max(1, max_elements // size)
    norms, total = [], torch.zeros(size, dtype=torch.float64, device=x.device)
    sq = 0.0
    for s in range(0, x.shape[0], chunk):
        g = single(params, x[s : s + chunk], y[s : s + chunk])
        flat = torch.cat([g[name].reshape(g[name].shape[0], -1) for name in params], dim=1).double()
        norms.append(flat.norm(dim=1))
        total += flat.sum(0)
        sq += float((flat * flat).sum())
    n = x.shape[0]
    mean = total / n
    full = float(mean.norm())
    return GradientStats(torch.cat(norms).cpu(), full, max(sq / n - full**2, 0.0))


def expected_gradient_norm(k, n: int, full_norm: float, trace_cov: float) -> np.ndarray:
    """``sqrt(E ||grad L_k||^2)`` for ``L_k`` the mean over ``k`` samples drawn without replacement from
    ``n``: ``||grad L_N||^2 + (n - k) / (k (n - 1)) tr Sigma``. It falls like ``k^{-1/2}`` to the floor
    ``||grad L_N||``, which is zero only if ``theta-hat`` is an exact minimum of the full loss.
    """
    k = np.asarray(k, dtype=np.float64)
    return np.sqrt(full_norm**2 + (n - k) / (k * (n - 1)) * trace_cov)


# ----------------------------------------------------------------------------------------------
# The Gaussian-ball mean-square criterion
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianCriterion:
    """``E_theta (L_{k+1}(theta) - L_k(theta))^2`` for ``theta ~ N(theta-hat, sigma^2 I)``, averaged over
    the given orders, for each ``k`` in ``ks``. ``value`` is the estimate, ``stderr`` its standard
    error (Monte Carlo: over parameter draws; closed form: over Hutchinson probes). For the closed
    form, ``terms`` holds its pieces (each averaged over orders): ``"value"`` ``D_0^2``, ``"gradient"``
    ``sigma^2 ||g||^2``, ``"trace"`` ``sigma^2 D_0 tr H``, ``"quartic"`` ``sigma^4 ((tr H)^2 + 2||H||_F^2)/4``,
    all divided by ``(k+1)^2``.
    """

    sigma: float
    ks: list[int]
    value: np.ndarray
    stderr: np.ndarray
    terms: dict[str, np.ndarray] | None = None


def gaussian_sigma(model: nn.Module, relative_radius: float) -> float:
    """The ``sigma`` whose Gaussian ball has typical radius ``sigma sqrt(P) = relative_radius ||theta-hat||``."""
    check_float("relative_radius", relative_radius, minimum=0.0, strict_minimum=True)
    theta = flat_parameters(model)
    return float(relative_radius * theta.norm() / math.sqrt(theta.numel()))


def _check_orders_ks(orders: torch.Tensor, ks: Sequence[int], n: int) -> list[int]:
    if orders.ndim != 2 or orders.shape[1] != n:
        raise ValueError(f"orders must have shape (orders, {n}), got {tuple(orders.shape)}")
    return [check_int("ks", k, minimum=1, maximum=n - 1) for k in ks]


@torch.no_grad()
def gaussian_mean_square_mc(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    ks: Sequence[int],
    orders: torch.Tensor,
    *,
    samples: int = 64,
    seed: int = 0,
) -> GaussianCriterion:
    """Monte Carlo estimate of ``E (L_{k+1}(theta) - L_k(theta))^2`` over ``samples`` draws
    ``theta ~ N(theta-hat, sigma^2 I)``, the same draws for every ``k`` and order.
    """
    _check_xy(x, y)
    check_float("sigma", sigma, minimum=0.0)
    check_int("samples", samples, minimum=2)
    check_int("seed", seed, minimum=0)
    ks = _check_orders_ks(orders, ks, x.shape[0])
    theta = flat_parameters(model)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(samples, theta.numel(), generator=generator, dtype=torch.float64).to(theta)
    losses = losses_at(model, theta + sigma * noise, x, y).double().cpu()  # (S, N)
    index = torch.tensor(ks)
    squares = torch.zeros(samples, len(ks), dtype=torch.float64)
    for order in orders:
        ordered = losses[:, order]
        running = ordered.cumsum(1) / torch.arange(1, ordered.shape[1] + 1, dtype=torch.float64)
        squares += (running[:, index] - running[:, index - 1]) ** 2
    squares /= orders.shape[0]
    return GaussianCriterion(float(sigma), ks, squares.mean(0).numpy(), (squares.std(0) / math.sqrt(samples)).numpy())


def _gaussian_terms(context, order: torch.Tensor, k: int, s2: float, probes: int, generator) -> tuple[dict, float]:
    """The four terms of :func:`gaussian_mean_square_taylor` for one order and ``k``, and the quartic's variance."""
    model, x, y, params, losses, traces, weighted_grad, theta, batch_size = context
    new, old = order[k : k + 1], order[:k]
    d0 = float(losses[new].sum() - losses[old].mean())
    w = torch.full((k + 1,), -1.0 / k, dtype=theta.dtype, device=x.device)
    w[-1] = 1.0
    idx = torch.cat([old, new])
    g = weighted_grad(params, x[idx], y[idx], w)
    g_sq = float(sum((v.double() ** 2).sum() for v in g.values()))
    trace = float(traces[new].sum() - traces[old].mean())
    hv_new = mean_matvec(model, x[new], y[new], "hessian", batch_size)
    hv_old = mean_matvec(model, x[old], y[old], "hessian", batch_size)
    v = (torch.randint(0, 2, (probes, theta.numel()), generator=generator) * 2 - 1).to(theta)
    frob = np.array([float(((hv_new(vi) - hv_old(vi)).double() ** 2).sum()) for vi in v])
    scale = 1.0 / (k + 1) ** 2
    terms = {
        "value": d0**2 * scale,
        "gradient": s2 * g_sq * scale,
        "trace": s2 * d0 * trace * scale,
        "quartic": s2**2 * (trace**2 + 2 * frob.mean()) / 4 * scale,
    }
    return terms, (s2**2 * 2 / 4 * scale) ** 2 * frob.var(ddof=1) / probes


def gaussian_mean_square_taylor(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    sigma: float,
    ks: Sequence[int],
    orders: torch.Tensor,
    *,
    probes: int = 10,
    seed: int = 0,
    include_gradient: bool = True,
    batch_size: int = 2048,
) -> GaussianCriterion:
    """The second-order closed form of the Gaussian-ball criterion.

    With ``D(theta) = l_{k+1}(theta) - L_k(theta) = (k+1) (L_{k+1} - L_k)`` expanded at ``theta-hat`` as
    ``D_0 + g^T e + e^T H e / 2`` and ``e ~ N(0, sigma^2 I)``,

        E D^2 = D_0^2 + sigma^2 (||g||^2 + D_0 tr H) + sigma^4 ((tr H)^2 + 2 ||H||_F^2) / 4,

    (odd moments vanish). ``tr H`` is exact: for the bias-free ReLU MLP the H-term has zero
    diagonal, so ``tr H_i`` equals the G-term's trace (:func:`lhlib.hessian.per_sample_ggn_traces`);
    ``||H||_F^2 = E_v ||H v||^2`` is Hutchinson's estimate with ``probes`` Rademacher vectors ``v``,
    ``H v`` from :func:`lhlib.hessian.mean_matvec`. ``include_gradient=False`` drops ``||g||^2``, as
    Assumption 1 (``grad L_k(theta*) = 0`` for every ``k``) would. The result is divided by ``(k+1)^2``.
    """
    _check_xy(x, y)
    check_float("sigma", sigma, minimum=0.0)
    check_int("probes", probes, minimum=2)
    check_int("seed", seed, minimum=0)
    ks = _check_orders_ks(orders, ks, x.shape[0])
    x, y = _on_model(model, x, y)
    theta = flat_parameters(model)
    params = {name: p.detach() for name, p in model.named_parameters()}
    losses_fn = _losses_fn(model)
    with torch.no_grad():
        losses = losses_fn(params, x, y).double()
    traces = per_sample_ggn_traces(model, x).double()
    weighted_grad = grad(lambda p, xb, yb, w: (losses_fn(p, xb, yb) * w).sum())
    generator = torch.Generator().manual_seed(seed)
    s2 = sigma**2
    shape = (orders.shape[0], len(ks))
    terms = {name: np.zeros(shape) for name in ("value", "gradient", "trace", "quartic")}
    quartic_var = np.zeros(shape)
    context = (model, x, y, params, losses, traces, weighted_grad, theta, batch_size)
    for o, order in enumerate(orders):
        for j, k in enumerate(ks):
            found, variance = _gaussian_terms(context, order.to(x.device), k, s2, probes, generator)
            for name, value in found.items():
                terms[name][o, j] = value
            quartic_var[o, j] = variance
    averaged = {name: value.mean(0) for name, value in terms.items()}
    total = averaged["value"] + averaged["trace"] + averaged["quartic"]
    if include_gradient:
        total = total + averaged["gradient"]
    stderr = np.sqrt(quartic_var.sum(0)) / orders.shape[0]
    return GaussianCriterion(float(sigma), ks, total, stderr, averaged)


# ----------------------------------------------------------------------------------------------
# The second-order expansion of L_{k+1} - L_k along a direction (chapter 01)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DifferenceExpansion:
    r"""``D(r) = L_{k+1}(theta + r v) - L_k(theta + r v)`` near ``r = 0`` (first ``k + 1`` samples).

    .. math::

        D(0) = \frac{\ell_{k+1} - \mathcal{L}_k}{k+1}, \qquad
        D'(0) = \frac{(\nabla \ell_{k+1} - \nabla \mathcal{L}_k)^\top v}{k+1}, \qquad
        D''(0) = \frac{v^\top \bigl(\mathbf{H}_{k+1} - \tfrac1k \sum_{i \le k} \mathbf{H}_i\bigr) v}{k+1}

    (full Hessians) are ``value``, ``slope`` and ``curvature``; ``gradient_norm`` is
    ``||grad l_{k+1} - grad L_k||_2 / (k+1)``, the largest slope over all directions (Assumption 1
    makes it 0); ``true`` holds ``D(r)`` at ``radii``.
    """

    k: int
    value: float
    slope: float
    curvature: float
    gradient_norm: float
    radii: torch.Tensor
    true: torch.Tensor

    def predict(self, radii=None, *, gradient: bool = True, hessian_factor: float = 0.5) -> torch.Tensor:
        """The Taylor polynomial ``value + slope r + hessian_factor curvature r^2`` at ``radii``.

        ``hessian_factor`` is 1/2 by SymPy's expansion (the paper's section 3.2 writes 1);
        ``gradient=False`` drops the slope, as Assumption 1 would.
        """
        r = self.radii if radii is None else torch.as_tensor(radii, dtype=torch.float64)
        return self.value + (self.slope * r if gradient else 0.0 * r) + hessian_factor * self.curvature * r**2


def difference_expansion(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, direction: torch.Tensor, radii=None
) -> DifferenceExpansion:
    """Value, slope and curvature of ``L_{k+1} - L_k`` along ``direction`` at the model's parameters.

    By nested forward-mode differentiation in float64. ``direction`` is a flat vector in
    :func:`lhlib.hessian.flat_parameters` order, normalised to unit length here; ``radii`` (default
    none) are the distances at which the true difference is also evaluated.
    """
    check_int("k", k, minimum=1, maximum=x.shape[0] - 1)
    params = {name: p.detach().to(torch.float64) for name, p in model.named_parameters()}
    device = next(iter(params.values())).device
    v = torch.as_tensor(direction).detach().to(device=device, dtype=torch.float64)
    if v.ndim != 1:
        raise ValueError(f"direction must be a flat vector, got shape {tuple(v.shape)}")
    pieces = unflatten(model, v / v.norm())
    xs = torch.as_tensor(x[: k + 1]).to(device=device, dtype=torch.float64)
    ys = torch.as_tensor(y[: k + 1]).to(device)
    weights = torch.full((k + 1,), -1.0 / k, dtype=torch.float64, device=device)
    weights[-1] = 1.0
    weights = weights / (k + 1)

    def difference_at(p):
        losses = F.cross_entropy(functional_call(model, p, (xs,)), ys, reduction="none")
        return (losses * weights).sum()

    def difference(t):
        return difference_at({n: params[n] + t * pieces[n] for n in params})

    t0, one = torch.zeros((), dtype=torch.float64, device=device), torch.ones((), dtype=torch.float64, device=device)
    value, slope = jvp(difference, (t0,), (one,))
    curvature = jvp(lambda t: jvp(difference, (t,), (one,))[1], (t0,), (one,))[1]
    gradient = grad(difference_at)(params)
    gradient_norm = float(torch.sqrt(sum((g * g).sum() for g in gradient.values())))
    radii = torch.zeros(0, dtype=torch.float64) if radii is None else torch.as_tensor(radii, dtype=torch.float64)
    with torch.no_grad():
        true = torch.stack([difference(r.to(device)) for r in radii]) if radii.numel() else radii
    return DifferenceExpansion(
        int(k), float(value), float(slope), float(curvature), gradient_norm, radii.cpu(), true.cpu()
    )
