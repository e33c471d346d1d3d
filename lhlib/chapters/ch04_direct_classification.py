"""Chapter 04: the paper's Figures 2-5 on the images themselves, and what they say across seeds.

The sweep itself (training, curves, levels, ordering tests) is the engine's (:mod:`lhlib.engine.sweep`);
this module holds what only chapter 04 reports: :func:`sweep_facts` and :func:`hidden_size_peaks` for its
prose, :func:`identity_max_error` (the identity behind the curves, checked on one network), and the
comparison with the values read off the paper's figures (:func:`paper_values`,
:func:`compare_with_paper_figure`, :func:`comparison_table`, :func:`comparison_phrase`).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import numpy as np
import torch

from lhlib.engine.landscape import loss_difference_curves
from lhlib.engine.settings import SweepSettings
from lhlib.engine.sweep import ConfigurationResult, SeedResult

__all__ = [
    "compare_with_paper_figure",
    "comparison_phrase",
    "comparison_table",
    "hidden_size_peaks",
    "identity_max_error",
    "paper_values",
    "sweep_facts",
]


def identity_max_error(member: SeedResult, permutations: int) -> float:
    r"""Largest gap between a network's curves and chapter 01's identity, over random orders and :math:`k`.

    At a fixed point :math:`\mathcal{L}_{k+1} - \mathcal{L}_k = (\ell_{k+1} - \mathcal{L}_k)/(k+1)` exactly; this
    recomputes the right-hand side from the per-sample losses in the orders
    :func:`lhlib.engine.landscape.loss_difference_curves` draws and compares it with that function's curves:

    .. math::

        \max_{\pi, k} \Bigl|\, \bigl|\mathcal{L}^{\pi}_{k+1} - \mathcal{L}^{\pi}_k\bigr|
        - \frac{|\ell_{\pi(k+1)} - \mathcal{L}^{\pi}_k|}{k + 1} \Bigr|,

    which is rounding error only.

    Args:
        member: The network's :class:`~lhlib.engine.sweep.SeedResult` (its losses and its seed, which draws the orders).
        permutations: How many random orders to compare.

    Returns:
        The largest absolute difference (float64 arithmetic).
    """
    from lhlib.engine.landscape import random_orders

    losses = member.losses.double()
    ordered = losses[random_orders(losses.numel(), permutations, member.seed)]
    k = torch.arange(1, losses.numel(), dtype=torch.float64)
    running_mean = ordered.cumsum(1) / torch.arange(1, losses.numel() + 1, dtype=torch.float64)
    identity = ((ordered[:, 1:] - running_mean[:, :-1]) / (k + 1)).abs()
    curves = loss_difference_curves(member.losses, permutations, member.seed)
    return float((identity - curves).abs().max())


def sweep_facts(sweeps: dict[str, dict[tuple[int, int], ConfigurationResult]]) -> dict[str, Any]:
    r"""What the prose says about every network of every dataset's sweep.

    A network's level :math:`C` is compared with the mean absolute deviation of its losses, and the seeds of one
    configuration that did not collapse with each other:

    .. math::

        \frac{C}{\operatorname{MAD}}, \quad \operatorname{MAD} = \frac{1}{N} \sum_{i=1}^{N} |\ell_i - \bar\ell|,
        \qquad \frac{\max_s C_s}{\min_s C_s}.

    Args:
        sweeps: Per dataset name, its :func:`~lhlib.engine.sweep.run_sweep` results.

    Returns:
        ``n_networks``, ``n_configurations``; ``n_collapsed`` (left out of everything below), ``n_dead`` (no
        fitted exponent, as for a zero curve, in practice every loss at :math:`\ln K`; collapsed too) and
        ``n_fitted`` (the kept networks, :attr:`~lhlib.engine.sweep.ConfigurationResult.kept`);
        ``exponent_min``/``exponent_max`` and
        ``exponent_ci_contains_minus_one`` over the kept ones; ``mad_ratio_min``/``max``, the level over the MAD
        of the losses (kept networks with a positive MAD); ``level_vs_mad_spearman`` over the kept networks;
        ``seed_level_spread_max``, the largest ratio of highest to lowest level among the seeds of one
        configuration that did not collapse, with ``seed_level_spread_where``; ``configuration_level_spread_max``,
        the same between the configurations of one dataset (each the mean over its seeds that did not collapse);
        ``collapsed_summary``.
    """
    from scipy.stats import spearmanr

    networks = [m for sweep in sweeps.values() for r in sweep.values() for m in r.members]
    fitted = [m for sweep in sweeps.values() for r in sweep.values() for m in r.kept]
    exponents = np.array([m.fit.exponent for m in fitted])
    mad_ratios = np.array([m.level / m.mean_abs_deviation for m in fitted if m.mean_abs_deviation > 0])
    spreads = {
        (name, key): max(levels) / min(levels)
        for name, sweep in sweeps.items()
        for key, r in sweep.items()
        if len(levels := [m.level for m in r.kept]) >= 2
    }
    widest = max(spreads, key=spreads.get) if spreads else None
    typical = [
        [float(np.mean([m.level for m in r.kept])) for r in sweep.values() if [m.level for m in r.kept]]
        for sweep in sweeps.values()
    ]
    collapsed = [
        f"{name} h = {h}, num_layers = {n}: {r.collapsed_seeds} of {len(r.members)} seeds"
        for name, sweep in sweeps.items()
        for (h, n), r in sweep.items()
        if r.collapsed_seeds
    ]
    return {
        "n_networks": len(networks),
        "n_configurations": sum(len(sweep) for sweep in sweeps.values()),
        "n_fitted": len(fitted),
        "n_dead": sum(m.fit is None for m in networks),
        "n_collapsed": sum(m.collapsed for m in networks),
        "exponent_min": float(exponents.min()) if fitted else math.nan,
        "exponent_max": float(exponents.max()) if fitted else math.nan,
        "exponent_ci_contains_minus_one": f"{sum(m.fit.ci[0] <= -1.0 <= m.fit.ci[1] for m in fitted)} of {len(fitted)}",
        "mad_ratio_min": float(mad_ratios.min()) if mad_ratios.size else math.nan,
        "mad_ratio_max": float(mad_ratios.max()) if mad_ratios.size else math.nan,
        "level_vs_mad_spearman": float(
            spearmanr([m.level for m in fitted], [m.mean_abs_deviation for m in fitted]).statistic
        ),
        "seed_level_spread_max": spreads[widest] if widest else math.nan,
        "seed_level_spread_where": f"{widest[0]}, h = {widest[1][0]}, num_layers = {widest[1][1]}"
        if widest
        else "no configuration has two seeds that did not collapse",
        "configuration_level_spread_max": max((max(t) / min(t) for t in typical if t), default=math.nan),
        "collapsed_summary": "; ".join(collapsed) if collapsed else "none collapsed in this run",
    }


def hidden_size_peaks(sweeps: dict[str, dict], settings: SweepSettings) -> str:
    r"""Per dataset, the hidden size whose seeds that did not collapse have the highest mean level, as one phrase.

    .. math::

        h^* = \arg\max_{h} \frac{1}{|S_h|} \sum_{s \in S_h} C_s(h),

    :math:`S_h` the seeds of ``(h, fixed_num_layers)`` that did not collapse (a configuration with none counts as 0;
    the first of equal maxima wins).

    Args:
        sweeps: Per dataset name, its :func:`~lhlib.engine.sweep.run_sweep` results.
        settings: The sweep's settings (``hidden_sizes``, ``fixed_num_layers``).

    Returns:
        The phrases ``<dataset>: h = <h>`` joined by ``"; "``.
    """
    peaks = {
        name: max(
            settings.hidden_sizes,
            key=lambda h, sweep=sweep: np.mean([m.level for m in sweep[(h, settings.fixed_num_layers)].kept] or [0.0]),
        )
        for name, sweep in sweeps.items()
    }
    return "; ".join(f"{name}: h = {h}" for name, h in peaks.items())


def compare_with_paper_figure(
    sweep: dict[tuple[int, int], ConfigurationResult] | None, settings: SweepSettings, figure: dict[str, Any]
) -> list[dict[str, Any]]:
    r"""This book's smoothed curves beside values read off a panel of the paper, at the panel's :math:`k`.

    The compared quantities are the smoothed curves of :func:`~lhlib.engine.sweep.combine_members` at that :math:`k`:

    .. math::

        e_k, \qquad \min_s e^{(s)}_k, \qquad \max_s e^{(s)}_k,

    the smoothed mean over the kept seeds (collapsed ones left out,
    :attr:`~lhlib.engine.sweep.ConfigurationResult.kept`), and the
    lowest and highest of their own smoothed curves.

    Args:
        sweep: The dataset's sweep, or ``None`` when this run has not got that dataset.
        settings: The sweep's settings.
        figure: A :func:`paper_values` entry with ``k``, ``fixed_num_layers`` and per-``h`` ``values``.

    Returns:
        The rows, one per hidden size, with the paper's value, the mean over seeds, the lowest and highest seed
        and the collapsed seeds. Empty when the run cannot be compared (another dataset, fewer images than ``k``,
        another depth or other hidden sizes).
    """
    paper = {int(h): value for h, value in figure["values"].items()}
    j = figure["k"] - 1  # column j of a curve holds k = j + 1
    if (
        sweep is None
        or settings.fixed_num_layers != figure["fixed_num_layers"]
        or not set(paper) <= set(settings.hidden_sizes)
        or next(iter(sweep.values())).smoothed.size <= j
    ):
        return []
    rows = []
    for h, value in paper.items():
        r = sweep[(h, settings.fixed_num_layers)]
        rows.append(
            {
                "hidden_size": h,
                "paper": value,
                "mean_over_seeds": float(r.live_smoothed[j]),
                "seed_low": float(r.smoothed_low[j]),
                "seed_high": float(r.smoothed_high[j]),
                "collapsed_seeds": r.collapsed_seeds,
            }
        )
    return rows


def comparison_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """The :func:`compare_with_paper_figure` rows as a table.

    Args:
        rows: :func:`compare_with_paper_figure`'s rows.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
    """
    header = ["h", "paper", "this book: mean over kept seeds", "lowest kept seed", "highest kept seed",
              "collapsed seeds (left out)"]  # fmt: skip
    keys = ("paper", "mean_over_seeds", "seed_low", "seed_high")
    return header, [[r["hidden_size"], *(f"{r[key]:.2e}" for key in keys), r["collapsed_seeds"]] for r in rows]


def comparison_phrase(rows: list[dict[str, Any]]) -> str:
    """What :func:`compare_with_paper_figure` found, as a clause for the prose.

    Args:
        rows: :func:`compare_with_paper_figure`'s rows.

    Returns:
        How many of the paper's values lie within this book's range of seeds and which ``h`` has the lowest mean
        curve, or why the comparison was skipped when ``rows`` is empty.
    """
    if not rows:
        return "this run does not include the paper's dataset with its settings, so the comparison is skipped"
    inside = sum(r["seed_low"] <= r["paper"] <= r["seed_high"] for r in rows)
    lowest = min(rows, key=lambda r: r["mean_over_seeds"])["hidden_size"]
    return (
        "the paper's value lies within the range of this book's seeds (leaving out any whose losses all "
        f"sit at ln K) for {inside} of {len(rows)} hidden sizes, and the lowest mean curve here is h = {lowest}"
    )


def paper_values(name: str) -> dict[str, Any]:
    """An entry of ``lhlib/chapters/paper_values.json``: numbers read off the paper, with their provenance.

    Args:
        name: The entry's key, e.g. ``"figure4_fashion_mnist_hidden_size"``.

    Returns:
        The entry, a dict with its ``description``, ``provenance`` and values.

    Raises:
        ValueError: when ``name`` is not an entry of the file.
    """
    table = json.loads(resources.files("lhlib.chapters").joinpath("paper_values.json").read_text())
    if name not in table:
        raise ValueError(f"name must be one of {sorted(table)}, got {name!r}")
    return table[name]
