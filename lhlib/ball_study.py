r"""Chapter 06's experiment: the loss difference in a ball around the trained point, against Lemma 1.

:func:`ball_networks` trains (or loads) every configuration from every seed and records the lemma's
constants; :func:`measure_balls` measures
:math:`\mathbb{E}|\mathcal{L}_{k+1}(\theta)-\mathcal{L}_k(\theta)|` at distances :math:`R` along four
kinds of direction, and :func:`ball_records` and :func:`ball_facts` compare it with the lemma's
bound :math:`2(M_\ell+M_{\mathbf H}R^2)/(k+1)`. :func:`gradient_study` tests Assumption 1 at the
trained point, :func:`slice_facts` the paper's Figure 1, :func:`gaussian_study` the Gaussian-ball
criterion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lhlib.ball import (
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
from lhlib.bounds import theorem1_bound_paper
from lhlib.data import Dataset
from lhlib.experiment import TrainedNetwork, trained_networks
from lhlib.hessian import flat_parameters, per_sample_ggn_norms
from lhlib.landscape import random_orders
from lhlib.progress import progress_bar

__all__ = [
    "KINDS",
    "Ball",
    "BallNetwork",
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
    "reference_table",
    "slice_facts",
]

KINDS = ["isotropic", "filter-normalised", "top eigenvector", "ascent"]
"""The directions of every ball, in the order :func:`measure_balls` measures them."""

Key = tuple[str, int, int]


@dataclass
class BallNetwork:
    r"""A trained network and the constants of Lemma 1 at its trained point.

    ``M_l`` is the largest per-sample loss, ``M_H`` the largest per-sample G-term norm
    :math:`\max_i\|\mathbf J_i^\top\mathbf A_i\mathbf J_i\|_2`, ``theorem1`` Theorem 1's constant as
    stated. ``grads`` (per-sample gradient statistics, :math:`M_g`) and ``top_eigenvalue`` are
    measured for the first seed only.
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
        """The largest per-sample gradient norm (NaN where not measured)."""
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
) -> tuple[dict[Key, BallNetwork], dict[Key, list[BallNetwork]]]:
    """Every configuration from every seed, with the lemma's constants.

    Returns:
        The first seed's network per ``(dataset, h, num_layers)``, with its per-sample gradient
        statistics, and the networks of every seed.
    """
    networks, across_seeds = {}, {}
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
            across_seeds[(name, h, depth)] = [_constants(net, d, device) for net in ensemble]
            first = networks[(name, h, depth)] = across_seeds[(name, h, depth)][0]
            # Per-sample gradients cost seconds per network: measured for the first seed only.
            first.grads = per_sample_gradient_stats(first.model, d.x.to(device), d.y.to(device))
    return networks, across_seeds


def network_table(
    networks: dict[Key, BallNetwork], across_seeds: dict[Key, list[BallNetwork]]
) -> tuple[list[str], list[list[str]]]:
    r"""The networks and their constants (first seed; the range of :math:`M_{\mathbf H}` across seeds)."""
    rows = []
    for key, v in networks.items():
        m_h = [w.M_H for w in across_seeds[key]]
        rows.append(
            [
                *key,
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
    """One network's measurements: ``base`` at the trained point, ``points`` per kind and radius."""

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
    r"""Measure every network at :math:`R = r\,\|\hat\theta\|` for each of ``relative_radii``.

    The directions (:data:`KINDS`): isotropic, filter-normalised, the top Hessian eigenvector on the
    first ``eigen_samples`` samples, and per radius the ascent direction on ``ascent_samples``
    samples, started from the top eigenvector. Sets each network's ``top_eigenvalue``.
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

    ``ratio_tightest`` is the lemma's constant over the largest :math:`(k+1)\,\mathbb{E}|\ldots|`;
    ``held_sampled_orders`` compares the constant with the largest scaled difference over the sampled
    orders, ``held_every_order`` with its largest value over every order (the loss range).
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
                    "ratio_tail": constant / p.tail_constant,
                    "ratio_tightest": constant / float((p.mean * (k + 1)).max()),
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

    Returns:
        Over all radii, the smallest three and the largest three; radii without growth are left out
        (NaN with fewer than two left).
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
    """The reference network per kind and radius: exponent with its interval, :math:`C(R)`, bound / measured."""
    rows = [
        [
            kind,
            f"{p.radius / network.theta_norm:.3g}",
            f"{p.fit.exponent:.3f} [{p.fit.ci[0]:.3f}, {p.fit.ci[1]:.3f}]",
            f"{p.tail_constant:.3g}",
            f"{_bound_constant(network, p.radius) / p.tail_constant:.3g}",
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
    """What the chapter cites about the balls: rates, where the lemma held, its slack, the growth of :math:`C(R)`."""
    exponents = np.array([r["exponent"] for r in records])
    ratios = np.array([r["ratio_tightest"] for r in records])
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
    r""":math:`\|\nabla\mathcal{L}_k(\hat\theta)\|` along random orders beside its expectation.

    The ``orders`` random orders are drawn with ``seed``.

    Returns:
        ``ks`` (log-spaced, ``points`` of them), ``norms`` (``orders x len(ks)``) and ``expected``
        (:func:`lhlib.ball.expected_gradient_norm` from the per-sample gradient statistics).
    """
    n = len(d.y)
    ks = np.unique(np.round(np.geomspace(1, n, points)).astype(int)).tolist()
    norms = gradient_norms_over_k(network.model, d.x.to(device), d.y.to(device), ks, random_orders(n, orders, seed))
    expected = expected_gradient_norm(ks, n, network.grads.full_norm, network.grads.trace_cov)
    return {"ks": ks, "norms": norms, "expected": expected}


def gradient_facts(gradient: dict[str, dict[str, Any]], reference: BallNetwork) -> dict[str, float]:
    """The reference network's gradient scales, where sampling noise meets the floor, and the formula's fit."""
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
    r"""How the difference of :math:`\mathcal{L}_{k+1}` and :math:`\mathcal{L}_k` on the slice shrinks with ``k``."""
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
    """The Gaussian-ball criterion by Monte Carlo and in closed form, per ball radius.

    The parameter draws and probes use ``seed``, the ``orders`` random orders ``seed + 4``.

    Returns:
        The ``k`` values and, per radius, its ``sigma``, the Monte Carlo ``mc`` and the closed form
        ``taylor`` (:class:`lhlib.ball.GaussianCriterion`).
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
    r"""The largest :math:`|\text{closed form}/\text{Monte Carlo}-1|` over ``k`` of one ball."""
    return float(np.max(np.abs(ball["taylor"].value / ball["mc"].value - 1)))


def gaussian_facts(ks: list[int], study: list[dict[str, Any]]) -> dict[str, float]:
    """The criterion's rate, the closed form's agreement with Monte Carlo, and what the gradient term carries."""
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
    networks: dict[Key, BallNetwork], across_seeds: dict[Key, list[BallNetwork]], balls: dict[Key, Ball]
) -> dict[str, list[dict[str, Any]]]:
    """The networks for ``summary.json``: the first seed's in full, every seed's constants."""
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
            "M_l": [w.M_l for w in values],
            "M_H": [w.M_H for w in values],
            "theorem1": [w.theorem1 for w in values],
            "train_accuracy": [w.net.train_accuracy for w in values],
        }
        for key, values in across_seeds.items()
    ]
    return {"networks": first, "networks_across_seeds": every}


def gaussian_records(ks: list[int], study: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Gaussian balls for ``summary.json``: both estimates, the closed form's terms, the relative error."""
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
