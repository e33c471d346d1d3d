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
