import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from lhlib.engine import ball
from lhlib.engine.ball import (
    ascent_direction,
    expected_gradient_norm,
    filter_normalized_direction,
    gaussian_mean_square_mc,
    gaussian_mean_square_taylor,
    gaussian_sigma,
    gradient_norms_over_k,
    isotropic_direction,
    loss_slice,
    losses_at,
    measure_ball,
    per_sample_gradient_stats,
    top_hessian_direction,
)
from lhlib.engine.landscape import loss_difference_curves, per_sample_losses, random_orders
from lhlib.engine.models import build_mlp
from lhlib.engine.parameters import flat_parameters, linear_relu_weights, unflatten
from lhlib.engine.validation import check_configurations, check_positive_floats


def tiny(n=24, dims=(5, 4, 1, 3), seed=0, dtype=torch.float64):
    """A small bias-free MLP and random data (float64 for exact comparisons)."""
    model = build_mlp(*dims, seed=seed).to(dtype)
    generator = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, dims[0], generator=generator, dtype=dtype)
    y = torch.randint(0, dims[3], (n,), generator=generator)
    return model, x, y


class _Unrecognised(nn.Module):
    """The same network behind a module that a bias-free Linear/ReLU stack may not hold (an unused Tanh)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.unused = inner, nn.Tanh()

    def forward(self, x):
        return self.inner(x)


def _unrecognised(model):
    assert linear_relu_weights(_Unrecognised(model), torch.zeros(2, model.input_dim, dtype=torch.float64)) is None
    return _Unrecognised(model)


def with_parameters(model, flat):
    other = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(flat, other.parameters())
    return other


def test_unflatten_round_trip():
    model, _, _ = tiny()
    theta = flat_parameters(model)
    params = unflatten(model, theta)
    assert all(torch.equal(params[name], p) for name, p in model.named_parameters())
    batched = unflatten(model, torch.stack([theta, 2 * theta]))
    assert all(v.shape[0] == 2 for v in batched.values())
    with pytest.raises(ValueError, match="flat must have"):
        unflatten(model, theta[:-1])


def test_directions_are_seeded_and_normalised():
    model, _, _ = tiny()
    theta = flat_parameters(model)
    d = isotropic_direction(model, 3)
    assert float(d.norm()) == pytest.approx(1.0)
    assert torch.equal(d, isotropic_direction(model, 3)) and not torch.equal(d, isotropic_direction(model, 4))
    f = filter_normalized_direction(model, 5)
    # Each row of each weight matrix has the norm of the trained row, so ||d|| = ||theta||.
    assert float(f.norm()) == pytest.approx(float(theta.norm()), rel=1e-10)
    for piece, w in zip(unflatten(model, f).values(), model.weights()):
        assert torch.allclose(piece.norm(dim=1), w.detach().norm(dim=1))
    assert float(filter_normalized_direction(model, 5, unit=True).norm()) == pytest.approx(1.0)


def test_losses_at_matches_the_model_at_each_point():
    model, x, y = tiny(n=30)
    theta = flat_parameters(model)
    thetas = torch.stack(
        [theta, theta + 0.1 * isotropic_direction(model, 0), theta - 0.3 * isotropic_direction(model, 1)]
    )
    out = losses_at(model, thetas, x, y, batch_size=7, max_elements=50)  # forces chunking in both axes
    assert out.shape == (3, 30)
    for row, t in zip(out, thetas):
        assert torch.allclose(row, per_sample_losses(with_parameters(model, t), x, y), rtol=1e-12, atol=1e-12)


def test_top_hessian_direction_is_the_top_eigenvector():
    model, x, y = tiny(n=40)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def loss(flat):
        return F.cross_entropy(functional_call(model, unflatten(model, flat), (x,)), y)

    dense = hessian(loss)(flat_parameters(model))
    values, vectors = torch.linalg.eigh(dense)
    v, value = top_hessian_direction(model, x, y, tol=1e-10)
    assert value == pytest.approx(float(values[-1]), rel=1e-6)
    assert abs(float(v @ vectors[:, -1])) == pytest.approx(1.0, abs=1e-5)
    assert params  # parameters untouched


def test_ascent_increases_the_spread_of_losses():
    model, x, y = tiny(n=40)
    start = isotropic_direction(model, 2)
    d, history = ascent_direction(model, x, y, 0.5, start=start, steps=4)
    assert float(d.norm()) == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(history)) and history[-1] > history[0]
    spread = losses_at(model, flat_parameters(model) + 0.5 * d, x, y)[0]
    assert float((spread - spread.mean()).abs().mean()) == pytest.approx(history[-1], rel=1e-10)


def test_measure_ball_curves_are_the_curves_at_the_perturbed_point():
    model, x, y = tiny(n=50)
    d = isotropic_direction(model, 0)
    points = measure_ball(model, x, y, {"iso": d}, [0.0, 0.2], permutations=6, seed=1, fit_k_min=2, bootstrap=20)
    assert [(p.kind, p.radius) for p in points] == [("iso", 0.0), ("iso", 0.2)]
    for p in points:
        losses = losses_at(model, flat_parameters(model) + p.radius * d, x, y)[0]
        curves = loss_difference_curves(losses, 6, 1).numpy()
        assert np.allclose(p.mean, curves.mean(0))
        k = np.arange(1, 50)
        assert p.max_scaled == pytest.approx(float((curves * (k + 1)).max()))
        # (k+1)|L_{k+1} - L_k| = |l_{k+1} - L_k| <= max l - min l <= max l, for every order.
        assert p.max_scaled <= p.loss_range + 1e-12 <= p.max_loss + 1e-12
        assert p.mad == pytest.approx(float((losses - losses.mean()).abs().mean()))
    with pytest.raises(ValueError, match="direction 'iso' must have shape"):
        measure_ball(model, x, y, {"iso": d[:-1]}, [0.1])


def test_loss_slice_centre_is_the_running_mean():
    model, x, y = tiny(n=30)
    d1, d2 = filter_normalized_direction(model, 1), filter_normalized_direction(model, 2)
    order = random_orders(30, 1, 0)[0]
    plane = loss_slice(model, x, y, d1, d2, [-0.5, 0.0, 0.5], [-0.2, 0.0, 0.3], [3, 10], order=order)
    assert plane.values.shape == (2, 2, 3, 3)
    ordered = per_sample_losses(model, x, y)[order]
    for j, k in enumerate([3, 10]):
        assert plane.values[j, 0, 1, 1] == pytest.approx(float(ordered[:k].mean()))
        assert plane.values[j, 1, 1, 1] == pytest.approx(float(ordered[: k + 1].mean()))
    corner = per_sample_losses(with_parameters(model, flat_parameters(model) + 0.5 * d1 + 0.3 * d2), x, y)[order]
    assert plane.values[1, 1, 2, 2] == pytest.approx(float(corner[:11].mean()))


def test_gradient_norms_and_stats_match_autograd(monkeypatch):
    model, x, y = tiny(n=20)
    structured = []
    original = ball._stack_gradient_stats
    monkeypatch.setattr(ball, "_stack_gradient_stats", lambda *a: structured.append(a) or original(*a))

    def grad_of(idx):
        model.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()

    orders = random_orders(20, 2, 0)
    ks = [1, 4, 20]
    norms = gradient_norms_over_k(model, x, y, ks, orders)
    for row, order in zip(norms, orders):
        for value, k in zip(row, ks):
            assert value == pytest.approx(float(grad_of(order[:k]).norm()), rel=1e-10)
    per_sample = torch.stack([grad_of(torch.tensor([i])) for i in range(20)])
    full = per_sample.mean(0)
    # The MLP takes the structured path (no per-sample gradient formed); the same weights in a stack
    # with a Tanh that computes nothing new are not recognised and take vmap(grad).
    for candidate in (model, _unrecognised(model)):
        stats = per_sample_gradient_stats(candidate, x, y, max_elements=100)  # several chunks on both paths
        assert torch.allclose(stats.norms, per_sample.norm(dim=1))
        assert stats.full_norm == pytest.approx(float(full.norm()))
        assert stats.trace_cov == pytest.approx(float(((per_sample - full) ** 2).sum(1).mean()))
    assert len(structured) == 1  # the MLP took the structured path, the unrecognised network did not
    with pytest.raises(ValueError, match="max_elements"):
        per_sample_gradient_stats(model, x, y, max_elements=0)
    # The expectation formula: k = 1 gives the RMS per-sample norm, k = n the full-batch norm.
    expected = expected_gradient_norm([1, 20], 20, stats.full_norm, stats.trace_cov)
    assert expected[0] == pytest.approx(float(per_sample.norm(dim=1).pow(2).mean().sqrt()))
    assert expected[1] == pytest.approx(stats.full_norm)


def test_expected_gradient_norm_matches_sampling_without_replacement():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(12, 3)) + 0.5
    full, trace = np.linalg.norm(g.mean(0)), ((g - g.mean(0)) ** 2).sum(1).mean()
    from itertools import combinations

    for k in (2, 5):
        exact = np.mean([np.sum(g[list(c)].mean(0) ** 2) for c in combinations(range(12), k)])
        assert expected_gradient_norm(k, 12, full, trace) ** 2 == pytest.approx(exact)


def test_gaussian_criterion_closed_form_against_dense_and_monte_carlo():
    model, x, y = tiny(n=16, dims=(4, 3, 1, 3))
    orders = random_orders(16, 2, 0)
    ks = [2, 7]
    # sigma = 0: both give the value term (D_0 / (k+1))^2 exactly.
    mc0 = gaussian_mean_square_mc(model, x, y, 0.0, ks, orders, samples=4)
    ta0 = gaussian_mean_square_taylor(model, x, y, 0.0, ks, orders, probes=2)
    losses = per_sample_losses(model, x, y)
    exact0 = [np.mean([float((losses[o[k]] - losses[o[:k]].mean()) / (k + 1)) ** 2 for o in orders]) for k in ks]
    assert np.allclose(mc0.value, exact0) and np.allclose(ta0.value, exact0)
    # The terms against a dense gradient and Hessian of D = l_{k+1} - L_k.
    sigma = 0.05
    orders = orders[:1]
    ta = gaussian_mean_square_taylor(model, x, y, sigma, ks, orders, probes=200, seed=1)
    theta = flat_parameters(model)
    for j, k in enumerate(ks):
        parts = {"gradient": [], "trace": [], "quartic": []}
        for o in orders:
            w = torch.zeros(16, dtype=torch.float64)
            w[o[:k]] = -1.0 / k
            w[o[k]] = 1.0

            def d_of(flat, w=w):
                return (
                    F.cross_entropy(functional_call(model, unflatten(model, flat), (x,)), y, reduction="none") * w
                ).sum()

            g = torch.func.grad(d_of)(theta)
            h = hessian(d_of)(theta)
            d0 = float(d_of(theta))
            parts["gradient"].append(sigma**2 * float(g @ g) / (k + 1) ** 2)
            parts["trace"].append(sigma**2 * d0 * float(h.trace()) / (k + 1) ** 2)
            parts["quartic"].append(sigma**4 * (float(h.trace()) ** 2 + 2 * float((h * h).sum())) / 4 / (k + 1) ** 2)
        assert ta.terms["gradient"][j] == pytest.approx(np.mean(parts["gradient"]), rel=1e-8)
        assert ta.terms["trace"][j] == pytest.approx(np.mean(parts["trace"]), rel=1e-6, abs=1e-15)
        assert ta.terms["quartic"][j] == pytest.approx(np.mean(parts["quartic"]), rel=0.2)
    # Monte Carlo converges to the closed form when sigma is small.
    mc = gaussian_mean_square_mc(model, x, y, sigma, ks, orders, samples=1000, seed=2)
    assert np.all(mc.stderr > 0)
    assert np.all(np.abs(mc.value - ta.value) <= 4 * mc.stderr + 4 * ta.stderr)
    assert gaussian_sigma(model, 0.1) == pytest.approx(0.1 * float(theta.norm()) / theta.numel() ** 0.5)


def test_chapter_parameter_checks():
    assert check_configurations("configurations", [[16, 5], [4, 0]]) == [(16, 5), (4, 0)]
    for bad in ([], [[16]], [[0, 1]], [[4, -1]], [[4, 1], [4, 1]], "16,5", [[4.0, 1]]):
        with pytest.raises(ValueError, match="configurations"):
            check_configurations("configurations", bad)
    assert check_positive_floats("radii", [0.1, 1]) == [0.1, 1.0]
    for bad in ([], [0.0], [1, 1], "1", [-1]):
        with pytest.raises(ValueError, match="radii"):
            check_positive_floats("radii", bad)
