r"""Numeric evaluators of Theorem 1's Hessian bound (as stated and as corrected) and of Lemma 1.

API (every ``model`` argument is an :class:`~lhlib.engine.models.MLP` *or* a sequence of weight matrices
:math:`[W^{(1)}, \dots, W^{(L)}]`, :math:`W^{(p)}` of shape ``out x in``, so :math:`L = 1` and perturbed
weights work too; ``x`` is ``(N, n)``; results are float64). The network's layer factors :math:`x^{(p)}`,
:math:`D^{(p)}`, :math:`G^{(p)}` (:func:`lhlib.engine.tangents.forward_factors`),
:math:`A = \operatorname{diag}(p) - p p^\top` (:func:`lhlib.engine.per_sample.softmax_hessian`) and the exact per-sample
G-term norms (:func:`lhlib.engine.per_sample.per_sample_ggn_norms`) are the engine's; this module bounds them:

* :func:`layer_spectral_norms`: the ``(L,)`` tensor of :math:`\lVert W^{(p)} \rVert_2`
* :func:`full_hessian_dense`, :func:`full_hessian_norm_dense`: the full per-sample Hessians (dense, tiny nets)
* :func:`random_network`: a random bias-free network with random per-layer scales, inputs, labels
* :func:`full_hessian_check`: full Hessian and G-term norms against the corrected constant
* :func:`theorem1_constant`: Theorem 1's right-hand side from the constants :math:`M_x, M_W, L`
* :func:`theorem1_bound_paper`: Theorem 1 exactly as stated (:math:`M_W`, :math:`M_x` maxima)
* :func:`theorem1_bound_per_sample`: A.2's intermediate form, each :math:`\lVert x_i \rVert`, actual norms
* :func:`corrected_constant`: :math:`\frac12 L M_x^2 M_W^{2(L-1)}`
* :func:`corrected_bound`: :math:`\frac12 M_x^2 \sum_p \prod_{s \ne p} \lVert W^{(s)} \rVert_2^2`
* :func:`corrected_bound_per_sample`: the same with each sample's :math:`\lVert x_i \rVert`
* :func:`activation_bound_per_sample`: :math:`\frac12 \sum_p \lVert x_i^{(p)} \rVert^2 \lVert G_i^{(p)} \rVert_2^2`
* :func:`lemma_bound`: the lemma as its proof gives it, :math:`\frac{2}{k+1} (M_\ell + M_H R^2)`
* :func:`lemma_bound_as_stated`: the lemma's displayed formula, parenthesis as printed
* :func:`lemma_bound_corrected`: :math:`\frac{1}{k+1} (M_\ell + \frac12 M_H R^2)` (:math:`+ \frac{2 M_g R}{k+1}`)
* :func:`a2_chain`: both sides of every inequality of A.2, per sample

The paper writes :math:`F` for the Jacobian :math:`J` of the logits; this package calls it :math:`J` everywhere.

Notation (paper, section 3.3 and 4, bias-free): :math:`x^{(1)} = x`, :math:`z^{(p)} = W^{(p)} x^{(p)}`,
:math:`x^{(p+1)} = \operatorname{ReLU}(z^{(p)})`, logits :math:`z = z^{(L)}`,
:math:`D^{(p)} = \operatorname{diag}[z^{(p)} > 0]` for :math:`p < L`,

.. math::

    G^{(p)} = \frac{\partial z}{\partial z^{(p)}} = W^{(L)} D^{(L-1)} W^{(L-1)} \cdots W^{(p+1)} D^{(p)},
    \qquad G^{(L)} = I_K,

and, with row-major flattening of each :math:`W^{(p)}` (PyTorch's), the Jacobian of the logits is
:math:`F = [G^{(1)} \otimes x^{(1)\top}, \dots, G^{(L)} \otimes x^{(L)\top}]` (:math:`K \times P`). The
Gauss-Newton or *G-term* of the per-sample cross-entropy Hessian is :math:`F^\top A F` with
:math:`A = \operatorname{diag}(p) - p p^\top`; Theorem 1 bounds this term only (the paper writes :math:`H_i`).
The full Hessian adds the *H-term* :math:`\sum_k (p - y)_k \nabla_\theta^2 z_k`, which is not zero for
:math:`L \ge 2` (cross-layer blocks).

What the book found (chapter 02, ``book/errata.md``):

* :math:`\lVert A \rVert_2 \le \frac12` is sharp (Popoviciu / Gershgorin); the paper uses :math:`\sqrt{2}`.
* :math:`\lVert G^{(p)} \rVert_2 \le \prod_{s=p+1}^{L} \lVert W^{(s)} \rVert_2`; the paper's product starts at
  :math:`s = p`.
* Bias-free, :math:`F` has no bias columns: the paper's :math:`+1` terms (its whole geometric-sum term) vanish.
* Hence :math:`\lVert F_i^\top A_i F_i \rVert_2 \le \frac12 \lVert x_i \rVert^2 \sum_p \prod_{s \ne p}
  \lVert W^{(s)} \rVert_2^2 \le \frac12 L M_x^2 M_W^{2(L-1)}`. The paper's bound is *not* an upper bound in
  general: it fails when the weights are small (e.g. :math:`L = 1`, :math:`W = 0`: the G-term is
  :math:`\lVert x \rVert^2 / K`, the bound 0).
* The corrected bound, like the paper's, bounds the G-term only: the full Hessian adds the H-term, whose
  cross-layer blocks do not shrink with the weights as fast as the bound does, and exceeds it on some
  networks (:func:`full_hessian_check`; chapter 02).
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lhlib.engine.parameters import Weights, weight_list
from lhlib.engine.per_sample import ggn_norms_from_jjt, softmax_hessian
from lhlib.engine.tangents import forward_factors, network_inputs
from lhlib.engine.validation import check_float, check_int

__all__ = [
    "A2Chain",
    "A2_STEPS",
    "FullHessianCheck",
    "SOFTMAX_HESSIAN_NORM_PAPER",
    "SOFTMAX_HESSIAN_NORM_SHARP",
    "a2_chain",
    "activation_bound_per_sample",
    "corrected_bound",
    "corrected_bound_per_sample",
    "corrected_constant",
    "full_hessian_check",
    "full_hessian_dense",
    "full_hessian_norm_dense",
    "geometric_sum",
    "layer_spectral_norms",
    "lemma_bound",
    "lemma_bound_as_stated",
    "lemma_bound_corrected",
    "random_network",
    "theorem1_bound_paper",
    "theorem1_bound_per_sample",
    "theorem1_constant",
]


#: The paper's bound on ``||diag(p) - p p^T||_2`` (through the Frobenius norm, appendix A.2).
SOFTMAX_HESSIAN_NORM_PAPER = math.sqrt(2.0)


#: The sharp bound, since ``v^T A v = Var_p(v) <= (max v - min v)^2 / 4 <= 1/2`` for unit ``v``; the
#: supremum over softmax outputs is exactly 1/2 (attained for ``K = 2`` at ``p = (1/2, 1/2)``).
SOFTMAX_HESSIAN_NORM_SHARP = 0.5


def layer_spectral_norms(model: Weights) -> torch.Tensor:
    r"""The spectral norms (largest singular values) of the weight matrices.

    .. math::

        \lVert W^{(p)} \rVert_2 = \sigma_{\max}\bigl(W^{(p)}\bigr), \qquad p = 1, \dots, L.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.

    Returns:
        The ``(L,)`` float64 tensor of norms.

    Raises:
        ValueError: when ``model`` has no weight matrices or they do not chain.
    """
    return torch.stack([torch.linalg.matrix_norm(w, ord=2) for w in weight_list(model)])


def full_hessian_dense(model: Weights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The full per-sample Hessians of cross-entropy, dense, by ``torch.func.hessian`` vmapped over samples.

    .. math::

        H_i = \nabla_\theta^2 \, \ell(f_\theta(x_i), y_i)
            = F_i^\top A_i F_i + \sum_{c=1}^{K} (p_i - y_i)_c \, \nabla_\theta^2 z_{ic}.

    :math:`\theta` is the weights flattened row-major, layer after layer (the columns of
    :func:`lhlib.engine.per_sample.gauss_newton_jacobian`); the right-hand side is the G-term plus the H-term. Inside
    one
    activation region the ReLU is a fixed mask, so this is the Hessian of the polynomial the network is there.
    Dense: for tiny networks only.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.

    Returns:
        The ``(N, P, P)`` float64 tensor of the Hessians.

    Raises:
        ValueError: when the weights do not chain, ``x`` does not fit them or ``y`` is not ``(N,)``.
    """
    from torch.func import hessian, vmap

    weights = weight_list(model)
    x = network_inputs(x, weights)
    y = torch.as_tensor(y).to(x.device)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    shapes = [tuple(w.shape) for w in weights]
    sizes = [w.numel() for w in weights]
    theta = torch.cat([w.flatten() for w in weights])

    def loss(t: torch.Tensor, x_i: torch.Tensor, y_i: torch.Tensor) -> torch.Tensor:
        ws = [piece.reshape(shape) for piece, shape in zip(t.split(sizes), shapes)]
        h = x_i
        for w in ws[:-1]:
            h = torch.relu(w @ h)
        return torch.nn.functional.cross_entropy((ws[-1] @ h)[None], y_i[None])

    return vmap(hessian(loss), in_dims=(None, 0, 0))(theta, x, y)


def full_hessian_norm_dense(model: Weights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""The spectral norms of the dense full per-sample Hessians of :func:`full_hessian_dense`.

    .. math::

        \lVert H_i \rVert_2 = \max_j \bigl|\lambda_j(H_i)\bigr|

    (the Hessian is in general indefinite for :math:`L \ge 2`, its H-term having zero trace; it is 0 for a
    sample whose ReLU paths are all dead).

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.

    Returns:
        The ``(N,)`` float64 tensor of norms.

    Raises:
        ValueError: as :func:`full_hessian_dense`.
    """
    return torch.linalg.eigvalsh(full_hessian_dense(model, x, y)).abs().amax(dim=1)


def _log_uniform(rng, bounds: Sequence[float]) -> float:
    low, high = float(bounds[0]), float(bounds[1])
    if not 0 < low <= high:
        raise ValueError(f"a log-uniform range needs 0 < low <= high, got {list(bounds)}")
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def random_network(
    seed,
    *,
    width_range: Sequence[int] = (2, 6),
    matrices_range: Sequence[int] = (1, 5),
    classes_range: Sequence[int] = (2, 5),
    scale_range: Sequence[float] = (0.05, 5.0),
    input_norm_range: Sequence[float] = (0.1, 10.0),
    num_samples: int = 8,
):
    r"""A random bias-free ReLU network with inputs and labels, for studies of the bounds.

    The number of weight matrices :math:`L`, the input width :math:`n`, the hidden width :math:`h` (all hidden
    layers) and the number of classes :math:`K` are uniform on their closed ranges.
    :math:`W^{(p)} = s_p Z / \sqrt{\mathrm{fan\_in}}` with :math:`Z` standard normal and
    :math:`s_p` log-uniform on ``scale_range``, independently per layer; the ``num_samples`` inputs are standard
    normal, rescaled together so that :math:`\max_i \lVert x_i \rVert_2` is log-uniform on ``input_norm_range``;
    labels are uniform. float64.

    Args:
        seed: An int, or a ``numpy.random.Generator`` (drawn from, so consecutive calls differ).
        width_range: The ``[low, high]`` range of :math:`n` and of :math:`h`.
        matrices_range: The ``[low, high]`` range of :math:`L`.
        classes_range: The ``[low, high]`` range of :math:`K`.
        scale_range: The ``[low, high]`` range of the per-layer scales :math:`s_p` (``0 < low``).
        input_norm_range: The ``[low, high]`` range of :math:`\max_i \lVert x_i \rVert_2` (``0 < low``).
        num_samples: The number :math:`N` of inputs.

    Returns:
        The tuple ``(weights, x, y)`` of the list of ``L`` weight matrices, the ``(N, n)`` inputs and the
        ``(N,)`` int64 labels.

    Raises:
        ValueError: when a range is not ``[low, high]`` with ``1 <= low <= high`` (``2 <= low`` for
            ``classes_range``, ``0 < low <= high`` for the log-uniform ones) or ``num_samples`` is not a
            positive integer.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for name, bounds, low in (
        ("width_range", width_range, 1),
        ("matrices_range", matrices_range, 1),
        ("classes_range", classes_range, 2),  # a softmax needs two classes
    ):
        integers = len(bounds) == 2 and all(isinstance(b, numbers.Integral) and not isinstance(b, bool) for b in bounds)
        if not integers or not low <= bounds[0] <= bounds[1]:
            raise ValueError(f"{name} must be [low, high] of integers with {low} <= low <= high, got {list(bounds)}")
    check_int("num_samples", num_samples, minimum=1)
    L = int(rng.integers(matrices_range[0], matrices_range[1] + 1))
    n, h = (int(rng.integers(width_range[0], width_range[1] + 1)) for _ in range(2))
    K = int(rng.integers(classes_range[0], classes_range[1] + 1))
    dims = [n] + [h] * (L - 1) + [K]
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    weights = [
        torch.randn(b, a, generator=generator, dtype=torch.float64) / math.sqrt(a) * _log_uniform(rng, scale_range)
        for a, b in itertools.pairwise(dims)
    ]
    x = torch.randn(num_samples, n, generator=generator, dtype=torch.float64)
    x = x / x.norm(dim=1).max() * _log_uniform(rng, input_norm_range)
    y = torch.randint(0, K, (num_samples,), generator=generator)
    return weights, x, y


@dataclass(frozen=True)
class FullHessianCheck:
    r"""The full Hessian and the G-term of one network against the corrected Theorem 1.

    The corrected theorem bounds ``gterm`` (never exceeded); nothing bounds the H-term, so ``full`` may exceed
    ``constant``.

    Attributes:
        full: The ``(N,)`` per-sample spectral norms :math:`\lVert H_i \rVert_2` of the full Hessian.
        gterm: The ``(N,)`` per-sample spectral norms :math:`\lVert F_i^\top A_i F_i \rVert_2` of the G-term.
        corrected_per_sample: The ``(N,)`` bounds of :func:`corrected_bound_per_sample`.
        constant: :func:`corrected_constant`, :math:`\frac12 L M_x^2 M_W^{2(L-1)}`.
        M_x: :math:`\max_i \lVert x_i \rVert_2`.
        M_W: :math:`\max_p \lVert W^{(p)} \rVert_2`.
        L: The number of weight matrices.
    """

    full: torch.Tensor
    gterm: torch.Tensor
    corrected_per_sample: torch.Tensor
    constant: float
    M_x: float
    M_W: float
    L: int

    def exceeds(self, which: str = "full", rtol: float = 1e-10) -> bool:
        r"""Whether some sample's ``which`` norm is above the constant.

        .. math::

            \exists\, i:\ \mathrm{norm}_i > \mathrm{constant} \cdot (1 + \mathrm{rtol}).

        Args:
            which: ``"full"`` or ``"gterm"``.
            rtol: The relative tolerance.

        Returns:
            True when the constant is exceeded.
        """
        return bool((getattr(self, which) > self.constant * (1 + rtol)).any())

    def worst_ratio(self, which: str = "full") -> float:
        r"""The largest ratio of a sample's ``which`` norm to the constant.

        .. math::

            \max_i \mathrm{norm}_i / \mathrm{constant}

        (``inf`` if the constant is 0 and a norm is not, 0 if both are).

        Args:
            which: ``"full"`` or ``"gterm"``.

        Returns:
            The ratio, a float.
        """
        top = float(getattr(self, which).max())
        return top / self.constant if self.constant > 0 else (math.inf if top > 0 else 0.0)


def full_hessian_check(model: Weights, x: torch.Tensor, y: torch.Tensor) -> FullHessianCheck:
    r""":class:`FullHessianCheck` of one network on ``(x, y)`` (dense full Hessians: tiny networks only).

    It sets the full Hessian's and the G-term's per-sample norms against the corrected Theorem 1:

    .. math::

        \lVert H_i \rVert_2 \quad\text{and}\quad \lVert F_i^\top A_i F_i \rVert_2
        \quad\text{against}\quad \tfrac12 L M_x^2 M_W^{2(L-1)},
        \qquad M_x = \max_i \lVert x_i \rVert_2, \quad M_W = \max_p \lVert W^{(p)} \rVert_2.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.

    Returns:
        The :class:`FullHessianCheck`.

    Raises:
        ValueError: as :func:`full_hessian_dense`.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    factors = forward_factors(weights, x)
    m_x, m_w = float(x.norm(dim=1).max()), float(layer_spectral_norms(weights).max())
    return FullHessianCheck(
        full_hessian_norm_dense(weights, x, y),
        ggn_norms_from_jjt(factors.jjt(), factors.logits),
        corrected_bound_per_sample(weights, x),
        corrected_constant(m_x, m_w, len(weights)),
        m_x,
        m_w,
        len(weights),
    )


def geometric_sum(q: float, terms: int) -> float:
    r"""The geometric sum, summed term by term so that ``q`` near 1 loses no precision.

    .. math::

        \sum_{p=1}^{t} q^p = \begin{cases} q \, \dfrac{q^t - 1}{q - 1} & q \ne 1, \\ t & q = 1, \end{cases}
        \qquad t = \mathrm{terms}.

    Args:
        q: The ratio.
        terms: The number of terms :math:`t` (0 gives 0).

    Returns:
        The sum, a float.
    """
    return float(sum(q**p for p in range(1, terms + 1)))


def theorem1_constant(M_x: float, M_W: float, L: int, *, a_norm: float = SOFTMAX_HESSIAN_NORM_PAPER) -> float:
    r"""Theorem 1's right-hand side from the constants.

    .. math::

        a \Bigl(L M_x^2 M_W^{2L} + \sum_{p=1}^{L} M_W^{2p}\Bigr)
        = L \sqrt{2} M_x^2 M_W^{2L} + \sqrt{2} \, \frac{M_W^2 (M_W^{2L} - 1)}{M_W^2 - 1}
        \quad (a = \sqrt{2}).

    The fraction is the geometric sum :math:`\sum_{p=1}^{L} M_W^{2p}` (:func:`geometric_sum`), whose value at
    :math:`M_W = 1` is :math:`L` (the limit; the printed formula is 0/0 there).

    Args:
        M_x: The bound :math:`M_x` on the input norms.
        M_W: The bound :math:`M_W` on the layers' spectral norms.
        L: The number of weight matrices.
        a_norm: The factor :math:`a` bounding :math:`\lVert A \rVert_2`; the paper's :math:`\sqrt{2}` by default.

    Returns:
        The bound, a float.

    Raises:
        ValueError: when ``M_x`` or ``M_W`` is negative or ``L`` is not a positive integer.
    """
    check_float("M_x", M_x, minimum=0.0)
    check_float("M_W", M_W, minimum=0.0)
    check_int("L", L, minimum=1)
    q = float(M_W) ** 2
    return a_norm * (L * M_x**2 * q**L + geometric_sum(q, L))


def theorem1_bound_paper(model: Weights, x: torch.Tensor) -> float:
    r"""Theorem 1 exactly as stated, with the network's and the data's maxima as constants.

    .. math::

        L \sqrt{2} M_x^2 M_W^{2L} + \sqrt{2} \sum_{p=1}^{L} M_W^{2p}, \qquad
        M_W = \max_p \lVert W^{(p)} \rVert_2, \quad M_x = \max_i \lVert x_i \rVert_2,

    :func:`theorem1_constant` with :math:`L` the number of weight matrices (``num_layers + 2`` for the MLP).

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.

    Returns:
        The bound, a float.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    return theorem1_constant(
        float(torch.linalg.vector_norm(x, dim=1).max()), float(layer_spectral_norms(weights).max()), len(weights)
    )


def _suffix_prefix(norms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``prefix[p-1] = prod_{s<p} n_s^2`` and ``suffix[p-1] = prod_{s>=p} n_s^2`` for ``p = 1..L``."""
    sq = norms**2
    ones = torch.ones(1, dtype=sq.dtype, device=sq.device)
    prefix = torch.cumprod(torch.cat([ones, sq[:-1]]), 0)
    suffix = torch.flip(torch.cumprod(torch.flip(sq, [0]), 0), [0])
    return prefix, suffix


def theorem1_bound_per_sample(
    model: Weights, x: torch.Tensor, *, a_norm: float = SOFTMAX_HESSIAN_NORM_PAPER
) -> torch.Tensor:
    r"""A.2's last form before the constants, per sample.

    .. math::

        a \sum_{p=1}^{L} \Bigl(\lVert x_i \rVert_2^2 \prod_{s<p} \lVert W^{(s)} \rVert_2^2 + 1\Bigr)
        \prod_{s=p}^{L} \lVert W^{(s)} \rVert_2^2,

    with each sample's :math:`\lVert x_i \rVert` and the actual layer norms (the paper's :math:`+1` bias rows and
    its product from :math:`s = p` kept as printed). Theorem 1 is this with every norm replaced by its maximum.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.
        a_norm: The factor :math:`a` bounding :math:`\lVert A \rVert_2`; the paper's :math:`\sqrt{2}` by default.

    Returns:
        The ``(N,)`` float64 tensor of bounds.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    prefix, suffix = _suffix_prefix(layer_spectral_norms(weights))
    xsq = (x * x).sum(1)
    return a_norm * (xsq[:, None] * (prefix * suffix)[None, :] + suffix[None, :]).sum(1)


def _leave_one_out_products(norms: torch.Tensor) -> torch.Tensor:
    """``sum_p prod_{s != p} n_s^2`` (no division, so zero norms are fine)."""
    sq = norms**2
    return sum(torch.prod(torch.cat([sq[:p], sq[p + 1 :]])) for p in range(len(sq)))


def corrected_bound_per_sample(
    model: Weights, x: torch.Tensor, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP
) -> torch.Tensor:
    r"""The corrected Theorem 1 per sample, a valid bound on :math:`\lVert F_i^\top A_i F_i \rVert_2`.

    .. math::

        \lVert F_i^\top A_i F_i \rVert_2 \le \lVert A_i \rVert_2 \lVert F_i \rVert_2^2
        \le \tfrac12 \sum_p \lVert x_i^{(p)} \rVert^2 \lVert G_i^{(p)} \rVert^2
        \le \tfrac12 \lVert x_i \rVert^2 \sum_{p=1}^{L} \prod_{s \ne p} \lVert W^{(s)} \rVert_2^2,

    because :math:`\lVert G^{(p)} \rVert \le \prod_{s>p} \lVert W^{(s)} \rVert`,
    :math:`\lVert x^{(p)} \rVert \le \lVert x \rVert \prod_{s<p} \lVert W^{(s)} \rVert` (ReLU is 1-Lipschitz with
    :math:`\operatorname{ReLU}(0) = 0`), a bias-free :math:`F` has no :math:`+1` rows and
    :math:`\lVert A \rVert_2 \le \frac12`. The function returns the last expression, with ``a_norm`` in place of
    :math:`\frac12`.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.
        a_norm: The factor bounding :math:`\lVert A \rVert_2`; the sharp :math:`\frac12` by default.

    Returns:
        The ``(N,)`` float64 tensor of bounds.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    return a_norm * (x * x).sum(1) * _leave_one_out_products(layer_spectral_norms(weights))


def corrected_bound(model: Weights, x: torch.Tensor, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP) -> float:
    r""":func:`corrected_bound_per_sample` with :math:`\lVert x_i \rVert` replaced by :math:`M_x`.

    .. math::

        \tfrac12 M_x^2 \sum_{p=1}^{L} \prod_{s \ne p} \lVert W^{(s)} \rVert_2^2
        \le \tfrac12 L M_x^2 M_W^{2(L-1)}, \qquad M_x = \max_i \lVert x_i \rVert_2,

    one number bounding every sample's G-term, at most :func:`corrected_constant` (the right-hand side; ``a_norm``
    replaces :math:`\frac12`).

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.
        a_norm: The factor bounding :math:`\lVert A \rVert_2`; the sharp :math:`\frac12` by default.

    Returns:
        The bound, a float.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    m_x = float(torch.linalg.vector_norm(x, dim=1).max())
    return float(a_norm * m_x**2 * _leave_one_out_products(layer_spectral_norms(weights)))


def corrected_constant(M_x: float, M_W: float, L: int, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP) -> float:
    r"""The corrected Theorem 1 in the paper's constants.

    .. math::

        a \, L M_x^2 M_W^{2(L-1)}, \qquad a = \tfrac12.

    For :math:`L = 1` it is :math:`M_x^2 / 2`, independent of the weights (the paper:
    :math:`\sqrt{2} M_W^2 (M_x^2 + 1)`).

    Args:
        M_x: The bound :math:`M_x` on the input norms.
        M_W: The bound :math:`M_W` on the layers' spectral norms.
        L: The number of weight matrices.
        a_norm: The factor :math:`a` bounding :math:`\lVert A \rVert_2`; the sharp :math:`\frac12` by default.

    Returns:
        The bound, a float.

    Raises:
        ValueError: when ``M_x`` or ``M_W`` is negative or ``L`` is not a positive integer.
    """
    check_float("M_x", M_x, minimum=0.0)
    check_float("M_W", M_W, minimum=0.0)
    check_int("L", L, minimum=1)
    return a_norm * L * M_x**2 * float(M_W) ** (2 * (L - 1))


def activation_bound_per_sample(
    model: Weights, x: torch.Tensor, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP
) -> torch.Tensor:
    r"""The stacking step of A.2 with the actual activations and the actual :math:`G^{(p)}`, per sample.

    .. math::

        a \sum_{p=1}^{L} \lVert x_i^{(p)} \rVert_2^2 \, \lVert G_i^{(p)} \rVert_2^2

    (before the layer norms enter), with :math:`\lVert G \rVert_2^2 = \lambda_{\max}(G G^\top)`.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.
        a_norm: The factor :math:`a` bounding :math:`\lVert A \rVert_2`; the sharp :math:`\frac12` by default.

    Returns:
        The ``(N,)`` float64 tensor of bounds.
    """
    factors = forward_factors(model, x)
    # ||G||_2^2 is the largest eigenvalue of the K x K matrix G G^T (cheaper than an SVD of G).
    terms = [
        (a * a).sum(1) * torch.linalg.eigvalsh(g @ g.transpose(1, 2))[:, -1].clamp_min(0)
        for g, a in zip(factors.jacobians, factors.activations)
    ]
    return a_norm * torch.stack(terms, 1).sum(1)


def _k(k):
    k = torch.as_tensor(k, dtype=torch.float64)
    if torch.any(k < 1):
        raise ValueError(f"k must be >= 1, got {k.min().item()}")
    return k


def _nonnegative(name: str, value) -> None:
    if torch.any(torch.as_tensor(value, dtype=torch.float64) < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def lemma_bound(k, M_l: float, M_H: float, R: float) -> torch.Tensor | float:
    r"""Lemma 1 as its proof (A.3) ends.

    .. math::

        |\mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta)| \le \frac{2}{k+1} \bigl(M_\ell + M_{\mathbf H} R^2\bigr)
        \quad\text{for}\quad \lVert \theta - \theta^* \rVert_2 \le R.

    (The lemma's displayed statement multiplies only the geometric-sum term by :math:`R^2`; see
    :func:`lemma_bound_as_stated`.)

    Args:
        k: The sample count :math:`k \ge 1`, a number or an array.
        M_l: The bound :math:`M_\ell` on every :math:`|\ell_i(\theta^*)|`.
        M_H: The bound :math:`M_{\mathbf H}` on every :math:`\lVert H_i(\theta^*) \rVert_2` (Theorem 1's constant
            in the paper).
        R: The radius of the ball :math:`\lVert \theta - \theta^* \rVert_2 \le R`.

    Returns:
        The bound, a float for a scalar ``k``, else a float64 tensor of ``k``'s shape.

    Raises:
        ValueError: when ``k < 1`` or ``M_l``, ``M_H`` or ``R`` is negative.
    """
    for name, value in (("M_l", M_l), ("M_H", M_H), ("R", R)):
        _nonnegative(name, value)
    out = 2.0 / (_k(k) + 1.0) * (M_l + M_H * R**2)
    return float(out) if out.ndim == 0 else out


def lemma_bound_as_stated(k, M_l: float, M_x: float, M_W: float, L: int, R: float) -> torch.Tensor | float:
    r"""Lemma 1's displayed formula with its parenthesis as printed.

    .. math::

        \frac{2}{k+1} \Bigl(M_\ell + L \sqrt{2} M_x^2 M_W^{2L}
        + \sqrt{2} \, \frac{M_W^2 (M_W^{2L} - 1)}{M_W^2 - 1} R^2\Bigr),

    the fraction evaluated as the geometric sum :math:`\sum_{p=1}^{L} M_W^{2p}` (:func:`geometric_sum`).

    Args:
        k: The sample count :math:`k \ge 1`, a number or an array.
        M_l: The bound :math:`M_\ell` on every :math:`|\ell_i(\theta^*)|`.
        M_x: The bound :math:`M_x` on the input norms.
        M_W: The bound :math:`M_W` on the layers' spectral norms.
        L: The number of weight matrices.
        R: The radius of the ball :math:`\lVert \theta - \theta^* \rVert_2 \le R`.

    Returns:
        The bound, a float for a scalar ``k``, else a float64 tensor of ``k``'s shape.

    Raises:
        ValueError: when ``k < 1``, ``M_l``, ``R``, ``M_x`` or ``M_W`` is negative, or ``L`` is not a positive
            integer.
    """
    _nonnegative("M_l", M_l)
    _nonnegative("R", R)
    first = theorem1_constant(M_x, M_W, L) - SOFTMAX_HESSIAN_NORM_PAPER * geometric_sum(float(M_W) ** 2, L)
    second = SOFTMAX_HESSIAN_NORM_PAPER * geometric_sum(float(M_W) ** 2, L)
    out = 2.0 / (_k(k) + 1.0) * (M_l + first + second * R**2)
    return float(out) if out.ndim == 0 else out


def lemma_bound_corrected(
    k, M_l: float, M_H: float, R: float, *, psd: bool = True, M_g: float = 0.0
) -> torch.Tensor | float:
    r"""The loss-difference bound the second-order derivation actually gives (chapter 01 and 02).

    .. math::

        |\mathcal{L}_{k+1} - \mathcal{L}_k| \le \frac{1}{k+1}\Bigl(V + 2 M_g R + \tfrac12 C M_{\mathbf H} R^2\Bigr),

    with :math:`V = M_\ell` (losses are non-negative, so :math:`|\ell_{k+1} - \mathcal{L}_k| \le M_\ell`), the
    Taylor factor :math:`\frac12`, and :math:`C = 1` when every :math:`H_i` is positive semidefinite (the
    G-terms: then :math:`\lVert H_{k+1} - \frac1k \sum_{i \le k} H_i \rVert \le M_{\mathbf H}`) or :math:`C = 2`
    for indefinite Hessians (``psd=False``).

    Args:
        k: The sample count :math:`k \ge 1`, a number or an array.
        M_l: The bound :math:`M_\ell` on every :math:`|\ell_i(\theta^*)|`.
        M_H: The bound :math:`M_{\mathbf H}` on every :math:`\lVert H_i(\theta^*) \rVert_2`.
        R: The radius of the ball :math:`\lVert \theta - \theta^* \rVert_2 \le R`.
        psd: Whether every :math:`H_i` is positive semidefinite (:math:`C = 1`; else :math:`C = 2`).
        M_g: The bound on :math:`\lVert \nabla \ell_i(\theta^*) \rVert`: 0 under Assumption 1, not at a
            trained point.

    Returns:
        The bound, a float for a scalar ``k``, else a float64 tensor of ``k``'s shape.

    Raises:
        ValueError: when ``k < 1`` or ``M_l``, ``M_H``, ``R`` or ``M_g`` is negative.
    """
    for name, value in (("M_l", M_l), ("M_H", M_H), ("R", R), ("M_g", M_g)):
        _nonnegative(name, value)
    c = 1.0 if psd else 2.0
    out = (M_l + 2.0 * M_g * R + 0.5 * c * M_H * R**2) / (_k(k) + 1.0)
    return float(out) if out.ndim == 0 else out


#: The inequalities of appendix A.2 that :func:`a2_chain` evaluates, ``name: description``.
A2_STEPS = {
    # TeX, shown as math in chapter 02's table (plain ASCII there loses its underscores to italics).
    "submultiplicative": r"$\Vert F^\top AF\Vert_2\le\Vert A\Vert_2\Vert F\Vert_2^2$",
    "spectral_le_frobenius": r"$\Vert A\Vert_2\le\Vert A\Vert_F$",
    "frobenius_le_sqrt2": r"$\Vert A\Vert_F\le\sqrt2$ (paper)",
    "spectral_le_half": r"$\Vert A\Vert_2\le\frac12$ (sharp)",
    "stacking": r"$\Vert F\Vert_2^2\le\sum_p\Vert G^{(p)}\otimes x^{(p)\top}\Vert_2^2"
    r"=\sum_p\Vert G^{(p)}\Vert_2^2\Vert x^{(p)}\Vert_2^2$",
    "jacobian_paper": r"$\Vert G^{(p)}\Vert_2\le\prod_{s=p}^L\Vert W^{(s)}\Vert_2$ for all $p$ (paper)",
    "jacobian_corrected": r"$\Vert G^{(p)}\Vert_2\le\prod_{s=p+1}^L\Vert W^{(s)}\Vert_2$ for all $p$",
    "activation": r"$\Vert x^{(p)}\Vert_2\le\Vert x\Vert_2\prod_{s<p}\Vert W^{(s)}\Vert_2$ for all $p$",
    "paper_per_sample": r"$\Vert J_i^\top A_iJ_i\Vert_2\le$ A.2's per-sample form (paper)",
    "paper_theorem": r"$\Vert J_i^\top A_iJ_i\Vert_2\le$ Theorem 1 with $M_x$, $M_W$ (paper)",
    "corrected_per_sample": r"$\Vert J_i^\top A_iJ_i\Vert_2\le\frac12\Vert x_i\Vert_2^2\sum_p\prod_{s\ne p}"
    r"\Vert W^{(s)}\Vert_2^2$",
    "corrected_constant": r"$\Vert J_i^\top A_iJ_i\Vert_2\le\frac12LM_x^2M_W^{2(L-1)}$",
}


@dataclass(frozen=True)
class A2Chain:
    r"""Both sides of every inequality in :data:`A2_STEPS`, per sample.

    For the per-layer steps (``jacobian_paper``, ``jacobian_corrected``, ``activation``) the worst layer is
    kept: :math:`\max_p \mathrm{lhs}_p / \mathrm{rhs}_p` is encoded as ``lhs`` = that ratio, ``rhs`` = 1.

    Attributes:
        lhs: The left-hand sides, ``lhs[name]`` an ``(N,)`` float64 tensor per step ``name``.
        rhs: The right-hand sides, ``rhs[name]`` an ``(N,)`` float64 tensor per step ``name``.
    """

    lhs: dict
    rhs: dict

    def held(self, name: str, rtol: float = 1e-9) -> torch.Tensor:
        r"""Per sample, whether inequality ``name`` held up to the relative tolerance ``rtol``.

        .. math::

            \mathrm{lhs}_i \le \mathrm{rhs}_i \, (1 + \mathrm{rtol}) + 10^{-300}.

        Args:
            name: A key of :data:`A2_STEPS`.
            rtol: The relative tolerance.

        Returns:
            The ``(N,)`` boolean tensor.
        """
        return self.lhs[name] <= self.rhs[name] * (1 + rtol) + 1e-300

    def fraction_held(self, name: str, rtol: float = 1e-9) -> float:
        r"""The share of samples for which inequality ``name`` held (:meth:`A2Chain.held`).

        .. math::

            \frac{1}{N} \sum_{i=1}^{N} \mathbf{1}\bigl[\mathrm{lhs}_i \le \mathrm{rhs}_i \, (1 + \mathrm{rtol})\bigr].

        Args:
            name: A key of :data:`A2_STEPS`.
            rtol: The relative tolerance.

        Returns:
            The share, a float in :math:`[0, 1]`.
        """
        return float(self.held(name, rtol).double().mean())


def a2_chain(model: Weights, x: torch.Tensor) -> A2Chain:
    r"""Evaluate every inequality of appendix A.2 (and the corrected ones) on each sample of ``x``.

    The chain, for each sample (the steps :data:`A2_STEPS` names):

    .. math::

        \lVert F^\top A F \rVert_2 \le \lVert A \rVert_2 \lVert F \rVert_2^2, \qquad
        \lVert A \rVert_2 \le \lVert A \rVert_F \le \sqrt{2}, \qquad \lVert A \rVert_2 \le \tfrac12,

        \lVert F \rVert_2^2 \le \sum_p \lVert G^{(p)} \rVert_2^2 \lVert x^{(p)} \rVert_2^2, \qquad
        \lVert G^{(p)} \rVert_2 \le \prod_{s=p+1}^{L} \lVert W^{(s)} \rVert_2, \qquad
        \lVert x^{(p)} \rVert_2 \le \lVert x \rVert_2 \prod_{s<p} \lVert W^{(s)} \rVert_2,

    the paper's :math:`\lVert G^{(p)} \rVert_2 \le \prod_{s=p}^{L} \lVert W^{(s)} \rVert_2` beside the corrected one,
    and :math:`\lVert F^\top A F \rVert_2` against :func:`theorem1_bound_per_sample`,
    :func:`theorem1_constant`, :func:`corrected_bound_per_sample` and :func:`corrected_constant`.

    Args:
        model: An :class:`~lhlib.engine.models.MLP` or a sequence of weight matrices.
        x: The ``(N, n)`` inputs.

    Returns:
        The :class:`A2Chain` of the ``N`` samples.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    f = forward_factors(weights, x)
    norms = layer_spectral_norms(weights)
    L, n = len(weights), x.shape[0]
    A = softmax_hessian(f.logits)
    a_spec = torch.linalg.matrix_norm(A, ord=2)
    a_frob = torch.linalg.matrix_norm(A)
    jjt = f.jjt()
    f_sq = torch.linalg.eigvalsh(jjt)[:, -1].clamp_min(0)
    g_norms = torch.stack([torch.linalg.matrix_norm(g, ord=2) for g in f.jacobians], 1)  # (N, L)
    act_norms = torch.stack([a.norm(dim=1) for a in f.activations], 1)
    gterm = ggn_norms_from_jjt(jjt, f.logits)
    ones = torch.ones(n, dtype=torch.float64, device=x.device)
    tiny = torch.finfo(torch.float64).tiny

    def worst_ratio(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        ratio = torch.where(lhs == 0, torch.zeros_like(lhs), lhs / rhs.clamp_min(tiny))
        return ratio.max(1).values

    suffix_from_p = torch.stack([torch.prod(norms[p:]) for p in range(L)])  # prod_{s=p}^L (p 1-based)
    suffix_after_p = torch.stack([torch.prod(norms[p + 1 :]) for p in range(L)])
    prefix_before_p = torch.stack([torch.prod(norms[:p]) for p in range(L)])
    lhs = {
        "submultiplicative": gterm,
        "spectral_le_frobenius": a_spec,
        "frobenius_le_sqrt2": a_frob,
        "spectral_le_half": a_spec,
        "stacking": f_sq,
        "jacobian_paper": worst_ratio(g_norms, suffix_from_p.expand(n, L)),
        "jacobian_corrected": worst_ratio(g_norms, suffix_after_p.expand(n, L)),
        "activation": worst_ratio(act_norms, x.norm(dim=1)[:, None] * prefix_before_p[None]),
        "paper_per_sample": gterm,
        "paper_theorem": gterm,
        "corrected_per_sample": gterm,
        "corrected_constant": gterm,
    }
    m_x, m_w = float(x.norm(dim=1).max()), float(norms.max())
    rhs = {
        "submultiplicative": a_spec * f_sq,
        "spectral_le_frobenius": a_frob,
        "frobenius_le_sqrt2": SOFTMAX_HESSIAN_NORM_PAPER * ones,
        "spectral_le_half": SOFTMAX_HESSIAN_NORM_SHARP * ones,
        "stacking": ((g_norms * act_norms) ** 2).sum(1),
        "jacobian_paper": ones,
        "jacobian_corrected": ones,
        "activation": ones,
        "paper_per_sample": theorem1_bound_per_sample(weights, x),
        "paper_theorem": theorem1_constant(m_x, m_w, L) * ones,
        "corrected_per_sample": corrected_bound_per_sample(weights, x),
        "corrected_constant": corrected_constant(m_x, m_w, L) * ones,
    }
    return A2Chain(lhs, rhs)
