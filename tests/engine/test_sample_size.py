import math

import numpy as np
import pytest
import torch

from lhlib.engine.bounds import lemma_bound
from lhlib.engine.sample_size import first_k_below, log_window_smooth, sufficient_sample_size, sufficient_sample_sizes


def test_known_answer_from_exact_curves():
    # E|L_{k+1} - L_k| = c / (k + 1) exactly: k* is the smallest k with c / (k + 1) <= epsilon.
    n, c = 2001, 0.5
    k = np.arange(1, n)
    curves = np.tile(c / (k + 1), (5, 1))
    for epsilon in (1e-2, 1e-3, 3e-4):
        result = sufficient_sample_size(torch.rand(n), epsilon, curves=curves)
        assert result.reached and result.measured == math.ceil(c / epsilon - 1)
        assert result.measured_ci == (result.measured, result.measured)
    result = sufficient_sample_size(torch.rand(n), 1e-4, curves=curves)
    assert not result.reached and result.measured is None and result.measured_ci == (math.inf, math.inf)


def test_known_answer_two_point_losses():
    # Half the losses 0, half 2: MAD = 1, so k* = 1 / epsilon - 1.
    losses = torch.tensor([0.0, 2.0]).repeat(3000)
    result = sufficient_sample_size(losses, 1e-3, permutations=50, seed=0, bootstrap=50)
    assert result.mad == pytest.approx(1.0)
    assert result.extrapolated == pytest.approx(999.0)
    # (resampling can only unbalance the two values, which lowers the MAD: the interval ends at ~999)
    assert result.extrapolated_ci[0] <= 999.0 <= result.extrapolated_ci[1] + 0.01
    assert abs(result.measured - 999) <= 0.02 * 999
    assert result.measured_ci[0] <= result.measured <= result.measured_ci[1]


def test_measured_agrees_with_extrapolated_for_smooth_losses():
    losses = torch.distributions.Exponential(torch.tensor(2.0)).sample((8000,))
    result = sufficient_sample_size(losses, 2e-4, permutations=100, seed=1, bootstrap=100)
    assert result.reached
    assert result.measured == pytest.approx(result.extrapolated, rel=0.05)


def test_bound_is_the_smallest_k_satisfying_the_lemma():
    losses = torch.linspace(0.1, 3.0, 100)
    for radius, hessian_bound, epsilon in [(0.0, 0.0, 1e-2), (0.3, 40.0, 1e-3), (1.0, 5.0, 0.7)]:
        result = sufficient_sample_size(
            losses, epsilon, permutations=4, radius=radius, hessian_bound=hessian_bound, bootstrap=4
        )
        assert result.loss_bound == pytest.approx(3.0)
        assert lemma_bound(result.bound, 3.0, hessian_bound, radius) <= epsilon * (1 + 1e-9)
        if result.bound > 1:
            assert lemma_bound(result.bound - 1, 3.0, hessian_bound, radius) > epsilon
    explicit = sufficient_sample_size(losses, 1e-2, permutations=4, loss_bound=10.0, bootstrap=4)
    assert explicit.bound == math.ceil(2 * 10.0 / 1e-2 - 1)


def test_bound_ratio_uses_extrapolation_when_not_reached():
    losses = torch.tensor([0.0, 2.0]).repeat(50)
    result = sufficient_sample_size(losses, 1e-4, permutations=4, bootstrap=4)
    assert not result.reached
    assert result.bound_ratio == pytest.approx(result.bound / result.extrapolated)


def test_smoothing_and_first_crossing():
    k = np.arange(1, 501)
    exact = 3.0 / (k + 1)
    assert np.allclose(log_window_smooth(exact, 0.2), exact)
    noisy = exact * (1 + 0.1 * np.random.default_rng(0).standard_normal(k.size))
    assert np.array_equal(log_window_smooth(noisy, 0.0), noisy)
    assert np.allclose(log_window_smooth(np.stack([exact, 2 * exact]), 0.1), np.stack([exact, 2 * exact]))
    assert first_k_below(np.array([0.5, 0.4, 0.3]), 1.0) == 1
    assert first_k_below(np.array([2.0, 0.4, 1.5, 0.3]), 1.0) == 4
    assert first_k_below(np.array([2.0, 0.4, 1.5]), 1.0) == math.inf
    assert list(first_k_below(np.array([[2.0, 0.5], [0.1, 0.1]]), 1.0)) == [2, 1]


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="epsilon"):
        sufficient_sample_size(torch.rand(10), 0.0)
    with pytest.raises(ValueError, match="losses must be a 1-D"):
        sufficient_sample_size(torch.rand(3, 3), 0.1)
    with pytest.raises(ValueError, match="curves must have shape"):
        sufficient_sample_size(torch.rand(10), 0.1, curves=np.ones((2, 5)))
    with pytest.raises(ValueError, match="radius"):
        sufficient_sample_size(torch.rand(10), 0.1, radius=-1.0)


def test_equal_losses_need_one_sample():
    result = sufficient_sample_size(torch.full((50,), 2.302585), 1e-3, permutations=4, bootstrap=4)
    assert result.mad == 0.0 and result.extrapolated == 1.0 and result.extrapolated_ci == (1.0, 1.0)


def test_the_study_sizes_every_seed_of_every_configuration_and_checks_a_pilot():
    from lhlib.chapters.ch07_sample_size import (
        holdout_check,
        holdout_facts,
        nearest_tolerance,
        sample_size_facts,
        sample_size_study,
        sample_size_table,
        study_summary,
    )
    from lhlib.engine.data import load_dataset
    from lhlib.engine.settings import check_sweep_settings

    data = {"digits": load_dataset("digits", 300)}
    # Five epochs at lr 1e-2: every network fits better than the most frequent class (none collapsed).
    settings = check_sweep_settings(
        epochs=5,
        lr=1e-2,
        batch_size=32,
        hidden_sizes=[4, 8],
        num_layers=[1],
        fixed_hidden_size=8,
        fixed_num_layers=1,
        permutations=8,
        seeds=[0, 1],
        device="cpu",
    )
    epsilons = [1e-2, 1e-3]
    results = sample_size_study(data, settings, epsilons, bound_relative_radius=0.01, bootstrap=20, confidence=0.9)
    assert set(results) == {("digits", 4, 1), ("digits", 8, 1)}
    member = results[("digits", 8, 1)][1]
    assert member.seed == 1 and set(member.at_theta_hat) == set(member.in_ball) == set(epsilons)
    # The ball's constant is the largest per-sample G-term norm, and a ball never needs fewer objects.
    assert all(m.in_ball[e].bound >= m.at_theta_hat[e].bound for ms in results.values() for m in ms for e in epsilons)
    assert member.in_ball[1e-3].hessian_bound == member.hessian_bound > 0
    direct = sufficient_sample_size(member.losses, 1e-3, permutations=8, seed=1, bootstrap=20, confidence=0.9)
    assert member.at_theta_hat[1e-3].extrapolated == direct.extrapolated
    assert member.at_theta_hat[1e-3].measured == direct.measured

    assert nearest_tolerance(epsilons, 2e-3) == 1e-3 and nearest_tolerance(epsilons, 5e-2) == 1e-2
    header, rows = sample_size_table(results, "digits", 1e-3)
    assert len(rows) == 2 and all(len(row) == len(header) for row in rows)
    facts = sample_size_facts(results, epsilons, 1e-3)
    extrapolated = {key: [m.at_theta_hat[1e-3].extrapolated for m in ms] for key, ms in results.items()}
    means = [np.mean(v) for v in extrapolated.values()]
    assert facts["architecture_spread"] == pytest.approx(max(means) / min(means))
    summary = study_summary(results, 1e-3)
    assert len(summary["configurations"]) == 4 and len(summary["k_star_across_seeds"]) == 2

    holdout = holdout_check(results, 100, epsilons, permutations=8, seed=0, bootstrap=20, confidence=0.9)
    assert all(h["seed"] == 0 and h["observed"] >= 10 for h in holdout)
    assert not any(m.collapsed for ms in results.values() for m in ms)

    # A collapsed seed is left out of every spread, mean, interval and check, and counted.
    import dataclasses

    first = results[("digits", 4, 1)][0]
    floor = {e: dataclasses.replace(s, extrapolated=1.0) for e, s in first.at_theta_hat.items()}
    collapsed = {**results, ("digits", 4, 1): [dataclasses.replace(first, collapsed=True, at_theta_hat=floor),
                                               results[("digits", 4, 1)][1]]}  # fmt: skip
    facts = sample_size_facts(collapsed, epsilons, 1e-3)
    kept = {key: [m.at_theta_hat[1e-3].extrapolated for m in ms if not m.collapsed] for key, ms in collapsed.items()}
    assert facts["collapsed_networks"] == "1 of 4"
    assert facts["architecture_spread"] == pytest.approx(
        max(map(np.mean, kept.values())) / min(map(np.mean, kept.values()))
    )
    assert facts["seed_spread_where"] == "digits, h = 8, num_layers = 1"  # the only configuration with two kept
    header, rows = sample_size_table(collapsed, "digits", 1e-3)
    assert header[2] == "collapsed seeds (left out)" and [row[2] for row in rows] == ["1 of 2", "0 of 2"]
    assert rows[0][5] == f"{kept[('digits', 4, 1)][0]:.0f}"  # one kept seed: its value, no interval
    holdout = holdout_check(collapsed, 100, epsilons, permutations=8, seed=0, bootstrap=20, confidence=0.9)
    assert {h["seed"] for h in holdout if h["hidden_size"] == 4} <= {1}
    across = study_summary(collapsed, 1e-3)["k_star_across_seeds"]
    assert across[0]["kept_seeds"] == [1] and across[0]["extrapolated_geometric_mean_ci95"] is None
    assert holdout_facts([])["holdout_cases"] == 0
    exact = [{"predicted": 100.0, "observed": 100, "predicted_ci": [90, 110]},
             {"predicted": 200.0, "observed": 100, "predicted_ci": [150, 250]}]  # fmt: skip
    facts = holdout_facts(exact)
    assert facts["holdout_max_error"] == pytest.approx(1.0) and facts["holdout_within_ci"] == 0.5


def test_several_tolerances_at_once_equal_one_at_a_time():
    losses = torch.distributions.Exponential(torch.tensor(3.0)).sample((600,))
    epsilons = [1e-2, 1e-3, 3e-4]
    options = dict(permutations=20, seed=4, bootstrap=30, confidence=0.9, radius=0.2, hessian_bound=7.0)
    together = sufficient_sample_sizes(losses, epsilons, **options)
    assert [s.epsilon for s in together] == epsilons
    assert together == [sufficient_sample_size(losses, eps, **options) for eps in epsilons]


def test_with_ball_changes_only_the_bound():
    losses = torch.linspace(0.1, 3.0, 200)
    options = dict(permutations=8, seed=2, bootstrap=10)
    at_theta_hat = sufficient_sample_size(losses, 1e-3, **options)
    in_ball = at_theta_hat.with_ball(0.5, 40.0)
    assert in_ball == sufficient_sample_size(losses, 1e-3, radius=0.5, hessian_bound=40.0, **options)
    assert in_ball.bound > at_theta_hat.bound and in_ball.measured == at_theta_hat.measured
    with pytest.raises(ValueError, match="radius"):
        at_theta_hat.with_ball(-1.0, 1.0)


def test_several_tolerances_refuse_bad_lists():
    with pytest.raises(ValueError, match="epsilons must be a non-empty list"):
        sufficient_sample_sizes(torch.rand(10), [])
    with pytest.raises(ValueError, match="epsilons must be a non-empty list"):
        sufficient_sample_sizes(torch.rand(10), 1e-3)
    with pytest.raises(ValueError, match=r"epsilons\[1\]"):
        sufficient_sample_sizes(torch.rand(10), [1e-3, 0.0])
    with pytest.raises(ValueError, match="epsilons must be a non-empty list of tolerances > 0, got a ndarray"):
        sufficient_sample_sizes(torch.rand(10), np.ones((2, 2)))
    losses = torch.rand(50)
    assert sufficient_sample_sizes(losses, np.array([0.1, 0.01]), permutations=4, bootstrap=4) == (
        sufficient_sample_sizes(losses, [0.1, 0.01], permutations=4, bootstrap=4)
    )
