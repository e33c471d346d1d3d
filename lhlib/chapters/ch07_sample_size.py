r"""Chapter 07's experiment: the sufficient sample size of every network of the paper's sweep.

For every dataset, configuration and training seed, :func:`sample_size_study` computes
:func:`lhlib.engine.sample_size.sufficient_sample_size` at each tolerance, at the trained point and in a
ball of radius :math:`R = r\,\|\hat\theta\|` (with :math:`M_{\mathbf H}` the largest per-sample
G-term norm). :func:`holdout_check` asks whether a pilot sample predicts what the rest of the data
shows. The other functions turn the results into the chapter's tables, findings, summary and figures
(:func:`plot_sample_size_vs_tolerance`, :func:`plot_sample_size_vs_architecture`, :func:`plot_holdout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from lhlib.build.plotting import sweep_colors
from lhlib.engine.data import Dataset
from lhlib.engine.experiment import settings_networks
from lhlib.engine.landscape import loss_difference_curves
from lhlib.engine.parameters import flat_parameters
from lhlib.engine.per_sample import per_sample_ggn_norms
from lhlib.engine.progress import progress_bar
from lhlib.engine.sample_size import SampleSize, sufficient_sample_sizes
from lhlib.engine.seed_stats import is_collapsed, positive_interval_across_seeds
from lhlib.engine.settings import SweepSettings, sweep_configurations
from lhlib.engine.train import resolve_device

__all__ = [
    "NetworkSampleSizes",
    "holdout_check",
    "holdout_facts",
    "nearest_tolerance",
    "plot_holdout",
    "plot_sample_size_vs_architecture",
    "plot_sample_size_vs_tolerance",
    "sample_size_facts",
    "sample_size_record",
    "sample_size_study",
    "sample_size_table",
    "study_summary",
]


@dataclass(frozen=True)
class NetworkSampleSizes:
    r"""One trained network (one seed) and its sufficient sample sizes per tolerance.

    Attributes:
        seed: The network's training seed.
        losses: The ``(N,)`` per-sample losses at :math:`\hat\theta`.
        train_loss: Their mean.
        radius: The lemma's radius :math:`R = r\,\lVert\hat\theta\rVert_2`.
        hessian_bound: :math:`M_{\mathbf H} = \max_i \lVert \mathbf J_i^\top \mathbf A_i \mathbf J_i \rVert_2` over the
            training samples.
        at_theta_hat: Per tolerance, the :class:`lhlib.engine.sample_size.SampleSize` at the trained point (:math:`R
            = 0`).
        in_ball: Per tolerance, the same with Lemma 1 at distance ``radius`` with constant ``hessian_bound``.
        collapsed: Whether the network collapsed (:func:`lhlib.engine.seed_stats.is_collapsed`); its :math:`k^*`
            measures its dead units, and every range, mean and interval of the chapter leaves it out.
    """

    seed: int
    losses: torch.Tensor
    train_loss: float
    radius: float
    hessian_bound: float
    at_theta_hat: dict[float, SampleSize]
    in_ball: dict[float, SampleSize]
    collapsed: bool


def sample_size_study(
    data: dict[str, Dataset],
    settings: SweepSettings,
    epsilons: list[float],
    *,
    bound_relative_radius: float,
    bootstrap: int,
    confidence: float,
) -> dict[tuple[str, int, int], list[NetworkSampleSizes]]:
    r"""Train (or load) every configuration of the sweep from every seed and size its sample.

    For each tolerance :math:`\varepsilon` (:func:`lhlib.engine.sample_size.sufficient_sample_size`),

    .. math::

        k^*(\varepsilon) = \min\bigl\{k : \mathbb{E}\,|\mathcal{L}_{j+1} - \mathcal{L}_j| \le \varepsilon
        \ \text{for every } j \ge k\bigr\}, \qquad
        \hat k^* = \max\Bigl(\frac{\operatorname{MAD}}{\varepsilon} - 1,\ 1\Bigr),

        k^*_{\text{lemma}} = \max\Bigl(1, \Bigl\lceil \frac{2 (M_\ell + M_{\mathbf H} R^2)}{\varepsilon} - 1
        \Bigr\rceil\Bigr),

    measured, extrapolated from the MAD of the losses and from Lemma 1, with :math:`M_\ell` the largest loss,
    :math:`M_{\mathbf H}` the largest per-sample G-term norm and :math:`R = 0` at :math:`\hat\theta` or
    :math:`R = r\,\lVert\hat\theta\rVert_2` in the ball.

    Args:
        data: The datasets, by name.
        settings: The sweep: configurations, training recipe, seeds, ``permutations``, ``device``.
        epsilons: Tolerances on :math:`\mathbb{E}|\mathcal{L}_{k+1}-\mathcal{L}_k|` (nats).
        bound_relative_radius: :math:`r = R/\|\hat\theta\|` of the lemma's ball.
        bootstrap: Resamples of every interval.
        confidence: The intervals' level.

    Returns:
        Per ``(dataset, h, num_layers)``, one :class:`NetworkSampleSizes` per seed.
    """
    device = resolve_device(settings.device)
    results = {}
    for name, d in data.items():
        for h, depth in progress_bar(sweep_configurations(settings), desc=f"{name} networks"):
            ensemble = settings_networks(d.x, d.y, d.info.num_classes, h, depth, settings)
            results[(name, h, depth)] = [
                _network_sample_sizes(net, d, device, settings, epsilons, bound_relative_radius, bootstrap, confidence)
                for net in ensemble
            ]
    return results


def _kept(members: list[NetworkSampleSizes]) -> list[NetworkSampleSizes]:
    return [m for m in members if not m.collapsed]


def _network_sample_sizes(net, d, device, settings, epsilons, relative_radius, bootstrap, confidence):
    model = net.model.to(device)
    radius = relative_radius * float(flat_parameters(model).norm())
    hessian_bound = float(per_sample_ggn_norms(model, d.x.to(device)).max())
    curves = loss_difference_curves(net.losses, settings.permutations, net.seed).numpy()
    common = dict(
        curves=curves, permutations=settings.permutations, seed=net.seed, bootstrap=bootstrap, confidence=confidence
    )
    at_theta_hat = dict(zip(epsilons, sufficient_sample_sizes(net.losses, epsilons, **common)))
    return NetworkSampleSizes(
        seed=net.seed,
        losses=net.losses,
        train_loss=net.train_loss,
        radius=radius,
        hessian_bound=hessian_bound,
        at_theta_hat=at_theta_hat,
        in_ball={eps: size.with_ball(radius, hessian_bound) for eps, size in at_theta_hat.items()},
        collapsed=is_collapsed(net.losses, net.train_accuracy, d.y, d.info.num_classes, settings.collapse_share),
    )


def nearest_tolerance(epsilons: list[float], target: float) -> float:
    r"""The tolerance of ``epsilons`` closest to ``target`` on a log scale.

    .. math::

        \arg\min_{\varepsilon} \bigl|\log(\varepsilon / \varepsilon_0)\bigr|,

    over the :math:`\varepsilon` of ``epsilons``, the first of equally close ones.

    Args:
        epsilons: The tolerances, all positive.
        target: The tolerance :math:`\varepsilon_0` wanted, positive.

    Returns:
        The element of ``epsilons`` nearest to ``target``.
    """
    return min(epsilons, key=lambda e: abs(math.log(e / target)))


def _mean_text(values) -> str:
    return f"{np.mean(values):.3g}" if values else "none kept"


def _across_seeds(values) -> str:
    if len(values) < 2:
        return f"{values[0]:.0f}" if values else "none kept"
    centre, (low, high) = positive_interval_across_seeds(values)
    return f"{centre:.0f} [{low:.0f}, {high:.0f}]"


def sample_size_table(results, dataset: str, epsilon: float) -> tuple[list[str], list[list[str]]]:
    r"""Per configuration of ``dataset`` at tolerance ``epsilon``, as ``(header, rows)``.

    The columns: the collapsed seeds, left out of every other column; mean training loss; how many
    seeds' curves reached :math:`\varepsilon` within the data and their mean measured :math:`k^*`; the
    extrapolated :math:`k^*` (geometric mean and 95 % interval across seeds, on the log scale: a sample
    size is positive); and the lemma's :math:`k^*` at the trained point and in the ball (means).

    Args:
        results: :func:`sample_size_study`'s results.
        dataset: The dataset whose configurations are tabulated.
        epsilon: One of the study's tolerances.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
    """
    rows = []
    for (name, h, depth), members in results.items():
        if name != dataset:
            continue
        kept = _kept(members)
        at = [m.at_theta_hat[epsilon] for m in kept]
        reached = [s.measured for s in at if s.reached]
        rows.append(
            [
                h,
                depth,
                f"{len(members) - len(kept)} of {len(members)}",
                _mean_text([m.train_loss for m in kept]),
                f"{len(reached)} of {len(at)}" + (f": {np.mean(reached):.0f}" if reached else ""),
                _across_seeds([s.extrapolated for s in at]),
                _mean_text([s.bound for s in at]),
                _mean_text([m.in_ball[epsilon].bound for m in kept]),
            ]
        )
    header = [
        "h",
        "num_layers",
        "collapsed seeds (left out)",
        "train loss (mean)",
        "seeds reaching ε: mean measured k*",
        "k* extrapolated, geometric mean [95 % CI across seeds, log scale]",
        "bound, R = 0 (mean)",
        "bound, R > 0 (mean)",
    ]
    return header, rows


def _range(values: list[float]) -> tuple[float, float]:
    return (float(np.min(values)), float(np.max(values))) if values else (math.nan, math.nan)


def sample_size_facts(results, epsilons: list[float], epsilon: float) -> dict[str, float | str]:
    r"""What the chapter cites about every network: extrapolation against measurement, the lemma's overshoot, spreads.

    With :math:`k^*` the measured, :math:`\hat k^*` the extrapolated and :math:`k^*_{\text{lemma}}(R)` the lemma's
    sufficient sample size,

    .. math::

        \frac{\hat k^*}{k^*}, \qquad \frac{k^*_{\text{lemma}}(0)}{k^*}, \qquad \frac{k^*_{\text{lemma}}(R)}{k^*},
        \qquad \frac{\max_c \bar k_c}{\min_c \bar k_c}, \qquad
        \max_c \frac{\max_s \hat k^*_{c,s}}{\min_s \hat k^*_{c,s}},

    the ratios over every (network, tolerance of ``epsilons``) whose measured :math:`k^*` was reached; the spreads of
    :math:`\hat k^*` at ``epsilon`` between the configurations :math:`c` of every dataset (:math:`\bar k_c` the mean
    over seeds) and between the seeds :math:`s` of one configuration. Collapsed networks are left out of all of it
    (their :math:`\hat k^*` sits at its floor of 1 and would set every spread), and counted.

    Args:
        results: :func:`sample_size_study`'s results.
        epsilons: The tolerances of the ratios.
        epsilon: The tolerance of the spreads, one of the study's.

    Returns:
        ``eps_table``, ``n_reached``, ``extrapolated_over_measured_min``/``max``, ``bound_ratio_min``/``max``,
        ``bound_ball_ratio_min``/``max``, ``architecture_spread``, ``seed_spread_max``, ``seed_spread_where``
        (``"no configuration has two seeds that did not collapse"`` when none has) and ``collapsed_networks``.
    """
    kept = {key: _kept(members) for key, members in results.items()}
    every = [(m.at_theta_hat[e], m.in_ball[e]) for members in kept.values() for m in members for e in epsilons]
    reached = [(s, b) for s, b in every if s.reached]
    agreement = _range([s.extrapolated / s.measured for s, _ in reached])
    bound = _range([s.bound / s.measured for s, _ in reached])
    ball = _range([b.bound / s.measured for s, b in reached])
    per_configuration = {
        key: [m.at_theta_hat[epsilon].extrapolated for m in members] for key, members in kept.items() if members
    }
    means = [np.mean(v) for v in per_configuration.values()]
    seed_spreads = {key: max(v) / min(v) for key, v in per_configuration.items() if len(v) >= 2}
    widest = max(seed_spreads, key=seed_spreads.get) if seed_spreads else None
    n_networks = sum(len(members) for members in results.values())
    n_collapsed = n_networks - sum(len(members) for members in kept.values())
    return {
        "eps_table": epsilon,
        "n_reached": f"{len(reached)} of {len(every)}",
        "extrapolated_over_measured_min": agreement[0],
        "extrapolated_over_measured_max": agreement[1],
        "bound_ratio_min": bound[0],
        "bound_ratio_max": bound[1],
        "bound_ball_ratio_min": ball[0],
        "bound_ball_ratio_max": ball[1],
        "architecture_spread": float(max(means) / min(means)) if means else math.nan,
        "seed_spread_max": float(seed_spreads[widest]) if widest else math.nan,
        "seed_spread_where": f"{widest[0]}, h = {widest[1]}, num_layers = {widest[2]}"
        if widest
        else "no configuration has two seeds that did not collapse",
        "collapsed_networks": f"{n_collapsed} of {n_networks}",
    }


def holdout_check(
    results, pilot_size: int, epsilons: list[float], *, permutations: int, seed: int, bootstrap: int, confidence: float
) -> list[dict]:
    r"""Predict :math:`k^*` from the first ``pilot_size`` losses; measure it on the remaining ones.

    .. math::

        \hat k^*_{\text{pilot}}
        = \max\Bigl(\frac{\operatorname{MAD}(\ell_1, \dots, \ell_{n_0})}{\varepsilon} - 1,\ 1\Bigr)
        \quad \text{against the measured } k^* \text{ of } \ell_{n_0 + 1}, \dots, \ell_N,

    :math:`n_0` = ``pilot_size``, the losses in the data's order. Uses each configuration's first seed that did not
    collapse (the check is of the rule's statistics) and keeps the cases where the remaining objects' curve reached
    the tolerance at :math:`k \ge 10`.

    Args:
        results: :func:`sample_size_study`'s results.
        pilot_size: :math:`n_0`, how many of the first losses form the pilot.
        epsilons: The tolerances.
        permutations: The random orders of each curve.
        seed: Seeds the pilot's orders and every bootstrap; the remaining losses' orders use ``seed + 1``.
        bootstrap: Resamples of every interval.
        confidence: The intervals' level.

    Returns:
        One record per kept (network, tolerance) — the prediction with its interval and the
        observation with its interval.
    """
    holdout = []
    for (name, h, depth), members in results.items():
        if not (kept := _kept(members)):
            continue
        first = kept[0]
        pilot, rest = first.losses[:pilot_size], first.losses[pilot_size:]
        rest_curves = loss_difference_curves(rest, permutations, seed + 1).numpy()
        common = dict(seed=seed, bootstrap=bootstrap, confidence=confidence)
        predictions = sufficient_sample_sizes(pilot, epsilons, permutations=permutations, **common)
        observations = sufficient_sample_sizes(rest, epsilons, curves=rest_curves, **common)
        for eps, predicted, observed in zip(epsilons, predictions, observations):
            if observed.reached and observed.measured >= 10:
                holdout.append(
                    {
                        "dataset": name,
                        "hidden_size": h,
                        "num_layers": depth,
                        "seed": first.seed,
                        "epsilon": eps,
                        "predicted": predicted.extrapolated,
                        "predicted_ci": list(predicted.extrapolated_ci),
                        "observed": observed.measured,
                        "observed_ci": list(observed.measured_ci),
                    }
                )
    return holdout


def holdout_facts(holdout: list[dict]) -> dict[str, float | int]:
    r"""How far the pilot's prediction was from the observation, and how often its interval held it.

    .. math::

        e = \exp\bigl(\bigl|\log(\hat k^*_{\text{pilot}} / k^*)\bigr|\bigr) - 1,

    its median (of the logarithms) and its largest value over the cases, and the share of cases whose observed
    :math:`k^*` lies inside the pilot's interval.

    Args:
        holdout: :func:`holdout_check`'s records.

    Returns:
        ``holdout_cases``, ``holdout_median_error``, ``holdout_max_error`` and ``holdout_within_ci`` (NaN when there is
        no case).
    """
    if not holdout:
        return {"holdout_cases": 0, "holdout_median_error": math.nan, "holdout_max_error": math.nan,
                "holdout_within_ci": math.nan}  # fmt: skip
    log_error = np.abs(np.log([h["predicted"] / h["observed"] for h in holdout]))
    within = np.mean([h["predicted_ci"][0] <= h["observed"] <= h["predicted_ci"][1] for h in holdout])
    return {
        "holdout_cases": len(holdout),
        "holdout_median_error": float(np.expm1(np.median(log_error))),
        "holdout_max_error": float(np.expm1(np.max(log_error))),
        "holdout_within_ci": float(within),
    }


def sample_size_record(s: SampleSize) -> dict:
    """A :class:`lhlib.engine.sample_size.SampleSize` as a ``summary.json`` record.

    Args:
        s: The sample sizes of one tolerance.

    Returns:
        A JSON-ready dict of its fields and its ``bound_ratio``.
    """
    return {
        "epsilon": s.epsilon,
        "measured": s.measured,
        "measured_ci": list(s.measured_ci),
        "reached": s.reached,
        "extrapolated": s.extrapolated,
        "extrapolated_ci": list(s.extrapolated_ci),
        "bound": s.bound,
        "bound_ratio": s.bound_ratio,
        "mad": s.mad,
        "loss_bound": s.loss_bound,
    }


def study_summary(results, epsilon: float) -> dict[str, list[dict]]:
    """Every network's sample sizes, and :math:`k^*` at ``epsilon`` across seeds, for ``summary.json``.

    Args:
        results: :func:`sample_size_study`'s results.
        epsilon: The tolerance of the across-seed summary, one of the study's.

    Returns:
        ``configurations``, one record per network with its :func:`sample_size_record` lists, and
        ``k_star_across_seeds``, per configuration the extrapolated :math:`k^*` of every seed, the seeds kept (not
        collapsed) and over them the geometric mean with its 95 % interval on the log scale (``None`` with fewer
        than two kept).
    """
    configurations = [
        {
            "dataset": name,
            "hidden_size": h,
            "num_layers": depth,
            "seed": m.seed,
            "train_loss": m.train_loss,
            "radius": m.radius,
            "M_H_max_ggn": m.hessian_bound,
            "collapsed": m.collapsed,
            "at_theta_hat": [sample_size_record(s) for s in m.at_theta_hat.values()],
            "in_ball": [sample_size_record(s) for s in m.in_ball.values()],
        }
        for (name, h, depth), members in results.items()
        for m in members
    ]
    across = [
        {
            "dataset": name,
            "hidden_size": h,
            "num_layers": depth,
            "epsilon": epsilon,
            "seeds": [m.seed for m in members],
            "kept_seeds": [m.seed for m in _kept(members)],
            "extrapolated": [m.at_theta_hat[epsilon].extrapolated for m in members],
            "extrapolated_geometric_mean_ci95": positive_interval_across_seeds(values)
            if len(values := [m.at_theta_hat[epsilon].extrapolated for m in _kept(members)]) >= 2
            else None,
        }
        for (name, h, depth), members in results.items()
    ]
    return {"configurations": configurations, "k_star_across_seeds": across}


def _sample_size_line(constant: float, epsilons: np.ndarray) -> np.ndarray:
    r""":math:`k^* = C/\varepsilon - 1`; below one object it is no sample size (NaN)."""
    k_star = constant / epsilons - 1
    return np.where(k_star >= 1, k_star, np.nan)


def _draw_sample_sizes(ax, members: list[NetworkSampleSizes], color) -> None:
    """One dataset's lines of :func:`plot_sample_size_vs_tolerance`."""
    first = members[0]
    epsilons = sorted(first.at_theta_hat, reverse=True)
    fine = np.geomspace(min(epsilons), max(epsilons), 50)
    mads = np.array([m.at_theta_hat[epsilons[0]].mad for m in members])
    loss_bound = first.at_theta_hat[epsilons[0]].loss_bound
    low, high = _sample_size_line(mads.min(), fine), _sample_size_line(mads.max(), fine)
    low = np.where(np.isnan(low) & ~np.isnan(high), 1.0, low)  # the band runs down to one object
    ax.fill_between(fine, low, high, color=color, alpha=0.15, lw=0)
    ax.plot(fine, _sample_size_line(mads.mean(), fine), color=color)
    ax.plot(fine, _sample_size_line(2 * loss_bound, fine), color=color, ls="--", lw=0.9)
    in_ball = 2 * (loss_bound + first.hessian_bound * first.radius**2)
    ax.plot(fine, _sample_size_line(in_ball, fine), color=color, ls=":", lw=0.9)
    reached = [e for e in epsilons if first.at_theta_hat[e].reached]
    if reached:
        y = np.array([first.at_theta_hat[e].measured for e in reached], dtype=float)
        ci = np.array([first.at_theta_hat[e].measured_ci for e in reached], dtype=float)
        ci = np.where(np.isfinite(ci), ci, y[:, None])
        ax.errorbar(reached, y, yerr=[y - ci[:, 0], ci[:, 1] - y], fmt="o", color=color, ms=4)


def plot_sample_size_vs_tolerance(
    results: dict[tuple[str, int, int], list[NetworkSampleSizes]],
    reference: tuple[int, int],
    names: dict[str, str],
    *,
    train_size: int,
    relative_radius: float,
) -> plt.Figure:
    r"""The sufficient sample size against the tolerance for the reference configuration, per dataset.

    Args:
        results: :func:`lhlib.chapters.ch07_sample_size.sample_size_study`'s results.
        reference: ``(h, num_layers)`` of the configuration drawn.
        names: Dataset key to the name shown, in drawing order.
        train_size: Objects at hand; sample sizes beyond it are shaded grey.
        relative_radius: :math:`R/\|\hat\theta\|` of the lemma's ball, for the legend.

    Returns:
        The figure — per dataset, the first seed's measured :math:`k^*` with its interval (points),
        :math:`\mathrm{MAD}/\varepsilon-1` (solid, mean over seeds, shaded from the lowest to the
        highest seed) and the lemma's :math:`k^*` at the trained point (dashed) and in the ball
        (dotted), on log-log axes.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(names, sweep_colors(len(names), "tab10")))
    for name, color in colors.items():
        _draw_sample_sizes(ax, results[(name, *reference)], color)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=r"tolerance $\varepsilon$ (nats)",
        ylabel=r"sufficient sample size $k^*$ (objects)",
        title=f"h = {reference[0]}, num_layers = {reference[1]}",
    )
    bottom, top = ax.get_ylim()
    ax.set_ylim(max(bottom, 1), top)  # a sample size is at least one object
    if top > train_size:
        ax.axhspan(train_size, top, color="grey", alpha=0.12, lw=0)
        ax.set_ylim(top=top)
    handles = [Line2D([], [], color=c, label=names[n]) for n, c in colors.items()]
    handles += [
        Line2D([], [], color="k", label="MAD/ε − 1, mean (shaded: seeds)"),
        Line2D([], [], color="k", ls="--", label="Lemma 1, R = 0"),
        Line2D([], [], color="k", ls=":", label=f"Lemma 1, R = {relative_radius:g} ||θ̂||"),
        Line2D([], [], color="k", marker="o", ls="", label="measured, first seed (95 % CI)"),
    ]
    ax.legend(handles=handles, fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_sample_size_vs_architecture(
    results: dict[tuple[str, int, int], list[NetworkSampleSizes]],
    settings: SweepSettings,
    names: dict[str, str],
    epsilon: float,
) -> plt.Figure:
    """The extrapolated :math:`k^*` at ``epsilon`` across the hidden-size and the depth panels.

    Args:
        results: :func:`lhlib.chapters.ch07_sample_size.sample_size_study`'s results.
        settings: The sweep's settings (the panels' configurations).
        names: Dataset key to the name shown, in drawing order.
        epsilon: The tolerance, one of those the study measured.

    Returns:
        The figure — per dataset, the mean over seeds with bars from the lowest to the highest seed,
        and crosses at the measured :math:`k^*` of the seeds whose curve reached ``epsilon``. Collapsed
        networks, and any whose extrapolated :math:`k^*` sits at its floor of 1, are left out and counted
        in the legend.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    panels = [
        (settings.hidden_sizes, [(h, settings.fixed_num_layers) for h in settings.hidden_sizes], "hidden size h"),
        (settings.num_layers, [(settings.fixed_hidden_size, n) for n in settings.num_layers], "num_layers"),
    ]
    drawn = False
    for name, color in zip(names, sweep_colors(len(names), "tab10")):
        left_out = set()  # (configuration, seed): the shared configuration sits in both panels
        for ax, (values, keys, label) in zip(axes, panels):
            k_star = np.array([[m.at_theta_hat[epsilon].extrapolated for m in results[(name, *key)]] for key in keys])
            collapsed = np.array([[m.collapsed for m in results[(name, *key)]] for key in keys])
            # A collapsed network's k* measures its dead units; k* = max(MAD / eps - 1, 1) at its floor is a clamp
            # rather than a sample size, and on a log axis it would squash the others.
            floored = collapsed | ~np.isfinite(k_star) | (k_star <= 1)
            left_out |= {(key, int(s)) for key, row in zip(keys, floored) for s in np.flatnonzero(row)}
            drawn |= not floored.all()
            shown = np.where(floored, np.nan, k_star)
            counts = (~floored).sum(1)
            mean = np.where(counts > 0, np.nansum(shown, 1) / np.maximum(counts, 1), np.nan)
            low, high = np.fmin.reduce(shown, axis=1), np.fmax.reduce(shown, axis=1)
            ax.errorbar(values, mean, yerr=[mean - low, high - mean], fmt="o-", color=color, ms=3, capsize=2)
            measured = [
                (v, m.at_theta_hat[epsilon].measured)
                for v, key in zip(values, keys)
                for m in results[(name, *key)]
                if m.at_theta_hat[epsilon].reached and m.at_theta_hat[epsilon].extrapolated > 1 and not m.collapsed
            ]
            ax.plot([v for v, _ in measured], [k for _, k in measured], "x", color=color, ms=5)
            ax.set(xlabel=label)
        note = f" ({len(left_out)} collapsed network(s) left out)" if left_out else ""
        axes[1].errorbar([], [], fmt="o-", color=color, ms=3, label=f"{names[name]}: extrapolated{note}")
    if drawn:  # a log axis needs one positive value
        axes[0].set_yscale("log")
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "every network collapsed", transform=ax.transAxes, ha="center")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xticks(settings.hidden_sizes, [str(h) for h in settings.hidden_sizes])
    axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[0].set(
        ylabel=rf"$k^*$ at $\varepsilon$ = {epsilon:g} nats (bars: seed range; x: measured)",
        title=f"num_layers = {settings.fixed_num_layers}",
    )
    axes[1].set(title=f"h = {settings.fixed_hidden_size}")
    axes[1].legend(loc="best", fontsize=7)
    fig.tight_layout()
    return fig


def plot_holdout(holdout: list[dict], pilot_size: int) -> plt.Figure:
    """The hold-out check: predicted against observed :math:`k^*`.

    Args:
        holdout: :func:`lhlib.chapters.ch07_sample_size.holdout_check`'s cases.
        pilot_size: The objects the predictions used, for the label.

    Returns:
        The log-log figure — one point per case, the prediction with its interval against the
        :math:`k^*` measured on the remaining objects, with the line :math:`y = x`.
    """
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if holdout:
        observed = np.array([h["observed"] for h in holdout], dtype=float)
        predicted = np.array([h["predicted"] for h in holdout])
        ci = np.array([h["predicted_ci"] for h in holdout])
        ax.errorbar(observed, predicted, yerr=[predicted - ci[:, 0], ci[:, 1] - predicted], fmt="o", ms=3, alpha=0.7)
        lim = [min(observed.min(), predicted.min()) / 1.5, max(observed.max(), predicted.max()) * 1.5]
        ax.plot(lim, lim, color="black", lw=0.8, label="y = x")
        ax.legend(loc="upper left")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=r"$k^*$ measured on the remaining objects",
        ylabel=rf"$k^*$ extrapolated from the first {pilot_size}",
        title="hold-out check, every network and tolerance",
    )
    fig.tight_layout()
    return fig
