"""The errata page: each erratum's claim checked independently, and its references resolve."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch
from torch.func import functional_call

from lhlib.engine.landscape import ema, loss_difference_curves, mean_abs_deviation, per_sample_losses, random_orders
from lhlib.engine.models import build_mlp
from lhlib.engine.per_sample import gauss_newton_jacobian, softmax_hessian
from lhlib.engine.symbolic import softmax_ce_hessian
from lhlib.engine.tangents import forward_factors


def test_permutation_average_sees_only_loss_spread():
    """The curves averaged over random orders are a function of the per-sample losses at one fixed
    point, and only of their spread: shifting every loss by a constant changes nothing, scaling them
    scales the curves, and the last point is |l_last - mean| / (N - 1) exactly. Repeating the orders
    cannot show anything about how a different training run would change the curves."""
    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(400, generator=gen, dtype=torch.float64) ** 3 * 2.0
    base = loss_difference_curves(losses, permutations=100, seed=5)
    shifted = loss_difference_curves(losses + 7.0, permutations=100, seed=5)
    scaled = loss_difference_curves(3.0 * losses, permutations=100, seed=5)
    assert torch.allclose(base, shifted, rtol=1e-8, atol=1e-12)
    assert torch.allclose(3.0 * base, scaled, rtol=1e-10, atol=1e-14)

    n = losses.numel()
    last = losses[random_orders(n, 100, 5)[:, -1]]
    assert torch.allclose(base[:, -1], (last - losses.mean()).abs() / (n - 1), rtol=1e-9, atol=1e-15)

    # Over many orders the last point averages to MAD / (N - 1), MAD = mean_i |l_i - mean|: the
    # expectation over orders is a dispersion of the losses, nothing else.
    many = loss_difference_curves(losses, permutations=4000, seed=11)
    assert float(many[:, -1].mean()) == pytest.approx(float(mean_abs_deviation(losses)) / (n - 1), rel=0.05)


def _flat_loss(model, x, y):
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def loss(flat):
        params = dict(zip(names, (chunk.view(shape) for chunk, shape in zip(flat.split(sizes), shapes))))
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    flat = torch.cat([p.detach().flatten() for _, p in model.named_parameters()])
    return loss, flat


def test_hessian_rank_is_not_K():
    """A = diag(p) - p p^T annihilates the all-ones vector, so one sample's G-term has rank at most
    K - 1, not K; the G-term of k samples has rank up to k (K - 1), and the full Hessian of the mean
    loss has far more than K nonzero eigenvalues."""
    K, k = 3, 12
    model = build_mlp(4, 6, 1, K, seed=0).double()
    x = torch.randn(k, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.arange(k) % K
    logits = forward_factors(model, x).logits
    A = softmax_hessian(logits)
    assert torch.allclose(A @ torch.ones(K, dtype=torch.float64), torch.zeros(k, K, dtype=torch.float64), atol=1e-15)

    g_terms, ranks = [], []
    for i in range(k):
        F = gauss_newton_jacobian(model, x[i])
        g = F.T @ A[i] @ F
        g_terms.append(g)
        ranks.append(int(torch.linalg.matrix_rank(g, rtol=1e-9)))
    assert max(ranks) == K - 1  # never K
    mean_g = sum(g_terms) / k
    rank_mean = int(torch.linalg.matrix_rank(mean_g, rtol=1e-9))
    assert rank_mean == sum(ranks) > K

    loss, flat = _flat_loss(model, x, y)
    hessian = torch.autograd.functional.hessian(loss, flat)
    assert torch.allclose(hessian, hessian.T, atol=1e-12)
    assert int(torch.linalg.matrix_rank(hessian, rtol=1e-9)) > rank_mean > K


def test_logit_hessian_is_the_single_label_one():
    """diag(p) - p p^T is the logit Hessian of softmax cross-entropy for a one-hot label (the paper's
    section 3.3). For a multi-hot target it is (sum_k y_k) times that, and the usual multi-label loss
    (independent sigmoids with binary cross-entropy) has the diagonal Hessian diag(s (1 - s))."""
    single = softmax_ce_hessian(K=3, label=1)
    assert single["residual"] == sp.zeros(3, 3)

    z = sp.symbols("z1:4", real=True)
    y = sp.symbols("y1:4", nonnegative=True)
    norm = sum(sp.exp(v) for v in z)
    p = sp.Matrix([sp.exp(v) / norm for v in z])
    A = sp.diag(*p) - p * p.T
    multi_hot = -sum(yk * sp.log(pk) for yk, pk in zip(y, p))
    hessian = sp.hessian(multi_hot, z)
    assert (hessian - sum(y) * A).applyfunc(sp.cancel) == sp.zeros(3, 3)
    # With two labels on, the logit Hessian is 2 A, not the paper's A.
    two_on = (hessian.subs({y[0]: 1, y[1]: 1, y[2]: 0}) - A).applyfunc(sp.cancel)
    assert two_on == A.applyfunc(sp.cancel) and two_on != sp.zeros(3, 3)

    s = [1 / (1 + sp.exp(-v)) for v in z]
    bce = -sum(yk * sp.log(sk) + (1 - yk) * sp.log(1 - sk) for yk, sk in zip(y, s))
    assert (sp.hessian(bce, z) - sp.diag(*[sk * (1 - sk) for sk in s])).applyfunc(sp.cancel) == sp.zeros(3, 3)


def test_ema_distorts_one_over_k():
    """The figures' smoothing e_0 = d_0, e_i = 0.99 e_{i-1} + 0.01 d_i applied to an exact
    d_k = 1/(k+1): for the first few hundred k the smoothed value is many times d_k (the initial
    values decay only like 0.99^k), and even at k = 1000 it is still above d_k; only at the end of
    a 10 000-point curve does it approach d_k. The weight on the new value is 0.01, not 0.99."""
    k = np.arange(1, 10_000)
    d = 1.0 / (k + 1)
    smoothed = ema(d, 0.99)
    ratio = smoothed / d
    assert smoothed[1] == pytest.approx(0.99 * d[0] + 0.01 * d[1], rel=1e-12)
    assert ratio[100 - 1] > 10
    assert ratio[:500].max() > 15
    assert 1.1 < ratio[1000 - 1] < 1.2
    assert 1.0 < ratio[-1] < 1.02
    # A factor read as the weight of the new value (s_t = a d_t + (1 - a) s_{t-1}), a = 0.99,
    # would be almost no smoothing at all.
    assert np.max(np.abs(ema(d, 0.01) / d - 1.0)[10:]) < 1e-3


def test_fixed_point_convergence_needs_no_bounded_input_space():
    """At a fixed point, every finite dataset gives (k+1)|L_{k+1} - L_k| <= max_i l_i - min_i l_i
    for every order and k, whatever the inputs: here one input is scaled by 10^4, far outside the
    [-1, 1] boxes of both experiments, and the curves still decay like 1/k."""
    model = build_mlp(5, 8, 1, 4, seed=2).double()
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(300, 5, generator=gen, dtype=torch.float64) * 2 - 1
    x[17] *= 1e4
    y = torch.randint(0, 4, (300,), generator=gen)
    losses = per_sample_losses(model, x, y)
    assert losses.max() > 10 * losses.median()  # the outlying input gives an outlying loss
    curves = loss_difference_curves(losses, permutations=50, seed=0)
    ks = torch.arange(1, 300, dtype=torch.float64)
    spread = float(losses.max() - losses.min())
    assert float(((ks + 1) * curves).max()) <= spread * (1 + 1e-12)
    # Hence the mean curve is below spread / (k + 1) at every k: it tends to zero like 1/k.
    assert bool((curves.mean(0) <= spread / (ks + 1) * (1 + 1e-12)).all())
    assert float(curves.mean(0)[-1]) <= spread / 300


ROOT = Path(__file__).resolve().parents[2]


def test_errata_references_resolve():
    """Every {ref} of the errata page names a label defined in chapters 01/02, every test it cites exists."""
    errata = (ROOT / "book" / "errata.md").read_text()
    labels = set()
    for chapter in ("01_loss_difference", "02_hessian_bound"):
        notebook = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
        for cell in notebook["cells"]:
            labels |= set(re.findall(r"^\(([a-z0-9-]+)\)=$", "".join(cell["source"]), flags=re.MULTILINE))
    refs = set(re.findall(r"\{ref\}`(?:[^`<]*<)?([a-z0-9-]+)>?`", errata))
    assert refs and refs <= labels, sorted(refs - labels)
    for path, name in re.findall(r"`(tests/[a-z]+/test_[a-z0-9_]+\.py)::([a-z0-9_]+)`", errata):
        assert f"def {name}(" in (ROOT / path).read_text(), (path, name)
    for name in re.findall(r"`(test_[a-z0-9_]+)`", errata):
        assert any(
            f"def {name}(" in (ROOT / "tests" / "engine" / f).read_text()
            for f in ("test_symbolic.py", "test_bounds.py")
        ), name


def test_the_pipeline_takes_its_checkpoint_as_model():
    """Erratum 38: the authors pass the checkpoint as ``model_name``, which ``transformers.pipeline`` does not
    take; the task's default checkpoint is loaded, and it is the one the paper names."""
    import inspect

    import transformers
    from transformers.pipelines import SUPPORTED_TASKS

    parameters = inspect.signature(transformers.pipeline).parameters
    assert "model" in parameters and "model_name" not in parameters
    assert SUPPORTED_TASKS["image-feature-extraction"]["default"]["model"][0] == "google/vit-base-patch16-224"
