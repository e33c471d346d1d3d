"""The paper's derivations as SymPy objects, so the chapters display them and the tests assert them.

API (every function returns SymPy expressions, matrices or small dataclasses of them; nothing is
only printed):

Chapter 01 (section 3, the loss difference):

* ``running_mean(n)``: ``L_n = (1/n) sum_{i<=n} ell_i`` (symbolic sum)
* ``split_last(expr)``: rewrite ``sum_{i=1}^{k+1}`` as ``sum_{i=1}^{k} + (term k+1)``
* ``loss_difference_identity()``: ``L_{k+1} - L_k`` and ``(ell_{k+1} - L_k)/(k+1)``, general k
* ``taylor_generic(P)``: second-order Taylor of a generic ``ell(theta)``, ``P`` params
* ``expansion_difference()``: difference of the two expansions, split into value, gradient and
  Hessian parts, with the paper's coefficients
* ``assumption1_consequence()``: Assumption 1 forces ``grad ell_{k+1}(theta*) = 0``

Chapter 02 (section 4 and appendix A):

* ``softmax_ce_hessian(K, label)``: the Hessian of cross-entropy w.r.t. logits, and ``diag(p) - p
  p^T``
* ``softmax_ce_hessian_general()``: the same for symbolic ``K`` (index form with Kronecker deltas)
* ``softmax_hessian_facts(K)``: quadratic form = variance, Gershgorin radii, Frobenius terms
* ``relu_network(widths)``: a bias-free ReLU net with symbolic weights, inputs and masks: logits,
  Jacobian, ``F`` from ``G^(p) kron x^(p)T``, H-term
* ``geometric_sum(M, L)``: SymPy's summation of ``sum_p M^{2p}`` and the paper's closed form
* ``theorem1_expressions()``: every displayed form of Theorem 1, the paper's and the corrected
* ``theorem1_chain(L)``: A.2's chain derived on a symbolic L-layer net: structure of G^(p) and
  x^(p), the norm bounds read off it, both assemblies
* ``corrected_true_shapes(L)``: the corrected bound's h-dependence with the true layer shapes
* ``box_bound(expr, ranges)``: largest ``|expr|`` over a box of intervals (triangle inequality and
  its sharper non-negative version)
* ``lemma_expressions()``: Lemma 1 as stated and as proved, and the bounds SymPy derives from the
  expansion (paper's steps; corrected steps)
* ``equation(lhs, rhs, rel)``: LaTeX for ``lhs rel rhs``; ``show_equation`` displays it as math
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

__all__ = [
    "ExpansionDifference",
    "ReluNetwork",
    "assumption1_consequence",
    "box_bound",
    "corrected_true_shapes",
    "ell",
    "equation",
    "expansion_difference",
    "geometric_sum",
    "i",
    "is_zero",
    "k",
    "lemma_expressions",
    "loss_difference_identity",
    "relu_network",
    "running_mean",
    "show_equation",
    "softmax_ce_hessian",
    "softmax_ce_hessian_general",
    "softmax_hessian_facts",
    "split_last",
    "taylor_generic",
    "theorem1_chain",
    "theorem1_expressions",
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
    r"""LaTeX of ``lhs rel rhs``; ``rel`` is ``=``, ``<=``, ``\approx`` or any LaTeX relation."""
    rel = {"<=": r"\leq", ">=": r"\geq", "~": r"\approx"}.get(rel, rel)
    return f"{sp.latex(lhs)} {rel} {sp.latex(rhs)}"


def show_equation(lhs, rhs, rel: str = "=") -> None:
    """Display :func:`equation` as typeset math under the cell (IPython's ``Math``)."""
    from IPython.display import Math, display

    display(Math(equation(lhs, rhs, rel)))


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
    return {
        "L_k": L_k,
        "L_k1": L_k1,
        "difference": difference,
        "split": split,
        "paper": paper,
        "residual": sp.simplify(split - paper),
    }


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
    return {
        "t": t,
        "function": f,
        "series": series,
        "coefficients": coefficients,
        "expected": expected,
        "residuals": residuals,
        "remainder": series.coeff(t, 3),
    }


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
    the Hessians, so ``T[L_n] = (1/n) sum_i (a_i + s_i + q_i/2)``) and subtract, for general ``k``.
    """
    per_sample = a_[i] + s_[i] + q_[i] / 2

    def expand(n):
        return sp.expand(sp.Sum(per_sample, (i, 1, n))) / n

    total = split_last(expand(k + 1)) - expand(k)

    def mean(base):
        return sp.Sum(base[i], (i, 1, k)) / k

    value = (a_[k + 1] - mean(a_)) / (k + 1)
    gradient = (s_[k + 1] - mean(s_)) / (k + 1)
    hessian = (q_[k + 1] - mean(q_)) / (2 * (k + 1))
    residual = sp.simplify(sp.expand(total - value - gradient - hessian))
    # coefficients read off SymPy's total: derivative with respect to the new sample's terms
    value_coefficient = sp.cancel(sp.expand(total).coeff(a_[k + 1]))
    hessian_coefficient = sp.cancel(sp.expand(total).coeff(q_[k + 1]))
    return ExpansionDifference(
        total, value, gradient, hessian, residual, value_coefficient, hessian_coefficient, 1 / (k + 1), 1 / (k + 1)
    )


def assumption1_consequence() -> dict:
    """``(k+1) grad L_{k+1} - k grad L_k = grad ell_{k+1}``: if both gradients vanish (Assumption 1),
    so does the new sample's own gradient. ``g`` stands for per-sample gradients (componentwise).
    """
    g = sp.IndexedBase("g")
    lhs = (k + 1) * running_mean(k + 1, g[i]) - k * running_mean(k, g[i])
    return {
        "lhs": lhs,
        "split": sp.simplify(split_last(lhs)),
        "rhs": g[k + 1],
        "residual": sp.simplify(split_last(lhs) - g[k + 1]),
    }


# --------------------------------------------------------------------------------------------
# Chapter 02: cross-entropy Hessian, Gauss-Newton structure, Theorem 1, Lemma 1
# --------------------------------------------------------------------------------------------


def softmax_ce_hessian(K: int = 3, label: int = 0) -> dict:
    """``ell(z) = -log softmax(z)_label`` for ``K`` symbolic logits: its Hessian ``H`` (by SymPy),
    ``A = diag(p) - p p^T`` and ``residual = simplify(H - A)`` (the zero matrix).
    """
    z = sp.symbols(f"z_1:{K + 1}", real=True)
    denominator = sum(sp.exp(v) for v in z)
    loss = sp.log(denominator) - z[label]
    hess = sp.hessian(loss, z)
    p = sp.Matrix([sp.exp(v) / denominator for v in z])
    A = sp.diag(*p) - p * p.T
    return {
        "z": z,
        "loss": loss,
        "hessian": hess,
        "p": p,
        "A": A,
        "residual": sp.simplify(hess - A),
        "gradient": sp.Matrix([sp.diff(loss, v) for v in z]),
        "label": label,
    }


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

    def p(c):
        return sp.exp(z[c]) / S

    pattern = p(a) * sp.KroneckerDelta(a, b) - p(a) * p(b)
    return {
        "second_derivative": second,
        "sifted": sifted,
        "pattern": pattern,
        "residual": sp.simplify(sifted - pattern),
    }


def softmax_hessian_facts(K: int = 3) -> dict:
    """Facts about ``A = diag(p) - p p^T`` on the simplex (``p_K = 1 - sum of the others``).

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
    paper_frob = sum(pk**2 * (1 - pk) ** 2 for pk in ps) + sum(
        ps[r] ** 2 * ps[c] ** 2 for r in range(K) for c in range(K) if r != c
    )
    s2 = sum(pk**2 for pk in ps)
    frobenius_identity = s2 * (1 - s2) - 2 * sum(pk * (pk - s2) ** 2 for pk in ps)
    q = sp.Symbol("p", positive=True)
    A2 = sp.Matrix([[q * (1 - q), -q * (1 - q)], [-q * (1 - q), q * (1 - q)]])
    ev2 = list(A2.eigenvals().keys())
    top = 2 * q * (1 - q)
    argmax = sp.solve(sp.diff(top, q), q)
    return {
        "p": p,
        "A": A,
        "quadratic_form": quadratic,
        "variance": variance,
        "variance_residual": sp.simplify(sp.expand((quadratic - variance).subs(simplex))),
        "gershgorin_radius": radius,
        "gershgorin_residuals": [sp.simplify((radius[r] - ps[r] * (1 - ps[r])).subs(simplex)) for r in range(K)],
        "gershgorin_max": sp.maximum(2 * q * (1 - q), q, sp.Interval(0, 1)),
        "frobenius_squared": frob,
        "paper_frobenius_residual": sp.simplify(frob - paper_frob),
        "trace": sp.simplify(A.trace().subs(simplex)),
        "trace_residual": sp.simplify((A.trace() - (1 - sum(pk**2 for pk in ps))).subs(simplex)),
        "frobenius_identity": frobenius_identity,
        "frobenius_identity_residual": sp.simplify(sp.expand((frob - frobenius_identity).subs(simplex))),
        "frobenius_max": sp.maximum(q * (1 - q), q, sp.Interval(0, 1)),
        "A_K2": A2,
        "eigenvalues_K2": ev2,
        "top_eigenvalue_K2": top,
        "argmax_K2": argmax,
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
    weights = [
        sp.Matrix(widths[p + 1], widths[p], lambda r, c, p=p: sp.Symbol(f"w^{{({p + 1})}}_{{{r + 1}{c + 1}}}"))
        for p in range(L)
    ]
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
    closed form ``base^2 (base^{2L} - 1)/(base^2 - 1)``; ``residual`` compares them for ``base != 1``.
    """
    summed = sp.Sum(base ** (2 * p_), (p_, 1, L))
    done = summed.doit()
    paper = base**2 * (base ** (2 * L) - 1) / (base**2 - 1)
    generic, at_one = _generic_branch(done), _unit_branch(done)
    return {
        "sum": summed,
        "value": done,
        "paper": paper,
        "residual": sp.simplify(generic - paper),
        "at_one": at_one,
        "paper_limit_at_one": sp.limit(paper, base, 1),
    }


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
        "paper_chain_sum": chain_sum,
        "paper_chain_value": chain_value,
        "paper": paper,
        "paper_residual": sp.simplify(sqrt2 * chain_generic - paper),
        "paper_L1": sp.factor(sp.simplify(paper.subs(L_, 1))),
        "paper_at_one": sp.limit(paper, M_W, 1),
        "hidden_form": paper.subs(M_W, h * M),
        "corrected_sum": corrected_sum,
        "corrected": sp.simplify(corrected),
        "corrected_closed": sp.Rational(1, 2) * L_ * M_x**2 * M_W ** (2 * (L_ - 1)),
        "corrected_L1": sp.simplify(corrected.subs(L_, 1)),
    }


def _backward_factors(net: ReluNetwork, L: int, norm_of: dict) -> tuple[list, list, list]:
    """Per layer ``p``: the factors of ``G^(p)``, its residuals and its sub-multiplicative bound.

    The residuals compare the product of the factors with the network's ``G^(p)`` and with
    ``dz/dz^(p)``.
    """
    G_factors, G_residuals, G_bound = [], [], []
    for p in range(1, L + 1):
        factors = []
        for s in range(L, p, -1):  # W^(L) D^(L-1) ... W^(p+1) D^(p)
            factors += [net.weights[s - 1], net.masks[s - 2]]
        G_factors.append(factors)
        product = sp.Mul(*factors) if factors else sp.eye(2)
        u = sp.Matrix(sp.symbols(f"u_1:{net.weights[p - 1].shape[0] + 1}"))
        h = u
        for s in range(p, L):  # from the pre-activation z^(p) = u to the logits
            h = net.weights[s] * (net.masks[s - 1] * h)
        G_residuals.append(sp.expand(product - net.G[p - 1]) + sp.expand(h.jacobian(u) - net.G[p - 1]))
        G_bound.append(sp.Mul(*[norm_of.get(id(f), 1) for f in factors]))
    return G_factors, G_residuals, G_bound


def _forward_factors(net: ReluNetwork, L: int, norm_of: dict, X) -> tuple[list, list]:
    """Per layer ``p``: the activation's residual against ``D^(p-1) W^(p-1) ... x`` and its bound."""
    activation_residuals, activation_bound = [], []
    for p in range(1, L + 1):
        factors = []
        for s in range(p - 1, 0, -1):  # D^(p-1) W^(p-1) ... D^(1) W^(1)
            factors += [net.masks[s - 1], net.weights[s - 1]]
        value = (sp.Mul(*factors) if factors else sp.eye(2)) * net.x
        activation_residuals.append(sp.expand(value - net.activations[p - 1]))
        activation_bound.append(X * sp.Mul(*[norm_of.get(id(f), 1) for f in factors]))
    return activation_residuals, activation_bound


def _corrected_terms(corrected, constants: dict, N, X, L: int) -> dict:
    """The corrected bound, its leave-one-out form and its constant, each with its residual."""
    leave_one_out = sp.Rational(1, 2) * X**2 * sum(sp.Mul(*[N[s] ** 2 for s in range(L) if s != p]) for p in range(L))
    corrected_constant = sp.simplify(corrected.subs(constants))
    stated_constant = sp.Rational(1, 2) * L * M_x**2 * M_W ** (2 * (L - 1))
    return {
        "corrected": sp.expand(corrected),
        "leave_one_out": leave_one_out,
        "corrected_residual": sp.simplify(corrected - leave_one_out),
        "corrected_constant": corrected_constant,
        "corrected_constant_residual": sp.simplify(corrected_constant - stated_constant),
    }


def _block_residuals(net: ReluNetwork) -> tuple[list, sp.Matrix]:
    """``(G kron x^T)(G kron x^T)^T - (x^T x) G G^T`` per block of ``F``, and ``F F^T - sum_p F_p F_p^T``."""
    blocks = [net.F[:, a:b] for a, b in net.block_slices]
    kron_residuals = [
        sp.expand(Fp * Fp.T - (net.activations[p].T * net.activations[p])[0, 0] * net.G[p] * net.G[p].T)
        for p, Fp in enumerate(blocks)
    ]
    return kron_residuals, sp.expand(net.F * net.F.T - sum((Fp * Fp.T for Fp in blocks), sp.zeros(2, 2)))


def theorem1_chain(L: int = 3) -> dict:
    """Appendix A.2's chain of inequalities derived by SymPy on a symbolic ``L``-layer network (widths 2).

    Norm symbols ``N_s`` stand for ``||W^(s)||_2`` and ``X`` for ``||x||_2``. Structural steps, each an
    exact SymPy identity on :func:`relu_network` (``*_residuals`` are lists of zero matrices or zeros):

    * ``G_residuals``: ``G^(p)``, the product of the factors ``W^(L) D^(L-1) ... W^(p+1) D^(p)``, equals
      ``dz/dz^(p)`` computed by SymPy as a Jacobian of the logits with respect to a symbolic
      pre-activation at layer ``p`` (the paper's definition);
    * ``activation_residuals``: ``D^(p-1) W^(p-1) ... D^(1) W^(1) x`` equals the activation ``x^(p)``;
    * ``kron_residuals``: ``(G kron x^T)(G kron x^T)^T = (x^T x) G G^T`` for every block of ``F``, so
      ``||G^(p) kron x^(p)T||_2 = ||G^(p)||_2 ||x^(p)||_2``;
    * ``stack_residual``: ``F F^T = sum_p F_p F_p^T`` (then ``||F||^2 <= sum_p ||F_p||^2`` by Weyl's
      inequality, which is checked numerically, not here).

    Norm bounds read off the factor lists by sub-multiplicativity (``||D||_2 <= 1``): ``G_bound[p]``
    (SymPy: ``prod_{s>p} N_s``) and ``activation_bound[p]`` (``X prod_{s<p} N_s``); ``paper_G_bound[p]``
    is A.2's ``prod_{s>=p} N_s``, ``paper_extra_factor[p]`` its ratio to the derived one (``N_p``).
    Assembled: ``corrected = (1/2) sum_p activation_bound^2 G_bound^2``, ``corrected_residual`` against
    ``(1/2) X^2 sum_p prod_{s != p} N_s^2`` (what ``lhlib.bounds.corrected_bound_per_sample`` evaluates),
    ``corrected_constant`` after ``N_s -> M_W``, ``X -> M_x`` and its residual against
    ``(1/2) L M_x^2 M_W^{2(L-1)}``; ``monotone``: every coefficient of ``corrected`` is positive, so
    substituting upper bounds is valid. ``paper`` assembles A.2's own steps (its ``G`` bound, its ``+1``
    bias rows, ``||A|| <= sqrt2``), and ``paper_residual`` compares it, at ``N_s = M_W``, with
    Theorem 1 as stated (0: the theorem is what its proof's steps give).
    """
    net = relu_network((2,) * (L + 1))
    N = sp.symbols(f"N_1:{L + 1}", positive=True)
    X = sp.Symbol(r"\|x\|", positive=True)
    norm_of = {id(W): N[s] for s, W in enumerate(net.weights)}
    G_factors, G_residuals, G_bound = _backward_factors(net, L, norm_of)
    activation_residuals, activation_bound = _forward_factors(net, L, norm_of, X)
    kron_residuals, stack_residual = _block_residuals(net)
    corrected = sp.Rational(1, 2) * sum(a**2 * g**2 for a, g in zip(activation_bound, G_bound))
    constants = {**{n: M_W for n in N}, X: M_x}
    paper_G_bound = [sp.Mul(*N[p - 1 :]) for p in range(1, L + 1)]
    paper = sp.sqrt(2) * sum((a**2 + 1) * g**2 for a, g in zip(activation_bound, paper_G_bound))
    stated = theorem1_expressions()["paper"].subs(L_, L)
    return {
        "L": L,
        "N": N,
        "X": X,
        "network": net,
        "G_factors": G_factors,
        "G_residuals": G_residuals,
        "activation_residuals": activation_residuals,
        "kron_residuals": kron_residuals,
        "stack_residual": stack_residual,
        "G_bound": G_bound,
        "activation_bound": activation_bound,
        "paper_G_bound": paper_G_bound,
        "paper_extra_factor": [sp.simplify(b / g) for b, g in zip(paper_G_bound, G_bound)],
        **_corrected_terms(corrected, constants, N, X, L),
        "monotone": all(c > 0 for c in sp.Poly(corrected, *N, X).coeffs()),
        "paper": sp.expand(paper),
        "paper_constant": sp.simplify(paper.subs(constants)),
        "paper_residual": sp.simplify(paper.subs(constants) - stated),
    }


n_in, K_out = sp.symbols("n K", positive=True)


def corrected_true_shapes(L: int) -> dict:
    """The corrected bound's dependence on the hidden size ``h`` with the true layer shapes.

    Under the paper's hidden-size hypothesis ``|w_ij| <= M``, ``||W||_2 <= ||W||_F <= sqrt(rows cols) M``,
    attained by the matrix of equal entries ``M``: ``W^(1)`` is ``h x n``, so ``||W^(1)||_2 <= sqrt(n h) M``;
    the hidden ``W^(p)`` are ``h x h`` (``<= h M``); ``W^(L)`` is ``K x h`` (``<= sqrt(K h) M``); for
    ``L = 1``, ``W^(1)`` is ``K x n``. ``product_form`` is the corrected per-sample bound
    ``(1/2) ||x||^2 sum_p prod_{s != p} ||W^(s)||_2^2`` with these norms (``||x|| = M_x``), a polynomial
    in ``h``; ``degree`` its degree in ``h`` and ``leading`` its leading coefficient; ``local_exponent``
    is ``d log(product_form) / d log h`` and ``asymptotic_exponent`` its limit as ``h -> oo``.
    ``hM_form`` is the corrected constant with the (invalid for ``n > h``) substitution ``M_W = h M``,
    and ``hM_degree`` its degree, ``2(L - 1)``.
    """
    if L == 1:
        squared = [n_in * K_out * M**2]
    else:
        squared = [n_in * h * M**2] + [h**2 * M**2] * (L - 2) + [K_out * h * M**2]
    product_form = sp.expand(
        sp.Rational(1, 2) * M_x**2 * sum(sp.Mul(*[squared[s] for s in range(L) if s != p]) for p in range(L))
    )
    poly = sp.Poly(product_form, h)
    hM_form = sp.Rational(1, 2) * L * M_x**2 * (h * M) ** (2 * (L - 1))
    local_exponent = sp.simplify(h * sp.diff(product_form, h) / product_form)
    return {
        "L": L,
        "norms_squared": squared,
        "product_form": product_form,
        "degree": poly.degree(),
        "leading": sp.factor(poly.LC()),
        "local_exponent": local_exponent,
        "asymptotic_exponent": sp.simplify(sp.limit(local_exponent, h, sp.oo)),
        "hM_form": hM_form,
        "hM_degree": sp.Poly(hM_form, h).degree(),
    }


def _linear_range(expr, intervals: dict) -> tuple:
    """The range over the box ``intervals`` of the linear part of ``expr`` (each term at its own end)."""
    lower = upper = sp.Integer(0)
    for symbol, (lo, hi) in intervals.items():
        c = sp.simplify(expr.coeff(symbol))
        if sp.simplify(expr.diff(symbol, 2)) != 0:
            raise ValueError("expression is not linear")
        if c.is_nonnegative:
            lower, upper = lower + c * lo, upper + c * hi
        elif c.is_nonpositive:
            lower, upper = lower + c * hi, upper + c * lo
        else:
            raise ValueError(f"the sign of the coefficient {c} is not decidable")
    return lower, upper


def box_bound(expr, ranges: dict):
    """The largest ``|expr|`` when every variable of ``expr`` ranges over an interval (interval arithmetic).

    ``expr`` is linear in ``base[k + 1]`` and in sums ``Sum(c * base[i], (i, 1, k))`` for the
    ``IndexedBase`` keys of ``ranges``, which map each base to ``(low, high)``: every ``base[j]``
    lies in that interval, so such a sum lies in ``[k min(c low, c high), k max(c low, c high)]``.
    For a linear form ``sum_j c_j t_j`` over a box the maximum is ``sum_j max(c_j low_j, c_j high_j)``
    (each term at its own end); the bound is ``max(upper, -lower)``. With symmetric intervals this is
    the triangle inequality; with ``low = 0`` it is the sharper "difference of two non-negative numbers".
    The sign of every coefficient must be decidable (it is, for the positive symbol ``k``); otherwise
    ValueError. Returns ``(bound, lower, upper)``, simplified.
    """
    expr = sp.expand(expr)
    intervals, totals = {}, {}

    def replace_sum(total):
        if (
            len(total.limits) != 1
            or total.limits[0][0] != i
            or total.limits[0][1] != 1
            or sp.simplify(total.limits[0][2] - k) != 0
        ):
            raise ValueError(f"only sums over i = 1..k are supported, got {total}")
        function = sp.expand(total.function)
        for base, (low, high) in ranges.items():
            c = sp.simplify(function / base[i])
            if not c.has(i) and not c.has(base):
                if base not in totals:  # one variable per base: the sum of base[1..k], in [k low, k high]
                    totals[base] = sp.Dummy(f"Sum_{base}")
                    intervals[totals[base]] = (k * low, k * high)
                return c * totals[base]
        raise ValueError(f"cannot bound the summand {function}")

    expr = expr.replace(lambda e: isinstance(e, sp.Sum), replace_sum)
    for base, (low, high) in ranges.items():
        symbol = sp.Dummy(f"{base}_new")
        expr = expr.subs(base[k + 1], symbol)
        intervals[symbol] = (low, high)
    expr = sp.expand(expr)
    leftover = (
        expr.free_symbols
        - set(intervals)
        - {k}
        - set().union(*[sp.sympify(b).free_symbols for v in ranges.values() for b in v])
    )
    if any(isinstance(a, sp.Indexed) for a in expr.atoms(sp.Indexed)) or leftover:
        raise ValueError(f"expression is not linear in the bounded variables alone: {expr}")
    lower, upper = _linear_range(expr, intervals)
    rest = sp.simplify(expr.subs({symbol: 0 for symbol in intervals}))
    lower, upper = sp.simplify(lower + rest), sp.simplify(upper + rest)
    return sp.simplify(sp.Max(upper, -lower)), lower, upper


def lemma_expressions() -> dict:
    """Lemma 1 (A.3) derived by SymPy from the expansion, next to what the paper states.

    ``stated`` is the displayed formula (parenthesis as printed), ``proved`` the proof's last line
    ``2/(k+1) (M_l + M_H R^2)``, ``stated_minus_proved`` their difference (zero only at ``R = 1``).
    The derivations start from :func:`expansion_difference` (SymPy's difference of the two
    second-order expansions; ``a_i`` losses, ``s_i`` slopes, ``q_i = delta^T H_i delta``) and bound it
    with :func:`box_bound`:

    * ``paper_route``: the paper's own steps: its expansion (Hessian coefficient ``1/(k+1)``),
      Assumption 1 (``s_i = 0``), ``|l_i| <= M_l`` and ``|q_i| <= M_H R^2`` with the triangle inequality;
      ``paper_route_residual = paper_route - proved`` (0: the proof's arithmetic is right);
    * ``derived``: SymPy's expansion, ``s_i = 0``, losses in ``[0, M_l]`` (cross-entropy is non-negative)
      and ``q_i`` in ``[0, M_H R^2]`` (positive semidefinite G-terms);
    * ``derived_indefinite``: the same with ``q_i`` in ``[-M_H R^2, M_H R^2]`` (full Hessians);
    * ``derived_with_gradient``: the PSD case without Assumption 1, slopes ``|s_i| <= M_g R``.

    The step ``|delta^T H delta| <= ||H||_2 ||delta||^2`` is the definition of the spectral norm and is
    taken as given.
    """
    M_l, M_H, R, M_g = sp.symbols(r"M_\ell M_H R M_g", positive=True)
    sqrt2 = sp.sqrt(2)
    first = L_ * sqrt2 * M_x**2 * M_W ** (2 * L_)
    geometric = sqrt2 * M_W**2 * (M_W ** (2 * L_) - 1) / (M_W**2 - 1)
    stated = 2 / (k + 1) * (M_l + first + geometric * R**2)
    proved = 2 / (k + 1) * (M_l + M_H * R**2)
    expansion = expansion_difference()

    def mean(base):
        return sp.Sum(base[i], (i, 1, k)) / k

    paper_expansion = expansion.paper_value_coefficient * (
        a_[k + 1] - mean(a_)
    ) + expansion.paper_hessian_coefficient * (q_[k + 1] - mean(q_))
    none = (0, 0)
    paper_route = box_bound(paper_expansion, {a_: (-M_l, M_l), q_: (-M_H * R**2, M_H * R**2)})[0]
    derived = box_bound(expansion.total, {a_: (0, M_l), s_: none, q_: (0, M_H * R**2)})[0]
    derived_indefinite = box_bound(expansion.total, {a_: (0, M_l), s_: none, q_: (-M_H * R**2, M_H * R**2)})[0]
    derived_with_gradient = box_bound(expansion.total, {a_: (0, M_l), s_: (-M_g * R, M_g * R), q_: (0, M_H * R**2)})[0]
    return {
        "symbols": (M_l, M_H, R),
        "M_g": M_g,
        "stated": stated,
        "proved": proved,
        "stated_minus_proved": sp.factor(sp.simplify(stated - proved.subs(M_H, first + geometric))),
        "paper_expansion": paper_expansion,
        "paper_route": paper_route,
        "paper_route_residual": sp.simplify(paper_route - proved),
        "derived": derived,
        "derived_indefinite": derived_indefinite,
        "derived_with_gradient": derived_with_gradient,
        "ratio_derived_over_proved": sp.simplify(derived / proved),
    }
