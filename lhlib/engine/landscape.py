r"""Loss differences :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|` at a fixed point, as the paper's figures measure them.

With per-sample losses :math:`\ell_1, \dots, \ell_N` at a fixed :math:`\theta` taken in some order, the running
mean is :math:`\mathcal{L}_k = \frac{1}{k} \sum_{i \le k} \ell_i` and, exactly,

.. math::

    \mathcal{L}_{k+1} - \mathcal{L}_k = \frac{\ell_{k+1} - \mathcal{L}_k}{k + 1}.

The paper averages :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|` over random orders, smooths the average with a
recursive exponential moving average and plots it against :math:`k` on a log axis. Everything here is
vectorised over orders and :math:`k`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import lfilter
from torch import nn

from lhlib.engine.validation import check_float, check_int

__all__ = [
    "RateFit",
    "ema",
    "fit_rate_exponent",
    "log_binned",
    "loss_difference_curves",
    "mean_abs_deviation",
    "per_sample_losses",
    "random_orders",
]


@torch.no_grad()
def per_sample_losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    r"""The cross-entropy of every sample, in batches, on ``x``'s device.

    .. math::

        \ell_i = -\log \operatorname{softmax}\bigl(f_\theta(x_i)\bigr)_{y_i}.

    The model is put in eval mode (and left there); no gradients are recorded.

    Args:
        model: The network.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        batch_size: Samples per forward pass.

    Returns:
        The ``(N,)`` tensor of losses.

    Raises:
        ValueError: when ``batch_size`` is not a positive integer.
    """
    check_int("batch_size", batch_size, minimum=1)
    model.eval()
    return torch.cat(
        [
            F.cross_entropy(model(x[s : s + batch_size]), y[s : s + batch_size], reduction="none")
            for s in range(0, x.shape[0], batch_size)
        ]
    )


def mean_abs_deviation(values: torch.Tensor) -> torch.Tensor:
    r"""The mean absolute deviation from the mean, along the last axis.

    .. math::

        \frac{1}{N} \sum_{i=1}^{N} \bigl|v_i - \bar v\bigr|, \qquad \bar v = \frac{1}{N} \sum_{i=1}^{N} v_i.

    For per-sample losses :math:`v` at a fixed point it is what :math:`(k + 1)\,
    \mathbb{E}|\mathcal{L}_{k+1} - \mathcal{L}_k| = \mathbb{E}|\ell_{k+1} - \mathcal{L}_k|` approaches once
    :math:`\mathcal{L}_k` has settled near the mean of all :math:`N` losses (:math:`1 \ll k`).

    Args:
        values: The tensor of values :math:`v`, the last axis the one averaged over.

    Returns:
        The tensor of deviations, of ``values``' shape without its last axis.
    """
    return (values - values.mean(dim=-1, keepdim=True)).abs().mean(dim=-1)


def random_orders(n: int, permutations: int, seed: int) -> torch.Tensor:
    """Independent uniform random permutations of ``range(n)``, one per row.

    Args:
        n: The length of each permutation (at least 2).
        permutations: The number of permutations.
        seed: The seed of the draw (an integer >= 0).

    Returns:
        The ``(permutations, n)`` int64 tensor of permutations.

    Raises:
        ValueError: when ``n``, ``permutations`` or ``seed`` is not an integer in its range.
    """
    check_int("n", n, minimum=2)
    check_int("permutations", permutations, minimum=1)
    check_int("seed", seed, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(permutations, n, generator=generator), dim=1)


def loss_difference_curves(losses: torch.Tensor, permutations: int = 100, seed: int = 0) -> torch.Tensor:
    r"""The curves :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|`, one per random order of the samples.

    .. math::

        \bigl|\mathcal{L}^{\pi}_{k+1} - \mathcal{L}^{\pi}_k\bigr|, \qquad
        \mathcal{L}^{\pi}_k = \frac{1}{k} \sum_{i=1}^{k} \ell_{\pi(i)}, \qquad k = 1, \dots, N - 1,

    for independent uniform permutations :math:`\pi` (:func:`random_orders`). Running means are accumulated in
    float64 so the differences, which shrink like :math:`1/k`, are not swamped by rounding.

    Args:
        losses: The 1-D tensor of the :math:`N` per-sample losses at a fixed point.
        permutations: The number of random orders (the paper's 100 by default).
        seed: The seed of the orders.

    Returns:
        The ``(permutations, N - 1)`` float64 CPU tensor, column ``j`` holding :math:`k = j + 1`.

    Raises:
        ValueError: when ``losses`` is not 1-D, or the orders' arguments are out of range.
    """
    if losses.ndim != 1:
        raise ValueError(f"losses must be a 1-D tensor of per-sample losses, got shape {tuple(losses.shape)}")
    ordered = losses.detach().cpu().double()[random_orders(losses.numel(), permutations, seed)]
    counts = torch.arange(1, losses.numel() + 1, dtype=torch.float64)
    running_mean = ordered.cumsum(dim=1) / counts
    return (running_mean[:, 1:] - running_mean[:, :-1]).abs()


def ema(values: np.ndarray | torch.Tensor, smoothing: float = 0.99) -> np.ndarray:
    r"""The paper's recursive moving average along the last axis.

    .. math::

        e_0 = d_0, \qquad e_i = s \, e_{i-1} + (1 - s) \, d_i,

    with :math:`s` = ``smoothing``.

    Args:
        values: The values :math:`d`, smoothed along the last axis.
        smoothing: The weight :math:`s \in [0, 1]` of the past.

    Returns:
        The float64 array :math:`e`, of ``values``' shape.

    Raises:
        ValueError: when ``smoothing`` is outside :math:`[0, 1]`.
    """
    check_float("smoothing", smoothing, minimum=0.0, maximum=1.0)
    values = np.asarray(values, dtype=np.float64)
    initial = smoothing * values[..., :1]
    smoothed, _ = lfilter([1.0 - smoothing], [1.0, -smoothing], values, axis=-1, zi=initial)
    return smoothed


@dataclass(frozen=True)
class RateFit:
    r"""The power law :math:`\operatorname{mean} |\mathcal{L}_{k+1} - \mathcal{L}_k| \approx C k^{a}` fitted on
    :math:`k_{\min} \le k \le k_{\max}`.

    Attributes:
        exponent: The fitted exponent :math:`a`.
        ci: The central ``confidence`` bootstrap interval ``(low, high)`` of the exponent, resampling the random
            orders (curves) with replacement.
        log_constant: The fitted intercept :math:`\log C` (natural logarithm).
        k_min: The smallest :math:`k` of the fit.
        k_max: The largest :math:`k` of the fit.
        confidence: The coverage of ``ci``.
    """

    exponent: float
    ci: tuple[float, float]
    log_constant: float
    k_min: int
    k_max: int
    confidence: float


def _log_grid(k_min: int, k_max: int, points: int) -> np.ndarray:
    return np.unique(np.round(np.geomspace(k_min, k_max, points)).astype(np.int64))


def _slope(log_k: np.ndarray, log_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of each row of ``log_values`` against ``log_k``."""
    centred = log_k - log_k.mean()
    slope = (log_values - log_values.mean(axis=-1, keepdims=True)) @ centred / (centred @ centred)
    return slope, log_values.mean(axis=-1) - slope * log_k.mean()


def fit_rate_exponent(
    curves: np.ndarray | torch.Tensor,
    *,
    k_min: int = 10,
    k_max: int | None = None,
    points: int = 200,
    bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RateFit:
    r"""Fit :math:`\log \bar d(k) = c + a \log k` by least squares on log-spaced :math:`k`.

    .. math::

        (a, c) = \mathop{\mathrm{arg\,min}}_{a, c} \sum_{k \in \mathcal{K}} \bigl(\log \bar d(k) - c - a \log k\bigr)^2,
        \qquad \bar d(k) = \frac{1}{R} \sum_{r=1}^{R} d_r(k),

    with :math:`d_r` the :math:`R` rows of ``curves`` and :math:`\mathcal{K}` about ``points`` log-spaced integers
    in :math:`[k_{\min}, k_{\max}]`, so that each decade weighs about the same (the lowest
    decade has fewer points, log-spacing there being finer than 1 and the duplicates dropped). The interval is the
    percentile interval of :math:`a` over ``bootstrap`` resamples of the rows (with replacement). A power law has no
    exponent where :math:`\bar d(k) = 0`: such a curve (every loss equal, as at a dead network) gets NaN for the
    exponent and its interval, and resamples that are zero at some fitted :math:`k` are left out of the interval.

    Args:
        curves: The ``(orders, N - 1)`` curves of :func:`loss_difference_curves` (column ``j`` is
            :math:`k = j + 1`).
        k_min: The smallest :math:`k` of the fit.
        k_max: The largest :math:`k` of the fit; ``None`` is :math:`N - 1`.
        points: About how many log-spaced values of :math:`k` (duplicates after rounding are dropped).
        bootstrap: The number of bootstrap resamples.
        confidence: The coverage of the interval.
        seed: The seed of the resampling.

    Returns:
        The :class:`RateFit`.

    Raises:
        ValueError: when ``curves`` is not 2-D with at least 2 columns or an option is out of range.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[1] < 2:
        raise ValueError(f"curves must have shape (orders, N - 1) with N - 1 >= 2, got {curves.shape}")
    k_max = curves.shape[1] if k_max is None else k_max
    check_int("k_min", k_min, minimum=1)
    check_int("k_max", k_max, minimum=k_min + 1, maximum=curves.shape[1])
    check_int("bootstrap", bootstrap, minimum=1)
    check_float("confidence", confidence, minimum=0.0, maximum=1.0)
    ks = _log_grid(k_min, k_max, points)
    log_k = np.log(ks)
    sampled = curves[:, ks - 1]
    if not (sampled.mean(axis=0) > 0).all():
        nan = float("nan")
        return RateFit(nan, (nan, nan), nan, int(k_min), int(k_max), confidence)
    exponent, intercept = _slope(log_k, np.log(sampled.mean(axis=0)))
    rng = np.random.default_rng(seed)
    orders = curves.shape[0]
    # How often each row is drawn in each resample: a resampled mean is a weighted row average.
    draws = rng.multinomial(orders, np.full(orders, 1.0 / orders), size=bootstrap)
    resampled_means = draws @ sampled / orders
    positive = (resampled_means > 0).all(axis=1)
    boot_exponents, _ = _slope(log_k, np.log(resampled_means[positive]))
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(boot_exponents, [tail, 1.0 - tail])
    return RateFit(float(exponent), (float(low), float(high)), float(intercept), int(k_min), int(k_max), confidence)


def log_binned(values: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    r"""A curve ``values[k - 1]`` (:math:`v_k`, :math:`k = 1, \dots, n`) averaged over log-spaced bins of :math:`k`.

    .. math::

        c_j = \sqrt{e_j e_{j+1}}, \qquad
        \bar v_j = \frac{1}{e_{j+1} - e_j} \sum_{k = e_j}^{e_{j+1} - 1} v_k,

    with integer edges :math:`1 = e_0 < e_1 < \dots = n + 1` log-spaced (duplicates dropped, so there may be
    fewer than ``bins`` bins). What a log-:math:`k` axis can show of :math:`n` noisy points, each decade drawn
    with about the same number of points.

    Args:
        values: The 1-D curve.
        bins: The number of log-spaced bins asked for.

    Returns:
        The pair ``(centres, means)`` of the bins' geometric centres :math:`c_j` and the means :math:`\bar v_j`.
    """
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.geomspace(1, values.size + 1, bins + 1).astype(int))
    centres = np.sqrt(edges[:-1] * edges[1:])
    means = np.array([values[a - 1 : b - 1].mean() for a, b in itertools.pairwise(edges)])
    return centres, means
