"""Every derivation of lhlib.engine.symbolic asserted: identities simplify to 0, coefficients match.

Where the paper's coefficient differs from SymPy's, the test asserts SymPy's and the size of the
discrepancy (recorded in book/errata.md).
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
import sympy as sp
import torch

from lhlib.engine import bounds as B
from lhlib.engine import symbolic as S
from lhlib.engine.per_sample import per_sample_ggn_norms


def test_running_means_give_section_3_1s_identity_for_every_k():
    """Chapter 01 derives the identity from these two pieces; here it is checked for concrete k and losses too."""
    k, ell = S.k, S.ell
    difference = S.split_last(S.running_mean(k + 1) - S.running_mean(k))
    paper = (ell[k + 1] - S.running_mean(k)) / (k + 1)
    assert sp.simplify(difference - paper) == 0
    for kk in range(1, 7):
        values = {ell[j]: sp.Rational(random.Random(kk * 10 + j).randint(1, 50), 7) for j in range(1, kk + 2)}
        lhs = difference.subs(k, kk).doit().subs(values)
        rhs = paper.subs(k, kk).doit().subs(values)
        assert sp.simplify(lhs - rhs) == 0


def test_the_per_object_expansion_comes_from_the_series():
    """SymPy's own series along the ray, read at t = 1: value + slope + curvature / 2."""
    assert sp.expand(S.per_object_expansion() - (S.a_[S.i] + S.s_[S.i] + S.q_[S.i] / 2)) == 0


def test_expansion_difference_coefficients():
    e = S.expansion_difference()
    assert e.residual == 0
    assert sp.simplify(e.value_coefficient - 1 / (S.k + 1)) == 0
    assert sp.simplify(e.value_coefficient - e.paper_value_coefficient) == 0
    # SymPy: the Hessian term carries 1/(2(k+1)); the paper writes 1/(k+1) (a factor 2 too large)
    assert sp.simplify(e.hessian_coefficient - 1 / (2 * (S.k + 1))) == 0
    assert sp.simplify(e.paper_hessian_coefficient / e.hessian_coefficient) == 2


def test_split_last_refuses_nothing_else():
    expr = sp.Sum(S.ell[S.i], (S.i, 1, S.k))
    assert S.split_last(expr) == expr


@pytest.mark.parametrize("K,label", [(2, 0), (3, 1), (4, 3)])
def test_softmax_ce_hessian(K, label):
    r = S.softmax_ce_hessian(K, label)
    assert r["residual"] == sp.zeros(K, K)
    # the gradient is p - y: its label component p_y - 1 is never zero for finite logits
    y = sp.Matrix([1 if c == label else 0 for c in range(K)])
    assert sp.simplify(r["gradient"] - (r["p"] - y)) == sp.zeros(K, 1)


@pytest.mark.parametrize("widths", [(2, 2, 2), (2, 2, 2, 2)])
def test_relu_network_structure(widths):
    net = S.relu_network(widths)
    # F built from G^(p) kron x^(p)T is the Jacobian of the logits
    assert sp.expand(net.jacobian - net.F) == sp.zeros(*net.F.shape)
    # logits are linear in each layer's weights: every diagonal block of grad^2 z_c is zero,
    # while the off-diagonal (cross-layer) blocks are not
    for hess in net.logit_hessians:
        for a0, a1 in net.block_slices:
            assert hess[a0:a1, a0:a1] == sp.zeros(a1 - a0, a1 - a0)
        (a0, a1), (b0, b1) = net.block_slices[-2], net.block_slices[-1]
        assert hess[a0:a1, b0:b1] != sp.zeros(a1 - a0, b1 - b0)


def test_relu_network_gauss_newton_decomposition():
    """Hessian of softmax cross-entropy of the symbolic net = F^T A F + sum_c (p - y)_c grad^2 z_c,
    checked exactly at random rational weights, input and masks."""
    net = S.relu_network((2, 2, 2))
    rng = random.Random(3)
    values = {s: sp.Rational(rng.randint(-9, 9), rng.randint(1, 5)) for s in net.x.free_symbols | set(net.theta)}
    # the masks of the region this point lies in (so that torch sees the same network)
    pre = (net.weights[0] * net.x).subs(values)
    values.update({net.masks[0][c, c]: 1 if bool(pre[c] > 0) else 0 for c in range(2)})
    label = 1
    z = net.logits
    loss = sp.log(sum(sp.exp(v) for v in z)) - z[label]

    def at(e):
        return e.subs(values)

    hess = sp.hessian(loss, net.theta)
    p = sp.Matrix([sp.exp(v) for v in z]) / sum(sp.exp(v) for v in z)
    A = sp.diag(*p) - p * p.T
    y = sp.Matrix([1 if c == label else 0 for c in range(len(z))])
    gterm = net.F.T * A * net.F
    hterm = sum(((p - y)[c] * net.logit_hessians[c] for c in range(len(z))), sp.zeros(len(net.theta)))
    residual = at(hess - gterm - hterm)
    assert all(sp.simplify(e) == 0 for e in residual)
    # and it agrees with torch's dense Hessian of the same network in float64
    w1 = torch.tensor([[float(at(e)) for e in row] for row in net.weights[0].tolist()], dtype=torch.float64)
    w2 = torch.tensor([[float(at(e)) for e in row] for row in net.weights[1].tolist()], dtype=torch.float64)
    x = torch.tensor([float(at(e)) for e in net.x], dtype=torch.float64)
    mask = torch.tensor([float(at(net.masks[0][c, c])) for c in range(2)], dtype=torch.float64)
    assert torch.equal(mask, ((w1 @ x) > 0).double())
    g = per_sample_ggn_norms([w1, w2], x[None], dtype=torch.float64)[0]
    assert float(g) == pytest.approx(float(np.linalg.norm(np.array(at(gterm).evalf(), dtype=float), 2)), rel=1e-9)


def test_h_term_vanishes_for_linear_model():
    net = S.relu_network((3, 2))
    assert all(hess == sp.zeros(len(net.theta)) for hess in net.logit_hessians)


def test_geometric_sum():
    r = S.geometric_sum()
    assert r["residual"] == 0
    assert r["at_one"] == S.L_ and r["paper_limit_at_one"] == S.L_


def test_theorem1_statement():
    """The transcription: its L = 1 form, its limit at M_W = 1 and lhlib's numeric evaluator agree with it.
    (Chapter 02 derives A.2's chain and the corrected sum in its cells and asserts them against it.)"""
    t = S.theorem1_statement()
    assert sp.simplify(t.subs(S.L_, 1) - sp.sqrt(2) * S.M_W**2 * (S.M_x**2 + 1)) == 0
    assert sp.simplify(sp.limit(t, S.M_W, 1) - sp.sqrt(2) * S.L_ * (S.M_x**2 + 1)) == 0
    chain = sp.Sum((S.M_x**2 * S.M_W ** (2 * (S.p_ - 1)) + 1) * S.M_W ** (2 * (S.L_ - S.p_ + 1)), (S.p_, 1, S.L_))
    assert sp.simplify(sp.sqrt(2) * S.generic_branch(chain.doit()) - t) == 0
    for L in (1, 2, 4):
        for mw in (sp.Rational(1, 2), sp.Rational(3, 2)):
            val = float(t.subs({S.L_: L, S.M_W: mw, S.M_x: 3}))
            assert val == pytest.approx(B.theorem1_constant(3.0, float(mw), L), rel=1e-12)
            corrected = L * 3**2 * float(mw) ** (2 * (L - 1)) / 2  # chapter 02 derives this closed form
            assert corrected == pytest.approx(B.corrected_constant(3.0, float(mw), L), rel=1e-12)
    # hidden-size form: leading behaviour (L M_x^2 + 1) sqrt2 M^{2L} h^{2L} as h -> oo
    for L in (1, 2, 3):
        lead = sp.limit(t.subs(S.M_W, S.h * S.M).subs(S.L_, L) / S.h ** (2 * L), S.h, sp.oo)
        assert sp.simplify(lead - sp.sqrt(2) * S.M ** (2 * L) * (L * S.M_x**2 + 1)) == 0


def test_box_bound_against_corners():
    """box_bound's interval arithmetic equals the brute-force maximum over the corners of the box."""
    rng = random.Random(7)
    a, q = S.a_, S.q_
    for _ in range(20):
        kk = rng.randint(1, 5)
        c1, c2, c3, c4 = (sp.Rational(rng.randint(-9, 9), rng.randint(1, 4)) for _ in range(4))
        (la, ha), (lq, hq) = sorted(rng.sample(range(-5, 6), 2)), sorted(rng.sample(range(-5, 6), 2))
        expr = (
            c1 * a[S.k + 1] + c2 * sp.Sum(a[S.i], (S.i, 1, S.k)) + c3 * q[S.k + 1] + c4 * sp.Sum(q[S.i], (S.i, 1, S.k))
        )
        bound = S.box_bound(expr, {a: (la, ha), q: (lq, hq)})[0].subs(S.k, kk)
        corners = [
            abs(c1 * ta + c2 * sa + c3 * tq + c4 * sq)
            for ta in (la, ha)
            for sa in (kk * la, kk * ha)
            for tq in (lq, hq)
            for sq in (kk * lq, kk * hq)
        ]
        assert sp.simplify(bound - max(corners)) == 0
    with pytest.raises(ValueError, match="not linear"):
        S.box_bound(a[S.k + 1] ** 2, {a: (0, 1)})


def test_lemma_evaluators_are_the_closed_forms_chapter_02_derives():
    """Chapter 02 derives Lemma 1's bounds with box_bound in its cells (and asserts them); lhlib's numeric
    evaluators must be those closed forms: 2/(k+1) (M_l + M_H R^2) as proved, (M_l + M_H R^2/2)/(k+1)
    derived, (M_l + M_H R^2)/(k+1) for full Hessians and (M_l + 2 M_g R + M_H R^2/2)/(k+1) without
    Assumption 1."""
    k, M_l, M_H, R, M_g = 9, 2.0, 3.0, 0.5, 1.5
    assert B.lemma_bound(k, M_l, M_H, R) == pytest.approx(2 / (k + 1) * (M_l + M_H * R**2))
    assert B.lemma_bound_corrected(k, M_l, M_H, R) == pytest.approx((M_l + M_H * R**2 / 2) / (k + 1))
    assert B.lemma_bound_corrected(k, M_l, M_H, R, psd=False) == pytest.approx((M_l + M_H * R**2) / (k + 1))
    assert B.lemma_bound_corrected(k, M_l, M_H, R, M_g=M_g) == pytest.approx(
        (M_l + 2 * M_g * R + M_H * R**2 / 2) / (k + 1)
    )


@pytest.mark.parametrize("L", [1, 2, 3, 4])
def test_theorem1_chain(L):
    c = S.theorem1_chain(L)

    def zero(m):
        return m == sp.zeros(*m.shape)

    assert all(zero(r) for r in c["G_residuals"]) and all(zero(r) for r in c["activation_residuals"])
    assert all(zero(r) for r in c["kron_residuals"]) and zero(c["stack_residual"])
    N = c["N"]
    # the norm bounds read off the structure: G^(p) holds W^(p+1..L), x^(p) holds W^(1..p-1)
    for p in range(1, L + 1):
        assert c["G_bound"][p - 1] == sp.Mul(*N[p:])
        assert c["activation_bound"][p - 1] == c["X"] * sp.Mul(*N[: p - 1])
        assert c["paper_extra_factor"][p - 1] == N[p - 1]  # A.2's product has one factor too many
    assert c["corrected_residual"] == 0 and c["corrected_constant_residual"] == 0 and c["monotone"]
    assert sp.simplify(c["corrected_constant"] - L * S.M_x**2 * S.M_W ** (2 * (L - 1)) / 2) == 0
    # the paper's steps, assembled, give Theorem 1 as stated
    assert c["paper_residual"] == 0
    # and the symbolic bound is what lhlib.engine.bounds evaluates, at the norms of random weights
    rng = np.random.default_rng(L)
    dims = [3] + [4] * (L - 1) + [2]
    weights = [torch.tensor(rng.normal(size=(b, a))) for a, b in itertools.pairwise(dims)]
    x = torch.tensor(rng.normal(size=(1, 3)))
    norms = B.layer_spectral_norms(weights)
    value = c["corrected"].subs({**dict(zip(N, norms.tolist())), c["X"]: float(x.norm())})
    assert float(value) == pytest.approx(float(B.corrected_bound_per_sample(weights, x)[0]), rel=1e-12)


def _fitted_exponent(hs, values):
    return float(np.polyfit(np.log(hs), np.log(values), 1)[0])


@pytest.mark.parametrize("L", [2, 3, 4])
def test_corrected_bound_exponent_of_h_true_shapes(L):
    """Erratum 10: with the true shapes (h x n, h x h, K x h) and |w_ij| <= M, the corrected bound grows
    like h^(2L-3), not like h^(2(L-1)) (which needs M_W = h M, false for the first and last layers);
    with i.i.d. entries of fixed scale (||W|| ~ sqrt(fan_in) + sqrt(fan_out)) like h^(L-1) when h >> n."""
    t = S.corrected_true_shapes(L)
    assert t["degree"] == 2 * L - 3 and t["hM_degree"] == 2 * (L - 1) != t["degree"]
    expected = (
        sp.Rational(1, 2)
        * S.M_x**2
        * S.M ** (2 * (L - 1))
        * ((S.n_in + S.K_out) * S.h ** (2 * L - 3) + (L - 2) * S.n_in * S.K_out * S.h ** (2 * L - 4))
    )
    assert sp.expand(t["product_form"] - expected) == 0
    assert t["asymptotic_exponent"] == 2 * L - 3
    # numerically: matrices of equal entries M attain ||W|| = sqrt(rows cols) M, so lhlib's corrected
    # bound equals the polynomial, and its log-log slope in h approaches 2L - 3
    n, K, m_entry = 3, 2, 0.5
    x = torch.ones(1, n, dtype=torch.float64) / math.sqrt(n)
    hs = np.array([128, 256, 512])
    values = []
    for hh in hs:
        dims = [n] + [int(hh)] * (L - 1) + [K]
        weights = [torch.full((b, a), m_entry, dtype=torch.float64) for a, b in itertools.pairwise(dims)]
        values.append(float(B.corrected_bound_per_sample(weights, x)[0]))
        exact = t["product_form"].subs({S.h: int(hh), S.n_in: n, S.K_out: K, S.M: m_entry, S.M_x: 1})
        assert values[-1] == pytest.approx(float(exact), rel=1e-9)
    assert abs(_fitted_exponent(hs, values) - (2 * L - 3)) < 0.05
    # random matrices with entries of fixed scale: the layer norms grow like sqrt(h), the bound like h^(L-1)
    gen = torch.Generator().manual_seed(L)
    values = []
    for hh in hs:
        dims = [n] + [int(hh)] * (L - 1) + [K]
        weights = [torch.randn(b, a, generator=gen, dtype=torch.float64) for a, b in itertools.pairwise(dims)]
        values.append(float(B.corrected_bound_per_sample(weights, x)[0]))
    slope = _fitted_exponent(hs, values)
    assert abs(slope - (L - 1)) < 0.35 and slope < 2 * (L - 1) - 0.5


def test_equation_latex():
    assert S.equation(sp.Symbol("a"), sp.Symbol("b"), "<=") == r"a \leq b"
