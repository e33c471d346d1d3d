import numpy as np
import pytest
import torch

from lhlib.engine.landscape import ema, fit_rate_exponent, loss_difference_curves, per_sample_losses, random_orders
from lhlib.engine.models import build_mlp


def test_curves_match_the_exact_identity():
    # L_{k+1} - L_k = (l_{k+1} - L_k) / (k + 1), evaluated with a plain loop over k.
    losses = torch.rand(60, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    curves = loss_difference_curves(losses, permutations=4, seed=7)
    orders = random_orders(60, 4, 7)
    assert curves.shape == (4, 59)
    for row, order in zip(curves, orders):
        ordered = losses[order].tolist()
        for k in range(1, 60):
            running_mean = sum(ordered[:k]) / k
            assert row[k - 1] == pytest.approx(abs(ordered[k] - running_mean) / (k + 1), rel=1e-12, abs=1e-15)


def test_orders_are_seeded_permutations():
    orders = random_orders(50, 3, seed=3)
    assert torch.equal(orders, random_orders(50, 3, seed=3))
    assert not torch.equal(orders, random_orders(50, 3, seed=4))
    assert torch.equal(orders.sort(dim=1).values, torch.arange(50).expand(3, 50))


def test_curves_reject_bad_losses():
    with pytest.raises(ValueError, match="losses must be a 1-D"):
        loss_difference_curves(torch.ones(3, 3), 2, 0)
    with pytest.raises(ValueError, match="permutations"):
        loss_difference_curves(torch.ones(10), 0, 0)


def test_ema_matches_the_recursion():
    values = np.random.default_rng(0).random((3, 40))
    expected = values.copy()
    for i in range(1, 40):
        expected[:, i] = 0.9 * expected[:, i - 1] + 0.1 * values[:, i]
    np.testing.assert_allclose(ema(values, 0.9), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="smoothing"):
        ema(values, 1.5)


@pytest.mark.parametrize("exponent", [-1.0, -0.5, -1.7])
def test_fit_recovers_a_known_exponent(exponent):
    rng = np.random.default_rng(0)
    k = np.arange(1, 5001)
    curves = 0.3 * k**exponent * rng.lognormal(0.0, 0.3, size=(50, k.size))
    fit = fit_rate_exponent(curves, k_min=10, bootstrap=300)
    assert fit.ci[0] <= exponent <= fit.ci[1]
    assert fit.exponent == pytest.approx(exponent, abs=0.02)
    assert fit.ci[1] - fit.ci[0] < 0.05


def test_fit_rejects_bad_ranges():
    curves = np.ones((3, 100))
    with pytest.raises(ValueError, match="k_max"):
        fit_rate_exponent(curves, k_min=10, k_max=200)
    with pytest.raises(ValueError, match="k_min"):
        fit_rate_exponent(curves, k_min=0)


def test_per_sample_losses_match_cross_entropy_per_sample():
    model = build_mlp(5, 4, 1, 3, seed=0)
    x = torch.randn(23, 5, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (23,), generator=torch.Generator().manual_seed(1))
    batched = per_sample_losses(model, x, y, batch_size=7)
    one_by_one = torch.stack([torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]) for i in range(23)])
    torch.testing.assert_close(batched, one_by_one)


def test_log_binned_averages_each_bin():
    from lhlib.engine.landscape import log_binned

    values = np.arange(1, 1001, dtype=float)  # values[k - 1] = k
    centres, means = log_binned(values, bins=10)
    assert centres.size == means.size and np.all(np.diff(centres) > 0)
    # Each mean of k over a bin lies within the bin, so means increase and stay below n.
    assert 1.0 <= means[0] < centres[1] and means[-1] <= 1000 and np.all(np.diff(means) > 0)
    assert means.size == np.unique(np.geomspace(1, 1001, 11).astype(int)).size - 1
    constant = log_binned(np.full(500, 3.0))[1]
    np.testing.assert_allclose(constant, 3.0)


def test_mean_abs_deviation_along_the_last_axis():
    from lhlib.engine.landscape import mean_abs_deviation

    values = torch.tensor([[0.0, 2.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(mean_abs_deviation(values), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_bootstrap_interval_has_the_confidence_it_states():
    """Known answer: a percentile interval of a near-normal bootstrap distribution is about
    z_{0.975} / z_{0.75} = 1.96 / 0.674 = 2.91 times as wide at 95 % as at 50 %."""
    rng = np.random.default_rng(0)
    k = np.arange(1, 2001)
    curves = (1.0 / (k + 1))[None, :] * rng.lognormal(0.0, 0.5, size=(400, k.size))
    fits = {c: fit_rate_exponent(curves, k_min=10, bootstrap=4000, confidence=c, seed=1) for c in (0.5, 0.95)}
    width = {c: fit.ci[1] - fit.ci[0] for c, fit in fits.items()}
    assert fits[0.95].confidence == 0.95 and fits[0.95].ci[0] < fits[0.95].exponent < fits[0.95].ci[1]
    assert 2.6 < width[0.95] / width[0.5] < 3.2
    assert fit_rate_exponent(curves, k_min=10, bootstrap=4000, seed=1).ci == fits[0.95].ci
