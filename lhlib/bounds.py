"""Numeric evaluators of Theorem 1's Hessian bound (as stated and as corrected) and of Lemma 1.

API (every ``model`` argument is an :class:`~lhlib.models.MLP` *or* a sequence of weight matrices
``[W^(1), ..., W^(L)]``, ``W^(p)`` of shape ``out x in``, so ``L = 1`` and perturbed weights work too;
``x`` is ``(N, n)``; results are float64). The network's layer factors ``x^(p)``, ``D^(p)``, ``G^(p)``
(:func:`lhlib.hessian.forward_factors`), ``A = diag(p) - p p^T`` (:func:`lhlib.hessian.softmax_hessian`)
and the exact per-sample G-term norms (:func:`lhlib.hessian.per_sample_ggn_norms`) are the engine's;
this module bounds them:

* ``layer_spectral_norms(model)``: ``(L,)`` tensor of ``||W^(p)||_2``
* ``full_hessian_dense(model, x, y)``, ``full_hessian_norm_dense``: the full per-sample Hessians (dense, tiny nets)
* ``random_network(seed, ...)``: a random bias-free network with random per-layer scales, inputs, labels
* ``full_hessian_check(model, x, y)``: full Hessian and G-term norms against the corrected constant
* ``theorem1_constant(M_x, M_W, L)``: Theorem 1's right-hand side from the constants
* ``theorem1_bound_paper(model, x)``: Theorem 1 exactly as stated (``M_W``, ``M_x`` maxima)
* ``theorem1_bound_per_sample(model, x)``: A.2's intermediate form, each ``||x_i||``, actual norms
* ``corrected_constant(M_x, M_W, L)``: ``(1/2) L M_x^2 M_W^{2(L-1)}``
* ``corrected_bound(model, x)``: ``(1/2) M_x^2 sum_p prod_{s != p} ||W^(s)||^2``
* ``corrected_bound_per_sample(model, x)``: the same with each sample's ``||x_i||``
* ``activation_bound_per_sample(model, x)``: ``(1/2) sum_p ||x_i^(p)||^2 ||G_i^(p)||^2``
* ``lemma_bound(k, M_l, M_H, R)``: the lemma as its proof gives it: ``2/(k+1) (M_l + M_H R^2)``
* ``lemma_bound_as_stated(k, M_l, M_x, M_W, L, R)``: the lemma's displayed formula, parenthesis as printed
* ``lemma_bound_corrected(k, M_l, M_H, R)``: ``(M_l + M_H R^2 / 2) / (k+1)`` (+ ``2 M_g R / (k+1)``)
* ``a2_chain(model, x)``: both sides of every inequality of A.2, per sample

The paper writes ``F`` for the Jacobian ``J`` of the logits; this package calls it ``J`` everywhere.

Notation (paper, section 3.3 and 4, bias-free): ``x^(1) = x``, ``z^(p) = W^(p) x^(p)``,
``x^(p+1) = ReLU(z^(p))``, logits ``z = z^(L)``, ``D^(p) = diag[z^(p) > 0]`` for ``p < L``,

    G^(p) = dz/dz^(p) = W^(L) D^(L-1) W^(L-1) ... W^(p+1) D^(p),    G^(L) = I_K,

and, with row-major flattening of each ``W^(p)`` (PyTorch's), the Jacobian of the logits is
``F = [G^(1) kron x^(1)T, ..., G^(L) kron x^(L)T]`` (``K x P``). The Gauss-Newton or *G-term* of the
per-sample cross-entropy Hessian is ``F^T A F`` with ``A = diag(p) - p p^T``; Theorem 1 bounds this
term only (the paper writes ``H_i``). The full Hessian adds the *H-term*
``sum_k (p - y)_k grad^2 z_k``, which is not zero for ``L >= 2`` (cross-layer blocks).

What the book found (chapter 02, ``book/errata.md``):

* ``||A||_2 <= 1/2`` is sharp (Popoviciu / Gershgorin); the paper uses ``sqrt(2)``.
* ``||G^(p)||_2 <= prod_{s=p+1}^{L} ||W^(s)||_2``; the paper's product starts at ``s = p``.
* Bias-free, ``F`` has no bias columns: the paper's ``+1`` terms (its whole geometric-sum term) vanish.
* Hence ``||F_i^T A_i F_i||_2 <= (1/2) ||x_i||^2 sum_p prod_{s != p} ||W^(s)||_2^2
  <= (1/2) L M_x^2 M_W^{2(L-1)}``. The paper's bound is *not* an upper bound in general: it fails
  when the weights are small (e.g. ``L = 1``, ``W = 0``: the G-term is ``||x||^2 / K``, the bound 0).
* The corrected bound, like the paper's, bounds the G-term only: the full Hessian adds the H-term,
  whose cross-layer blocks do not shrink with the weights as fast as the bound does, and exceeds it
  on some networks (:func:`full_hessian_check`; chapter 02).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lhlib.hessian import (
    Weights,
    forward_factors,
    ggn_norms_from_jjt,
    network_inputs,
    softmax_hessian,
    weight_list,
)
from lhlib.validation import check_float, check_int

__all__ = [
    "A2_STEPS",
    "SOFTMAX_HESSIAN_NORM_PAPER",
    "SOFTMAX_HESSIAN_NORM_SHARP",
    "A2Chain",
    "FullHessianCheck",
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
    """``(L,)`` float64 tensor of the spectral norms ``||W^(p)||_2`` (largest singular values)."""
    return torch.stack([torch.linalg.matrix_norm(w, ord=2) for w in weight_list(model)])


def full_hessian_dense(model: Weights, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The ``(N, P, P)`` full per-sample Hessians ``nabla^2_theta l(f_theta(x_i), y_i)`` of cross-entropy,
    in float64, by ``torch.func.hessian`` vmapped over samples.

    ``theta`` is the weights flattened row-major, layer after layer (the columns of
    :func:`lhlib.hessian.gauss_newton_jacobian`). Each Hessian is the G-term ``F_i^T A_i F_i`` plus the H-term
    ``sum_c (p_i - y_i)_c nabla^2_theta z_c``; inside one activation region the ReLU is a fixed mask,
    so this is the Hessian of the polynomial the network is there. Dense: for tiny networks only.
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
    """``(N,)`` spectral norms ``max |lambda|`` of :func:`full_hessian_dense` (indefinite for ``L >= 2``)."""
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
    """A random bias-free ReLU network with inputs and labels, ``(weights, x, y)``, for studies of the bounds.

    ``seed`` is an int or a ``numpy.random.Generator`` (drawn from, so consecutive calls differ). The
    number of weight matrices ``L``, the input width ``n``, the hidden width ``h`` (all hidden layers)
    and the number of classes ``K`` are uniform on their closed ranges. ``W^(p) = s_p Z / sqrt(fan_in)``
    with ``Z`` standard normal and ``s_p`` log-uniform on ``scale_range``, independently per layer; the
    ``num_samples`` inputs are standard normal, rescaled together so that ``max_i ||x_i||_2`` is
    log-uniform on ``input_norm_range``; labels are uniform. float64.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for name, bounds in (
        ("width_range", width_range),
        ("matrices_range", matrices_range),
        ("classes_range", classes_range),
    ):
        if len(bounds) != 2 or not 1 <= int(bounds[0]) <= int(bounds[1]):
            raise ValueError(f"{name} must be [low, high] with 1 <= low <= high, got {list(bounds)}")
    check_int("num_samples", num_samples, minimum=1)
    L = int(rng.integers(matrices_range[0], matrices_range[1] + 1))
    n, h = (int(rng.integers(width_range[0], width_range[1] + 1)) for _ in range(2))
    K = int(rng.integers(max(2, classes_range[0]), classes_range[1] + 1))
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
    """The full Hessian and the G-term of one network against the corrected Theorem 1.

    ``full`` and ``gterm`` are the per-sample spectral norms ``(N,)`` of the full Hessian and of the
    G-term; ``corrected_per_sample`` is :func:`corrected_bound_per_sample`; ``constant`` is
    :func:`corrected_constant` ``(1/2) L M_x^2 M_W^{2(L-1)}`` with ``M_x = max_i ||x_i||`` and
    ``M_W = max_p ||W^(p)||_2``. The corrected theorem bounds ``gterm`` (never exceeded); nothing
    bounds the H-term, so ``full`` may exceed it.
    """

    full: torch.Tensor
    gterm: torch.Tensor
    corrected_per_sample: torch.Tensor
    constant: float
    M_x: float
    M_W: float
    L: int

    def exceeds(self, which: str = "full", rtol: float = 1e-10) -> bool:
        """Whether some sample's ``which`` (``"full"`` or ``"gterm"``) norm is above the constant."""
        return bool((getattr(self, which) > self.constant * (1 + rtol)).any())

    def worst_ratio(self, which: str = "full") -> float:
        """``max_i norm_i / constant`` (``inf`` if the constant is 0 and a norm is not)."""
        top = float(getattr(self, which).max())
        return top / self.constant if self.constant > 0 else (math.inf if top > 0 else 0.0)


def full_hessian_check(model: Weights, x: torch.Tensor, y: torch.Tensor) -> FullHessianCheck:
    """:class:`FullHessianCheck` of one network on ``(x, y)`` (dense full Hessians: tiny networks only)."""
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
    """``sum_{p=1}^{terms} q^p``, which equals ``q (q^terms - 1) / (q - 1)`` for ``q != 1`` and ``terms``
    for ``q = 1`` (summed directly, so ``q`` near 1 loses no precision).
    """
    return float(sum(q**p for p in range(1, terms + 1)))


def theorem1_constant(M_x: float, M_W: float, L: int, *, a_norm: float = SOFTMAX_HESSIAN_NORM_PAPER) -> float:
    """Theorem 1's right-hand side, ``L sqrt2 M_x^2 M_W^{2L} + sqrt2 M_W^2 (M_W^{2L} - 1) / (M_W^2 - 1)``.

    The fraction is the geometric sum ``sum_{p=1}^L M_W^{2p}``, whose value at ``M_W = 1`` is ``L``
    (the limit; the printed formula is 0/0 there). ``a_norm`` replaces the factor ``sqrt(2)``.
    """
    check_float("M_x", M_x, minimum=0.0)
    check_float("M_W", M_W, minimum=0.0)
    check_int("L", L, minimum=1)
    q = float(M_W) ** 2
    return a_norm * (L * M_x**2 * q**L + geometric_sum(q, L))


def theorem1_bound_paper(model: Weights, x: torch.Tensor) -> float:
    """Theorem 1 exactly as stated: :func:`theorem1_constant` with ``M_W = max_p ||W^(p)||_2``,
    ``M_x = max_i ||x_i||_2`` and ``L`` the number of weight matrices (``num_layers + 2`` for the MLP).
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
    """A.2's last form before the constants, per sample ``(N,)``.

        sqrt2 * sum_{p=1}^L ( ||x_i||^2 prod_{s<p} ||W^(s)||^2 + 1 ) prod_{s=p}^L ||W^(s)||^2,

    with each sample's ``||x_i||`` and the actual layer norms (the paper's ``+1`` bias rows and its
    product from ``s = p`` kept as printed). Theorem 1 is this with every norm replaced by its maximum.
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
    """The corrected Theorem 1 per sample ``(N,)``, a valid bound on ``||F_i^T A_i F_i||_2``.

        ||F^T A F|| <= ||A|| ||F||^2 <= (1/2) sum_p ||x^(p)||^2 ||G^(p)||^2
                    <= (1/2) ||x_i||^2 sum_{p=1}^L prod_{s != p} ||W^(s)||_2^2,

    because ``||G^(p)|| <= prod_{s>p} ||W^(s)||``, ``||x^(p)|| <= ||x|| prod_{s<p} ||W^(s)||`` (ReLU is
    1-Lipschitz with ReLU(0) = 0), a bias-free ``F`` has no ``+1`` rows and ``||A||_2 <= 1/2``.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    return a_norm * (x * x).sum(1) * _leave_one_out_products(layer_spectral_norms(weights))


def corrected_bound(model: Weights, x: torch.Tensor, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP) -> float:
    """:func:`corrected_bound_per_sample` with ``||x_i||`` replaced by ``M_x = max_i ||x_i||``: one
    number bounding every sample's G-term; ``<= corrected_constant(M_x, M_W, L)``.
    """
    weights = weight_list(model)
    x = network_inputs(x, weights)
    m_x = float(torch.linalg.vector_norm(x, dim=1).max())
    return float(a_norm * m_x**2 * _leave_one_out_products(layer_spectral_norms(weights)))


def corrected_constant(M_x: float, M_W: float, L: int, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP) -> float:
    """The corrected Theorem 1 in the paper's constants: ``(1/2) L M_x^2 M_W^{2(L-1)}``.

    For ``L = 1`` it is ``M_x^2 / 2``, independent of the weights (the paper: ``sqrt2 M_W^2 (M_x^2 + 1)``).
    """
    check_float("M_x", M_x, minimum=0.0)
    check_float("M_W", M_W, minimum=0.0)
    check_int("L", L, minimum=1)
    return a_norm * L * M_x**2 * float(M_W) ** (2 * (L - 1))


def activation_bound_per_sample(
    model: Weights, x: torch.Tensor, *, a_norm: float = SOFTMAX_HESSIAN_NORM_SHARP
) -> torch.Tensor:
    """``a_norm * sum_p ||x_i^(p)||^2 ||G_i^(p)||_2^2`` per sample ``(N,)``: the stacking step of A.2
    with the actual activations and the actual ``G^(p)`` (before the layer norms enter).
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
    """Lemma 1 as its proof (A.3) ends: ``2 / (k+1) * (M_l + M_H R^2)``.

    ``M_l`` bounds ``|l_i(theta*)|``, ``M_H`` bounds every ``||H_i(theta*)||_2`` (Theorem 1's constant
    in the paper), ``R`` the radius ``||theta - theta*||_2 <= R``. ``k`` may be a number or an array.
    (The lemma's displayed statement multiplies only the geometric-sum term by ``R^2``; see
    :func:`lemma_bound_as_stated`.)
    """
    for name, value in (("M_l", M_l), ("M_H", M_H), ("R", R)):
        _nonnegative(name, value)
    out = 2.0 / (_k(k) + 1.0) * (M_l + M_H * R**2)
    return float(out) if out.ndim == 0 else out


def lemma_bound_as_stated(k, M_l: float, M_x: float, M_W: float, L: int, R: float) -> torch.Tensor | float:
    """Lemma 1's displayed formula with its parenthesis as printed:
    ``2/(k+1) (M_l + L sqrt2 M_x^2 M_W^{2L} + sqrt2 M_W^2 (M_W^{2L}-1)/(M_W^2-1) R^2)``.
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

    with ``V = M_l`` (losses are non-negative, so ``|l_{k+1} - L_k| <= M_l``), the Taylor factor 1/2,
    and ``C = 1`` when every ``H_i`` is positive semidefinite (the G-terms: then
    ``||H_{k+1} - mean_i H_i|| <= M_H``) or ``C = 2`` for indefinite Hessians (``psd=False``).
    ``M_g`` bounds ``||grad l_i(theta*)||``: under Assumption 1 it is 0; at a trained point it is not.
    """
    for name, value in (("M_l", M_l), ("M_H", M_H), ("R", R), ("M_g", M_g)):
        _nonnegative(name, value)
    c = 1.0 if psd else 2.0
    out = (M_l + 2.0 * M_g * R + 0.5 * c * M_H * R**2) / (_k(k) + 1.0)
    return float(out) if out.ndim == 0 else out


#: The inequalities of appendix A.2 that :func:`a2_chain` evaluates, ``name: description``.
A2_STEPS = {
    "submultiplicative": "||F^T A F||_2 <= ||A||_2 ||F||_2^2",
    "spectral_le_frobenius": "||A||_2 <= ||A||_F",
    "frobenius_le_sqrt2": "||A||_F <= sqrt(2)  (paper)",
    "spectral_le_half": "||A||_2 <= 1/2  (sharp)",
    "stacking": "||F||_2^2 <= sum_p ||G^(p) kron x^(p)T||_2^2 = sum_p ||G^(p)||^2 ||x^(p)||^2",
    "jacobian_paper": "||G^(p)||_2 <= prod_{s=p}^L ||W^(s)||_2 for all p  (paper)",
    "jacobian_corrected": "||G^(p)||_2 <= prod_{s=p+1}^L ||W^(s)||_2 for all p",
    "activation": "||x^(p)||_2 <= ||x||_2 prod_{s<p} ||W^(s)||_2 for all p",
    "paper_per_sample": "||G-term_i|| <= A.2's per-sample form (paper)",
    "paper_theorem": "||G-term_i|| <= Theorem 1 with M_x, M_W (paper)",
    "corrected_per_sample": "||G-term_i|| <= (1/2) ||x_i||^2 sum_p prod_{s!=p} ||W^(s)||^2",
    "corrected_constant": "||G-term_i|| <= (1/2) L M_x^2 M_W^{2(L-1)}",
}


@dataclass(frozen=True)
class A2Chain:
    """Both sides of every inequality in :data:`A2_STEPS`: ``lhs[name]`` and ``rhs[name]`` are ``(N,)``
    float64 tensors (for the per-layer steps, the worst layer: ``max_p lhs_p / rhs_p`` is encoded
    as ``lhs = max ratio``, ``rhs = 1``). ``held(name, rtol)`` is the per-sample boolean.
    """

    lhs: dict
    rhs: dict

    def held(self, name: str, rtol: float = 1e-9) -> torch.Tensor:
        """Per network, whether ``lhs[name] <= rhs[name]`` up to the relative tolerance ``rtol``."""
        return self.lhs[name] <= self.rhs[name] * (1 + rtol) + 1e-300

    def fraction_held(self, name: str, rtol: float = 1e-9) -> float:
        """The share of networks for which inequality ``name`` held."""
        return float(self.held(name, rtol).double().mean())


def a2_chain(model: Weights, x: torch.Tensor) -> A2Chain:
    """Evaluate every inequality of appendix A.2 (and the corrected ones) on each sample of ``x``."""
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
