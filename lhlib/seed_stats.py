"""Conclusions across training seeds: intervals, collapsed networks and one-sided trend tests.

A configuration trained from ``S`` seeds gives ``S`` values of any statistic (a level, a fitted
exponent). :func:`interval_across_seeds` reports their mean with a Student-t interval. A claim
of the form "larger x gives smaller y" is tested over every (configuration, seed) pair by
:func:`trend_test`: Spearman's rank correlation with a one-sided permutation p-value.

A network is *collapsed* when a large share of its per-sample losses sits at ``ln K``. For the
paper's bias-free ReLU networks this is the signature of dead units: when every last-layer ReLU is
off for an input, the logits are exactly zero and the loss is exactly ``ln K``, whatever the label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import rankdata
from scipy.stats import t as student_t

from lhlib.validation import check_choice, check_float, check_int

__all__ = ["TrendTest", "interval_across_seeds", "share_at_chance", "trend_test"]


def interval_across_seeds(values: Sequence[float], confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean of ``values`` (one per seed) and its Student-t interval ``mean +- t_{S-1} s / sqrt(S)``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"an interval across seeds needs at least 2 values, got {values.size}")
    check_float("confidence", confidence, minimum=0.0, maximum=1.0, strict_minimum=True)
    mean = float(values.mean())
    half = float(student_t.ppf(0.5 + confidence / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size))
    return mean, (mean - half, mean + half)


def share_at_chance(losses: torch.Tensor, num_classes: int, tolerance: float = 1e-4) -> float:
    """Fraction of per-sample losses within ``tolerance`` of ``ln K``, the loss of all-zero logits."""
    check_int("num_classes", num_classes, minimum=2)
    check_float("tolerance", tolerance, minimum=0.0, strict_minimum=True)
    return float(((losses.double() - math.log(num_classes)).abs() <= tolerance).double().mean())


@dataclass(frozen=True)
class TrendTest:
    """A one-sided test of "``values`` move in ``direction`` as ``x`` grows".

    ``statistic`` is Spearman's rho over all pairs; ``p_value`` the one-sided permutation p-value
    of the claimed direction, ``p_value_opposite`` that of the other direction. ``verdict`` is
    ``"supported"`` (claimed direction significant at ``alpha``), ``"contradicted"`` (the opposite
    is), ``"not supported"`` (neither) or ``"not testable"``: fewer than 3 pairs or one distinct x,
    or too few pairs for any arrangement to reach ``alpha``: ``smallest_p_value``, the exact
    p-value of distinct values ordered exactly like ``x`` (``prod_g n_g! / N!`` for groups of
    ``n_g`` tied ``x``), is not below ``alpha``. Two sizes with three seeds each, for example, give
    at best ``1/20`` and can never reach ``p < 0.05``; with four seeds each, ``1/70``.
    """

    statistic: float
    p_value: float
    p_value_opposite: float
    verdict: str
    direction: str
    pairs: int
    alpha: float
    smallest_p_value: float

    def as_dict(self) -> dict:
        """The fields as a plain dict (for ``summary.json``)."""
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
    """Spearman's rho of ``values`` against ``x`` with one-sided permutation p-values.

    Pairs are exchangeable under the null hypothesis of no association, so the p-value of
    ``direction="decreasing"`` is ``(1 + #{rho_perm <= rho}) / (1 + permutations)`` over random
    permutations of ``values`` (and ``>=`` for ``"increasing"``). Ties (one x per seed of a
    configuration) get average ranks.
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
        return TrendTest(
            float("nan"), float("nan"), float("nan"), "not testable", direction, int(x.size), alpha, float("nan")
        )
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
    return TrendTest(rho, float(p_claim), float(p_opposite), verdict, direction, int(x.size), alpha, float(smallest))
