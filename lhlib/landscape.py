"""Loss differences ``|L_{k+1} - L_k|`` at a fixed point, as the paper's figures measure them.

With per-sample losses ``l_1, ..., l_N`` at a fixed ``theta`` taken in some order, the running mean
is ``L_k = (1/k) sum_{i<=k} l_i`` and, exactly,

    L_{k+1} - L_k = (l_{k+1} - L_k) / (k + 1).

The paper averages ``|L_{k+1} - L_k|`` over random orders, smooths the average with a recursive
exponential moving average and plots it against ``k`` on a log axis. Everything here is
vectorised over orders and ``k``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import lfilter
from torch import nn

from lhlib.validation import check_float, check_int

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
    """Cross-entropy ``l_i = -log softmax(f(x_i))_{y_i}`` of every sample, in batches, on ``x``'s device."""
    check_int("batch_size", batch_size, minimum=1)
    model.eval()
    return torch.cat(
        [
            F.cross_entropy(model(x[s : s + batch_size]), y[s : s + batch_size], reduction="none")
            for s in range(0, x.shape[0], batch_size)
        ]
    )


def mean_abs_deviation(values: torch.Tensor) -> torch.Tensor:
    """``mean_i |v_i - mean(v)|`` along the last axis: the limit of ``(k + 1) E|L_{k+1} - L_k|``
    for per-sample losses ``v`` at a fixed point.
    """
    return (values - values.mean(dim=-1, keepdim=True)).abs().mean(dim=-1)


def random_orders(n: int, permutations: int, seed: int) -> torch.Tensor:
    """``(permutations, n)`` int64 tensor whose rows are independent uniform permutations of ``range(n)``."""
    check_int("n", n, minimum=2)
    check_int("permutations", permutations, minimum=1)
    check_int("seed", seed, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(permutations, n, generator=generator), dim=1)


def loss_difference_curves(losses: torch.Tensor, permutations: int, seed: int) -> torch.Tensor:
    """``(permutations, N - 1)`` float64 array of ``|L_{k+1} - L_k|``, column ``j`` holding ``k = j + 1``.

    ``losses`` is the 1-D tensor of per-sample losses at a fixed point; each row uses an
    independent random order of them (seeded by ``seed``). Running means are accumulated in float64
    so the differences, which shrink like ``1/k``, are not swamped by rounding.
    """
    if losses.ndim != 1:
        raise ValueError(f"losses must be a 1-D tensor of per-sample losses, got shape {tuple(losses.shape)}")
    ordered = losses.detach().cpu().double()[random_orders(losses.numel(), permutations, seed)]
    counts = torch.arange(1, losses.numel() + 1, dtype=torch.float64)
    running_mean = ordered.cumsum(dim=1) / counts
    return (running_mean[:, 1:] - running_mean[:, :-1]).abs()


def ema(values: np.ndarray | torch.Tensor, smoothing: float = 0.99) -> np.ndarray:
    """The paper's recursive moving average along the last axis.

    ``ema_0 = d_0`` and ``ema_i = smoothing * ema_{i-1} + (1 - smoothing) * d_i``.
    """
    check_float("ema", smoothing, minimum=0.0, maximum=1.0)
    values = np.asarray(values, dtype=np.float64)
    initial = smoothing * values[..., :1]
    smoothed, _ = lfilter([1.0 - smoothing], [1.0, -smoothing], values, axis=-1, zi=initial)
    return smoothed


@dataclass(frozen=True)
class RateFit:
    """``mean |L_{k+1} - L_k| ~ C k^exponent`` fitted on ``k_min <= k <= k_max``.

    ``ci`` is the central ``confidence`` bootstrap interval of the exponent, resampling the
    random orders (curves) with replacement.
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
    """Fit ``log mean_curve(k) = c + exponent * log k`` by least squares on log-spaced ``k``.

    ``curves`` is ``(orders, N - 1)`` as returned by :func:`loss_difference_curves` (column ``j`` is
    ``k = j + 1``). The fit uses about ``points`` log-spaced values of ``k`` in ``[k_min, k_max]`` so
    that each decade weighs the same; the interval comes from ``bootstrap`` resamples of the rows.
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
    exponent, intercept = _slope(log_k, np.log(sampled.mean(axis=0)))
    rng = np.random.default_rng(seed)
    orders = curves.shape[0]
    # How often each row is drawn in each resample: a resampled mean is a weighted row average.
    draws = rng.multinomial(orders, np.full(orders, 1.0 / orders), size=bootstrap)
    resampled_means = draws @ sampled / orders
    boot_exponents, _ = _slope(log_k, np.log(resampled_means))
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(boot_exponents, [tail, 1.0 - tail])
    return RateFit(float(exponent), (float(low), float(high)), float(intercept), int(k_min), int(k_max), confidence)


def log_binned(values: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A curve ``values[k - 1]``, ``k = 1 .. n``, averaged over log-spaced bins of ``k``.

    Returns the bins' geometric centres and the means: what a log-``k`` axis can show of ``n``
    noisy points, each decade drawn with the same number of points.
    """
    values = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.geomspace(1, values.size + 1, bins + 1).astype(int))
    centres = np.sqrt(edges[:-1] * edges[1:])
    means = np.array([values[a - 1 : b - 1].mean() for a, b in itertools.pairwise(edges)])
    return centres, means
