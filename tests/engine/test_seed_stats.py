import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from scipy.stats import t as student_t

from lhlib.engine import seed_stats
from lhlib.engine.seed_stats import interval_across_seeds, share_at_chance, trend_test


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


def _test(p_claim, p_opposite, smallest, floor=1e-4, verdict="supported"):
    return {"p_value": p_claim, "p_value_opposite": p_opposite, "smallest_p_value": smallest, "p_floor": floor,
            "verdict": verdict, "statistic": 0.5}  # fmt: skip


def test_family_verdicts_are_not_testable_where_the_sizes_cannot_reach_the_threshold():
    """Chapter 08's cpu run: 28 tests of two sizes with four seeds each, best attainable p = 1/70 = 0.0143.

    Uncorrected, a perfect separation is "supported"; over the family no test can reach the threshold, and
    Tarone's count pays for none of them: the threshold is 0.05 / 4, the first below 1/70 that nothing reaches.
    """
    family = [_test(1 / 70, 1.0, 1 / 70) for _ in range(28)]
    corrected = seed_stats.family_verdicts(family)
    assert {t["verdict"] for t in corrected} == {"not testable at this size"}
    assert {t["verdict_uncorrected"] for t in corrected} == {"supported"}
    assert corrected[0]["family_threshold"] == pytest.approx(0.05 / 4) and corrected[0]["family_size"] == 28
    assert corrected[0]["attainable_p"] == pytest.approx(1 / 70)


def test_family_verdicts_pay_for_every_reachable_hypothesis():
    # Ten well-powered tests: 20 hypotheses, threshold 0.05 / 20 = 0.0025.
    family = [_test(0.002, 0.9, 1e-6) for _ in range(9)] + [_test(0.9, 0.003, 1e-6)]
    corrected = seed_stats.family_verdicts(family)
    assert corrected[0]["family_threshold"] == pytest.approx(0.0025)
    assert [t["verdict"] for t in corrected] == ["supported"] * 9 + ["not supported"]
    family[-1] = _test(0.9, 0.001, 1e-6)
    assert seed_stats.family_verdicts(family)[-1]["verdict"] == "contradicted"
    # A p at the permutation floor cannot pass a threshold below the floor.
    coarse = [_test(0.005, 0.9, 1e-9, floor=0.005) for _ in range(10)]
    assert {t["verdict"] for t in seed_stats.family_verdicts(coarse)} == {"not testable at this size"}
    # A degenerate test stays "not testable" and costs nothing.
    degenerate = _test(float("nan"), float("nan"), float("nan"), verdict="not testable")
    corrected = seed_stats.family_verdicts([degenerate, _test(0.01, 0.9, 1e-6)])
    assert [t["verdict"] for t in corrected] == ["not testable", "supported"]
    assert corrected[1]["family_threshold"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="alpha"):
        seed_stats.family_verdicts(family, alpha=0.0)


def test_family_verdicts_keep_the_family_wise_error_under_the_null():
    """Ten independent null tests per family: a family with any rejection happens in at most about 5 %."""
    rng = np.random.default_rng(3)
    x = np.repeat(np.arange(5), 4).astype(float)
    families = 150
    wrong = 0
    for f in range(families):
        draws = rng.standard_normal((10, x.size))
        family = [
            trend_test(x, d, "decreasing", permutations=999, seed=1000 * f + j).as_dict() for j, d in enumerate(draws)
        ]
        wrong += any(t["verdict"] in ("supported", "contradicted") for t in seed_stats.family_verdicts(family))
    assert wrong / families <= 0.09  # 5 % expected; the binomial spread at 150 families is about 1.8 %


def test_p_values_at_the_permutation_floor_print_as_bounds():
    assert seed_stats.p_value_text(1 / 10001, 1 / 10001) == "<= 1e-04"
    assert seed_stats.p_value_text(0.0043, 1 / 10001) == "0.0043"
    assert seed_stats.p_value_text(float("nan"), 1e-4) == "nan"
    assert trend_test(np.arange(30.0), -np.arange(30.0), "decreasing", permutations=999).p_floor == pytest.approx(1e-3)


def test_a_network_collapses_by_dead_units_or_by_learning_nothing():
    labels = torch.arange(1000) % 10  # ten classes of 100: the most frequent is right 10 % of the time
    margin = 3 * math.sqrt(0.1 * 0.9 / 1000)  # three binomial standard errors, 0.0285
    healthy = torch.linspace(0.01, 1.0, 1000)
    dead = torch.full((1000,), math.log(10))
    assert not seed_stats.is_collapsed(healthy, 0.9, labels, 10)
    assert seed_stats.is_collapsed(dead, 0.9, labels, 10)  # every loss at ln K
    assert seed_stats.is_collapsed(healthy, 0.1 + margin, labels, 10)  # no better than always predicting one class
    assert not seed_stats.is_collapsed(healthy, 0.1 + margin + 1e-3, labels, 10)
    third = torch.cat([dead[:333], healthy[333:]])
    assert not seed_stats.is_collapsed(third, 0.9, labels, 10)  # a third at ln K
    assert seed_stats.is_collapsed(third, 0.9, labels, 10, collapse_share=0.3)
    with pytest.raises(ValueError, match="collapse_share"):
        seed_stats.is_collapsed(healthy, 0.9, labels, 10, collapse_share=1.5)


def test_the_claimed_direction_is_tested_one_sided():
    """Clearly rising levels: "decreasing" is contradicted (its p near 1), "increasing" supported."""
    x = np.repeat([4.0, 8.0, 16.0, 32.0, 64.0], 3)
    rising = x + np.tile([0.0, 0.1, 0.2], 5)
    down = trend_test(x, rising, "decreasing", permutations=2000)
    up = trend_test(x, rising, "increasing", permutations=2000)
    assert down.verdict == "contradicted" and down.p_value > 0.99 and down.p_value_opposite < 0.001
    assert up.verdict == "supported" and up.p_value == down.p_value_opposite and up.p_value_opposite == down.p_value
