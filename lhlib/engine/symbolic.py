r"""The paper's derivations as SymPy objects, so the chapters display them and the tests assert them.

API (every function returns SymPy expressions, matrices or small dataclasses of them; nothing is
only printed):

Chapter 01 (section 3, the loss difference) derives in its own cells; what it builds on:

* :func:`running_mean`: :math:`\mathcal{L}_n = \frac1n \sum_{i \le n} \ell_i` (symbolic sum);
* :func:`split_last`: rewrite :math:`\sum_{i=1}^{k+1}` as :math:`\sum_{i=1}^{k}` + (term :math:`k+1`),
  each split confirmed by SymPy;
* the indices ``i``, ``k`` and the per-object terms ``ell``, ``a_``, ``s_``, ``q_``;
* :func:`per_object_expansion`: one object's expansion, from SymPy's series along the ray;
* :func:`expansion_difference`: the difference of the two expansions, split into value, gradient and
  Hessian parts, with the paper's coefficients (chapter 02's lemma starts from it).

Chapter 02 (section 4 and appendix A):

* :func:`softmax_ce_hessian`: the Hessian of cross-entropy with respect to the logits, and
  :math:`\operatorname{diag}(p) - p p^\top`;
* :func:`relu_network`: a bias-free ReLU net with symbolic weights, inputs and masks: logits,
  Jacobian, :math:`F` from :math:`G^{(p)} \otimes x^{(p)\top}`, H-term;
* :func:`geometric_sum`: SymPy's summation of :math:`\sum_p M^{2p}` and the paper's closed form;
* :func:`theorem1_statement`: Theorem 1 as printed; :func:`generic_branch`: a summation's value away from
  :math:`M_W = 1`;
* :func:`theorem1_chain`: A.2's chain derived on a symbolic :math:`L`-layer net: structure of
  :math:`G^{(p)}` and :math:`x^{(p)}`, the norm bounds read off it, both assemblies;
* :func:`corrected_true_shapes`: the corrected bound's :math:`h`-dependence with the true layer
  shapes;
* :func:`box_bound`: largest :math:`|\mathrm{expr}|` over a box of intervals (triangle inequality
  and its sharper non-negative version);
* :func:`equation`: LaTeX for ``lhs rel rhs``; :func:`show_equation` displays it as math;
  :class:`TexSymbol`: a symbol printed as its TeX name, verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

__all__ = [
    "ReluNetwork",
    "TexSymbol",
    "box_bound",
    "corrected_true_shapes",
    "ell",
    "expansion_difference",
    "ExpansionDifference",
    "per_object_expansion",
    "equation",
    "generic_branch",
    "geometric_sum",
    "i",
    "k",
    "relu_network",
    "running_mean",
    "show_equation",
    "softmax_ce_hessian",
    "split_last",
    "theorem1_chain",
    "theorem1_statement",
]


i = sp.Symbol("i", integer=True, positive=True)


k = sp.Symbol("k", integer=True, positive=True)


ell = sp.IndexedBase(r"\ell")


class TexSymbol(sp.Symbol):
    r"""A SymPy symbol whose LaTeX is its name, verbatim (in braces, so that it stays one atom).

    SymPy reads ``_`` and ``^`` in an ordinary symbol's name as a sub- and superscript of everything
    after them: ``Symbol(r"\|\Delta_H\|_2")`` prints as ``\|\Delta_{H\| 2}``, a subscript that swallows the
    closing bar. A name that is already TeX (a norm, an operator with limits, a label) keeps its meaning only as a
    ``TexSymbol``.
    Assumptions (``positive=True``, ...) work as for :class:`sympy.Symbol`.
    """

    def _latex(self, printer) -> str:
        return "{" + self.name + "}"


def _tex(side) -> str:
    """LaTeX of one side of an equation: a ``str`` is TeX already and is kept verbatim."""
    return side if isinstance(side, str) else sp.latex(side)


def equation(lhs, rhs, rel: str = "=") -> str:
    r"""LaTeX of ``lhs rel rhs``; ``rel`` is ``=``, ``<=``, ``>=``, ``~`` (:math:`\approx`) or any LaTeX relation.

    Args:
        lhs: The left-hand side: a SymPy object, or a ``str`` of TeX kept verbatim (a label such as
            ``r"\nabla_z \ell"``, which SymPy would misread as a symbol name).
        rhs: The right-hand side, likewise.
        rel: The relation; ``<=``, ``>=`` and ``~`` become ``\leq``, ``\geq`` and ``\approx``.

    Returns:
        The LaTeX string.
    """
    rel = {"<=": r"\leq", ">=": r"\geq", "~": r"\approx"}.get(rel, rel)
    return f"{_tex(lhs)} {rel} {_tex(rhs)}"


def show_equation(lhs, rhs, rel: str = "=") -> None:
    """Display :func:`equation` as typeset math under the cell (IPython's ``Math``).

    Args:
        lhs: The left-hand side.
        rhs: The right-hand side.
        rel: The relation, as for :func:`equation`.
    """
    from IPython.display import Math, display

    display(Math(equation(lhs, rhs, rel)))


def running_mean(n, term=None):
    r"""The mean of the first ``n`` terms as an unevaluated SymPy sum.

    .. math::

        \mathcal{L}_n = \frac{1}{n} \sum_{i=1}^{n} \ell_i.

    Args:
        n: The number of terms (a SymPy expression such as ``k`` or ``k + 1``).
        term: The summand in the index ``i``; ``None`` is :math:`\ell_i`.

    Returns:
        ``Sum(term, (i, 1, n)) / n``.
    """
    term = ell[i] if term is None else term
    return sp.Sum(term, (i, 1, n)) / n


def split_last(expr):
    r"""Split the last term off every sum in ``expr`` whose upper limit is :math:`k + 1`.

    .. math::

        \sum_{i=a}^{k+1} f(i) = \sum_{i=a}^{k} f(i) + f(k+1).

    Each rewrite is checked by SymPy itself: ``Sum(f,(i,a,k)) + Sum(f,(i,k+1,k+1)) - Sum(f,(i,a,k+1))``
    must simplify to 0 (SymPy combines adjacent ranges), and ``Sum(f,(i,k+1,k+1))`` must evaluate to
    ``f(k + 1)``. Other sums are left as they are.

    Args:
        expr: A SymPy expression.

    Returns:
        ``expr`` with those sums rewritten.

    Raises:
        AssertionError: when SymPy cannot confirm a split.
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


a_ = sp.IndexedBase("a")


s_ = sp.IndexedBase("s")


q_ = sp.IndexedBase("q")


def per_object_expansion():
    r"""One object's second-order expansion at :math:`\theta^* + \delta`, from SymPy's series along the ray.

    SymPy expands :math:`\ell_i(\theta^* + t\delta)` in :math:`t` to second order; :math:`n!` times the
    coefficient of :math:`t^n` is the :math:`n`-th derivative at :math:`t = 0`, which the chain rule makes the
    value :math:`a_i = \ell_i(\theta^*)`, the slope :math:`s_i = \nabla\ell_i(\theta^*)^\top\delta` and the
    curvature :math:`q_i = \delta^\top H_i(\theta^*)\,\delta`. At :math:`t = 1`:

    .. math::

        T[\ell_i](\theta^* + \delta) = a_i + s_i + \frac{q_i}{2},

    the :math:`\frac12` being the series' own, not an input.

    Returns:
        The expansion in ``a_``, ``s_`` and ``q_`` at index ``i``.
    """
    t = sp.Symbol("t")
    series = sp.Function(r"\ell_i")(t).series(t, 0, 3).removeO()
    derivatives = [sp.factorial(n) * series.coeff(t, n) for n in range(3)]
    return series.xreplace(dict(zip(derivatives, (a_[i], s_[i], q_[i])))).subs(t, 1)


@dataclass(frozen=True)
class ExpansionDifference:
    r"""Difference of the second-order expansions of :math:`\mathcal{L}_{k+1}` and :math:`\mathcal{L}_k` at a
    common point.

    Per sample the expansion is :math:`a_i + s_i + q_i/2` (:func:`per_object_expansion`) with
    :math:`a_i = \ell_i(\theta^*)`,
    :math:`s_i = \nabla\ell_i(\theta^*)^\top\delta` and :math:`q_i = \delta^\top H_i(\theta^*)\,\delta`;
    :math:`\bar a_k = \frac1k \sum_{i \le k} a_i`, and likewise :math:`\bar s_k`, :math:`\bar q_k`.

    Attributes:
        total: The difference as SymPy gives it (after splitting the last terms).
        value: :math:`(a_{k+1} - \bar a_k)/(k+1)`.
        gradient: :math:`(s_{k+1} - \bar s_k)/(k+1)`.
        hessian: :math:`(q_{k+1} - \bar q_k)/(2(k+1))`.
        residual: ``total - value - gradient - hessian``, simplified (0).
        value_coefficient: The factor of :math:`a_{k+1}` read off ``total`` (:math:`1/(k+1)`).
        hessian_coefficient: The factor of :math:`q_{k+1}` read off ``total`` (:math:`1/(2(k+1))`).
        paper_value_coefficient: The paper's factor of the value part, :math:`1/(k+1)`.
        paper_hessian_coefficient: The paper's factor of the Hessian part, :math:`1/(k+1)` (the
            :math:`1/2` of the expansion is lost).
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


def expansion_difference() -> ExpansionDifference:
    r"""Section 3.2: expand :math:`\mathcal{L}_k` and :math:`\mathcal{L}_{k+1}` to second order and subtract,
    for general :math:`k`.

    The Hessian of a mean is the mean of the Hessians, so
    :math:`T[\mathcal{L}_n] = \frac1n \sum_{i \le n} (a_i + s_i + q_i/2)` (notation of
    :class:`ExpansionDifference`), and

    .. math::

        T[\mathcal{L}_{k+1}] - T[\mathcal{L}_k]
        = \frac{a_{k+1} - \bar a_k}{k+1} + \frac{s_{k+1} - \bar s_k}{k+1} + \frac{q_{k+1} - \bar q_k}{2(k+1)}.

    Chapter 01 shows these steps one at a time, each with its assertion; chapter 02 bounds the result
    with :func:`box_bound` to derive Lemma 1.

    Returns:
        The :class:`ExpansionDifference`, with SymPy's coefficients beside the paper's.
    """
    per_sample = per_object_expansion()

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


def softmax_ce_hessian(K: int = 3, label: int = 0) -> dict:
    r"""The Hessian of cross-entropy with respect to ``K`` symbolic logits, against :math:`A`.

    .. math::

        \ell(z) = \log \sum_{j=1}^{K} e^{z_j} - z_y, \qquad
        \nabla_z \ell = p - e_y, \qquad
        \nabla_z^2 \ell = A = \operatorname{diag}(p) - p p^\top, \quad p = \operatorname{softmax}(z).

    Args:
        K: The number of logits :math:`z_1, \dots, z_K`.
        label: The true class :math:`y`, a 0-based index (0 is :math:`z_1`).

    Returns:
        A ``dict`` with ``z``, ``loss``, ``hessian`` (by SymPy), ``p``, ``A``, ``residual``
        (``simplify(hessian - A)``, the zero matrix), ``gradient`` and ``label``.
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


@dataclass(frozen=True)
class ReluNetwork:
    r"""A bias-free ReLU network with symbolic weights, input and ReLU masks (one activation region).

    Attributes:
        weights: ``weights[p-1]`` is :math:`W^{(p)}`.
        masks: ``masks[p-1]`` is the diagonal :math:`D^{(p)}`, :math:`p < L` (symbols :math:`d`
            standing for 0 or 1).
        x: The input :math:`x = x^{(1)}`.
        activations: ``activations[p-1]`` is :math:`x^{(p)}`.
        logits: :math:`z`.
        G: ``G[p-1]`` is :math:`G^{(p)} = \partial z / \partial z^{(p)}` (:math:`G^{(L)} = I`).
        theta: The weights flattened row-major, layer by layer.
        jacobian: :math:`\partial z / \partial\theta` by SymPy.
        F: The stacked :math:`[G^{(1)} \otimes x^{(1)\top}, \dots, G^{(L)} \otimes x^{(L)\top}]`.
        logit_hessians: ``logit_hessians[c]`` is :math:`\nabla_\theta^2 z_c`; the H-term is
            :math:`\sum_c (p - y)_c \nabla_\theta^2 z_c`.
        block_slices: The ``(start, stop)`` columns of each layer in ``theta``.
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
    r"""Build :class:`ReluNetwork` for layer widths ``(n, h_1, ..., K)`` (:math:`L` = ``len(widths) - 1``).

    Inside one activation region the ReLU is multiplication by the fixed 0/1 mask :math:`D^{(p)}`, so

    .. math::

        z = W^{(L)} D^{(L-1)} W^{(L-1)} \cdots D^{(1)} W^{(1)} x, \qquad
        G^{(p)} = W^{(L)} D^{(L-1)} \cdots W^{(p+1)} D^{(p)},

    is a polynomial in the weights.

    Args:
        widths: The widths of the input, the hidden layers and the output.

    Returns:
        The :class:`ReluNetwork`.
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


def generic_branch(expr: sp.Expr) -> sp.Expr:
    r"""The ``otherwise`` branch of a (possibly nested) Piecewise: a sum's value for :math:`M_W \ne 1`.

    .. math::

        \sum_{p=1}^{L} b^{2p}
        = \begin{cases} L & b = 1 \\ \frac{b^2 (b^{2L} - 1)}{b^2 - 1} & \text{otherwise} \end{cases}
        \ \mapsto\ \frac{b^2 (b^{2L} - 1)}{b^2 - 1}.

    Args:
        expr: What SymPy's summation returned.

    Returns:
        Its last branch, or ``expr`` itself when it is not piecewise.
    """
    folded = sp.piecewise_fold(expr)
    return folded.args[-1][0] if isinstance(folded, sp.Piecewise) else folded


def _unit_branch(expr):
    folded = sp.piecewise_fold(expr)
    return folded.args[0][0] if isinstance(folded, sp.Piecewise) else folded


def geometric_sum(base=M_W, L=L_) -> dict:
    r"""The geometric sum of Theorem 1, summed by SymPy, and the paper's closed form.

    .. math::

        \sum_{p=1}^{L} b^{2p} = \frac{b^2 (b^{2L} - 1)}{b^2 - 1} \quad (b \ne 1), \qquad = L \quad (b = 1).

    Args:
        base: The base :math:`b` (default :math:`M_W`).
        L: The number of terms (default the symbol :math:`L`).

    Returns:
        A ``dict`` with ``sum`` (unevaluated), ``value`` (SymPy's Piecewise with the :math:`b = 1`
        case), ``paper`` (the closed form), ``residual`` (for :math:`b \ne 1`, 0), ``at_one`` (SymPy's
        :math:`b = 1` branch) and ``paper_limit_at_one`` (the closed form's limit at :math:`b \to 1`).
    """
    summed = sp.Sum(base ** (2 * p_), (p_, 1, L))
    done = summed.doit()
    paper = base**2 * (base ** (2 * L) - 1) / (base**2 - 1)
    generic, at_one = generic_branch(done), _unit_branch(done)
    return {
        "sum": summed,
        "value": done,
        "paper": paper,
        "residual": sp.simplify(generic - paper),
        "at_one": at_one,
        "paper_limit_at_one": sp.limit(paper, base, 1),
    }


def theorem1_statement() -> sp.Expr:
    r"""Theorem 1's bound as the paper prints it: a transcription, in the symbols :math:`M_x, M_W, L`.

    .. math::

        L\sqrt2\, M_x^2 M_W^{2L} + \sqrt2\, \frac{M_W^2 (M_W^{2L} - 1)}{M_W^2 - 1}.

    Chapter 02 derives A.2's chain on top of it and compares; :func:`theorem1_chain` assembles the
    paper's steps into it.

    Returns:
        The expression.
    """
    return sp.sqrt(2) * (L_ * M_x**2 * M_W ** (2 * L_) + M_W**2 * (M_W ** (2 * L_) - 1) / (M_W**2 - 1))


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
    r"""Appendix A.2's chain of inequalities derived by SymPy on a symbolic ``L``-layer network (widths 2).

    Norm symbols :math:`N_s` stand for :math:`\lVert W^{(s)} \rVert_2` and :math:`X` for
    :math:`\lVert x \rVert_2`. With :math:`\lVert A \rVert_2 \le 1/2` the derived chain is

    .. math::

        \lVert J^\top A J \rVert_2 \le \frac12 \sum_{p=1}^{L} \lVert x^{(p)} \rVert_2^2 \lVert G^{(p)} \rVert_2^2
        \le \frac12 X^2 \sum_{p=1}^{L} \prod_{s \ne p} N_s^2
        \le \frac12 L M_x^2 M_W^{2(L-1)}.

    Structural steps, each an exact SymPy identity on :func:`relu_network` (``*_residuals`` are lists
    of zero matrices or zeros):

    * ``G_residuals``: :math:`G^{(p)}`, the product of the factors
      :math:`W^{(L)} D^{(L-1)} \cdots W^{(p+1)} D^{(p)}`, equals :math:`\partial z/\partial z^{(p)}`
      computed by SymPy as a Jacobian of the logits with respect to a symbolic pre-activation at layer
      :math:`p` (the paper's definition);
    * ``activation_residuals``: :math:`D^{(p-1)} W^{(p-1)} \cdots D^{(1)} W^{(1)} x` equals the
      activation :math:`x^{(p)}`;
    * ``kron_residuals``: :math:`(G \otimes x^\top)(G \otimes x^\top)^\top = (x^\top x)\, G G^\top` for
      every block of :math:`F`, so
      :math:`\lVert G^{(p)} \otimes x^{(p)\top} \rVert_2 = \lVert G^{(p)} \rVert_2 \lVert x^{(p)} \rVert_2`;
    * ``stack_residual``: :math:`F F^\top = \sum_p F_p F_p^\top` (then
      :math:`\lVert F \rVert^2 \le \sum_p \lVert F_p \rVert^2` by Weyl's inequality, which is checked
      numerically, not here).

    Norm bounds read off the factor lists by sub-multiplicativity (:math:`\lVert D \rVert_2 \le 1`):
    ``G_bound[p]`` (SymPy: :math:`\prod_{s>p} N_s`) and ``activation_bound[p]``
    (:math:`X \prod_{s<p} N_s`); ``paper_G_bound[p]`` is A.2's :math:`\prod_{s \ge p} N_s`,
    ``paper_extra_factor[p]`` its ratio to the derived one (:math:`N_p`).

    Args:
        L: The number of weight matrices.

    Returns:
        A ``dict`` with ``L``, ``N``, ``X``, ``network``, ``G_factors``, the residuals above, the norm
        bounds above, and the assemblies: ``corrected``
        (:math:`\frac12 \sum_p \mathrm{activation\_bound}_p^2\, \mathrm{G\_bound}_p^2`),
        ``leave_one_out`` and ``corrected_residual`` (against :math:`\frac12 X^2 \sum_p \prod_{s \ne p} N_s^2`,
        what :func:`lhlib.engine.bounds.corrected_bound_per_sample` evaluates), ``corrected_constant`` (after
        :math:`N_s \to M_W`, :math:`X \to M_x`) and ``corrected_constant_residual`` (against
        :math:`\frac12 L M_x^2 M_W^{2(L-1)}`); ``monotone`` (every coefficient of ``corrected`` is
        positive, so substituting upper bounds is valid); ``paper`` (A.2's own steps: its :math:`G`
        bound, its :math:`+1` bias rows, :math:`\lVert A \rVert \le \sqrt2`), ``paper_constant`` and
        ``paper_residual`` (compared, at :math:`N_s = M_W`, with Theorem 1 as stated: 0, the theorem is
        what its proof's steps give).
    """
    net = relu_network((2,) * (L + 1))
    N = sp.symbols(f"N_1:{L + 1}", positive=True)
    X = TexSymbol(r"\|x\|", positive=True)
    norm_of = {id(W): N[s] for s, W in enumerate(net.weights)}
    G_factors, G_residuals, G_bound = _backward_factors(net, L, norm_of)
    activation_residuals, activation_bound = _forward_factors(net, L, norm_of, X)
    kron_residuals, stack_residual = _block_residuals(net)
    corrected = sp.Rational(1, 2) * sum(a**2 * g**2 for a, g in zip(activation_bound, G_bound))
    constants = {**{n: M_W for n in N}, X: M_x}
    paper_G_bound = [sp.Mul(*N[p - 1 :]) for p in range(1, L + 1)]
    paper = sp.sqrt(2) * sum((a**2 + 1) * g**2 for a, g in zip(activation_bound, paper_G_bound))
    stated = theorem1_statement().subs(L_, L)
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
    r"""The corrected bound's dependence on the hidden size :math:`h` with the true layer shapes.

    Under the paper's hidden-size hypothesis :math:`|w_{ij}| \le M`,
    :math:`\lVert W \rVert_2 \le \lVert W \rVert_F \le \sqrt{\mathrm{rows} \cdot \mathrm{cols}}\, M`, attained
    by the matrix of equal entries :math:`M`: :math:`W^{(1)}` is :math:`h \times n`
    (:math:`\lVert W^{(1)} \rVert_2^2 \le n h M^2`), the hidden :math:`W^{(p)}` are :math:`h \times h`
    (:math:`\le h^2 M^2`), :math:`W^{(L)}` is :math:`K \times h` (:math:`\le K h M^2`); for :math:`L = 1`,
    :math:`W^{(1)}` is :math:`K \times n`. With these norms and :math:`\lVert x \rVert = M_x`:

    .. math::

        \mathtt{product\_form} = \frac12 M_x^2 \sum_{p=1}^{L} \prod_{s \ne p} \lVert W^{(s)} \rVert_2^2,
        \qquad
        \mathtt{local\_exponent} = \frac{\partial \log(\mathtt{product\_form})}{\partial \log h}.

    Args:
        L: The number of weight matrices.

    Returns:
        A ``dict`` with ``L``, ``norms_squared`` (the bounds on :math:`\lVert W^{(s)} \rVert_2^2`),
        ``product_form`` (a polynomial in :math:`h`), ``degree`` and ``leading`` (its degree in
        :math:`h` and leading coefficient), ``local_exponent`` and ``asymptotic_exponent`` (its limit as
        :math:`h \to \infty`), ``hM_form`` (the corrected constant with the substitution
        :math:`M_W = hM`, invalid for :math:`n > h`) and ``hM_degree`` (its degree, :math:`2(L-1)`).
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
    r"""The largest :math:`|\mathrm{expr}|` when every variable of ``expr`` ranges over an interval
    (interval arithmetic).

    ``expr`` is linear in ``base[k + 1]`` and in sums ``Sum(c * base[i], (i, 1, k))`` for the
    ``IndexedBase`` keys of ``ranges``, which map each base to ``(low, high)``: every ``base[j]`` lies
    in that interval, so such a sum is :math:`c\,S` with :math:`S \in [k\,\mathrm{low}, k\,\mathrm{high}]`.
    For a linear form :math:`r + \sum_j c_j t_j` over a box each term sits at its own end:

    .. math::

        \mathrm{upper} = r + \sum_j \max(c_j \mathrm{low}_j, c_j \mathrm{high}_j), \quad
        \mathrm{lower} = r + \sum_j \min(c_j \mathrm{low}_j, c_j \mathrm{high}_j), \quad
        \mathrm{bound} = \max(\mathrm{upper}, -\mathrm{lower}).

    With symmetric intervals this is the triangle inequality; with :math:`\mathrm{low} = 0` it is the
    sharper "difference of two non-negative numbers". The sign of every coefficient must be decidable
    (it is, for the positive symbol ``k``).

    Args:
        expr: A SymPy expression in the bases of ``ranges`` and ``k``.
        ranges: Per ``IndexedBase``, the interval ``(low, high)`` of its entries.

    Returns:
        ``(bound, lower, upper)``, simplified.

    Raises:
        ValueError: when ``expr`` is not of that linear form (a sum not over :math:`i = 1..k`, a summand
            that is not a multiple of one base, another free variable) or a coefficient's sign is not
            decidable.
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
