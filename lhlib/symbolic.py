"""The paper's derivations as SymPy objects, so the chapters display them and the tests assert them.

API (every function returns SymPy expressions, matrices or small dataclasses of them; nothing is
only printed):

Chapter 01 (section 3, the loss difference)
    ``running_mean(n)``                    ``L_n = (1/n) sum_{i<=n} ell_i`` (symbolic sum)
    ``split_last(expr)``                   rewrite ``sum_{i=1}^{k+1}`` as ``sum_{i=1}^{k} + (term k+1)``
    ``loss_difference_identity()``         ``L_{k+1} - L_k`` and ``(ell_{k+1} - L_k)/(k+1)``, general k
    ``taylor_generic(P)``                  second-order Taylor of a generic ``ell(theta)``, ``P`` params
    ``expansion_difference()``             difference of the two expansions, split into value,
                                           gradient and Hessian parts, with the paper's coefficients
    ``assumption1_consequence()``          Assumption 1 forces ``grad ell_{k+1}(theta*) = 0``

Chapter 02 (section 4 and appendix A)
    ``softmax_ce_hessian(K, label)``       the Hessian of cross-entropy w.r.t. logits, and ``diag(p) - p p^T``
    ``softmax_ce_hessian_general()``       the same for symbolic ``K`` (index form with Kronecker deltas)
    ``softmax_hessian_facts(K)``           quadratic form = variance, Gershgorin radii, Frobenius terms
    ``relu_network(widths)``               a bias-free ReLU net with symbolic weights, inputs and masks:
                                           logits, Jacobian, ``F`` from ``G^(p) kron x^(p)T``, H-term
    ``geometric_sum(M, L)``                SymPy's summation of ``sum_p M^{2p}`` and the paper's closed form
    ``theorem1_expressions()``             every displayed form of Theorem 1, the paper's and the corrected
    ``lemma_expressions()``                Lemma 1 as stated, as proved, and as the derivation gives it
    ``equation(lhs, rhs, rel)``            LaTeX for ``lhs rel rhs`` (for ``IPython.display.Math``)
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

__all__ = [
    "i", "k", "ell",
    "running_mean", "split_last", "loss_difference_identity", "taylor_generic", "ExpansionDifference",
    "expansion_difference", "assumption1_consequence", "softmax_ce_hessian", "softmax_ce_hessian_general",
    "softmax_hessian_facts", "ReluNetwork", "relu_network", "geometric_sum", "theorem1_expressions",
    "lemma_expressions", "equation", "is_zero",
]

i = sp.Symbol("i", integer=True, positive=True)
k = sp.Symbol("k", integer=True, positive=True)
ell = sp.IndexedBase(r"\ell")


def is_zero(expr) -> bool:
    """True when SymPy simplifies ``expr`` (scalar or matrix) to exactly zero."""
    if isinstance(expr, sp.MatrixBase):
        return all(sp.simplify(e) == 0 for e in expr)
    return sp.simplify(expr) == 0


def equation(lhs, rhs, rel: str = "=") -> str:
    """LaTeX of ``lhs rel rhs``; ``rel`` is ``=``, ``<=``, ``\\approx`` or any LaTeX relation."""
    rel = {"<=": r"\leq", ">=": r"\geq", "~": r"\approx"}.get(rel, rel)
    return f"{sp.latex(lhs)} {rel} {sp.latex(rhs)}"


# --------------------------------------------------------------------------------------------
# Chapter 01: the loss difference
# --------------------------------------------------------------------------------------------

def running_mean(n, term=None):
    """``(1/n) sum_{i=1}^n term_i`` as an unevaluated SymPy sum (``term`` defaults to ``ell_i``)."""
    term = ell[i] if term is None else term
    return sp.Sum(term, (i, 1, n)) / n


def split_last(expr):
    """Replace every ``Sum(f, (i, 1, k + 1))`` in ``expr`` by ``Sum(f, (i, 1, k)) + f(k + 1)``.

    Each rewrite is checked by SymPy itself: ``Sum(f,(i,1,k)) + Sum(f,(i,k+1,k+1)) - Sum(f,(i,1,k+1))``
    must simplify to 0 (SymPy combines adjacent ranges), and ``Sum(f,(i,k+1,k+1))`` must evaluate to
    ``f(k + 1)``; a failure raises AssertionError.
    """
    def rewrite(s):
        f, (var, lo, hi) = s.function, s.limits[0]
        if sp.simplify(hi - (k + 1)) != 0:
            return s
        head, last = sp.Sum(f, (var, lo, k)), sp.Sum(f, (var, k + 1, k + 1))
        assert sp.simplify(head + last - s) == 0, "SymPy could not confirm the sum split"
        assert sp.simplify(last.doit() - f.subs(var, k + 1)) == 0
        return head + f.subs(var, k + 1)

    return expr.replace(lambda e: isinstance(e, sp.Sum), rewrite)


def loss_difference_identity() -> dict:
    """Section 3.1: ``L_{k+1} - L_k = (ell_{k+1} - L_k)/(k+1)`` for general ``k``.

    Returns ``L_k``, ``L_k1``, ``difference`` (as defined), ``split`` (after :func:`split_last`),
    ``paper`` (the paper's right-hand side) and ``residual`` (``split - paper``, simplified: 0).
    """
    L_k, L_k1 = running_mean(k), running_mean(k + 1)
    difference = L_k1 - L_k
    split = split_last(difference)
    paper = (ell[k + 1] - L_k) / (k + 1)
    return {"L_k": L_k, "L_k1": L_k1, "difference": difference, "split": split, "paper": paper,
            "residual": sp.simplify(split - paper)}


def taylor_generic(P: int = 2) -> dict:
    """Second-order Taylor expansion at ``theta*`` of a generic function of ``P`` parameters.

    The function is the general cubic polynomial in ``u_1..u_P`` with free symbolic coefficients, so
    its value, gradient and Hessian at ``theta*`` are arbitrary and the cubic part stands for the
    remainder. Along ``theta = theta* + t delta`` SymPy's series in ``t`` gives ``coefficients`` of
    ``t^0, t^1, t^2``; ``expected`` are ``ell(theta*)``, ``grad ell(theta*)^T delta`` and
    ``(1/2) delta^T H(theta*) delta``; ``residuals`` their differences (all 0). ``remainder`` is the
    ``t^3`` coefficient, why the error of the expansion is ``O(||theta - theta*||^3)``.
    """
    from itertools import combinations_with_replacement

    t = sp.Symbol("t")
    u = sp.symbols(f"u_1:{P + 1}")
    theta_star = sp.symbols(f"theta^*_1:{P + 1}")
    delta = sp.symbols(f"delta_1:{P + 1}")
    f = 0
    for degree in range(4):
        for combo in combinations_with_replacement(range(P), degree):
            name = "c_{" + ("".join(str(c + 1) for c in combo) or "0") + "}"
            f += sp.Symbol(name) * sp.Mul(*[u[c] for c in combo])
    at = dict(zip(u, theta_star))
    along = f.subs({uu: a + t * d for uu, a, d in zip(u, theta_star, delta)}, simultaneous=True)
    series = sp.expand(along)
    coefficients = [series.coeff(t, n) for n in range(3)]
    d = sp.Matrix(delta)
    grad = sp.Matrix([sp.diff(f, uu) for uu in u]).subs(at, simultaneous=True)
    hess = sp.hessian(f, u).subs(at, simultaneous=True)
    expected = [f.subs(at, simultaneous=True), (grad.T * d)[0, 0], sp.Rational(1, 2) * (d.T * hess * d)[0, 0]]
    residuals = [sp.expand(c - e) for c, e in zip(coefficients, expected)]
    return {"t": t, "function": f, "series": series, "coefficients": coefficients, "expected": expected,
            "residuals": residuals, "remainder": series.coeff(t, 3)}


@dataclass(frozen=True)
class ExpansionDifference:
    """Difference of the second-order expansions of ``L_{k+1}`` and ``L_k`` at a common point.

    Per sample the expansion is ``a_i + s_i + q_i / 2`` with ``a_i = ell_i(theta*)``,
    ``s_i = grad ell_i(theta*)^T delta`` and ``q_i = delta^T H_i(theta*) delta``. ``total`` is the
    difference as SymPy gives it (after splitting the last terms); ``value``, ``gradient``, ``hessian``
    its three parts; ``hessian_coefficient`` the factor in front of
    ``q_{k+1} - (1/k) sum q_i`` (SymPy: ``1/(2(k+1))``), ``paper_hessian_coefficient`` the paper's.
    """

    total: sp.Expr
    value: sp.Expr
    gradient: sp.Expr
    hessian: sp.Expr
    residual: sp.Expr
    value_coefficient: sp.Expr
    hessian_coefficient: sp.Expr
    paper_value_coefficient: sp.Expr
    paper_hessian_coefficient: sp.Expr


a_ = sp.IndexedBase("a")
s_ = sp.IndexedBase("s")
q_ = sp.IndexedBase("q")


def expansion_difference() -> ExpansionDifference:
    """Section 3.2: expand ``L_k`` and ``L_{k+1}`` to second order (the Hessian of a mean is the mean of
    the Hessians, so ``T[L_n] = (1/n) sum_i (a_i + s_i + q_i/2)``) and subtract, for general ``k``."""
    per_sample = a_[i] + s_[i] + q_[i] / 2
    expand = lambda n: sp.expand(sp.Sum(per_sample, (i, 1, n))) / n
    total = split_last(expand(k + 1)) - expand(k)
    mean = lambda base: sp.Sum(base[i], (i, 1, k)) / k
    value = (a_[k + 1] - mean(a_)) / (k + 1)
    gradient = (s_[k + 1] - mean(s_)) / (k + 1)
    hessian = (q_[k + 1] - mean(q_)) / (2 * (k + 1))
    residual = sp.simplify(sp.expand(total - value - gradient - hessian))
    # coefficients read off SymPy's total: derivative with respect to the new sample's terms
    value_coefficient = sp.cancel(sp.expand(total).coeff(a_[k + 1]))
    hessian_coefficient = sp.cancel(sp.expand(total).coeff(q_[k + 1]))
    return ExpansionDifference(total, value, gradient, hessian, residual, value_coefficient,
                               hessian_coefficient, 1 / (k + 1), 1 / (k + 1))


def assumption1_consequence() -> dict:
    """``(k+1) grad L_{k+1} - k grad L_k = grad ell_{k+1}``: if both gradients vanish (Assumption 1),
    so does the new sample's own gradient. ``g`` stands for per-sample gradients (componentwise)."""
    g = sp.IndexedBase("g")
    lhs = (k + 1) * running_mean(k + 1, g[i]) - k * running_mean(k, g[i])
    return {"lhs": lhs, "split": sp.simplify(split_last(lhs)), "rhs": g[k + 1],
            "residual": sp.simplify(split_last(lhs) - g[k + 1])}


# --------------------------------------------------------------------------------------------
# Chapter 02: cross-entropy Hessian, Gauss-Newton structure, Theorem 1, Lemma 1
# --------------------------------------------------------------------------------------------

def softmax_ce_hessian(K: int = 3, label: int = 0) -> dict:
    """``ell(z) = -log softmax(z)_label`` for ``K`` symbolic logits: its Hessian ``H`` (by SymPy),
    ``A = diag(p) - p p^T`` and ``residual = simplify(H - A)`` (the zero matrix)."""
    z = sp.symbols(f"z_1:{K + 1}", real=True)
    denominator = sum(sp.exp(v) for v in z)
    loss = sp.log(denominator) - z[label]
    hess = sp.hessian(loss, z)
    p = sp.Matrix([sp.exp(v) / denominator for v in z])
    A = sp.diag(*p) - p * p.T
    return {"z": z, "loss": loss, "hessian": hess, "p": p, "A": A, "residual": sp.simplify(hess - A),
            "gradient": sp.Matrix([sp.diff(loss, v) for v in z]), "label": label}


def softmax_ce_hessian_general() -> dict:
    """The general-``K`` pattern: ``d^2/dz_a dz_b log sum_j e^{z_j} = p_a delta_ab - p_a p_b``.

    SymPy differentiates the symbolic sum (Kronecker deltas appear); the sifting sums are then
    evaluated for ``1 <= a, b <= K``. ``residual`` is the difference with ``p_a delta_ab - p_a p_b``.
    """
    j = sp.Symbol("j", integer=True, positive=True)
    a, b, K = sp.symbols("a b K", integer=True, positive=True)
    z = sp.IndexedBase("z")
    S = sp.Sum(sp.exp(z[j]), (j, 1, K))
    second = sp.diff(sp.log(S), z[a], z[b])
    # a, b in 1..K: every sifting sum picks its term (SymPy returns Piecewise((term, K >= a), (0, True)))
    sifted = second.doit().replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[0][0])
    p = lambda c: sp.exp(z[c]) / S
    pattern = p(a) * sp.KroneckerDelta(a, b) - p(a) * p(b)
    return {"second_derivative": second, "sifted": sifted, "pattern": pattern,
            "residual": sp.simplify(sifted - pattern)}


def softmax_hessian_facts(K: int = 3) -> dict:
    """Facts about ``A = diag(p) - p p^T`` on the simplex (``p_K = 1 - sum of the others``):

    * ``quadratic_form`` ``v^T A v`` equals ``variance`` ``sum_k p_k (v_k - sum_l p_l v_l)^2``;
    * ``gershgorin_radius[k]`` ``sum_{l != k} |A_kl| = p_k (1 - p_k)``, so every eigenvalue lies in
      ``[0, 2 p_k (1 - p_k)] subset [0, 1/2]``;
    * ``frobenius_squared`` equals the paper's ``sum p_k^2 (1 - p_k)^2 + sum_{k != l} p_k^2 p_l^2``;
    * ``eigenvalues_K2``: for ``K = 2``, ``{0, 2 p (1 - p)}``, maximal ``1/2`` at ``p = 1/2``;
    * ``trace``: ``1 - sum p_k^2`` (``A`` is PSD, so ``||A||_F <= trace < 1``);
    * ``frobenius_identity``: ``||A||_F^2 = s_2 (1 - s_2) - 2 sum_k p_k (p_k - s_2)^2`` with
      ``s_2 = sum p_k^2``, hence ``||A||_F <= sqrt(s_2 (1 - s_2)) <= 1/2``: the Frobenius route, done
      tightly, also gives 1/2 (the paper's cruder steps give ``sqrt 2``).
    """
    ps = sp.symbols(f"p_1:{K + 1}", positive=True)
    v = sp.symbols(f"v_1:{K + 1}", real=True)
    simplex = {ps[-1]: 1 - sum(ps[:-1])}
    p = sp.Matrix(ps)
    A = sp.diag(*p) - p * p.T
    vv = sp.Matrix(v)
    quadratic = sp.expand((vv.T * A * vv)[0, 0])
    mean = sum(pk * vk for pk, vk in zip(ps, v))
    variance = sum(pk * (vk - mean) ** 2 for pk, vk in zip(ps, v))
    radius = [sum(-A[r, c] for c in range(K) if c != r) for r in range(K)]  # off-diagonals are -p_r p_c < 0
    frob = sum(A[r, c] ** 2 for r in range(K) for c in range(K))
    paper_frob = sum(pk**2 * (1 - pk) ** 2 for pk in ps) + sum(ps[r] ** 2 * ps[c] ** 2 for r in range(K) for c in range(K) if r != c)
    s2 = sum(pk**2 for pk in ps)
    frobenius_identity = s2 * (1 - s2) - 2 * sum(pk * (pk - s2) ** 2 for pk in ps)
    q = sp.Symbol("p", positive=True)
    A2 = sp.Matrix([[q * (1 - q), -q * (1 - q)], [-q * (1 - q), q * (1 - q)]])
    ev2 = list(A2.eigenvals().keys())
    top = 2 * q * (1 - q)
    argmax = sp.solve(sp.diff(top, q), q)
    return {
        "p": p, "A": A, "quadratic_form": quadratic, "variance": variance,
        "variance_residual": sp.simplify(sp.expand((quadratic - variance).subs(simplex))),
        "gershgorin_radius": radius,
        "gershgorin_residuals": [sp.simplify((radius[r] - ps[r] * (1 - ps[r])).subs(simplex)) for r in range(K)],
        "gershgorin_max": sp.maximum(2 * q * (1 - q), q, sp.Interval(0, 1)),
        "frobenius_squared": frob, "paper_frobenius_residual": sp.simplify(frob - paper_frob),
        "trace": sp.simplify(A.trace().subs(simplex)),
        "trace_residual": sp.simplify((A.trace() - (1 - sum(pk**2 for pk in ps))).subs(simplex)),
        "frobenius_identity": frobenius_identity,
        "frobenius_identity_residual": sp.simplify(sp.expand((frob - frobenius_identity).subs(simplex))),
        "frobenius_max": sp.maximum(q * (1 - q), q, sp.Interval(0, 1)),
        "A_K2": A2, "eigenvalues_K2": ev2, "top_eigenvalue_K2": top, "argmax_K2": argmax,
        "max_K2": top.subs(q, argmax[0]),
    }


@dataclass(frozen=True)
class ReluNetwork:
    """A bias-free ReLU network with symbolic weights, input and ReLU masks (one activation region).

    ``weights[p-1]`` is ``W^(p)``; ``masks[p-1]`` the diagonal ``D^(p)`` (symbols ``d`` standing for
    0 or 1); ``activations[p-1]`` is ``x^(p)``; ``G[p-1] = dz/dz^(p)``; ``theta`` the row-major
    flattened weights; ``jacobian`` ``dz/dtheta`` by SymPy; ``F`` the stacked ``G^(p) kron x^(p)T``;
    ``logit_hessians[c]`` is ``grad^2 z_c`` (the H-term is ``sum_c (p - y)_c grad^2 z_c``);
    ``block_slices`` the columns of each layer.
    """

    weights: list
    masks: list
    x: sp.Matrix
    activations: list
    logits: sp.Matrix
    G: list
    theta: list
    jacobian: sp.Matrix
    F: sp.Matrix
    logit_hessians: list
    block_slices: list


def relu_network(widths=(2, 2, 2)) -> ReluNetwork:
    """Build :class:`ReluNetwork` for layer widths ``(n, h_1, ..., K)`` (``L = len(widths) - 1``).

    Inside one activation region the ReLU is multiplication by the fixed 0/1 mask ``D^(p)``, so
    ``z = W^(L) D^(L-1) W^(L-1) ... D^(1) W^(1) x`` is a polynomial in the weights.
    """
    L = len(widths) - 1
    weights = [sp.Matrix(widths[p + 1], widths[p], lambda r, c, p=p: sp.Symbol(f"w^{{({p + 1})}}_{{{r + 1}{c + 1}}}"))
               for p in range(L)]
    masks = [sp.diag(*sp.symbols(f"d^{{({p + 1})}}_1:{widths[p + 1] + 1}")) for p in range(L - 1)]
    x = sp.Matrix(sp.symbols(f"x_1:{widths[0] + 1}"))
    activations = [x]
    for p in range(L - 1):
        activations.append(masks[p] * weights[p] * activations[-1])
    logits = sp.expand(weights[-1] * activations[-1])
    G = [sp.eye(widths[-1])]
    for p in range(L - 2, -1, -1):
        G.insert(0, G[0] * weights[p + 1] * masks[p])
    theta = [w for W in weights for w in W]  # row-major per layer, layers in order
    jacobian = logits.jacobian(theta)
    F = sp.Matrix.hstack(*[sp.kronecker_product(G[p], activations[p].T) for p in range(L)])
    logit_hessians = [sp.hessian(logits[c], theta) for c in range(widths[-1])]
    slices, start = [], 0
    for W in weights:
        slices.append((start, start + len(W)))
        start += len(W)
    return ReluNetwork(weights, masks, x, activations, logits, G, theta, jacobian, F, logit_hessians, slices)


M_W, M_x, M, h = sp.symbols("M_W M_x M h", positive=True)
L_ = sp.Symbol("L", integer=True, positive=True)
p_ = sp.Symbol("p", integer=True, positive=True)


def _generic_branch(expr):
    """The ``otherwise`` branch of a (possibly nested) Piecewise: the value for ``M_W != 1``."""
    folded = sp.piecewise_fold(expr)
    return folded.args[-1][0] if isinstance(folded, sp.Piecewise) else folded


def _unit_branch(expr):
    folded = sp.piecewise_fold(expr)
    return folded.args[0][0] if isinstance(folded, sp.Piecewise) else folded


def geometric_sum(base=M_W, L=L_) -> dict:
    """``sum_{p=1}^L base^{2p}`` summed by SymPy (a Piecewise with the ``base = 1`` case) and the paper's
    closed form ``base^2 (base^{2L} - 1)/(base^2 - 1)``; ``residual`` compares them for ``base != 1``."""
    summed = sp.Sum(base ** (2 * p_), (p_, 1, L))
    done = summed.doit()
    paper = base**2 * (base ** (2 * L) - 1) / (base**2 - 1)
    generic, at_one = _generic_branch(done), _unit_branch(done)
    return {"sum": summed, "value": done, "paper": paper, "residual": sp.simplify(generic - paper),
            "at_one": at_one, "paper_limit_at_one": sp.limit(paper, base, 1)}


def theorem1_expressions() -> dict:
    """Theorem 1 in every form the paper and the book use (symbols ``M_W, M_x, L, h, M``).

    ``paper_chain_sum``: A.2's last sum with all norms equal to ``M_W``,
    ``sum_p (M_x^2 M_W^{2(p-1)} + 1) M_W^{2(L-p+1)}``; ``paper_chain_value`` SymPy's value of it;
    ``paper`` the theorem's statement over sqrt2, with ``paper_residual`` = 0 for ``M_W != 1``;
    ``paper_L1`` its ``L = 1`` case; ``hidden_form`` the statement with ``M_W = h M``;
    ``corrected_sum`` ``sum_p M_W^{2(p-1)} M_W^{2(L-p)}`` and ``corrected`` = ``(1/2) L M_x^2 M_W^{2(L-1)}``;
    ``ratio_corrected_over_paper`` for comparing the two.
    """
    sqrt2 = sp.sqrt(2)
    chain_sum = sp.Sum((M_x**2 * M_W ** (2 * (p_ - 1)) + 1) * M_W ** (2 * (L_ - p_ + 1)), (p_, 1, L_))
    chain_value = chain_sum.doit()
    chain_generic = _generic_branch(chain_value)
    paper = sqrt2 * (L_ * M_x**2 * M_W ** (2 * L_) + M_W**2 * (M_W ** (2 * L_) - 1) / (M_W**2 - 1))
    corrected_sum = sp.Sum(M_W ** (2 * (p_ - 1)) * M_W ** (2 * (L_ - p_)), (p_, 1, L_))
    corrected = sp.Rational(1, 2) * M_x**2 * corrected_sum.doit()  # the summand does not depend on p
    return {
        "paper_chain_sum": chain_sum, "paper_chain_value": chain_value,
        "paper": paper, "paper_residual": sp.simplify(sqrt2 * chain_generic - paper),
        "paper_L1": sp.factor(sp.simplify(paper.subs(L_, 1))),
        "paper_at_one": sp.limit(paper, M_W, 1),
        "hidden_form": paper.subs(M_W, h * M),
        "corrected_sum": corrected_sum, "corrected": sp.simplify(corrected),
        "corrected_closed": sp.Rational(1, 2) * L_ * M_x**2 * M_W ** (2 * (L_ - 1)),
        "corrected_L1": sp.simplify(corrected.subs(L_, 1)),
    }


def lemma_expressions() -> dict:
    """Lemma 1 (A.3): ``stated`` (parenthesis as printed), ``proved`` (``2/(k+1)(M_l + M_H R^2)``),
    ``stated_minus_proved`` (zero only when ``R = 1``), and ``derived``: the bound the second-order
    expansion gives, ``(1/(k+1)) (M_l + (1/2) M_H R^2)`` for non-negative losses and PSD (G-term)
    Hessians, with ``derived_indefinite`` ``(1/(k+1)) (M_l + M_H R^2)`` when the Hessians may be indefinite.
    """
    M_l, M_H, R = sp.symbols(r"M_\ell M_H R", positive=True)
    sqrt2 = sp.sqrt(2)
    first = L_ * sqrt2 * M_x**2 * M_W ** (2 * L_)
    geometric = sqrt2 * M_W**2 * (M_W ** (2 * L_) - 1) / (M_W**2 - 1)
    stated = 2 / (k + 1) * (M_l + first + geometric * R**2)
    proved = 2 / (k + 1) * (M_l + M_H * R**2)
    proved_sub = proved.subs(M_H, first + geometric)
    # the proof's assembly: value term (<= 2 M_l) and Hessian term (<= 2 M_H) each over k+1
    assembled = 2 * M_l / (k + 1) + 2 * M_H / (k + 1) * R**2
    derived = (M_l + sp.Rational(1, 2) * M_H * R**2) / (k + 1)
    return {
        "symbols": (M_l, M_H, R), "stated": stated, "proved": proved, "assembled": assembled,
        "assembled_residual": sp.simplify(assembled - proved),
        "stated_minus_proved": sp.factor(sp.simplify(stated - proved_sub)),
        "derived": derived, "derived_indefinite": (M_l + M_H * R**2) / (k + 1),
        "ratio_derived_over_proved": sp.simplify(derived / proved),
    }
