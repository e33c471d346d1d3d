r"""Chapter 06's experiment: the loss difference in a ball around the trained point, against Lemma 1.

:func:`ball_networks` trains (or loads) every configuration from every seed and records the lemma's
constants; :func:`measure_balls` measures
:math:`\mathbb{E}|\mathcal{L}_{k+1}(\theta)-\mathcal{L}_k(\theta)|` at distances :math:`R` along four
kinds of direction, and :func:`ball_records` and :func:`ball_facts` compare it with the lemma's
bound :math:`2(M_\ell+M_{\mathbf H}R^2)/(k+1)`. :func:`gradient_study` tests Assumption 1 at the
trained point, :func:`slice_facts` the paper's Figure 1, :func:`gaussian_study` the Gaussian-ball
criterion. The ``*_table``, ``*_records`` and ``plot_*`` functions are the chapter's tables, summary and
figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from lhlib.build.plotting import sweep_colors
from lhlib.engine.ball import (
    BallPoint,
    GaussianCriterion,
    GradientStats,
    LossSlice,
    ascent_direction,
    expected_gradient_norm,
    filter_normalized_direction,
    gaussian_mean_square_mc,
    gaussian_mean_square_taylor,
    gaussian_sigma,
    gradient_norms_over_k,
    isotropic_direction,
    measure_ball,
    per_sample_gradient_stats,
    top_hessian_direction,
)
from lhlib.engine.bounds import lemma_bound, theorem1_bound_paper
from lhlib.engine.data import Dataset
from lhlib.engine.experiment import TrainedNetwork, split_collapsed, trained_networks
from lhlib.engine.landscape import random_orders
from lhlib.engine.parameters import flat_parameters
from lhlib.engine.per_sample import per_sample_ggn_norms
from lhlib.engine.progress import progress_bar

__all__ = [
    "Ball",
    "BallNetwork",
    "KINDS",
    "ball_facts",
    "ball_networks",
    "ball_records",
    "gaussian_facts",
    "gaussian_records",
    "gaussian_relative_error",
    "gaussian_study",
    "gradient_facts",
    "gradient_study",
    "growth_slopes",
    "measure_balls",
    "network_records",
    "network_table",
    "plot_ball_constants",
    "plot_ball_curves",
    "plot_ball_ratios",
    "plot_gaussian_criterion",
    "plot_gradient_norms",
    "plot_loss_slice",
    "reference_table",
    "slice_facts",
]


KINDS = ["isotropic", "filter-normalised", "top eigenvector", "ascent"]
"""The directions of every ball, in the order :func:`measure_balls` measures them."""


Key = tuple[str, int, int]


@dataclass
class BallNetwork:
    r"""A trained network and the constants of Lemma 1 at its trained point.

    Attributes:
        net: The trained network and what was measured at :math:`\hat\theta`.
        model: ``net.model`` on the study's device.
        theta_norm: :math:`\lVert\hat\theta\rVert_2`.
        params: The number of parameters :math:`P`.
        M_l: :math:`M_\ell = \max_i \ell_i(\hat\theta)`, the largest per-sample loss.
        M_H: :math:`M_{\mathbf H} = \max_i \lVert\mathbf J_i^\top\mathbf A_i\mathbf J_i\rVert_2`, the largest
            per-sample G-term norm.
        theorem1: Theorem 1's constant as stated (:func:`lhlib.engine.bounds.theorem1_bound_paper`).
        grads: Per-sample gradient statistics (measured for the first seed only, else ``None``).
        top_eigenvalue: The top eigenvalue of the dataset Hessian (set by :func:`measure_balls`; NaN before).
    """

    net: TrainedNetwork
    model: nn.Module
    theta_norm: float
    params: int
    M_l: float
    M_H: float
    theorem1: float
    grads: GradientStats | None = None
    top_eigenvalue: float = math.nan

    @property
    def M_g(self) -> float:
        r"""The largest per-sample gradient norm :math:`M_g = \max_i \lVert\nabla\ell_i\rVert` (NaN if not measured)."""
        return float(self.grads.norms.max()) if self.grads is not None else math.nan


def _constants(net: TrainedNetwork, d: Dataset, device: torch.device) -> BallNetwork:
    model = net.model.to(device)
    theta = flat_parameters(model)
    return BallNetwork(
        net=net,
        model=model,
        theta_norm=float(theta.norm()),
        params=theta.numel(),
        M_l=float(net.losses.max()),
        M_H=float(per_sample_ggn_norms(model, d.x.to(device)).max()),
        theorem1=theorem1_bound_paper(model, d.x),
    )


def ball_networks(
    data: dict[str, Dataset],
    configurations: list[tuple[int, int]],
    *,
    seeds: list[int],
    epochs: int,
    batch_size: int,
    lr: float,
    device: torch.device,
) -> tuple[dict[Key, BallNetwork], dict[Key, list[BallNetwork]], dict[Key, list[int]]]:
    r"""Every configuration from every seed, with the lemma's constants at the trained point.

    Trains (or loads, :func:`lhlib.engine.experiment.trained_networks`) each configuration and records

    .. math::

        M_\ell = \max_i \ell_i(\hat\theta), \qquad
        M_{\mathbf H} = \max_i \lVert \mathbf J_i^\top \mathbf A_i \mathbf J_i \rVert_2,

    Theorem 1's constant as stated and, for the first seed that did not collapse, the per-sample gradient
    statistics (:func:`lhlib.engine.ball.per_sample_gradient_stats`). Collapsed networks
    (:func:`lhlib.engine.experiment.split_collapsed`) are left out: their constants describe dead units. A configuration
    whose every seed collapsed is left out whole (it has no network to measure) and its seeds are counted.

    Args:
        data: The datasets by name.
        configurations: The ``(hidden_size, num_layers)`` pairs.
        seeds: The training seeds; the first that did not collapse is the one measured in full.
        epochs: Training epochs.
        batch_size: Training mini-batch size.
        lr: Adam's learning rate.
        device: The device to train and measure on.

    Returns:
        The triple ``(networks, across_seeds, collapsed)`` holding, per ``(dataset, h, num_layers)``, the network
        measured in full, with its per-sample gradient statistics; the networks of every seed that did not
        collapse; and the seeds that did (the only entry of a configuration whose every seed collapsed).

    Raises:
        ValueError: when every seed of the first configuration (the chapter's reference) collapsed.
    """
    networks, across_seeds, collapsed = {}, {}, {}
    for name, d in data.items():
        for h, depth in progress_bar(configurations, desc=f"{name} networks"):
            ensemble = trained_networks(
                d.x,
                d.y,
                num_classes=d.info.num_classes,
                hidden_size=h,
                num_layers=depth,
                seeds=seeds,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                device=str(device),
            )
            kept, collapsed[(name, h, depth)] = split_collapsed(ensemble, d.y, d.info.num_classes, minimum=0)
            if not kept:
                if (h, depth) == configurations[0]:
                    raise ValueError(
                        f"every seed of the reference configuration collapsed on {name} (h = {h}, num_layers = "
                        f"{depth}): choose another first configuration, other seeds or more epochs"
                    )
                continue  # the configuration is left out, and counted in ``collapsed``
            across_seeds[(name, h, depth)] = [_constants(net, d, device) for net in kept]
            first = networks[(name, h, depth)] = across_seeds[(name, h, depth)][0]
            # Per-sample gradients cost seconds per network: measured for the first kept seed only.
            first.grads = per_sample_gradient_stats(first.model, d.x.to(device), d.y.to(device))
    return networks, across_seeds, collapsed


def network_table(
    networks: dict[Key, BallNetwork], across_seeds: dict[Key, list[BallNetwork]], collapsed: dict[Key, list[int]]
) -> tuple[list[str], list[list[str]]]:
    r"""The networks and their constants (the network measured in full; the range of :math:`M_{\mathbf H}` across
    the seeds that did not collapse, and how many did).

    Args:
        networks: The networks measured in full (:func:`ball_networks`).
        across_seeds: The networks of every seed that did not collapse.
        collapsed: The seeds that collapsed, per configuration.

    Returns:
        The table as ``(header, rows)``.
    """
    rows = []
    for key in collapsed:
        if key not in networks:  # every seed collapsed
            rows.append([*key, len(collapsed[key]), *["every seed collapsed"] + [""] * 8])
            continue
        v = networks[key]
        m_h = [w.M_H for w in across_seeds[key]]
        rows.append(
            [
                *key,
                len(collapsed[key]),
                v.params,
                f"{v.net.train_loss:.3f}",
                f"{100 * v.net.train_accuracy:.1f} %",
                f"{v.theta_norm:.2f}",
                f"{v.M_l:.2f}",
                f"{v.M_H:.3g} ({min(m_h):.3g}-{max(m_h):.3g})",
                f"{v.theorem1:.3g}",
                f"{v.M_g:.3g}",
                f"{v.grads.full_norm:.3g}",
            ]
        )
    header = [
        "dataset",
        "h",
        "num_layers",
        "collapsed seeds (left out)",
        "P",
        "train loss",
        "accuracy",
        "$\\|\\hat\\theta\\|$",
        "$M_\\ell$",
        "$M_{\\mathbf H}$ (max G-term)",
        "Theorem 1",
        "$M_g$",
        "$\\|\\nabla\\mathcal{L}_N(\\hat\\theta)\\|$",
    ]
    return header, rows


@dataclass(frozen=True)
class Ball:
    """One network's measurements (:func:`measure_balls`).

    Attributes:
        base: The :class:`lhlib.engine.ball.BallPoint` at the trained point (:math:`R = 0`).
        points: The points per kind and radius, in the order kinds x radii.
        radii: The absolute radii :math:`R`.
    """

    base: BallPoint
    points: list[BallPoint]
    radii: list[float]


def measure_balls(
    networks: dict[Key, BallNetwork],
    data: dict[str, Dataset],
    relative_radii: list[float],
    *,
    eigen_samples: int,
    ascent_samples: int,
    ascent_steps: int,
    permutations: int,
    fit_k_min: int,
    seed: int,
    device: torch.device,
) -> dict[Key, Ball]:
    r"""Measure every network at :math:`R = r\,\lVert\hat\theta\rVert` for each :math:`r` in ``relative_radii``.

    The quantity is the mean loss difference over random orders at each point (:func:`lhlib.engine.ball.measure_ball`),

    .. math::

        \mathbb{E}_\pi \bigl|\mathcal{L}_{k+1}(\hat\theta + R\,d) - \mathcal{L}_k(\hat\theta + R\,d)\bigr|,
        \qquad \lVert d \rVert = 1,

    along the directions of :data:`KINDS`: isotropic (seed ``seed``), filter-normalised (seed
    ``seed + 1``, unit length), the top Hessian eigenvector on the first ``eigen_samples`` samples, and
    per radius the ascent direction on ``ascent_samples`` samples, started from the top eigenvector.
    Sets each network's ``top_eigenvalue``.

    Args:
        networks: The networks to measure (:func:`ball_networks`).
        data: The datasets by name.
        relative_radii: The radii :math:`r` relative to :math:`\lVert\hat\theta\rVert`.
        eigen_samples: Samples for the top eigenvector.
        ascent_samples: Samples for the ascent direction.
        ascent_steps: Ascent steps per radius.
        permutations: Random orders per point.
        fit_k_min: The smallest :math:`k` of the power-law fits.
        seed: Seeds the directions, the orders and the fits.
        device: The device of the measurements.

    Returns:
        One :class:`Ball` per network, with the same keys.
    """
    balls = {}
    for key, v in progress_bar(networks.items(), desc="balls"):
        x, y = data[key[0]].x.to(device), data[key[0]].y.to(device)
        radii = [r * v.theta_norm for r in relative_radii]
        top, v.top_eigenvalue = top_hessian_direction(v.model, x[:eigen_samples], y[:eigen_samples], seed=seed)
        ascent_x, ascent_y = x[:ascent_samples], y[:ascent_samples]
        worst = torch.stack(
            [ascent_direction(v.model, ascent_x, ascent_y, r, start=top, steps=ascent_steps)[0] for r in radii]
        )
        directions = dict(
            zip(
                KINDS,
                [
                    isotropic_direction(v.model, seed),
                    filter_normalized_direction(v.model, seed + 1, unit=True),
                    top,
                    worst,
                ],
            )
        )
        common = dict(permutations=permutations, seed=seed, fit_k_min=fit_k_min)
        points = measure_ball(v.model, x, y, directions, radii, **common)
        base = measure_ball(v.model, x, y, {"trained point": top}, [0.0], **common)[0]
        balls[key] = Ball(base=base, points=points, radii=radii)
    return balls


def _bound_constant(v: BallNetwork, radius: float) -> float:
    r""":math:`(k+1)` times the lemma's bound: :math:`2(M_\ell + M_{\mathbf H}R^2)`."""
    return 2 * (v.M_l + v.M_H * radius**2)


def ball_records(
    balls: dict[Key, Ball], networks: dict[Key, BallNetwork], relative_radii: list[float]
) -> list[dict[str, Any]]:
    r"""One record per network, kind and radius: the fit, the constants and whether the lemma held.

    With :math:`\bar D_k` the mean curve and :math:`C(R)` its tail constant
    (:class:`lhlib.engine.ball.BallPoint`), the lemma's constant and the ratios are

    .. math::

        B(R) = 2\bigl(M_\ell + M_{\mathbf H} R^2\bigr), \qquad
        \rho_{\text{tail}} = \frac{B(R)}{C(R)}, \qquad
        \rho_{\text{tightest}} = \frac{B(R)}{\max_k (k+1)\,\bar D_k}

    (``ratio_tail``, ``ratio_tightest``); ``held_sampled_orders`` is
    :math:`\max_{\pi, k} (k+1)|\mathcal{L}_{k+1} - \mathcal{L}_k| \le B(R)` over the sampled orders,
    ``held_every_order`` :math:`\max_i \ell_i - \min_i \ell_i \le B(R)` (every order).

    Args:
        balls: :func:`measure_balls`' measurements.
        networks: The networks, for their constants.
        relative_radii: The relative radii the balls were measured at.

    Returns:
        A list of dicts, one per network, kind and radius.
    """
    records = []
    for key, b in balls.items():
        v = networks[key]
        for i, p in enumerate(b.points):  # kinds x radii, in that order
            constant = _bound_constant(v, p.radius)
            k = np.arange(1, p.mean.size + 1)
            records.append(
                {
                    "dataset": key[0],
                    "hidden_size": key[1],
                    "num_layers": key[2],
                    "kind": p.kind,
                    "relative_radius": relative_radii[i % len(relative_radii)],
                    "radius": p.radius,
                    "exponent": p.fit.exponent,
                    "exponent_ci": list(p.fit.ci),
                    "tail_constant": p.tail_constant,
                    "bound_constant": constant,
                    # A point where every loss is equal has a zero curve: the bound holds with room to spare.
                    "ratio_tail": constant / p.tail_constant if p.tail_constant > 0 else math.inf,
                    "ratio_tightest": constant / tightest
                    if (tightest := float((p.mean * (k + 1)).max())) > 0
                    else math.inf,
                    "max_scaled": p.max_scaled,
                    "loss_range": p.loss_range,
                    "max_loss": p.max_loss,
                    "held_sampled_orders": p.max_scaled <= constant,
                    "held_every_order": p.loss_range <= constant,
                }
            )
    return records


def growth_slopes(ball: Ball, kind: str) -> dict[str, float]:
    r"""Least-squares slopes of :math:`\log(C(R)-C(0))` against :math:`\log R` along ``kind``.

    .. math::

        \log\bigl(C(R) - C(0)\bigr) \approx a + s \log R,

    with :math:`C` the tail constant (:class:`lhlib.engine.ball.BallPoint`); radii without growth
    (:math:`C(R) \le C(0)`) are left out.

    Args:
        ball: One network's measurements.
        kind: The direction, one of :data:`KINDS`.

    Returns:
        The slopes ``all`` over all radii, ``small_R`` over the first three and ``large_R`` over the last
        three (NaN with fewer than two radii left).
    """
    points = [p for p in ball.points if p.kind == kind]
    r = np.array([p.radius for p in points])
    c = np.array([p.tail_constant for p in points]) - ball.base.tail_constant
    index = np.arange(len(r))

    def slope(mask: np.ndarray) -> float:
        mask = mask & (c > 0)
        return float(np.polyfit(np.log(r[mask]), np.log(c[mask]), 1)[0]) if mask.sum() >= 2 else math.nan

    return {"all": slope(index >= 0), "small_R": slope(index < 3), "large_R": slope(index >= len(r) - 3)}


def reference_table(ball: Ball, network: BallNetwork) -> tuple[list[str], list[list[str]]]:
    """The reference network per kind and radius: exponent with its interval, :math:`C(R)`, bound / measured.

    Args:
        ball: The reference network's measurements.
        network: The reference network, for its constants.

    Returns:
        The table as ``(header, rows)``.
    """
    rows = [
        [
            kind,
            f"{p.radius / network.theta_norm:.3g}",
            f"{p.fit.exponent:.3f} [{p.fit.ci[0]:.3f}, {p.fit.ci[1]:.3f}]",
            f"{p.tail_constant:.3g}",
            f"{_bound_constant(network, p.radius) / p.tail_constant:.3g}"
            if p.tail_constant > 0
            else "inf (zero curve)",
        ]
        for kind in KINDS
        for p in ball.points
        if p.kind == kind
    ]
    return ["direction", "$R/\\|\\hat\\theta\\|$", "exponent [95 % CI]", "$C(R)$", "bound / measured"], rows


def ball_facts(
    records: list[dict[str, Any]],
    networks: dict[Key, BallNetwork],
    balls: dict[Key, Ball],
    reference: Key,
    relative_radii: list[float],
) -> dict[str, Any]:
    r"""What the chapter cites about the balls: rates, where the lemma held, its slack, the growth of :math:`C(R)`.

    The slack is ``ratio_tightest`` of :func:`ball_records` (its range and its medians at the smallest and
    the largest radius); the lemma with Theorem 1's constant :math:`M_{\text{Th1}}` in place of
    :math:`M_{\mathbf H}` is checked on every order; the worst growth is the largest :math:`C(R)/C(0)` along
    the ascent direction of the reference network:

    .. math::

        \frac{2(M_\ell + M_{\mathbf H} R^2)}{\max_k (k+1)\,\bar D_k}, \qquad
        \max_i \ell_i - \min_i \ell_i \le 2\bigl(M_\ell + M_{\text{Th1}} R^2\bigr), \qquad
        \max_R \frac{C(R)}{C(0)}.

    Args:
        records: :func:`ball_records`' records.
        networks: The networks.
        balls: Their measurements.
        reference: The key of the reference network.
        relative_radii: The relative radii, smallest first.

    Returns:
        The facts, a dict, with the medians of :func:`growth_slopes` over networks per kind.
    """
    # A point where every loss is equal has no exponent (NaN) and an infinite ratio: left out of both ranges.
    exponents = np.array([r["exponent"] for r in records if np.isfinite(r["exponent"])])
    ratios = np.array([r["ratio_tightest"] for r in records if np.isfinite(r["ratio_tightest"])])
    small, large = relative_radii[0], relative_radii[-1]
    at_large = [r for r in records if np.isclose(r["relative_radius"], large)]
    network = {id(r): networks[(r["dataset"], r["hidden_size"], r["num_layers"])] for r in records}
    held_theorem1 = sum(
        r["loss_range"] <= 2 * (network[id(r)].M_l + network[id(r)].theorem1 * r["radius"] ** 2) for r in records
    )
    ref_ball, ref = balls[reference], networks[reference]
    worst = max(p.tail_constant for p in ref_ball.points if p.kind == "ascent")
    facts = {
        "n_networks": len(networks),
        "n_points": len(records),
        "exponent_min": float(exponents.min()),
        "exponent_max": float(exponents.max()),
        "exponent_ci_contains_minus_one": f"{sum(r['exponent_ci'][0] <= -1.0 <= r['exponent_ci'][1] for r in records)}"
        f" of {len(records)}",
        "held_sampled": f"{sum(r['held_sampled_orders'] for r in records)} of {len(records)}",
        "held_every": f"{sum(r['held_every_order'] for r in records)} of {len(records)}",
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
        "ratio_small_R": float(
            np.median([r["ratio_tightest"] for r in records if np.isclose(r["relative_radius"], small)])
        ),
        "ratio_large_R": float(np.median([r["ratio_tightest"] for r in at_large])),
        "ratio_large_R_ascent": float(min(r["ratio_tightest"] for r in at_large if r["kind"] == "ascent")),
        "small_R": small,
        "large_R": large,
        "theorem1_over_MH": float(np.median([network[id(r)].theorem1 / network[id(r)].M_H for r in records])),
        "failure_description": _failure_description(records),
        "held_theorem1": f"{held_theorem1} of {len(records)}",
        "c_worst_ratio": float(worst / ref_ball.base.tail_constant),
        "ref_M_l": ref.M_l,
        "ref_M_H": ref.M_H,
        "ref_C0": ref_ball.base.tail_constant,
    }
    return facts | _growth_facts(balls)


def _failure_description(records: list[dict[str, Any]]) -> str:
    failures = [r for r in records if not r["held_every_order"]]
    if not failures:
        return "there was no failure"
    smallest = min(r["relative_radius"] for r in failures)
    kinds = " and ".join(sorted({r["kind"] for r in failures}))
    return (
        f"all {len(failures)} failures lie at R >= {smallest:g} times the norm of the trained parameters, "
        f"along the {kinds} directions"
    )


def _growth_facts(balls: dict[Key, Ball]) -> dict[str, float]:
    """Per kind of direction, the median over networks of the growth slopes at small and large R."""
    growth = [{kind: growth_slopes(b, kind) for kind in KINDS} for b in balls.values()]
    facts = {}
    for kind, short in zip(KINDS, ("iso", "filter", "top", "ascent")):
        for which, end in (("small_R", "small"), ("large_R", "large")):
            values = [g[kind][which] for g in growth if np.isfinite(g[kind][which])]
            facts[f"slope_{short}_{end}"] = float(np.median(values)) if values else math.nan
    return facts


def gradient_study(
    network: BallNetwork, d: Dataset, *, points: int, orders: int, seed: int, device: torch.device
) -> dict[str, Any]:
    r""":math:`\lVert\nabla\mathcal{L}_k(\hat\theta)\rVert` along random orders beside its expectation.

    .. math::

        \bigl\lVert \nabla\mathcal{L}^\pi_k(\hat\theta) \bigr\rVert_2 \quad\text{vs.}\quad
        \sqrt{\lVert\nabla\mathcal{L}_N\rVert_2^2 + \frac{N - k}{k\,(N - 1)} \operatorname{tr}\Sigma}

    (:func:`lhlib.engine.ball.gradient_norms_over_k`, :func:`lhlib.engine.ball.expected_gradient_norm`), for ``points``
    log-spaced :math:`k` in :math:`[1, N]` and ``orders`` random orders drawn with ``seed``.

    Args:
        network: The network; its per-sample gradient statistics must have been measured.
        d: Its training data.
        points: The number of log-spaced :math:`k` (fewer after rounding duplicates away).
        orders: The number of random orders.
        seed: Seeds the orders.
        device: The device of the computation.

    Returns:
        A dict with ``ks``, ``norms`` (``(orders, len(ks))``) and ``expected`` (``(len(ks),)``).
    """
    n = len(d.y)
    ks = np.unique(np.round(np.geomspace(1, n, points)).astype(int)).tolist()
    norms = gradient_norms_over_k(network.model, d.x.to(device), d.y.to(device), ks, random_orders(n, orders, seed))
    expected = expected_gradient_norm(ks, n, network.grads.full_norm, network.grads.trace_cov)
    return {"ks": ks, "norms": norms, "expected": expected}


def gradient_facts(gradient: dict[str, dict[str, Any]], reference: BallNetwork) -> dict[str, float]:
    r"""The reference network's gradient scales, where sampling noise meets the floor, and the formula's fit.

    .. math::

        \sqrt{\operatorname{tr}\Sigma + \lVert\nabla\mathcal{L}_N\rVert^2}, \qquad
        k_\times = \frac{\operatorname{tr}\Sigma}{\lVert\nabla\mathcal{L}_N\rVert^2}, \qquad
        \max_{\text{studies}} \operatorname*{median}_k \Biggl|\frac{\sqrt{\mathbb{E}_\pi
        \lVert\nabla\mathcal{L}^\pi_k\rVert^2}}{\text{expected}_k} - 1\Biggr|

    (the root-mean-square per-sample gradient norm, the :math:`k` where the sampling term
    :math:`\operatorname{tr}\Sigma/k` falls to the floor, and the largest median relative error of
    :func:`lhlib.engine.ball.expected_gradient_norm`).

    Args:
        gradient: :func:`gradient_study`'s results, by name.
        reference: The reference network, with its per-sample gradient statistics.

    Returns:
        A dict of floats, also with :math:`\lVert\nabla\mathcal{L}_N\rVert` and :math:`M_g`.
    """
    grads = reference.grads
    rms_error = [np.median(np.abs(np.sqrt((g["norms"] ** 2).mean(0)) / g["expected"] - 1)) for g in gradient.values()]
    return {
        "grad_full_norm": grads.full_norm,
        "grad_sample_rms": float(np.sqrt(grads.trace_cov + grads.full_norm**2)),
        "grad_crossover_k": float(grads.trace_cov / max(grads.full_norm**2, np.finfo(float).tiny)),
        "grad_median_rel_error": float(max(rms_error)),
        "ref_M_g": reference.M_g,
    }


def slice_facts(plane: LossSlice) -> dict[str, float]:
    r"""How the difference of :math:`\mathcal{L}_{k+1}` and :math:`\mathcal{L}_k` on the slice shrinks with ``k``.

    For the slice's two sample sizes :math:`k_1 < k_2` (``plane.ks[0]``, ``plane.ks[1]``),

    .. math::

        \Delta_j = \max_{\alpha, \beta}
        \bigl|\mathcal{L}_{k_j+1} - \mathcal{L}_{k_j}\bigr|(\hat\theta + \alpha d_1 + \beta d_2),
        \qquad \frac{\Delta_1}{\Delta_2} \ \text{vs.}\ \frac{k_2 + 1}{k_1 + 1},

    with the Spearman correlation over the grid of :math:`|\mathcal{L}_{k_2+1} - \mathcal{L}_{k_2}|` with
    :math:`\mathcal{L}_{k_2}`, and the share of the largest difference at :math:`k_2` that the grid's centre
    point carries.

    Args:
        plane: :func:`lhlib.engine.ball.loss_slice`'s slice with (at least) two ``ks``; its centre is taken at
            index ``len(alphas) // 2`` on both axes.

    Returns:
        A dict of floats.
    """
    from scipy.stats import spearmanr

    largest = [float(np.abs(plane.values[row, 1] - plane.values[row, 0]).max()) for row in range(2)]
    large_diff = np.abs(plane.values[1, 1] - plane.values[1, 0])
    centre = len(plane.alphas) // 2
    tiny = np.finfo(float).tiny
    return {
        "slice_k_small": plane.ks[0],
        "slice_k_large": plane.ks[1],
        "slice_diff_small": largest[0],
        "slice_diff_large": largest[1],
        "slice_diff_ratio": largest[0] / max(largest[1], tiny),
        "slice_k_ratio": (plane.ks[1] + 1) / (plane.ks[0] + 1),
        "slice_loss_correlation": float(spearmanr(large_diff.ravel(), plane.values[1, 0].ravel()).statistic),
        "slice_centre_fraction": float(large_diff[centre, centre] / max(large_diff.max(), tiny)),
    }


def gaussian_study(
    network: BallNetwork,
    d: Dataset,
    relative_radii: list[float],
    *,
    k_points: int,
    orders: int,
    samples: int,
    probes: int,
    seed: int,
    device: torch.device,
) -> tuple[list[int], list[dict[str, Any]]]:
    r"""The Gaussian-ball criterion by Monte Carlo and in closed form, per ball radius.

    .. math::

        \mathbb{E}_{\theta \sim \mathcal N(\hat\theta, \sigma^2 I)}
        \bigl(\mathcal{L}_{k+1}(\theta) - \mathcal{L}_k(\theta)\bigr)^2, \qquad
        \sigma = \frac{r\,\lVert\hat\theta\rVert}{\sqrt P}

    (:func:`lhlib.engine.ball.gaussian_mean_square_mc`, :func:`lhlib.engine.ball.gaussian_mean_square_taylor`), for
    ``k_points`` log-spaced :math:`k` in :math:`[1, N-1]`. The parameter draws and probes use ``seed``, the
    ``orders`` random orders ``seed + 4``.

    Args:
        network: The network.
        d: Its training data.
        relative_radii: The relative radii :math:`r`.
        k_points: The number of log-spaced :math:`k` (fewer after rounding duplicates away).
        orders: The number of random orders.
        samples: Monte Carlo parameter draws per radius.
        probes: Hutchinson probes per order and :math:`k`.
        seed: Seeds the draws, the probes and (shifted) the orders.
        device: The device of the computation.

    Returns:
        The ``k`` values and, per radius, a dict with its ``relative_radius``, ``sigma``, the Monte Carlo
        ``mc`` and the closed form ``taylor`` (:class:`lhlib.engine.ball.GaussianCriterion`).
    """
    n = len(d.y)
    x, y = d.x.to(device), d.y.to(device)
    ks = np.unique(np.round(np.geomspace(1, n - 1, k_points)).astype(int)).tolist()
    drawn = random_orders(n, orders, seed + 4)
    study = []
    for relative in progress_bar(relative_radii, desc="Gaussian balls"):
        sigma = gaussian_sigma(network.model, relative)
        mc = gaussian_mean_square_mc(network.model, x, y, sigma, ks, drawn, samples=samples, seed=seed)
        taylor = gaussian_mean_square_taylor(network.model, x, y, sigma, ks, drawn, probes=probes, seed=seed)
        study.append({"relative_radius": relative, "sigma": sigma, "mc": mc, "taylor": taylor})
    return ks, study


def gaussian_relative_error(ball: dict[str, GaussianCriterion]) -> float:
    r"""The largest relative deviation of the closed form from Monte Carlo over ``k`` of one ball.

    .. math::

        \max_k \left|\frac{\text{closed form}_k}{\text{Monte Carlo}_k} - 1\right|.

    Args:
        ball: One entry of :func:`gaussian_study`'s list, with ``mc`` and ``taylor``.

    Returns:
        The largest relative error, a float.
    """
    return float(np.max(np.abs(ball["taylor"].value / ball["mc"].value - 1)))


def gaussian_facts(ks: list[int], study: list[dict[str, Any]]) -> dict[str, float]:
    r"""The criterion's rate, the closed form's agreement with Monte Carlo, and what the gradient term carries.

    With :math:`V_k` the Monte Carlo value, the rate is the least-squares slope of :math:`\log V_k` against
    :math:`\log k` for the smallest ball; for the largest ball, the excess over the value term and the
    gradient term's share of the closed form's correction are the medians over :math:`k` of

    .. math::

        \frac{V_k}{D_0^2/(k+1)^2}, \qquad
        \frac{\sigma^2 \lVert g\rVert^2}{\bigl|\sigma^2 \lVert g\rVert^2 + \sigma^2 D_0 \operatorname{tr}\mathbf H
        + \tfrac{\sigma^4}{4}\bigl((\operatorname{tr}\mathbf H)^2 + 2\lVert\mathbf H\rVert_F^2\bigr)\bigr|}

    (the terms of :class:`lhlib.engine.ball.GaussianCriterion`), with :func:`gaussian_relative_error` for the
    smallest and the largest ball.

    Args:
        ks: The ``k`` values.
        study: :func:`gaussian_study`'s balls, smallest radius first.

    Returns:
        A dict of floats (the ``gauss_sigma_*`` entries are the relative radii).
    """
    terms = study[-1]["taylor"].terms
    excess = terms["gradient"] + terms["trace"] + terms["quartic"]
    share = terms["gradient"] / np.where(np.abs(excess) > 0, np.abs(excess), np.nan)
    return {
        "gauss_rel_error_small": gaussian_relative_error(study[0]),
        "gauss_rel_error_large": gaussian_relative_error(study[-1]),
        "gauss_sigma_small": study[0]["relative_radius"],
        "gauss_sigma_large": study[-1]["relative_radius"],
        "gauss_slope": float(np.polyfit(np.log(ks), np.log(study[0]["mc"].value), 1)[0]),
        "gauss_excess_large": float(np.median(study[-1]["mc"].value / terms["value"])),
        "gauss_gradient_share": float(np.median(share)),
    }


def network_records(
    networks: dict[Key, BallNetwork],
    across_seeds: dict[Key, list[BallNetwork]],
    balls: dict[Key, Ball],
    collapsed: dict[Key, list[int]],
) -> dict[str, list[dict[str, Any]]]:
    """The networks for ``summary.json``: the one measured in full, the constants of every seed that did not collapse.

    Args:
        networks: The networks measured in full.
        across_seeds: The networks of every seed that did not collapse.
        balls: The measurements of ``networks``.
        collapsed: The seeds that collapsed, per configuration.

    Returns:
        A dict with the lists ``networks`` and ``networks_across_seeds``.
    """
    first = [
        {
            "dataset": key[0],
            "hidden_size": key[1],
            "num_layers": key[2],
            "weight_matrices": v.model.weight_matrices,
            "params": v.params,
            "theta_norm": v.theta_norm,
            "train_loss": v.net.train_loss,
            "train_accuracy": v.net.train_accuracy,
            "M_l": v.M_l,
            "M_H_max_ggn": v.M_H,
            "theorem1_paper": v.theorem1,
            "M_g": v.M_g,
            "grad_full_norm": v.grads.full_norm,
            "grad_trace_cov": v.grads.trace_cov,
            "top_hessian_eigenvalue": v.top_eigenvalue,
            "C0": balls[key].base.tail_constant,
            "rate_exponent_at_theta_hat": balls[key].base.fit.exponent,
            "growth_slopes": {kind: growth_slopes(balls[key], kind) for kind in KINDS},
        }
        for key, v in networks.items()
    ]
    every = [
        {
            "dataset": key[0],
            "hidden_size": key[1],
            "num_layers": key[2],
            "seeds": [w.net.seed for w in values],
            "collapsed_seeds": seeds,
            "M_l": [w.M_l for w in values],
            "M_H": [w.M_H for w in values],
            "theorem1": [w.theorem1 for w in values],
            "train_accuracy": [w.net.train_accuracy for w in values],
        }
        for key, seeds in collapsed.items()
        for values in [across_seeds.get(key, [])]
    ]
    return {"networks": first, "networks_across_seeds": every}


def gaussian_records(ks: list[int], study: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Gaussian balls for ``summary.json``: both estimates, the closed form's terms, the relative error.

    Args:
        ks: The ``k`` values.
        study: :func:`gaussian_study`'s balls.

    Returns:
        One dict per ball.
    """
    return [
        {
            "relative_radius": g["relative_radius"],
            "sigma": g["sigma"],
            "ks": ks,
            "monte_carlo": g["mc"].value.tolist(),
            "monte_carlo_stderr": g["mc"].stderr.tolist(),
            "closed_form": g["taylor"].value.tolist(),
            "closed_form_terms": {n: t.tolist() for n, t in g["taylor"].terms.items()},
            "relative_error": gaussian_relative_error(g),
        }
        for g in study
    ]


def plot_ball_curves(ball: Ball, network: BallNetwork, relative_radii: list[float], title: str) -> plt.Figure:
    r"""One network's mean :math:`|\mathcal{L}_{k+1}(\theta)-\mathcal{L}_k(\theta)|` at distance :math:`R`.

    Args:
        ball: :func:`lhlib.chapters.ch06_convergence_in_a_ball.measure_balls`'s measurements of the network.
        network: The network's :class:`lhlib.chapters.ch06_convergence_in_a_ball.BallNetwork` (its :math:`M_\ell` and
            :math:`M_{\mathbf H}`).
        relative_radii: The radii :math:`R/\|\hat\theta\|` of ``ball``'s points, in their order.
        title: The figure's title.

    Returns:
        Two log-log panels (isotropic and ascent directions) — the trained point's curve in black and,
        for up to four radii, the curve with Lemma 1's bound for the same :math:`R` dashed.
    """
    shown = sorted(set(np.linspace(0, len(relative_radii) - 1, min(4, len(relative_radii))).round().astype(int)))
    k = np.arange(1, ball.base.mean.size + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, kind in zip(axes, ["isotropic", "ascent"]):
        ax.plot(k, ball.base.mean, color="black", lw=1.0, label=r"$R = 0$ (the paper's curves)")
        points = [p for p in ball.points if p.kind == kind]
        for index, color in zip(shown, sweep_colors(len(shown), "plasma")):
            p = points[index]
            ax.plot(k, p.mean, color=color, lw=0.9, label=rf"$R = {relative_radii[index]:g}\,\|\hat\theta\|$")
            bound = lemma_bound(torch.as_tensor(k), network.M_l, network.M_H, p.radius).numpy()
            ax.plot(k, bound, color=color, ls="--", lw=0.9)
        ax.set(xscale="log", yscale="log", xlabel="sample size k", title=f"{kind} direction; dashed: Lemma 1's bound")
    axes[0].set_ylabel(r"mean $|\mathcal{L}_{k+1}(\theta)-\mathcal{L}_k(\theta)|$ (nats)")
    axes[0].legend(loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_ball_constants(balls: dict, networks: dict, references: dict[str, tuple], names: dict[str, str]) -> plt.Figure:
    r"""The constant :math:`C(R)` and its growth :math:`C(R)-C(0)` against :math:`R`, one row per dataset.

    Args:
        balls: :func:`lhlib.chapters.ch06_convergence_in_a_ball.measure_balls`'s results.
        networks: :func:`lhlib.chapters.ch06_convergence_in_a_ball.ball_networks`'s first-seed networks.
        references: Per dataset, the key of the network drawn.
        names: Per dataset, the name shown.

    Returns:
        Left — :math:`C(R)` per kind of direction, Lemma 1's :math:`2(M_\ell+M_{\mathbf H}R^2)` (black),
        :math:`C(0)` (dashed grey) and the largest loss at :math:`\theta` (dotted). Right: the growth,
        with grey guides of slope 1 and 2; radii without growth are counted in the legend.
    """
    fig, axes = plt.subplots(len(references), 2, figsize=(11, 4 * len(references)), squeeze=False)
    for (name, key), (left, right) in zip(references.items(), axes):
        v, b = networks[key], balls[key]
        radii = np.array(b.radii)
        fine = np.geomspace(radii[0], radii[-1], 100)
        for kind, color in zip(KINDS, sweep_colors(len(KINDS), "tab10")):
            points = [p for p in b.points if p.kind == kind]
            c = np.array([p.tail_constant for p in points])
            left.plot(radii, c, "o-", color=color, ms=3, label=kind)
            left.plot(radii, [p.max_loss for p in points], ":", color=color, lw=0.8)
            rise = c - b.base.tail_constant
            up = rise > 0
            label = f"{kind}: slope {growth_slopes(b, kind)['all']:.2f}"
            label += f", {int((~up).sum())} radii without growth" if not up.all() else ""
            right.plot(radii[up], rise[up], "o-", color=color, ms=3, label=label)
        left.plot(fine, 2 * (v.M_l + v.M_H * fine**2), color="black", label=r"Lemma 1: $2(M_\ell+M_H R^2)$")
        left.axhline(b.base.tail_constant, color="grey", lw=0.8, ls="--", label=r"$C(0)$")
        top_growth = max(p.tail_constant for p in b.points) - b.base.tail_constant
        for power, style in [(1, "-."), (2, "--")]:
            right.plot(
                fine, top_growth * (fine / radii[-1]) ** power, color="grey", ls=style, lw=0.8, label=f"slope {power}"
            )
        left.set(
            xscale="log",
            yscale="log",
            xlabel=r"distance $R=\|\theta-\hat\theta\|$",
            ylabel=r"$C(R)=(k+1)\,\mathbb{E}|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)",
            title=f"{names[name]}: measured constant (dotted: max loss at $\\theta$)",
        )
        right.set(
            xscale="log",
            yscale="log",
            xlabel=r"distance $R$",
            ylabel=r"$C(R)-C(0)$ (nats)",
            title="growth of the constant with R",
        )
        left.legend(loc="upper left")
        right.legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot_ball_ratios(records: list[dict]) -> plt.Figure:
    r"""Lemma 1's bound over the measured mean (tightest ``k``) against :math:`R/\|\hat\theta\|`, per network.

    Args:
        records: :func:`lhlib.chapters.ch06_convergence_in_a_ball.ball_records`'s records.

    Returns:
        Two log-log panels (isotropic and ascent directions), one line per network, the line at 1.
    """
    keys = list(dict.fromkeys((r["dataset"], r["hidden_size"], r["num_layers"]) for r in records))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, kind in zip(axes, ["isotropic", "ascent"]):
        for key, color in zip(keys, sweep_colors(len(keys), "viridis")):
            chosen = [
                r for r in records if (r["dataset"], r["hidden_size"], r["num_layers"]) == key and r["kind"] == kind
            ]
            ax.plot(
                [r["relative_radius"] for r in chosen],
                [r["ratio_tightest"] for r in chosen],
                "o-",
                ms=3,
                color=color,
                label=f"{key[0]}, h = {key[1]}, num_layers = {key[2]}",
            )
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel=r"$R/\|\hat\theta\|$", title=f"{kind} direction")
    axes[0].set_ylabel("Lemma 1's bound / measured mean (tightest k)")
    axes[1].legend(loc="upper left", fontsize=6)
    fig.tight_layout()
    return fig


def plot_gradient_norms(
    gradient: dict[str, dict], networks: dict[str, BallNetwork], titles: dict[str, str]
) -> plt.Figure:
    r""":math:`\|\nabla\mathcal{L}_k(\hat\theta)\|_2` against ``k``, one panel per dataset.

    Args:
        gradient: Per dataset, :func:`lhlib.chapters.ch06_convergence_in_a_ball.gradient_study`'s result.
        networks: Per dataset, the network measured (its full-batch gradient norm is the floor).
        titles: Per dataset, the panel's title.

    Returns:
        Thin lines per order, their root mean square in bold, the expectation dashed, the floor red.
    """
    fig, axes = plt.subplots(1, len(gradient), figsize=(5.5 * len(gradient), 4), squeeze=False)
    for ax, (name, g) in zip(axes[0], gradient.items()):
        for row in g["norms"]:
            ax.plot(g["ks"], row, color="tab:blue", lw=0.6, alpha=0.5)
        rms = np.sqrt((g["norms"] ** 2).mean(0))
        ax.plot(g["ks"], rms, color="tab:blue", lw=1.5, label=r"measured, root mean square over orders")
        expected = r"$\sqrt{\|\nabla\mathcal{L}_N\|^2+\frac{N-k}{k(N-1)}\mathrm{tr}\,\Sigma}$"
        ax.plot(g["ks"], g["expected"], color="black", ls="--", label=expected)
        floor = networks[name].grads.full_norm
        ax.axhline(floor, color="tab:red", lw=0.8, label=r"floor $\|\nabla\mathcal{L}_N(\hat\theta)\|$")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="sample size k",
            ylabel=r"$\|\nabla\mathcal{L}_k(\hat\theta)\|_2$",
            title=titles[name],
        )
        ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def plot_loss_slice(plane: LossSlice, title: str) -> plt.Figure:
    r"""The paper's Figure 1 computed: :math:`\mathcal{L}_k`, :math:`\mathcal{L}_{k+1}` and their difference on a plane.

    Args:
        plane: :func:`lhlib.engine.ball.loss_slice`'s values on the plane
            :math:`\hat\theta + \alpha d_1 + \beta d_2`.
        title: The figure's title.

    Returns:
        One row per ``k`` of ``plane`` — the two losses (a log colour scale when they span more than a
        decade) and their difference on its own symmetric scale; the cross marks :math:`\hat\theta`.
    """
    fig, axes = plt.subplots(len(plane.ks), 3, figsize=(12, 3.75 * len(plane.ks)), squeeze=False)
    grid_a, grid_b = np.meshgrid(plane.alphas, plane.betas, indexing="ij")
    for row, k in enumerate(plane.ks):
        lk, lk1 = plane.values[row]
        low, high = max(min(lk.min(), lk1.min()), 1e-3), max(lk.max(), lk1.max())
        log_scale = high / low > 10  # a log colour scale only when the loss spans more than a decade
        levels = np.geomspace(low, high, 15) if log_scale else np.linspace(low, high, 15)
        for col, (values, name) in enumerate(
            [(lk, rf"$\mathcal{{L}}_{{{k}}}$"), (lk1, rf"$\mathcal{{L}}_{{{k + 1}}}$")]
        ):
            ax = axes[row, col]
            norm = mpl.colors.LogNorm() if log_scale else None
            cs = ax.contourf(grid_a, grid_b, np.clip(values, low, None), levels=levels, cmap="viridis", norm=norm)
            ax.plot(0, 0, "w+", ms=8)
            scale = ", log colour scale" if log_scale else ""
            ax.set(title=f"{name} (nats{scale})", xlabel=r"$\alpha$", ylabel=r"$\beta$")
            fig.colorbar(cs, ax=ax, format="%.3g")
        diff = lk1 - lk
        limit = float(np.abs(diff).max())
        cs = axes[row, 2].contourf(grid_a, grid_b, diff, levels=np.linspace(-limit, limit, 17), cmap="RdBu_r")
        axes[row, 2].plot(0, 0, "k+", ms=8)
        axes[row, 2].set(
            title=rf"$\mathcal{{L}}_{{{k + 1}}}-\mathcal{{L}}_{{{k}}}$ (max $|\cdot|$ = {limit:.2g} nats)",
            xlabel=r"$\alpha$",
            ylabel=r"$\beta$",
        )
        fig.colorbar(cs, ax=axes[row, 2], format="%.2g")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_gaussian_criterion(ks: list[int], study: list[dict]) -> plt.Figure:
    r"""The Gaussian-ball criterion against ``k``: Monte Carlo beside the closed form, and their gap.

    Args:
        ks: The sample sizes.
        study: :func:`lhlib.chapters.ch06_convergence_in_a_ball.gaussian_study`'s balls.

    Returns:
        Left — Monte Carlo with two standard errors (points), the closed form (solid) and the closed
        form without its gradient term (dotted), one colour per radius. Right: their relative gap.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for g, color in zip(study, sweep_colors(len(study), "plasma")):
        label = rf"$\sigma\sqrt{{P}} = {g['relative_radius']:g}\,\|\hat\theta\|$"
        mc, taylor = g["mc"], g["taylor"]
        axes[0].errorbar(ks, mc.value, yerr=2 * mc.stderr, fmt="o", ms=3, color=color, label=f"Monte Carlo, {label}")
        axes[0].plot(ks, taylor.value, "-", color=color, lw=1.0, label=f"second-order closed form, {label}")
        axes[0].plot(ks, taylor.value - taylor.terms["gradient"], ":", color=color, lw=1.0)
        axes[1].plot(ks, np.abs(taylor.value / mc.value - 1), "o-", color=color, ms=3, label=label)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="sample size k",
        ylabel=r"$\mathbb{E}_\theta(\mathcal{L}_{k+1}(\theta)-\mathcal{L}_k(\theta))^2$ (nats$^2$)",
        title="Gaussian-ball criterion (dotted: without the gradient term)",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="sample size k",
        ylabel="|closed form / Monte Carlo - 1|",
        title="agreement of the closed form",
    )
    axes[0].legend(loc="lower left", fontsize=6)
    axes[1].legend(loc="upper left")
    fig.tight_layout()
    return fig
