r"""Sample-size determination from the loss landscape: how many objects until it stops moving.

The paper closes by suggesting that the convergence of :math:`\mathcal{L}_k` be used to decide when a
training sample is large enough. Made concrete: given the per-sample losses
:math:`\ell_1, \dots, \ell_N` of a trained model (at :math:`\hat\theta`, or at any fixed :math:`\theta`),
the *sufficient sample size* for a tolerance :math:`\varepsilon` is the smallest :math:`k^*` such that
the expected one-object change of the empirical loss stays below :math:`\varepsilon` from then on:

.. math::

    k^*(\varepsilon) = \min\bigl\{k : \mathbb{E}\,|\mathcal{L}_{j+1} - \mathcal{L}_j| \le \varepsilon
    \ \text{for every } j \ge k\bigr\},

the expectation being over the order in which the objects arrive. :func:`sufficient_sample_size`
(:func:`sufficient_sample_sizes` for several tolerances at once) gives three answers with uncertainties:

* **measured**: from the mean of :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|` over random orders
  (:func:`lhlib.engine.landscape.loss_difference_curves`): one plus the last :math:`k` where the mean curve
  exceeds :math:`\varepsilon`; the interval comes from resampling the orders. The last crossing of a
  noisy curve is biased late (noise makes late exceedances), so the curve is first smoothed: the scaled
  curve :math:`(k+1)\,\bar c_k`, which varies slowly, is averaged over
  :math:`k' \in [k/(1+w), k(1+w)]` (:func:`log_window_smooth`, :math:`w` = ``window``), then divided by
  :math:`k+1` again. A curve exactly :math:`c/(k+1)` is left unchanged. ``None`` (and
  ``reached = False``) when the curve is still above :math:`\varepsilon` at :math:`k = N - 1`.
* **extrapolated**: from the identity
  :math:`\mathcal{L}_{k+1} - \mathcal{L}_k = (\ell_{k+1} - \mathcal{L}_k)/(k+1)`. As :math:`k` grows
  :math:`\mathcal{L}_k` tends to the mean loss, so :math:`(k+1)\,\mathbb{E}|\mathcal{L}_{k+1} - \mathcal{L}_k|`
  tends to the mean absolute deviation :math:`\operatorname{MAD} = \frac1N \sum_i |\ell_i - \bar\ell|` and
  :math:`k^* \approx \max(\operatorname{MAD}/\varepsilon - 1, 1)`. It needs only the losses of a pilot sample and
  extends beyond :math:`N`; its interval resamples the losses.
* **bound**: from Lemma 1,
  :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k| \le 2(M_\ell + M_{\mathbf H} R^2)/(k+1)`
  (:func:`lhlib.engine.bounds.lemma_bound`), :math:`k^* = \max(\lceil 2(M_\ell + M_{\mathbf H} R^2)/\varepsilon -
  1\rceil, 1)`,
  with :math:`M_\ell` the largest loss unless given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from lhlib.engine.bounds import lemma_bound
from lhlib.engine.landscape import loss_difference_curves, mean_abs_deviation
from lhlib.engine.validation import check_float, check_int

__all__ = ["SampleSize", "first_k_below", "log_window_smooth", "sufficient_sample_size", "sufficient_sample_sizes"]


@dataclass(frozen=True)
class SampleSize:
    r"""Sufficient sample sizes for tolerance :math:`\varepsilon` (see the module docstring).

    Attributes:
        epsilon: The tolerance :math:`\varepsilon`.
        n: The number :math:`N` of per-sample losses.
        reached: Whether the smoothed mean curve fell to :math:`\varepsilon` for good within the ``n`` objects.
        measured: The measured :math:`k^*`, or ``None`` when not ``reached``.
        measured_ci: Its central ``confidence`` bootstrap interval over orders (``inf`` where a resample does
            not reach :math:`\varepsilon`).
        extrapolated: :math:`\max(\operatorname{MAD}/\varepsilon - 1, 1)`, a real number.
        extrapolated_ci: Its central ``confidence`` bootstrap interval over resampled losses.
        bound: Lemma 1's :math:`k^*` (the type allows ``None``; :func:`sufficient_sample_size` always sets it).
        mad: The mean absolute deviation :math:`\frac1N \sum_i |\ell_i - \bar\ell|` of the losses.
        loss_bound: The lemma's :math:`M_\ell`.
        hessian_bound: The lemma's :math:`M_{\mathbf H}`.
        radius: The lemma's :math:`R`.
        confidence: The coverage of both intervals.
    """

    epsilon: float
    n: int
    reached: bool
    measured: int | None
    measured_ci: tuple[float, float]
    extrapolated: float
    extrapolated_ci: tuple[float, float]
    bound: int | None
    mad: float
    loss_bound: float
    hessian_bound: float
    radius: float
    confidence: float

    @property
    def bound_ratio(self) -> float:
        """``bound / measured`` (``/ extrapolated`` when not reached; denominator at least 1; NaN without a bound)."""
        if self.bound is None:
            return math.nan
        reference = self.measured if self.reached else self.extrapolated
        return float(self.bound) / max(float(reference), 1.0)

    def with_ball(self, radius: float, hessian_bound: float) -> SampleSize:
        r"""The same measured and extrapolated sizes, with Lemma 1's bound for another ball.

        .. math::

            k^*_{\text{bound}} = \max\bigl(\lceil 2(M_\ell + M_{\mathbf H} R^2)/\varepsilon - 1 \rceil, 1\bigr),

        with this result's :math:`M_\ell` and :math:`\varepsilon`, the ball's radius :math:`R` and the bound
        :math:`M_{\mathbf H}` on the Hessian in it. The measured and extrapolated sizes do not depend on the
        ball, so nothing is resampled.

        Args:
            radius: The lemma's :math:`R \ge 0`.
            hessian_bound: The lemma's :math:`M_{\mathbf H} \ge 0`.

        Returns:
            The new :class:`SampleSize`.

        Raises:
            ValueError: when ``radius`` or ``hessian_bound`` is negative or not finite.
        """
        radius = check_float("radius", radius, minimum=0.0)
        hessian_bound = check_float("hessian_bound", hessian_bound, minimum=0.0)
        bound = _lemma_sample_size(self.epsilon, self.loss_bound, hessian_bound, radius)
        return replace(self, bound=bound, hessian_bound=hessian_bound, radius=radius)


def log_window_smooth(curves: np.ndarray, window: float = 0.1) -> np.ndarray:
    r"""Smooth curves of :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|` by a window of relative half-width ``window``.

    Each row's scaled curve :math:`(k+1)\,c_k` is averaged over a window of :math:`k` that grows with
    :math:`k`, then divided by :math:`k+1` again; a curve exactly :math:`c/(k+1)` is left unchanged:

    .. math::

        \tilde c_k = \frac{1}{k+1}\,\frac{1}{|W_k|}\sum_{k' \in W_k} (k'+1)\,c_{k'}, \qquad
        W_k = \bigl\{k' : \lceil k/(1+w) \rceil \le k' \le \lfloor k(1+w) \rfloor\bigr\} \cap [1, N-1].

    Args:
        curves: ``(..., N - 1)`` array, column ``j`` holding :math:`k = j + 1`.
        window: The relative half-width :math:`w \ge 0`; 0 returns the curves unchanged.

    Returns:
        The smoothed float64 array, of the shape of ``curves``.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if window == 0:
        return curves
    width = curves.shape[-1]
    k = np.arange(1, width + 1, dtype=np.float64)
    scaled = curves * (k + 1)
    cumulative = np.concatenate([np.zeros(curves.shape[:-1] + (1,)), np.cumsum(scaled, axis=-1)], axis=-1)
    low = np.clip(np.ceil(k / (1 + window)).astype(np.int64), 1, width)  # first k' in the window
    high = np.clip(np.floor(k * (1 + window)).astype(np.int64), 1, width)  # last k'
    means = (cumulative[..., high] - cumulative[..., low - 1]) / (high - low + 1)
    return means / (k + 1)


def first_k_below(mean_curves: np.ndarray, epsilon: float) -> np.ndarray:
    r"""The smallest :math:`k` from which every value of a curve is at most ``epsilon``, per row.

    .. math::

        k^* = 1 + \max\{k : c_k > \varepsilon\} \quad (k^* = 1 \text{ when no value exceeds } \varepsilon),

    and :math:`k^* = \infty` when the last value :math:`c_{N-1}` exceeds :math:`\varepsilon`.

    Args:
        mean_curves: ``(..., N - 1)`` array, column ``j`` holding :math:`k = j + 1`.
        epsilon: The tolerance :math:`\varepsilon`.

    Returns:
        The float64 array of :math:`k^*`, of shape ``mean_curves.shape[:-1]`` (``inf`` where not reached).
    """
    curves = np.asarray(mean_curves, dtype=np.float64)
    above = curves > epsilon
    width = curves.shape[-1]
    # Index of the last exceedance (-1 if none): the answer is that k plus one, i.e. index + 2.
    last = np.where(above.any(axis=-1), width - 1 - np.argmax(above[..., ::-1], axis=-1), -1)
    result = (last + 2).astype(np.float64)
    return np.where(last == width - 1, np.inf, result)


def _lemma_sample_size(epsilon: float, m_l: float, hessian_bound: float, radius: float) -> int:
    """The smallest ``k >= 1`` at which Lemma 1's bound ``2 (M_l + M_H R^2)/(k+1)`` is at most ``epsilon``."""
    constant = 2.0 * (m_l + hessian_bound * radius**2)
    bound = max(1, math.ceil(constant / epsilon - 1.0 - 1e-12))
    # The lemma's bound at k = bound is <= epsilon and at bound - 1 it is not (unless bound = 1).
    assert lemma_bound(bound, m_l, hessian_bound, radius) <= epsilon * (1 + 1e-9)
    return bound


def _checked_losses(losses) -> torch.Tensor:
    losses = torch.as_tensor(losses).detach().cpu().double()
    if losses.ndim != 1 or losses.numel() < 3:
        raise ValueError(
            f"losses must be a 1-D tensor of at least 3 per-sample losses, got shape {tuple(losses.shape)}"
        )
    return losses


def _measured(curves: np.ndarray, epsilons: list[float], window: float, rng, bootstrap: int, tail: float):
    """The measured ``k*`` of the smoothed mean curve and its interval over resampled orders, per tolerance.

    One set of resampled orders serves every tolerance: only the threshold depends on it.
    """
    smoothed = log_window_smooth(curves.mean(axis=0), window)
    orders = curves.shape[0]
    weights = rng.multinomial(orders, np.full(orders, 1.0 / orders), size=bootstrap) / orders
    boot = log_window_smooth(weights @ curves, window)
    return [
        (
            float(first_k_below(smoothed, epsilon)),
            tuple(float(v) for v in np.quantile(first_k_below(boot, epsilon), [tail, 1.0 - tail], method="nearest")),
        )
        for epsilon in epsilons
    ]


def _extrapolated(values: np.ndarray, epsilons: list[float], rng, bootstrap: int, tail: float):
    """The MAD, and per tolerance the extrapolated ``k* = MAD / epsilon - 1`` and its interval over resampled losses."""
    n = values.size
    mad = float(mean_abs_deviation(torch.from_numpy(values)))
    boot_mad = mean_abs_deviation(torch.from_numpy(values[rng.integers(0, n, size=(bootstrap, n))])).numpy()
    # A sample size is at least 1: a network whose losses are (nearly) all equal has settled at once.
    return mad, [
        (
            max(mad / epsilon - 1.0, 1.0),
            tuple(float(v) for v in np.quantile(np.maximum(boot_mad / epsilon - 1.0, 1.0), [tail, 1.0 - tail])),
        )
        for epsilon in epsilons
    ]


def sufficient_sample_sizes(
    losses: torch.Tensor | np.ndarray,
    epsilons: Sequence[float],
    *,
    curves: torch.Tensor | np.ndarray | None = None,
    permutations: int = 100,
    seed: int = 0,
    radius: float = 0.0,
    loss_bound: float | None = None,
    hessian_bound: float = 0.0,
    bootstrap: int = 200,
    confidence: float = 0.95,
    window: float = 0.1,
) -> list[SampleSize]:
    r"""The sufficient sample sizes :math:`k^*(\varepsilon)` at several tolerances, from one set of resamples.

    :math:`k^*` is the smallest :math:`k` after which :math:`\mathbb{E}|\mathcal{L}_{k+1} - \mathcal{L}_k|` stays at
    most :math:`\varepsilon`.

    Measured, extrapolated and bounded (see the module docstring):

    .. math::

        k^*_{\text{measured}} = \min\bigl\{k : \tilde c_j \le \varepsilon \ \forall j \ge k\bigr\}, \qquad
        k^*_{\text{extrapolated}} = \max\Bigl(\frac{\operatorname{MAD}}{\varepsilon} - 1, 1\Bigr),

        k^*_{\text{bound}} = \max\bigl(\lceil 2(M_\ell + M_{\mathbf H} R^2)/\varepsilon - 1 \rceil, 1\bigr),

    with :math:`\tilde c` the mean curve over orders smoothed by :func:`log_window_smooth` and
    :math:`\operatorname{MAD} = \frac1N \sum_i |\ell_i - \bar\ell|`. Intervals are central ``confidence``
    bootstrap intervals from ``bootstrap`` resamples of the orders (measured) or of the losses
    (extrapolated). The curves and the resamples depend on ``seed`` alone, not on :math:`\varepsilon`, so
    they are drawn once and serve every tolerance: each result equals that of
    :func:`sufficient_sample_size` at its tolerance.

    Args:
        losses: The 1-D per-sample losses at a fixed point, at least 3.
        epsilons: The tolerances :math:`\varepsilon > 0` (at least one; a list, tuple or 1-D array).
        curves: ``(orders, N - 1)`` curves from :func:`lhlib.engine.landscape.loss_difference_curves`; computed from
            ``permutations`` random orders when not given.
        permutations: The number of random orders when ``curves`` is not given.
        seed: Seeds the orders and the bootstrap resamples.
        radius: The lemma's :math:`R`.
        loss_bound: The lemma's :math:`M_\ell`; default ``max(losses)``.
        hessian_bound: The lemma's :math:`M_{\mathbf H}`.
        bootstrap: The number of bootstrap resamples.
        confidence: The coverage of the intervals.
        window: The relative half-width of the smoothing of the measured curve (0: none).

    Returns:
        One :class:`SampleSize` per tolerance, in the order of ``epsilons``.

    Raises:
        ValueError: when ``losses`` is not 1-D with at least 3 entries, ``epsilons`` is empty, ``curves`` has the
            wrong shape, or a number is out of range (an :math:`\varepsilon \le 0`, a negative constant,
            ``permutations < 2``, ...).
    """
    losses = _checked_losses(losses)
    if isinstance(epsilons, (np.ndarray, torch.Tensor)) and epsilons.ndim == 1:
        epsilons = epsilons.tolist()
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Sequence) or not epsilons:
        raise ValueError(f"epsilons must be a non-empty list of tolerances > 0, got a {type(epsilons).__name__}")
    epsilons = [check_float(f"epsilons[{i}]", e, minimum=0.0, strict_minimum=True) for i, e in enumerate(epsilons)]
    for name, value in (("radius", radius), ("hessian_bound", hessian_bound)):
        check_float(name, value, minimum=0.0)
    for name, value, minimum in (("permutations", permutations, 2), ("seed", seed, 0), ("bootstrap", bootstrap, 2)):
        check_int(name, value, minimum=minimum)
    check_float("confidence", confidence, minimum=0.0, maximum=1.0)
    check_float("window", window, minimum=0.0)
    n = losses.numel()
    curves = np.asarray(loss_difference_curves(losses, permutations, seed) if curves is None else curves, np.float64)
    if curves.ndim != 2 or curves.shape[1] != n - 1:
        raise ValueError(f"curves must have shape (orders, {n - 1}), got {curves.shape}")
    values = losses.numpy()
    m_l = float(values.max()) if loss_bound is None else check_float("loss_bound", loss_bound, minimum=0.0)

    rng = np.random.default_rng(seed)  # the orders' resamples first, then the losses'
    tail = (1.0 - confidence) / 2
    measured = _measured(curves, epsilons, window, rng, bootstrap, tail)
    mad, extrapolated = _extrapolated(values, epsilons, rng, bootstrap, tail)
    return [
        SampleSize(
            float(epsilon),
            n,
            math.isfinite(k_measured),
            int(k_measured) if math.isfinite(k_measured) else None,
            measured_ci,
            float(k_extrapolated),
            extrapolated_ci,
            _lemma_sample_size(epsilon, m_l, hessian_bound, radius),
            mad,
            m_l,
            float(hessian_bound),
            float(radius),
            confidence,
        )
        for epsilon, (k_measured, measured_ci), (k_extrapolated, extrapolated_ci) in zip(
            epsilons, measured, extrapolated
        )
    ]


def sufficient_sample_size(losses: torch.Tensor | np.ndarray, epsilon: float, **options) -> SampleSize:
    r""":func:`sufficient_sample_sizes` at one tolerance :math:`\varepsilon`.

    .. math::

        k^*_{\text{measured}} = \min\bigl\{k : \tilde c_j \le \varepsilon \ \forall j \ge k\bigr\}, \qquad
        k^*_{\text{extrapolated}} = \max\Bigl(\frac{\operatorname{MAD}}{\varepsilon} - 1, 1\Bigr).

    Args:
        losses: The 1-D per-sample losses at a fixed point, at least 3.
        epsilon: The tolerance :math:`\varepsilon > 0`.
        **options: The keyword arguments of :func:`sufficient_sample_sizes` (``curves``, ``permutations``,
            ``seed``, ``radius``, ``loss_bound``, ``hessian_bound``, ``bootstrap``, ``confidence``,
            ``window``).

    Returns:
        The :class:`SampleSize`.

    Raises:
        ValueError: when ``epsilon <= 0``, or as :func:`sufficient_sample_sizes`.
    """
    check_float("epsilon", epsilon, minimum=0.0, strict_minimum=True)
    return sufficient_sample_sizes(losses, [epsilon], **options)[0]
