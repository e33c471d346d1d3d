r"""The loss landscape away from the trained point: points at distance :math:`R` from :math:`\hat\theta`.

Lemma 1 of the paper bounds :math:`|\mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta)|` for every
:math:`\theta` with :math:`\lVert\theta - \theta^*\rVert \le R`, but the paper's figures only look at
:math:`\theta = \hat\theta`. At *any* fixed :math:`\theta` the identity

.. math::

    \mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta) = \frac{\ell_{k+1}(\theta) - \mathcal{L}_k(\theta)}{k+1}

holds, so the curves at :math:`\theta \ne \hat\theta` are :func:`lhlib.engine.landscape.loss_difference_curves`
applied to the per-sample losses *at* :math:`\theta`; this module supplies those losses, vectorised over
many parameter vectors with ``torch.func.functional_call`` + ``vmap``, and the directions to place the
points along:

* :func:`isotropic_direction`: uniform on the unit sphere of :math:`\mathbb{R}^P`;
* :func:`filter_normalized_direction`: Gaussian, each row ("filter": the incoming weights of one
  neuron) rescaled to the norm of the same row of the trained weights (Li et al. 2018); then
  :math:`\lVert d\rVert = \lVert\hat\theta\rVert` exactly (bias-free), so a step :math:`\alpha d` moves a
  relative distance :math:`\alpha`;
* :func:`top_hessian_direction`: the top eigenvector of the dataset Hessian at :math:`\hat\theta`;
* :func:`ascent_direction`: a few steps of projected ascent on the sphere
  :math:`\lVert\theta - \hat\theta\rVert = R` of the mean absolute deviation of the per-sample losses,
  the quantity that sets the large-:math:`k` level of
  :math:`\mathbb{E}|\mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta)| \approx \operatorname{MAD}(\ell(\theta))/(k+1)`.

It also computes the two-dimensional slices of Figure 1 (:func:`loss_slice`), the gradient of
:math:`\mathcal{L}_k` at :math:`\hat\theta` against :math:`k` (Assumption 1 says it is zero;
:func:`gradient_norms_over_k`, :func:`per_sample_gradient_stats`), and the Gaussian-ball criterion
:math:`\mathbb{E}_{\theta \sim \mathcal N(\hat\theta, \sigma^2 I)}
(\mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta))^2` by Monte Carlo (:func:`gaussian_mean_square_mc`)
and by its second-order closed form (:func:`gaussian_mean_square_taylor`), and chapter 01's
second-order expansion of
:math:`\mathcal{L}_{k+1} - \mathcal{L}_k` along one direction (:func:`difference_expansion`).

Flat parameter vectors follow :func:`lhlib.engine.parameters.flat_parameters` (``model.parameters()`` order).
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

from lhlib.engine.landscape import RateFit, fit_rate_exponent, loss_difference_curves, mean_abs_deviation
from lhlib.engine.parameters import flat_parameters, linear_relu_weights, unflatten
from lhlib.engine.per_sample import per_sample_ggn_traces
from lhlib.engine.tangents import forward_factors, mean_matvec
from lhlib.engine.validation import check_float, check_int

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


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D tensor (samples x features), got {getattr(x, 'shape', x)!r}")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"y must be a 1-D tensor of {x.shape[0]} class labels, got {getattr(y, 'shape', y)!r}")


def _on_model(model: nn.Module, *tensors: torch.Tensor) -> list[torch.Tensor]:
    p = next(model.parameters())
    return [t.to(device=p.device, dtype=p.dtype) if t.is_floating_point() else t.to(p.device) for t in tensors]


def isotropic_direction(model: nn.Module, seed: int) -> torch.Tensor:
    r"""A unit vector uniform on the sphere of :math:`\mathbb{R}^P` (normalised Gaussian), drawn from ``seed``.

    .. math::

        d = \frac{g}{\lVert g \rVert_2}, \qquad g \sim \mathcal N(0, I_P).

    Args:
        model: The network; fixes :math:`P`, the dtype and the device.
        seed: Seeds the Gaussian draw (float64, on the CPU).

    Returns:
        The ``(P,)`` unit direction in the dtype and on the device of the model's parameters.

    Raises:
        ValueError: when ``seed`` is negative.
    """
    check_int("seed", seed, minimum=0)
    theta = flat_parameters(model)
    generator = torch.Generator().manual_seed(seed)
    d = torch.randn(theta.numel(), generator=generator, dtype=torch.float64)
    return (d / d.norm()).to(device=theta.device, dtype=theta.dtype)


def filter_normalized_direction(model: nn.Module, seed: int, *, unit: bool = False) -> torch.Tensor:
    r"""Li et al.'s filter-normalised random direction (2018), flat.

    A Gaussian direction in which the :math:`j`-th row of each weight matrix (the incoming weights of
    neuron :math:`j`, a "filter" of a fully connected layer) is rescaled to the norm of row :math:`j` of
    the trained matrix; one-dimensional parameters (biases) get zero:

    .. math::

        d^{(p)}_j = \frac{\lVert \mathbf W^{(p)}_j \rVert_2}{\lVert g^{(p)}_j \rVert_2}\, g^{(p)}_j,
        \qquad g^{(p)} \sim \mathcal N(0, I).

    Then :math:`\lVert d\rVert = \lVert\hat\theta\rVert` for a bias-free network, so
    :math:`\hat\theta + \alpha d` is at relative distance :math:`|\alpha|`.

    Args:
        model: The trained network, whose rows set the scales.
        seed: Seeds the Gaussian draws (float64, on the CPU).
        unit: Whether to return the direction normalised to length one.

    Returns:
        The ``(P,)`` direction in the dtype and on the device of the model's parameters.

    Raises:
        ValueError: when ``seed`` is negative.
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
    r"""Unit top eigenvector and top eigenvalue of the mean Hessian of the loss at the model's parameters.

    .. math::

        \bar{\mathbf H}\, v = \lambda v, \qquad
        \bar{\mathbf H} = \frac1N \sum_{i=1}^{N} \nabla^2_\theta \ell_i(\hat\theta), \qquad
        \lVert v \rVert_2 = 1,

    with :math:`\lambda` the largest (algebraic) eigenvalue, by ARPACK on
    :func:`lhlib.engine.tangents.mean_matvec` products. The sign of :math:`v` is fixed so that its
    largest-magnitude entry is positive.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        seed: Seeds ARPACK's starting vector.
        tol: ARPACK's relative tolerance.
        batch_size: Samples per chunk of the Hessian-vector products.

    Returns:
        The pair ``(v, lambda)``, ``v`` the ``(P,)`` eigenvector in the model's dtype and device.

    Raises:
        ValueError: when ``x`` or ``y`` is malformed or ``seed`` is negative.
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
    r"""A unit direction that makes the per-sample losses at radius ``radius`` as unequal as a few ascent steps can.

    Projected (Riemannian) gradient ascent on the unit sphere of the mean absolute deviation, the
    large-:math:`k` constant of :math:`\mathbb{E}|\mathcal{L}_{k+1} - \mathcal{L}_k|` at :math:`\theta`:

    .. math::

        \max_{\lVert d \rVert = 1} \operatorname{MAD}\bigl(\ell(\hat\theta + R d)\bigr), \qquad
        \operatorname{MAD}(\ell) = \frac1N \sum_{i=1}^{N} |\ell_i - \bar\ell|,

        d \leftarrow \cos(\alpha)\, d + \sin(\alpha)\, \frac{t}{\lVert t \rVert}, \qquad
        t = \nabla_d \operatorname{MAD} - (\nabla_d \operatorname{MAD}^\top d)\, d.

    A step is accepted only if it increases the objective; otherwise it is retried with half the angle.
    The angle :math:`\alpha` starts at ``step_angle`` and is not reset after a halving; the ascent stops
    early when the tangent gradient vanishes. Use a subsample of the data for ``(x, y)`` to keep this cheap.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        radius: The radius :math:`R > 0`.
        start: The starting direction (normalised here).
        steps: The number of ascent steps.
        step_angle: The first geodesic step angle :math:`\alpha`, in radians.

    Returns:
        The best unit direction found (``(P,)``, detached) and the objective after every step
        (``[MAD at start, ...]``).

    Raises:
        ValueError: when ``x`` or ``y`` is malformed, ``radius <= 0``, ``steps < 0`` or ``step_angle <= 0``.
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
    r"""Per-sample cross-entropies at each of ``S`` flat parameter vectors, without gradients.

    .. math::

        \ell_{si} = \ell\bigl(f_{\theta_s}(\mathbf x_i), y_i\bigr), \qquad s = 1..S,\ i = 1..N.

    ``vmap`` over parameter vectors of ``functional_call(model, params, x)``; samples go
    ``batch_size`` at a time and parameter vectors in chunks sized so that one layer's activations
    stay below ``max_elements`` numbers.

    Args:
        model: The network whose architecture evaluates the parameters.
        thetas: ``(S, P)`` flat parameter vectors (a single ``(P,)`` vector counts as ``S = 1``).
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        batch_size: Samples per chunk.
        max_elements: The largest number of activations of one layer per chunk.

    Returns:
        The ``(S, N)`` tensor of losses, in the model's dtype and on its device.

    Raises:
        ValueError: when ``x`` or ``y`` is malformed.
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
    r"""The loss-difference statistics at :math:`\theta = \hat\theta + R\,d` (:func:`measure_ball`).

    Attributes:
        kind: The name of the direction.
        radius: The radius :math:`R`.
        mean: :math:`\mathbb{E}|\mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta)|` over the sampled random
            orders, ``(N - 1,)`` for :math:`k = 1, \dots, N-1`.
        fit: Its power-law fit (:func:`lhlib.engine.landscape.fit_rate_exponent`).
        tail_constant: The mean of :math:`(k+1)` ``mean`` over the last ``tail_fraction`` of the :math:`k`
            range, the empirical constant :math:`C` in :math:`\mathbb{E}|\ldots| \approx C/(k+1)`.
        max_scaled: The largest :math:`(k+1)|\mathcal{L}_{k+1} - \mathcal{L}_k|` over the sampled orders and
            all :math:`k`, to be compared with the lemma's :math:`2(M_\ell + M_{\mathbf H} R^2)`.
        loss_range: The largest value :math:`(k+1)|\mathcal{L}_{k+1} - \mathcal{L}_k|` takes over *every*
            order, :math:`\max_i \ell_i - \min_i \ell_i`.
        max_loss: :math:`\max_i \ell_i(\theta)`.
        mean_loss: :math:`\frac1N \sum_i \ell_i(\theta)`.
        mad: The mean absolute deviation of the losses at :math:`\theta`.
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
    r"""Loss-difference curves at :math:`\hat\theta + R\,d` for every direction :math:`d` and radius :math:`R`.

    For each point, the per-sample losses at :math:`\theta = \hat\theta + R\,d` (:func:`losses_at`) and
    ``permutations`` random orders :math:`\pi` (the same orders, from ``seed``, at every point) give

    .. math::

        \bar D_k = \frac{1}{|\Pi|} \sum_{\pi \in \Pi}
        \bigl|\mathcal{L}^\pi_{k+1}(\theta) - \mathcal{L}^\pi_k(\theta)\bigr|,
        \qquad C = \operatorname*{mean}_{k \in \text{tail}} (k+1)\, \bar D_k,

    with :math:`\mathcal{L}^\pi_k` the mean loss over the first :math:`k` samples of order :math:`\pi`.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        directions: Unit directions keyed by kind, each ``(P,)`` or ``(len(radii), P)`` (one unit direction
            per radius); they are not normalised here.
        radii: The radii :math:`R \ge 0`.
        permutations: The number of random orders, at least 2.
        seed: Seeds the orders and the fits' bootstrap.
        fit_k_min: The smallest :math:`k` of the power-law fit.
        tail_fraction: The share of the :math:`k` range, at its end, that ``tail_constant`` averages.
        bootstrap: Bootstrap resamples of the fit's interval.

    Returns:
        One :class:`BallPoint` per pair, in the order directions x radii.

    Raises:
        ValueError: when a direction has the wrong shape or a setting is out of range.
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


@dataclass(frozen=True)
class LossSlice:
    r""":math:`\mathcal{L}_k` and :math:`\mathcal{L}_{k+1}` on the plane :math:`\hat\theta + \alpha d_1 + \beta d_2`.

    Attributes:
        alphas: The ``(len(alphas),)`` coefficients :math:`\alpha` of ``d1``.
        betas: The ``(len(betas),)`` coefficients :math:`\beta` of ``d2``.
        ks: The sample sizes :math:`k`.
        values: ``(len(ks), 2, len(alphas), len(betas))``; ``values[j, 0]`` is :math:`\mathcal{L}_{k_j}` and
            ``values[j, 1]`` is :math:`\mathcal{L}_{k_j+1}` (first grid index :math:`\alpha`), for the samples
            in the order used.
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
    r""":math:`\mathcal{L}_k` and :math:`\mathcal{L}_{k+1}` on a grid of the plane through :math:`\hat\theta`.

    .. math::

        \mathcal{L}_k(\hat\theta + \alpha d_1 + \beta d_2) = \frac1k \sum_{i \le k}
        \ell_{\pi(i)}(\hat\theta + \alpha d_1 + \beta d_2),

    spanned by ``d1`` and ``d2``, for each :math:`k` in ``ks`` and for :math:`k+1`, samples taken in ``order``.
    Only the first
    ``max(ks) + 1`` samples are evaluated.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        d1: The first ``(P,)`` direction (e.g. filter-normalised; not normalised here).
        d2: The second ``(P,)`` direction.
        alphas: The coefficients :math:`\alpha` of ``d1``.
        betas: The coefficients :math:`\beta` of ``d2``.
        ks: The sample sizes :math:`k`, each in :math:`[1, N-1]`.
        order: The order :math:`\pi` of the samples (default: as given).

    Returns:
        The :class:`LossSlice`.

    Raises:
        ValueError: when ``x`` or ``y`` is malformed or a ``k`` is out of range.
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


def gradient_norms_over_k(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, ks: Sequence[int], orders: torch.Tensor
) -> np.ndarray:
    r"""The norm of the gradient of :math:`\mathcal{L}_k` at the model's parameters, per order and :math:`k`.

    .. math::

        \bigl\lVert \nabla \mathcal{L}^\pi_k(\hat\theta) \bigr\rVert_2
        = \Bigl\lVert \frac1k \sum_{i \le k} \nabla \ell_{\pi(i)}(\hat\theta) \Bigr\rVert_2,

    for each order :math:`\pi` (a row of ``orders``). One backward pass per block: the gradient sums over
    consecutive blocks :math:`k_{j-1} < i \le k_j` are accumulated.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        ks: The sample sizes :math:`k`, each in :math:`[1, N]`; they are sorted.
        orders: ``(orders, N)`` permutations of the samples.

    Returns:
        The ``(len(orders), len(ks))`` array of norms, columns in increasing :math:`k`.

    Raises:
        ValueError: when ``x`` or ``y`` is malformed or a ``k`` is out of range.
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
    r"""Per-sample gradients at :math:`\hat\theta` (:func:`per_sample_gradient_stats`).

    Attributes:
        norms: The ``(N,)`` norms :math:`\lVert\nabla\ell_i\rVert_2` (float64, CPU).
        full_norm: :math:`\lVert\nabla\mathcal{L}_N\rVert_2`.
        trace_cov: :math:`\operatorname{tr}\Sigma = \frac1N \sum_i \lVert\nabla\ell_i - \nabla\mathcal{L}_N\rVert_2^2`.
    """

    norms: torch.Tensor
    full_norm: float
    trace_cov: float


def _stack_gradient_stats(weights: list[torch.Tensor], x, y, max_elements: int) -> GradientStats:
    """:func:`per_sample_gradient_stats` of a bias-free Linear/ReLU stack, in chunks of at most ``max_elements``
    layer-factor entries (``K x n`` per layer and sample), in float64.
    """
    per_sample = weights[-1].shape[0] * sum(w.shape[0] for w in weights) + sum(w.shape[1] for w in weights)
    chunk = max(1, max_elements // per_sample)
    squares, total = [], 0.0
    for start in range(0, x.shape[0], chunk):
        part = slice(start, start + chunk)
        factors = forward_factors(weights, x[part])
        deltas = factors.output_gradients(y[part])
        squares.append(sum((d * d).sum(1) * (a * a).sum(1) for d, a in zip(deltas, factors.activations)))
        total = total + torch.cat([(d.T @ a).reshape(-1) for d, a in zip(deltas, factors.activations)])
    squares = torch.cat(squares)
    full = float(total.norm()) / x.shape[0]
    return GradientStats(squares.sqrt().cpu(), full, max(float(squares.mean()) - full**2, 0.0))


def per_sample_gradient_stats(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, max_elements: int = 2**24
) -> GradientStats:
    r"""Per-sample gradient norms, the full-batch gradient norm and the trace of the per-sample gradient covariance.

    .. math::

        \lVert \nabla\ell_i \rVert_2, \qquad
        \lVert \nabla\mathcal{L}_N \rVert_2 = \Bigl\lVert \frac1N \sum_i \nabla\ell_i \Bigr\rVert_2, \qquad
        \operatorname{tr}\Sigma = \frac1N \sum_i \lVert\nabla\ell_i\rVert_2^2 - \lVert\nabla\mathcal{L}_N\rVert_2^2

    (clipped at 0), at the model's parameters. For a bias-free Linear/ReLU stack (the paper's network, recognised by
    :func:`lhlib.engine.parameters.linear_relu_weights`) no per-sample gradient is formed: with
    :math:`\delta_i^{(p)}` from :meth:`lhlib.engine.tangents.ForwardFactors.output_gradients`, in float64,

    .. math::

        \nabla_{W^{(p)}} \ell_i = \delta_i^{(p)} x_i^{(p)\top}, \qquad
        \lVert \nabla\ell_i \rVert_2^2 = \sum_p \lVert \delta_i^{(p)} \rVert^2 \lVert x_i^{(p)} \rVert^2, \qquad
        \sum_i \nabla_{W^{(p)}} \ell_i = \Delta^{(p)\top} X^{(p)}

    (the rows of :math:`\Delta^{(p)}` and :math:`X^{(p)}` the samples' :math:`\delta_i^{(p)}` and
    :math:`x_i^{(p)}`). Any other model's per-sample gradients come from ``vmap(grad)`` in chunks.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        max_elements: The largest number of per-sample gradient entries (``vmap``) or layer-factor entries (the
            stack) held at once.

    Returns:
        The :class:`GradientStats`.

    Raises:
        ValueError: when ``x`` or ``y`` is malformed or ``max_elements`` is not a positive integer.
    """
    _check_xy(x, y)
    check_int("max_elements", max_elements, minimum=1)
    x, y = _on_model(model, x, y)
    weights = linear_relu_weights(model, x[:64])
    if weights is not None:
        return _stack_gradient_stats(weights, x, y, max_elements)
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
    r"""The root-mean-square gradient norm of :math:`\mathcal{L}_k` over :math:`k` samples drawn without replacement.

    .. math::

        \sqrt{\mathbb{E}\,\lVert\nabla\mathcal{L}_k\rVert_2^2}
        = \sqrt{\lVert\nabla\mathcal{L}_N\rVert_2^2 + \frac{n - k}{k\,(n - 1)} \operatorname{tr}\Sigma}.

    It falls like :math:`k^{-1/2}` to the floor :math:`\lVert\nabla\mathcal{L}_N\rVert`, which is zero only
    if :math:`\hat\theta` is an exact minimum of the full loss.

    Args:
        k: The sample sizes (a number or an array).
        n: The number of samples :math:`n`.
        full_norm: :math:`\lVert\nabla\mathcal{L}_N\rVert_2` (:class:`GradientStats`).
        trace_cov: :math:`\operatorname{tr}\Sigma` (:class:`GradientStats`).

    Returns:
        The expected norms, an array of the shape of ``k``.
    """
    k = np.asarray(k, dtype=np.float64)
    return np.sqrt(full_norm**2 + (n - k) / (k * (n - 1)) * trace_cov)


@dataclass(frozen=True)
class GaussianCriterion:
    r"""The Gaussian-ball criterion for each :math:`k` in ``ks``, averaged over the given orders.

    The criterion is
    :math:`\mathbb{E}_\theta (\mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta))^2` for
    :math:`\theta \sim \mathcal N(\hat\theta, \sigma^2 I)` (:func:`gaussian_mean_square_mc`,
    :func:`gaussian_mean_square_taylor`).

    Attributes:
        sigma: The standard deviation :math:`\sigma`.
        ks: The sample sizes :math:`k`.
        value: The ``(len(ks),)`` estimates.
        stderr: Their standard errors (Monte Carlo: over parameter draws; closed form: over Hutchinson probes).
        terms: For the closed form, its pieces, each ``(len(ks),)`` and averaged over orders, all divided by
            :math:`(k+1)^2`: ``"value"`` :math:`D_0^2`, ``"gradient"`` :math:`\sigma^2 \lVert g\rVert^2`,
            ``"trace"`` :math:`\sigma^2 D_0 \operatorname{tr} \mathbf H`, ``"quartic"``
            :math:`\sigma^4 ((\operatorname{tr}\mathbf H)^2 + 2\lVert\mathbf H\rVert_F^2)/4`; ``None`` for
            Monte Carlo.
    """

    sigma: float
    ks: list[int]
    value: np.ndarray
    stderr: np.ndarray
    terms: dict[str, np.ndarray] | None = None


def gaussian_sigma(model: nn.Module, relative_radius: float) -> float:
    r"""The :math:`\sigma` whose Gaussian ball has typical radius ``relative_radius`` :math:`\lVert\hat\theta\rVert`.

    .. math::

        \sigma \sqrt{P} = r\, \lVert\hat\theta\rVert_2 \quad\Longrightarrow\quad
        \sigma = \frac{r\, \lVert\hat\theta\rVert_2}{\sqrt P}.

    Args:
        model: The network; its parameters are :math:`\hat\theta \in \mathbb{R}^P`.
        relative_radius: The relative radius :math:`r > 0`.

    Returns:
        :math:`\sigma`, a float.

    Raises:
        ValueError: when ``relative_radius <= 0``.
    """
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
    r"""Monte Carlo estimate of the Gaussian-ball criterion, the same draws for every :math:`k` and order.

    .. math::

        \widehat{\mathbb{E}}\,(\mathcal{L}_{k+1} - \mathcal{L}_k)^2
        = \frac1S \sum_{s=1}^{S} \frac{1}{|\Pi|} \sum_{\pi \in \Pi}
        \bigl(\mathcal{L}^\pi_{k+1}(\theta_s) - \mathcal{L}^\pi_k(\theta_s)\bigr)^2,
        \qquad \theta_s = \hat\theta + \sigma \varepsilon_s,\ \varepsilon_s \sim \mathcal N(0, I_P);

    the standard error is the sample standard deviation over the :math:`S` draws over :math:`\sqrt S`.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        sigma: The standard deviation :math:`\sigma \ge 0`.
        ks: The sample sizes :math:`k`, each in :math:`[1, N-1]`.
        orders: ``(orders, N)`` permutations :math:`\Pi` of the samples.
        samples: The number :math:`S` of parameter draws, at least 2.
        seed: Seeds the draws.

    Returns:
        The :class:`GaussianCriterion` (without ``terms``).

    Raises:
        ValueError: when an input is malformed or a setting is out of range.
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
    r"""The second-order closed form of the Gaussian-ball criterion.

    With :math:`D(\theta) = \ell_{k+1}(\theta) - \mathcal{L}_k(\theta) = (k+1)(\mathcal{L}_{k+1} - \mathcal{L}_k)`
    expanded at :math:`\hat\theta` as :math:`D_0 + g^\top e + e^\top \mathbf H e / 2`
    (:math:`g = \nabla D`, :math:`\mathbf H = \nabla^2 D = \mathbf H_{k+1} - \frac1k \sum_{i \le k} \mathbf H_i`)
    and :math:`e \sim \mathcal N(0, \sigma^2 I)` (odd moments vanish),

    .. math::

        \mathbb{E}\,D^2 = D_0^2 + \sigma^2 \bigl(\lVert g\rVert^2 + D_0 \operatorname{tr}\mathbf H\bigr)
        + \frac{\sigma^4}{4}\bigl((\operatorname{tr}\mathbf H)^2 + 2 \lVert\mathbf H\rVert_F^2\bigr),

    averaged over the orders and divided by :math:`(k+1)^2`. :math:`\operatorname{tr}\mathbf H` is exact: for
    the bias-free ReLU MLP the H-term has zero diagonal, so :math:`\operatorname{tr}\mathbf H_i` equals the
    G-term's trace :math:`\operatorname{tr}(\mathbf J_i^\top \mathbf A_i \mathbf J_i)`
    (:func:`lhlib.engine.per_sample.per_sample_ggn_traces`); :math:`\lVert\mathbf H\rVert_F^2 = \mathbb{E}_v
    \lVert\mathbf H v\rVert^2` is Hutchinson's estimate with ``probes`` Rademacher vectors :math:`v`,
    :math:`\mathbf H v` from :func:`lhlib.engine.tangents.mean_matvec`. ``include_gradient=False`` drops
    :math:`\lVert g\rVert^2`, as Assumption 1 (:math:`\nabla\mathcal{L}_k(\theta^*) = 0` for every
    :math:`k`) would.

    Args:
        model: The network; its parameters are :math:`\hat\theta`.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        sigma: The standard deviation :math:`\sigma \ge 0`.
        ks: The sample sizes :math:`k`, each in :math:`[1, N-1]`.
        orders: ``(orders, N)`` permutations of the samples.
        probes: Rademacher probes per order and :math:`k`, at least 2.
        seed: Seeds the probes.
        include_gradient: Whether the value includes the gradient term.
        batch_size: Samples per chunk of the Hessian-vector products.

    Returns:
        The :class:`GaussianCriterion` with its ``terms``; ``stderr`` is the probes' error of the quartic term.

    Raises:
        ValueError: when an input is malformed or a setting is out of range.
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


@dataclass(frozen=True)
class DifferenceExpansion:
    r"""The difference :math:`D(r)` of :math:`\mathcal{L}_{k+1}` and :math:`\mathcal{L}_k` near :math:`r = 0`.

    On the first :math:`k + 1` samples, :math:`D(r) = \mathcal{L}_{k+1}(\theta + r v) - \mathcal{L}_k(\theta + r v)`
    (:func:`difference_expansion`):

    .. math::

        D(0) = \frac{\ell_{k+1} - \mathcal{L}_k}{k+1}, \qquad
        D'(0) = \frac{(\nabla \ell_{k+1} - \nabla \mathcal{L}_k)^\top v}{k+1}, \qquad
        D''(0) = \frac{v^\top \bigl(\mathbf{H}_{k+1} - \tfrac1k \sum_{i \le k} \mathbf{H}_i\bigr) v}{k+1}

    with full Hessians :math:`\mathbf H_i`.

    Attributes:
        k: The sample size :math:`k`.
        value: :math:`D(0)`.
        slope: :math:`D'(0)`.
        curvature: :math:`D''(0)`.
        gradient_norm: :math:`\lVert\nabla\ell_{k+1} - \nabla\mathcal{L}_k\rVert_2 / (k+1)`, the largest slope
            over all directions (Assumption 1 makes it 0).
        radii: The radii at which :math:`D` was evaluated (float64, CPU).
        true: :math:`D(r)` at ``radii``.
    """

    k: int
    value: float
    slope: float
    curvature: float
    gradient_norm: float
    radii: torch.Tensor
    true: torch.Tensor

    def predict(self, radii=None, *, gradient: bool = True, hessian_factor: float = 0.5) -> torch.Tensor:
        r"""The Taylor polynomial of :math:`D(r)` at ``radii``.

        .. math::

            \hat D(r) = D(0) + [\text{gradient}]\, D'(0)\, r + c\, D''(0)\, r^2,

        with :math:`c` = ``hessian_factor``, which is :math:`1/2` by SymPy's expansion (the paper's section
        3.2 writes 1).

        Args:
            radii: The radii :math:`r`; default the stored ``radii``.
            gradient: Whether to keep the slope term; ``False`` drops it, as Assumption 1 would.
            hessian_factor: The coefficient :math:`c` of the curvature term.

        Returns:
            The float64 predictions, of the shape of ``radii``.
        """
        r = self.radii if radii is None else torch.as_tensor(radii, dtype=torch.float64)
        return self.value + (self.slope * r if gradient else 0.0 * r) + hessian_factor * self.curvature * r**2


def difference_expansion(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, direction: torch.Tensor, radii=None
) -> DifferenceExpansion:
    r"""Value, slope and curvature of :math:`\mathcal{L}_{k+1} - \mathcal{L}_k` along ``direction``.

    At the model's parameters :math:`\theta`, on the first :math:`k + 1` samples of ``(x, y)``, with :math:`v` =
    ``direction`` normalised to unit length,

    .. math::

        D(r) = \mathcal{L}_{k+1}(\theta + r v) - \mathcal{L}_k(\theta + r v)
        = \frac{\ell_{k+1}(\theta + r v) - \mathcal{L}_k(\theta + r v)}{k+1},

    and :math:`D(0)`, :math:`D'(0)`, :math:`D''(0)` by nested forward-mode differentiation in float64
    (see :class:`DifferenceExpansion`).

    Args:
        model: The network; its parameters are :math:`\theta`.
        x: The inputs; the first ``k + 1`` enter.
        y: The labels.
        k: The sample size :math:`k`, in :math:`[1, N-1]`.
        direction: A flat vector in :func:`lhlib.engine.parameters.flat_parameters` order.
        radii: The distances at which the true difference is also evaluated (default none).

    Returns:
        The :class:`DifferenceExpansion`.

    Raises:
        ValueError: when ``k`` is out of range or ``direction`` is not a flat vector.
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
