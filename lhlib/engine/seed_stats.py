r"""Conclusions across training seeds: intervals, collapsed networks and one-sided trend tests.

A configuration trained from :math:`S` seeds gives :math:`S` values of any statistic (a level, a fitted
exponent). :func:`interval_across_seeds` reports their mean with a Student-t interval. A claim
of the form "larger x gives smaller y" is tested over every (configuration, seed) pair by
:func:`trend_test`: Spearman's rank correlation with a one-sided permutation p-value. A chapter that
reports several such tests corrects their verdicts for multiplicity with :func:`family_verdicts`, and
prints a p-value at the permutation floor as a bound (:func:`p_value_text`).

A network is *collapsed* (:func:`is_collapsed`) when a large share of its per-sample losses sits at
:math:`\ln K` (:func:`share_at_chance`), or when it fits its training data no better than always
predicting the most frequent class (within three binomial standard errors of that rate). For the paper's
bias-free ReLU networks the first is the signature of dead units: when every last-layer ReLU is off for an
input, the logits are exactly zero and the loss is exactly :math:`\ln K`, whatever the label. The second
catches a network whose units died only in part but which learned nothing (chapter 03's Fashion-MNIST
:math:`h = 4` network, at 10 % accuracy with 39 % of its losses at :math:`\ln K`). Either way its
statistics describe its dead units, not its landscape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from scipy.stats import t as student_t

from lhlib.engine.validation import check_choice, check_float, check_int

__all__ = [
    "TrendTest",
    "family_verdicts",
    "interval_across_seeds",
    "is_collapsed",
    "p_value_text",
    "positive_interval_across_seeds",
    "share_at_chance",
    "trend_test",
]


def interval_across_seeds(values: Sequence[float], confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    r"""Mean of ``values`` (one per seed) and its two-sided Student-t interval.

    .. math::

        \bar v \pm t_{S-1,\,(1+c)/2}\,\frac{s}{\sqrt S},
        \qquad s^2 = \frac{1}{S-1}\sum_{j=1}^{S} (v_j - \bar v)^2,

    with :math:`c` = ``confidence`` and :math:`t_{S-1,q}` the :math:`q`-quantile of Student's t with
    :math:`S-1` degrees of freedom.

    Args:
        values: One value of the statistic per seed, at least two.
        confidence: The interval's coverage, in :math:`(0, 1]`.

    Returns:
        The pair ``(mean, (low, high))``.

    Raises:
        ValueError: when ``values`` is not 1-D with at least 2 entries or ``confidence`` is outside :math:`(0, 1]`.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"an interval across seeds needs at least 2 values, got {values.size}")
    check_float("confidence", confidence, minimum=0.0, maximum=1.0, strict_minimum=True)
    mean = float(values.mean())
    half = float(student_t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, (mean - half, mean + half)


def positive_interval_across_seeds(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, tuple[float, float]]:
    r"""Geometric mean of positive ``values`` (one per seed) and its Student-t interval on the log scale.

    For a positive quantity (a level, a norm, a sample size) the interval of :func:`interval_across_seeds` can
    reach below zero when the seeds spread widely; on the log scale it cannot:

    .. math::

        \exp\Bigl(\bar u \pm t_{S-1,\,(1+c)/2}\,\frac{s_u}{\sqrt S}\Bigr), \qquad u_j = \log v_j,

    around the geometric mean :math:`\exp \bar u`.

    Args:
        values: One positive value of the statistic per seed, at least two.
        confidence: The interval's coverage, in :math:`(0, 1]`.

    Returns:
        The pair ``(geometric mean, (low, high))``, all positive.

    Raises:
        ValueError: when a value is not positive, or as :func:`interval_across_seeds`.
    """
    values = np.asarray(values, dtype=np.float64)
    if not (values > 0).all():
        raise ValueError(f"values must be positive for an interval on the log scale, got {values.tolist()}")
    centre, (low, high) = interval_across_seeds(np.log(values), confidence)
    return math.exp(centre), (math.exp(low), math.exp(high))


def share_at_chance(losses: torch.Tensor, num_classes: int, tolerance: float = 1e-4) -> float:
    r"""Fraction of per-sample losses within ``tolerance`` of :math:`\ln K`, the loss of all-zero logits.

    .. math::

        \frac{1}{N}\,\#\bigl\{i : |\ell_i - \ln K| \le \text{tolerance}\bigr\}.

    Args:
        losses: Per-sample cross-entropies, any shape (every entry counts).
        num_classes: The number of classes :math:`K`, at least 2.
        tolerance: The half-width of the band around :math:`\ln K`, positive.

    Returns:
        The share, in :math:`[0, 1]`.

    Raises:
        ValueError: when ``num_classes < 2`` or ``tolerance <= 0``.
    """
    check_int("num_classes", num_classes, minimum=2)
    check_float("tolerance", tolerance, minimum=0.0, strict_minimum=True)
    return float(((losses.double() - math.log(num_classes)).abs() <= tolerance).double().mean())


def is_collapsed(
    losses: torch.Tensor, accuracy: float, labels: torch.Tensor, num_classes: int, collapse_share: float = 0.5
) -> bool:
    r"""Whether a trained network collapsed: dead units for most samples, or nothing learned.

    .. math::

        \frac{1}{N}\,\#\bigl\{i : |\ell_i - \ln K| \le 10^{-4}\bigr\} \ge s
        \quad \text{or} \quad
        \text{accuracy} \le q + 3\sqrt{q(1-q)/N}, \qquad q = \max_c \frac{1}{N}\,\#\{i : y_i = c\},

    with :math:`s` = ``collapse_share``: at least that share of the losses at :math:`\ln K`
    (:func:`share_at_chance`), or a training accuracy that the constant prediction of the most frequent class,
    right on :math:`N` objects with probability :math:`q` each, would reach within three standard errors. (On
    Fashion-MNIST's first 10 000 images :math:`q` is about 0.10 and the margin 0.009: a network at 10.3 %
    accuracy has learned nothing.)

    Args:
        losses: The ``(N,)`` per-sample cross-entropies at the trained point.
        accuracy: The training accuracy, in :math:`[0, 1]`.
        labels: The ``(N,)`` training labels.
        num_classes: The number of classes :math:`K`, at least 2.
        collapse_share: :math:`s`, in :math:`(0, 1]`.

    Returns:
        ``True`` when the network collapsed.

    Raises:
        ValueError: when ``num_classes < 2`` or ``collapse_share`` is outside :math:`(0, 1]`.
    """
    check_float("collapse_share", collapse_share, minimum=0.0, maximum=1.0, strict_minimum=True)
    n = labels.numel()
    majority = float(torch.bincount(labels.reshape(-1).long(), minlength=num_classes).max()) / n
    chance = majority + 3 * math.sqrt(majority * (1 - majority) / n)
    return share_at_chance(losses, num_classes) >= collapse_share or accuracy <= chance


@dataclass(frozen=True)
class TrendTest:
    r"""A one-sided test of "``values`` move in ``direction`` as ``x`` grows" (:func:`trend_test`).

    The verdict is ``"not testable"`` when there are fewer than 3 pairs, a single distinct ``x`` or a single
    distinct value, or when too few pairs exist for any arrangement to reach ``alpha``:
    ``smallest_p_value``, the exact p-value of distinct values ordered exactly like ``x``,
    :math:`\prod_g n_g!\,/\,N!` for groups of :math:`n_g` tied ``x``, is not below ``alpha``. Two sizes
    with three seeds each, for example, give at best :math:`1/20` and can never reach :math:`p < 0.05`;
    with four seeds each, :math:`1/70`.

    Attributes:
        statistic: Spearman's :math:`\rho` over all pairs (NaN with fewer than 3 pairs or one distinct x or value).
        p_value: The one-sided permutation p-value of the claimed direction.
        p_value_opposite: The one-sided permutation p-value of the other direction.
        verdict: ``"supported"`` (claimed direction significant at ``alpha``), ``"contradicted"`` (the
            opposite is), ``"not supported"`` (neither) or ``"not testable"``.
        direction: The claimed direction, ``"decreasing"`` or ``"increasing"``.
        pairs: The number of (x, value) pairs.
        alpha: The significance level.
        smallest_p_value: The smallest p-value these ``x`` allow (NaN in the same degenerate cases).
        p_floor: The smallest p-value the permutations can give, :math:`1/(1 + B)`.
    """

    statistic: float
    p_value: float
    p_value_opposite: float
    verdict: str
    direction: str
    pairs: int
    alpha: float
    smallest_p_value: float
    p_floor: float

    def as_dict(self) -> dict:
        """The fields as a plain dict (for ``summary.json``).

        Returns:
            A dict from field name to value.
        """
        return asdict(self)


def _rank_correlations(x_ranks: np.ndarray, y_ranks: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``x_ranks`` with each row of ``y_ranks``: Spearman's rho."""
    xc = x_ranks - x_ranks.mean()
    yc = y_ranks - y_ranks.mean(axis=-1, keepdims=True)
    return (yc @ xc) / np.sqrt((xc @ xc) * (yc * yc).sum(axis=-1))


def trend_test(
    x: Sequence[float],
    values: Sequence[float],
    direction: str,
    *,
    permutations: int = 10000,
    alpha: float = 0.05,
    seed: int = 0,
) -> TrendTest:
    r"""Spearman's :math:`\rho` of ``values`` against ``x`` with one-sided permutation p-values.

    Pairs are exchangeable under the null hypothesis of no association, so with :math:`\rho` the Pearson
    correlation of the average ranks (ties, such as one ``x`` per seed of a configuration, get average
    ranks) and :math:`\rho_b` its value after the :math:`b`-th random permutation of ``values``,

    .. math::

        p_{\text{decreasing}} = \frac{1 + \#\{b : \rho_b \le \rho\}}{1 + B}, \qquad
        p_{\text{increasing}} = \frac{1 + \#\{b : \rho_b \ge \rho\}}{1 + B},

    with :math:`B` = ``permutations`` (a slack of :math:`10^{-12}` counts permutations that tie
    :math:`\rho` up to rounding). See :class:`TrendTest` for the verdict.

    Args:
        x: The explanatory values, one per pair (e.g. the hidden size of each configuration and seed).
        values: The statistic, one per pair.
        direction: The claimed direction, ``"decreasing"`` or ``"increasing"``.
        permutations: The number :math:`B` of random permutations.
        alpha: The significance level, in :math:`(0, 1]`.
        seed: Seeds the permutations.

    Returns:
        The :class:`TrendTest`.

    Raises:
        ValueError: when ``direction`` is unknown, ``permutations < 1``, ``alpha`` is outside :math:`(0, 1]`,
            or ``x`` and ``values`` are not finite 1-D arrays of one length.
    """
    check_choice("direction", direction, ["decreasing", "increasing"])
    check_int("permutations", permutations, minimum=1)
    check_float("alpha", alpha, minimum=0.0, maximum=1.0, strict_minimum=True)
    x, values = np.asarray(x, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if x.shape != values.shape or x.ndim != 1:
        raise ValueError(f"x and values must be 1-D of one length, got {x.shape} and {values.shape}")
    if not (np.isfinite(x).all() and np.isfinite(values).all()):
        raise ValueError("x and values must be finite")
    if x.size < 3 or np.unique(x).size < 2 or np.unique(values).size < 2:
        nan = float("nan")
        return TrendTest(nan, nan, nan, "not testable", direction, int(x.size), alpha, nan, 1 / (1 + permutations))
    x_ranks, y_ranks = rankdata(x), rankdata(values)
    rho = float(_rank_correlations(x_ranks, y_ranks[None])[0])
    rng = np.random.default_rng(seed)
    shuffled = _rank_correlations(x_ranks, rng.permuted(np.tile(y_ranks, (permutations, 1)), axis=1))
    # A small slack so that permutations tying the observed rho (exactly, up to rounding) count.
    below = (1 + np.count_nonzero(shuffled <= rho + 1e-12)) / (1 + permutations)
    above = (1 + np.count_nonzero(shuffled >= rho - 1e-12)) / (1 + permutations)
    p_claim, p_opposite = (below, above) if direction == "decreasing" else (above, below)
    # The strongest association these x allow, values ordered exactly like x, is one of the
    # N! / prod(n_g!) equally likely assignments of distinct values to the groups of tied x.
    group_sizes = np.unique(x, return_counts=True)[1]
    smallest = math.exp(sum(math.lgamma(n + 1) for n in group_sizes) - math.lgamma(x.size + 1))
    if smallest >= alpha - 1e-12:  # exp(lgamma) rounds, and 1/20 is not below alpha = 0.05
        verdict = "not testable"
    else:
        verdict = "supported" if p_claim < alpha else "contradicted" if p_opposite < alpha else "not supported"
    return TrendTest(
        rho, float(p_claim), float(p_opposite), verdict, direction, int(x.size), alpha, float(smallest),
        1 / (1 + permutations),
    )  # fmt: skip


def p_value_text(p: float, floor: float) -> str:
    r"""A permutation p-value as text: at the permutation floor :math:`1/(1+B)` it is a bound, not a value.

    .. math::

        p \le \frac{1}{1+B} \ \text{when no permutation reached the observed statistic.}

    Args:
        p: The p-value.
        floor: The smallest p-value the permutations can give (``p_floor`` of :class:`TrendTest`).

    Returns:
        ``"<= 1e-04"`` style at the floor, else the value to two significant digits (``"nan"`` for NaN).
    """
    if math.isnan(p):
        return "nan"
    return f"<= {floor:.0e}" if p <= floor * (1 + 1e-9) else f"{p:.2g}"


def family_verdicts(tests: Sequence[dict], alpha: float = 0.05) -> list[dict]:
    r"""The verdicts of a family of trend tests, corrected for multiplicity (family-wise error ``alpha``).

    Each test makes two one-sided claims, so a family of :math:`m` tests holds :math:`2m` hypotheses. Each
    test's *attainable* p-value, :math:`a_j = \max(\text{smallest}_j, 1/(1+B))`, is the least its sizes and
    permutations allow; a hypothesis with :math:`a_j` above the threshold can never be rejected and need not be
    paid for (Tarone's refinement of Bonferroni). The threshold is :math:`\alpha / M` with

    .. math::

        M = \min\bigl\{M' \ge 1 : 2\,\#\{j : a_j < \alpha / M'\} \le M'\bigr\},

    and a test whose :math:`a_j \ge \alpha/M` is *not testable at this size*. The others are *supported*
    (claimed direction's :math:`p < \alpha/M`), *contradicted* (the opposite direction's is) or *not supported*.
    Every test is counted, whatever its verdict, so the family-wise error stays at most :math:`\alpha`.

    Args:
        tests: Trend tests as dicts with the fields of :class:`TrendTest` (``as_dict``, plus any labels).
        alpha: The family-wise error rate, in :math:`(0, 1]`.

    Returns:
        New dicts in the same order, each test with ``verdict`` replaced by the corrected one, the uncorrected verdict
        in ``verdict_uncorrected``, and ``attainable_p``, ``family_threshold`` (:math:`\alpha/M`) and
        ``family_size`` (:math:`m`).

    Raises:
        ValueError: when ``alpha`` is outside :math:`(0, 1]`.
    """
    check_float("alpha", alpha, minimum=0.0, maximum=1.0, strict_minimum=True)
    attainable = [
        max(t["smallest_p_value"], t["p_floor"]) if not math.isnan(t["smallest_p_value"]) else math.inf for t in tests
    ]
    size = 1
    while 2 * sum(a < alpha / size for a in attainable) > size:
        size += 1
    threshold = alpha / size
    corrected = []
    for test, reachable in zip(tests, attainable):
        if math.isinf(reachable):
            verdict = "not testable"
        elif reachable >= threshold:
            verdict = "not testable at this size"
        elif test["p_value"] < threshold:
            verdict = "supported"
        elif test["p_value_opposite"] < threshold:
            verdict = "contradicted"
        else:
            verdict = "not supported"
        corrected.append(
            {
                **test,
                "verdict": verdict,
                "verdict_uncorrected": test["verdict"],
                "attainable_p": reachable,
                "family_threshold": threshold,
                "family_size": len(tests),
            }
        )
    return corrected
