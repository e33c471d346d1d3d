r"""Chapter 01's experiment: the expansion of :math:`\mathcal{L}_{k+1}-\mathcal{L}_k` checked on a trained network.

:func:`identity_error` checks the exact identity
:math:`\mathcal{L}_{k+1}-\mathcal{L}_k=(\ell_{k+1}-\mathcal{L}_k)/(k+1)`; :func:`assumption1_facts`
measures how far a trained network is from Assumption 1; :func:`taylor_check` compares three
Taylor predictions of :math:`D(r)=\mathcal{L}_{k+1}(\hat\theta+rv)-\mathcal{L}_k(\hat\theta+rv)` with
the exact value along random directions, up to where the first ReLU changes
(:func:`first_relu_change`); :func:`triangle_split` tests the paper's split of :math:`|D(r)|`.
The chapter's figures: :func:`plot_expansion_error` and :func:`plot_triangle_split`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from lhlib.engine.ball import DifferenceExpansion, difference_expansion, gradient_norms_over_k, isotropic_direction
from lhlib.engine.data import Dataset
from lhlib.engine.experiment import TrainedNetwork
from lhlib.engine.models import build_mlp
from lhlib.engine.parameters import weight_list
from lhlib.engine.progress import progress_bar
from lhlib.engine.tangents import forward_factors

__all__ = [
    "PREDICTORS",
    "TaylorCheck",
    "assumption1_facts",
    "first_relu_change",
    "fitted_order",
    "identity_error",
    "plot_expansion_error",
    "plot_triangle_split",
    "rounding_floor",
    "taylor_check",
    "taylor_facts",
    "triangle_split",
]


PREDICTORS = {
    "second order (SymPy)": {"gradient": True, "hessian_factor": 0.5},
    "paper's coefficient": {"gradient": True, "hessian_factor": 1.0},
    "Assumption 1 (no gradient)": {"gradient": False, "hessian_factor": 0.5},
}
"""The three predictions of :math:`D(r)`, as options of :meth:`lhlib.engine.ball.DifferenceExpansion.predict`."""


def identity_error(losses: torch.Tensor) -> float:
    r"""Largest deviation of a sequence of losses from the exact identity for :math:`\mathcal{L}_{k+1}-\mathcal{L}_k`.

    .. math::

        \max_{k}\,\Bigl|(\mathcal{L}_{k+1}-\mathcal{L}_k)-\frac{\ell_{k+1}-\mathcal{L}_k}{k+1}\Bigr|,
        \qquad \mathcal{L}_k = \frac1k \sum_{i\le k} \ell_i,

    over :math:`k = 1, \dots, N-1` and every row.

    Args:
        losses: Per-sample losses, ``(N,)`` or ``(S, N)`` (one row per network), in the order they arrive.

    Returns:
        The largest gap over rows and ``k`` in float64 (rounding error, as the identity is exact).
    """
    losses = torch.atleast_2d(losses).double()
    counts = torch.arange(1, losses.shape[1] + 1, dtype=torch.float64)
    running = losses.cumsum(1) / counts
    direct = running[:, 1:] - running[:, :-1]
    formula = (losses[:, 1:] - running[:, :-1]) / counts[1:]
    return float((direct - formula).abs().max())


def assumption1_facts(
    network: TrainedNetwork, ensemble: list[TrainedNetwork], data: Dataset, k: int, *, hidden_size: int, num_layers: int
) -> dict[str, float]:
    r"""How far the trained point is from Assumption 1 (:math:`\nabla\mathcal{L}_k(\theta^*)=0` for every ``k``).

    The last layer's per-sample gradient and the gradient of the empirical loss on the first :math:`k`
    samples (dataset order, float64):

    .. math::

        \bigl\lVert \nabla_{\mathbf W^{(L)}} \ell_i \bigr\rVert_F
        = \lVert \mathbf p_i - \mathbf y_i \rVert_2 \, \lVert \mathbf x_i^{(L)} \rVert_2, \qquad
        \bigl\lVert \nabla\mathcal{L}_k(\hat\theta) \bigr\rVert_2
        = \Bigl\lVert \frac1k \sum_{i \le k} \nabla \ell_i(\hat\theta) \Bigr\rVert_2.

    Args:
        network: The trained network examined in detail.
        ensemble: The trained networks of every seed.
        data: The training data.
        k: The sample size :math:`k`.
        hidden_size: The ensemble's hidden size, to rebuild each seed's initialisation.
        num_layers: The ensemble's number of hidden-to-hidden layers, likewise.

    Returns:
        A dict of floats. For ``network``, the smallest, median and zero share of the last layer's
        per-sample gradient norms, and :math:`\|\nabla\mathcal{L}_k\|`, :math:`\|\nabla\mathcal{L}_{k+1}\|`;
        over the ``ensemble``, the range of :math:`\|\nabla\mathcal{L}_k\|` and of its ratio to the same norm
        at each seed's initialisation.
    """
    x, y = data.x.double(), data.y
    factors = forward_factors(network.model, data.x)
    onehot = nn.functional.one_hot(y, data.info.num_classes).double()
    last_layer = (factors.probs - onehot).norm(dim=1) * factors.activations[-1].norm(dim=1)
    order = torch.arange(len(y))[None]

    def gradient_norm(model: nn.Module, ks: list[int]) -> torch.Tensor:
        return gradient_norms_over_k(copy.deepcopy(model).double(), x, y, ks, order)[0]

    at_k = gradient_norm(network.model, [k, k + 1])
    trained = np.array([float(gradient_norm(m.model, [k])[0]) for m in ensemble])
    initial = np.array(
        [
            float(
                gradient_norm(
                    build_mlp(data.info.input_dim, hidden_size, num_layers, data.info.num_classes, m.seed), [k]
                )[0]
            )
            for m in ensemble
        ]
    )
    return {
        "min_last_layer_gradient": float(last_layer.min()),
        "median_last_layer_gradient": float(last_layer.median()),
        "fraction_zero_last_layer_gradient": float((last_layer == 0).double().mean()),
        "grad_norm_L_k": float(at_k[0]),
        "grad_norm_L_k1": float(at_k[1]),
        "grad_norm_L_k_seed_min": float(trained.min()),
        "grad_norm_L_k_seed_max": float(trained.max()),
        "grad_ratio_trained_over_initial_min": float((trained / initial).min()),
        "grad_ratio_trained_over_initial_max": float((trained / initial).max()),
    }


def first_relu_change(model: nn.Module, x: torch.Tensor, direction: torch.Tensor, radii: torch.Tensor) -> float:
    r"""The largest of ``radii`` up to which no ReLU of ``x`` changes along :math:`\hat\theta + r v`.

    Scanning ``radii`` in order,

    .. math::

        r^* = \max\bigl\{r_j : \mathbf D^{(p)}_i(\hat\theta + r_l v) = \mathbf D^{(p)}_i(\hat\theta)
        \ \text{for all } p,\ i \text{ and } l \le j\bigr\},

    with :math:`\mathbf D^{(p)}_i` the ReLU masks of sample :math:`i` (:func:`lhlib.engine.tangents.forward_factors`).

    Args:
        model: The network (bias-free; its weights are :math:`\hat\theta`).
        x: The inputs whose masks are watched.
        direction: The flat direction :math:`v` in parameter order (not normalised here).
        radii: The increasing radii to try.

    Returns:
        The last radius before the first change of any ReLU mask (0 if it changes at the first, the last
        radius if none changes).
    """
    weights = weight_list(model)
    pieces = direction.split([w.numel() for w in weights])
    base = forward_factors(weights, x).masks
    for index, r in enumerate(radii):
        moved = [w + float(r) * d.reshape(w.shape) for w, d in zip(weights, pieces)]
        if not all(torch.equal(m0, m1) for m0, m1 in zip(base, forward_factors(moved, x).masks)):
            return float(radii[index - 1]) if index > 0 else 0.0
    return float(radii[-1])


@dataclass(frozen=True)
class TaylorCheck:
    r""":func:`taylor_check`'s measurements.

    Attributes:
        radii: The radii :math:`r` of the comparison.
        expansions: One :class:`lhlib.engine.ball.DifferenceExpansion` per direction.
        errors: Per name in :data:`PREDICTORS`, the ``(directions, len(radii))`` absolute errors
            :math:`|D(r) - \text{prediction}(r)|`.
        kinks: Each direction's :func:`first_relu_change`.
        smooth_radius: The median of ``kinks``.
    """

    radii: torch.Tensor
    expansions: list[DifferenceExpansion]
    errors: dict[str, torch.Tensor]
    kinks: list[float]
    smooth_radius: float


def taylor_check(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, radii: torch.Tensor, *, directions: int, seed: int
) -> TaylorCheck:
    r"""Compare the three :data:`PREDICTORS` with the exact :math:`D(r)` along random unit directions.

    Direction ``j`` is :func:`lhlib.engine.ball.isotropic_direction` with seed ``seed + j``;
    :math:`D(r)=\mathcal{L}_{k+1}(\hat\theta+rv)-\mathcal{L}_k(\hat\theta+rv)` on the first :math:`k+1`
    samples, and each prediction's error is (float64)

    .. math::

        e(r) = \bigl|D(r) - \bigl(D(0) + g\,D'(0)\,r + c\,D''(0)\,r^2\bigr)\bigr|,

    with :math:`g \in \{0, 1\}` and :math:`c \in \{\tfrac12, 1\}` the predictor's options.

    Args:
        model: The trained network.
        x: The inputs; the first ``k + 1`` enter.
        y: The labels.
        k: The sample size :math:`k`.
        radii: The radii :math:`r`.
        directions: The number of random directions.
        seed: The first direction's seed.

    Returns:
        The :class:`TaylorCheck`.
    """
    expansions, kinks, errors = [], [], {name: [] for name in PREDICTORS}
    for j in progress_bar(range(directions), desc="directions"):
        direction = isotropic_direction(model, seed + j).double()
        expansion = difference_expansion(model, x, y, k, direction, radii)
        expansions.append(expansion)
        for name, options in PREDICTORS.items():
            errors[name].append((expansion.true - expansion.predict(**options)).abs())
        kinks.append(first_relu_change(model, x[: k + 1], direction, radii))
    return TaylorCheck(
        radii=radii,
        expansions=expansions,
        errors={name: torch.stack(rows) for name, rows in errors.items()},
        kinks=kinks,
        smooth_radius=float(np.median(kinks)),
    )


def rounding_floor(losses: torch.Tensor, k: int) -> float:
    r"""The float64 rounding floor of :math:`D(r)`.

    A hundred ulps of the largest of the first ``k + 1`` losses, divided by ``k + 1``:

    .. math::

        \frac{100\,\epsilon_{\text{float64}}\,\max_{i \le k+1} \ell_i}{k+1}.

    Args:
        losses: The per-sample losses, in the order the samples enter.
        k: The sample size :math:`k`.

    Returns:
        The floor, a float.
    """
    return float(1e2 * np.finfo(np.float64).eps * float(losses[: k + 1].max()) / (k + 1))


def fitted_order(error: torch.Tensor, radii: torch.Tensor, smooth_radius: float, floor: float) -> float:
    r"""Least-squares slope of log median error against log ``r``: the error's order in :math:`r`.

    With :math:`m(r)` the median error over directions, the fit

    .. math::

        \log m(r) \approx a + q \log r

    uses the radii inside the smooth region (:math:`r \le` ``smooth_radius``) where :math:`m(r)` is above the
    rounding ``floor``.

    Args:
        error: The ``(directions, len(radii))`` absolute errors.
        radii: The radii :math:`r`.
        smooth_radius: The largest radius of the fit.
        floor: The rounding floor (:func:`rounding_floor`).

    Returns:
        The slope :math:`q`; NaN with fewer than three usable radii.
    """
    median = error.median(0).values
    keep = (radii <= smooth_radius) & (median > floor)
    if int(keep.sum()) < 3:
        return math.nan
    return float(np.polyfit(np.log(radii[keep].numpy()), np.log(median[keep].numpy()), 1)[0])


def taylor_facts(check: TaylorCheck, floor: float) -> dict[str, float]:
    r"""Each prediction's fitted order and the second-order error inside every direction's smooth region.

    The orders are :func:`fitted_order`'s :math:`q`; the largest second-order error is

    .. math::

        \max_{j}\ \max_{r \le r^*_j} \bigl|D_j(r) - \bigl(D(0) + D_j'(0)\,r + \tfrac12 D_j''(0)\,r^2\bigr)\bigr|,

    with :math:`r^*_j` direction :math:`j`'s :func:`first_relu_change`.

    Args:
        check: :func:`taylor_check`'s measurements.
        floor: The rounding floor (:func:`rounding_floor`).

    Returns:
        A dict of floats, namely the three orders, the largest second-order error, the smooth radius and
        :math:`|D(0)|`.
    """
    inside = torch.stack([check.radii <= kink for kink in check.kinks])
    second = check.errors["second order (SymPy)"]
    orders = {name: fitted_order(err, check.radii, check.smooth_radius, floor) for name, err in check.errors.items()}
    return {
        "order_second": orders["second order (SymPy)"],
        "order_paper": orders["paper's coefficient"],
        "order_assumption": orders["Assumption 1 (no gradient)"],
        "second_max_error": float(second[inside].max()) if inside.any() else math.nan,
        "smooth_radius": check.smooth_radius,
        "value_scale": abs(check.expansions[0].value),
    }


def triangle_split(check: TaylorCheck, delta_h: float, k: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    r"""The paper's split of :math:`|D(r)|` against the one with the gradient term.

    .. math::

        \text{paper:}\ |D(r)| \le |D(0)| + \frac{r^2 \lVert\Delta_H\rVert_2}{k+1}, \qquad
        \text{derived:}\ |D(r)| \le |D(0)| + r\,\frac{\lVert\Delta_g\rVert_2}{k+1}
        + \frac{r^2 \lVert\Delta_H\rVert_2}{2(k+1)},

    with :math:`\Delta_g = \nabla\ell_{k+1} - \nabla\mathcal{L}_k` and
    :math:`\Delta_H = \mathbf H_{k+1} - \frac1k \sum_{i \le k} \mathbf H_i` at the trained point. The crossover
    radius of a direction is :math:`|D'(0)| / (\tfrac12 |D''(0)|)`, where the curvature term overtakes the
    slope term.

    Args:
        check: :func:`taylor_check`'s measurements.
        delta_h: :math:`\|\Delta_H\|_2` at the trained point (e.g.
            :func:`lhlib.engine.per_sample.lemma_difference_norms`).
        k: The objects before the new one.

    Returns:
        The facts (terms at the trained point, the median crossover radius, and the share of
        (direction, radius) pairs where each split held) and the curves
        :func:`lhlib.chapters.ch01_loss_difference.plot_triangle_split`
        draws (``true``, ``paper``, ``derived``).
    """
    value = check.expansions[0].value
    gradient = check.expansions[0].gradient_norm  # ||Delta_g|| / (k + 1), the same for every direction
    radii = check.radii
    crossover = [abs(e.slope) / (0.5 * abs(e.curvature)) if e.curvature != 0 else math.inf for e in check.expansions]
    true = torch.stack([e.true for e in check.expansions]).abs()
    paper = abs(value) + radii**2 * delta_h / (k + 1)
    derived = abs(value) + radii * gradient + 0.5 * radii**2 * delta_h / (k + 1)
    inside = radii <= check.smooth_radius

    def held(bound: torch.Tensor, where: torch.Tensor) -> float:
        if not where.any():
            return math.nan
        return float((true[:, where] <= bound[where] * (1 + 1e-9)).double().mean())

    everywhere = torch.ones_like(inside)
    facts = {
        "delta_h_norm": delta_h,
        "value_term": value,
        "gradient_term_norm": gradient,
        "median_crossover_radius": float(np.median(crossover)),
        "paper_split_held_fraction": held(paper, everywhere),
        "derived_split_held_fraction_smooth": held(derived, inside),
        "derived_split_held_fraction_all": held(derived, everywhere),
    }
    return facts, {"true": true, "paper": paper, "derived": derived}


def plot_expansion_error(check: TaylorCheck, orders: dict[str, float], floor: float, k: int) -> plt.Figure:
    r"""The error of each Taylor prediction of :math:`D(r)` against :math:`r`, median over directions.

    Args:
        check: :func:`lhlib.chapters.ch01_loss_difference.taylor_check`'s measurements.
        orders: Per prediction, its fitted slope (NaN: at rounding level), for the legend.
        floor: The float64 rounding floor, drawn dashed.
        k: The objects before the new one, for the title.

    Returns:
        The log-log figure, with the median first ReLU change dotted. Radii where a prediction
        matched :math:`D(r)` to the last bit have no error to draw on a log axis and are left out.
    """
    fig, ax = plt.subplots()
    for (name, error), style in zip(check.errors.items(), ("-o", "-s", "-^")):
        slope = orders[name]
        label = f"{name}: slope {slope:.2f}" if np.isfinite(slope) else f"{name}: at rounding level"
        median = error.median(0).values
        drawn = median > 0
        ax.loglog(check.radii[drawn], median[drawn], style, ms=3, label=label)
    ax.axvline(check.smooth_radius, color="gray", ls=":", label="first ReLU change (median)")
    ax.axhline(floor, color="gray", ls="--", lw=0.8, label="float64 rounding floor")
    ax.set(
        xlabel=r"distance $r = \|\theta - \hat\theta\|_2$ (parameter units)",
        ylabel=r"$|D(r) - \mathrm{prediction}|$ (nats)",
        title=f"Taylor predictions of $\\mathcal{{L}}_{{k+1}} - \\mathcal{{L}}_k$, k = {k}, "
        f"median of {len(check.kinks)} directions",
    )
    ax.legend()
    return fig


def plot_triangle_split(check: TaylorCheck, curves: dict[str, torch.Tensor], k: int) -> plt.Figure:
    r"""How far :math:`|D(r)|` rises above :math:`|D(0)|`, against what each split allows.

    Args:
        check: :func:`lhlib.chapters.ch01_loss_difference.taylor_check`'s measurements.
        curves: :func:`lhlib.chapters.ch01_loss_difference.triangle_split`'s ``true``, ``paper`` and ``derived``.
        k: The objects before the new one, for the title.

    Returns:
        The log-log figure — each direction's rise where it is positive (blue), the paper's allowance
        :math:`r^2\|\Delta_H\|_2/(k+1)` (red, dashed) and the allowance with the gradient term
        (black, dotted); grey, the median first ReLU change.
    """
    value = abs(check.expansions[0].value)
    radii = check.radii
    rise = curves["true"] - value
    rise = torch.where(rise > 0, rise, torch.full_like(rise, math.nan))  # drawn only where positive
    fig, ax = plt.subplots()
    ax.loglog(radii, rise.T, color="C0", alpha=0.5, lw=0.8)
    ax.loglog([], [], color="C0", label=r"$|D(r)| - |D(0)|$, each direction (where positive)")
    ax.loglog(radii, curves["paper"] - value, "C3--", label=r"paper's allowance: $r^2\|\Delta_H\|_2/(k+1)$")
    ax.loglog(
        radii,
        curves["derived"] - value,
        "k:",
        label=r"with gradient: $r\|\Delta_g\|_2/(k+1) + r^2\|\Delta_H\|_2/(2(k+1))$",
    )
    ax.axvline(check.smooth_radius, color="gray", ls=":", lw=0.8)
    positive = rise[torch.isfinite(rise)]
    top = 10 * float((curves["paper"] - value).max())
    ax.set_ylim(float(positive.min()) / 10 if positive.numel() else top / 1e12, top)
    ax.set(
        xlabel=r"distance $r = \|\theta - \hat\theta\|_2$ (parameter units)",
        ylabel="rise above the value term (nats)",
        title=f"The triangle-inequality split at the trained point, k = {k}",
    )
    ax.legend(fontsize=7)
    return fig
