import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from scipy.stats import t as student_t

from lhlib.seed_stats import interval_across_seeds, share_at_chance, trend_test


def test_interval_is_the_student_t_interval():
    values = [1.0, 2.0, 4.0]
    mean, (low, high) = interval_across_seeds(values)
    half = student_t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert mean == pytest.approx(7 / 3)
    assert (low, high) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    with pytest.raises(ValueError, match="at least 2"):
        interval_across_seeds([1.0])


def test_share_at_chance_counts_losses_of_zero_logits():
    logits = torch.zeros(6, 10)
    logits[:2] = torch.randn(2, 10, generator=torch.Generator().manual_seed(0)) * 5
    losses = torch.nn.functional.cross_entropy(logits, torch.arange(6), reduction="none")
    assert share_at_chance(losses, 10) == pytest.approx(4 / 6)
    assert share_at_chance(losses, 3) == 0.0


def test_trend_test_statistic_is_spearman_and_p_values_are_calibrated():
    rng = np.random.default_rng(1)
    x = np.repeat([4, 8, 16, 32, 64], 5)
    falling = -np.log(x) + 0.3 * rng.standard_normal(x.size)
    result = trend_test(x, falling, "decreasing", permutations=4000)
    assert result.statistic == pytest.approx(spearmanr(x, falling).statistic)
    assert result.verdict == "supported" and result.p_value < 0.01
    assert trend_test(x, falling, "increasing", permutations=4000).verdict == "contradicted"
    # Under the null the one-sided p-value is uniform: about 5 % of tests reject at 0.05.
    rejections = [
        trend_test(x, rng.standard_normal(x.size), "decreasing", permutations=400, seed=s).p_value < 0.05
        for s in range(300)
    ]
    assert 0.02 < np.mean(rejections) < 0.09


def test_trend_test_refuses_what_cannot_be_tested():
    assert trend_test([1, 1, 1], [1.0, 2.0, 3.0], "increasing").verdict == "not testable"
    assert trend_test([1, 2], [1.0, 2.0], "increasing").verdict == "not testable"
    # Two sizes with three seeds each: at best p = 1 / C(6, 3) = 1/20, never below 0.05.
    underpowered = trend_test([1, 1, 1, 2, 2, 2], [1.0, 1.1, 1.2, 2.0, 2.1, 2.2], "increasing", permutations=4000)
    assert underpowered.verdict == "not testable"
    assert underpowered.smallest_p_value == pytest.approx(1 / 20)
    # With four seeds each the same separation is significant (1 / C(8, 4) = 1/70).
    powered = trend_test([1] * 4 + [2] * 4, [1.0, 1.1, 1.2, 1.3, 2.0, 2.1, 2.2, 2.3], "increasing", permutations=4000)
    assert powered.verdict == "supported" and powered.smallest_p_value == pytest.approx(1 / 70)
    with pytest.raises(ValueError, match="direction"):
        trend_test([1, 2, 3], [1.0, 2.0, 3.0], "up")
    with pytest.raises(ValueError, match="finite"):
        trend_test([1, 2, 3], [1.0, float("nan"), 3.0], "increasing")
