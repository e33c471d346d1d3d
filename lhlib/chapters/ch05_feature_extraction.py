"""Chapter 05: the sweep on features of a pretrained backbone, beside the same sweep on the images.

The backbones and the cached features are the engine's (:mod:`lhlib.engine.features`); this module holds
the chapter's table of feature sets (:func:`features_table`), the facts that compare the two sweeps
(:func:`paired_sweep_facts`) and its figure (:func:`plot_feature_vs_direct`).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from lhlib.build.plotting import _stacked_panels, sweep_colors
from lhlib.engine.features import FeatureSet
from lhlib.engine.landscape import log_binned
from lhlib.engine.settings import SweepSettings

__all__ = ["features_table", "paired_sweep_facts", "plot_feature_vs_direct"]


def paired_sweep_facts(feature_sweeps: dict[str, dict], direct_sweeps: dict[str, dict]) -> dict[str, Any]:
    r"""Feature heads against pixel networks of the same configuration and seed, pair by pair.

    For a pair of a feature head :math:`f` and a pixel network :math:`d` with levels :math:`C`, MADs of the losses
    and fitted exponents :math:`\alpha`,

    .. math::

        \frac{C_f}{C_d}, \qquad \frac{\operatorname{MAD}_f}{\operatorname{MAD}_d}, \qquad |\alpha_f - \alpha_d|,

    over the pairs where both have a fitted exponent and neither collapsed, and the accuracy gain
    :math:`100\,(a_f - a_d)` over every pair.

    Args:
        feature_sweeps: Per dataset name, the :func:`~lhlib.engine.sweep.run_sweep` results on backbone features.
        direct_sweeps: Per dataset name, the :func:`~lhlib.engine.sweep.run_sweep` results on pixels, with the same
            configurations and
            seeds.

    Returns:
        ``n_networks`` (pairs) and ``n_fitted_pairs`` (both have an exponent, neither collapsed); the ranges of
        the feature and pixel exponents, ``exponent_gap_max`` and ``feature_ci_contains_minus_one``; over the
        fitted pairs, the ratio of feature to pixel level (``level_ratio_min``/``median``/``max``,
        ``lower_with_features``) and of their MADs (``mad_ratio_median``); ``accuracy_gain_median`` in percentage
        points; ``level_vs_mad_spearman`` over the networks of the fitted pairs; ``collapsed_counts``.
    """
    from scipy.stats import spearmanr

    pairs = [
        (f, d)
        for name, sweep in feature_sweeps.items()
        for key, r in sweep.items()
        for f, d in zip(r.members, direct_sweeps[name][key].members)
    ]
    # Collapsed networks are left out, like networks whose curve has no exponent.
    fitted = [(f, d) for f, d in pairs if f.fit is not None and d.fit is not None and not (f.collapsed or d.collapsed)]
    features = np.array([f.fit.exponent for f, _ in fitted])
    pixels = np.array([d.fit.exponent for _, d in fitted])
    level_ratios = np.array([f.level / d.level for f, d in fitted])
    every = [m for pair in fitted for m in pair]

    def extreme(values: np.ndarray, reduce) -> float:
        return float(reduce(values)) if values.size else math.nan

    return {
        "n_networks": len(pairs),
        "n_fitted_pairs": len(fitted),
        "feature_exponent_min": extreme(features, np.min),
        "feature_exponent_max": extreme(features, np.max),
        "direct_exponent_min": extreme(pixels, np.min),
        "direct_exponent_max": extreme(pixels, np.max),
        "exponent_gap_max": extreme(np.abs(features - pixels), np.max),
        "feature_ci_contains_minus_one": f"{sum(f.fit.ci[0] <= -1.0 <= f.fit.ci[1] for f, _ in fitted)} "
        f"of {len(fitted)}",
        "level_ratio_min": extreme(level_ratios, np.min),
        "level_ratio_median": extreme(level_ratios, np.median),
        "level_ratio_max": extreme(level_ratios, np.max),
        "lower_with_features": f"{int((level_ratios < 1).sum())} of {len(fitted)}",
        "mad_ratio_median": extreme(
            np.array([f.mean_abs_deviation / d.mean_abs_deviation for f, d in fitted]), np.median
        ),
        "accuracy_gain_median": float(100 * np.median([f.train_accuracy - d.train_accuracy for f, d in pairs])),
        "level_vs_mad_spearman": float(
            spearmanr([m.level for m in every], [m.mean_abs_deviation for m in every]).statistic
        ),
        "collapsed_counts": f"{sum(f.collapsed for f, _ in pairs)} of {len(pairs)} feature heads and "
        f"{sum(d.collapsed for _, d in pairs)} of {len(pairs)} pixel networks",
    }


def features_table(features: dict[str, FeatureSet]) -> tuple[list[str], list[list[Any]]]:
    """Per dataset: dimension, value range, extraction speed, cache use and backbone.

    Args:
        features: Per dataset name, its :class:`~lhlib.engine.features.FeatureSet`.

    Returns:
        The table as ``(header, rows)``, one row per dataset.
    """
    header = ["Dataset", "Dimension", "Value range", "Images / s", "From cache", "Backbone"]
    rows = [
        [
            name,
            f.feature_dim,
            f"[{f.x.min():.2f}, {f.x.max():.2f}]",
            f"{f.images_per_second:.0f}",
            "yes" if f.from_cache else "no",
            f.provenance,
        ]
        for name, f in features.items()
    ]
    return header, rows


def _draw_feature_vs_direct(axes: np.ndarray, feature_results, direct_results, settings) -> None:
    panels = (
        ("hidden_size", [(h, settings.fixed_num_layers) for h in settings.hidden_sizes]),
        ("num_layers", [(settings.fixed_hidden_size, n) for n in settings.num_layers]),
    )
    for column, (varying, keys) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        for key, color in zip(keys, sweep_colors(len(keys))):
            feature, direct = feature_results[key], direct_results[key]
            name = f"h = {key[0]}" if varying == "hidden_size" else f"num_layers = {key[1]}"
            k = np.arange(1, feature.mean.size + 1)
            top.plot(
                k,
                feature.smoothed,
                color=color,
                label=f"{name}: features {feature.rate_exponent:.3f}, pixels {direct.rate_exponent:.3f}",
            )
            top.plot(k, direct.smoothed, color=color, ls="--", alpha=0.8)
            for result, style in ((feature, "-"), (direct, "--")):
                centres, level = log_binned((k + 1) * result.mean)
                bottom.plot(centres, level, color=color, ls=style, lw=1.1)
            bottom.plot([k[-1]] * 2, [feature.mean_abs_deviation] * 2, color=color, marker="_", ms=14, mew=2, ls="")
            bottom.plot([k[-1]], [direct.mean_abs_deviation], color=color, marker="x", ms=6, ls="")
        fixed = (
            f"num_layers = {settings.fixed_num_layers}"
            if varying == "hidden_size"
            else f"h = {settings.fixed_hidden_size}"
        )
        sweep = "hidden size" if varying == "hidden_size" else "number of layers"
        top.set(
            yscale="log",
            xlabel="sample size k",
            ylabel=r"EMA of mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)",
            title=f"{sweep} sweep, {fixed}\nsolid: features, dashed: pixels",
        )
        top.legend(loc="upper right", title="fitted exponents")
        bottom.set(
            xscale="log",
            yscale="log",
            xlabel="sample size k",
            ylabel=r"$(k+1)\times$ mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)",
            title="level with 1/k removed; at right: MAD of the losses\n(bar: features, cross: pixels)",
        )


def plot_feature_vs_direct(
    feature_sweeps: dict[str, dict], direct_sweeps: dict[str, dict], settings: SweepSettings, headings: dict[str, str]
) -> plt.Figure:
    r"""Features (solid) against pixels (dashed) for the same configurations, both sweeps, per dataset.

    Args:
        feature_sweeps: Per dataset, :func:`lhlib.engine.sweep.run_sweep`'s results on the features.
        direct_sweeps: The same on the pixels.
        settings: The sweeps' settings.
        headings: Per dataset, the heading of its block of panels.

    Returns:
        The figure, a 2 x 2 block of panels per dataset. On top, the paper's EMA-smoothed mean
        :math:`|\mathcal{L}_{k+1}-\mathcal{L}_k|` on a log ``y`` axis, fitted exponents in the legend.
        Below, :math:`(k+1)` times the unsmoothed mean over log bins of ``k``, with each
        configuration's mean absolute deviation of the per-sample losses at the right edge (bar:
        features, cross: pixels): at a fixed point
        :math:`(k+1)\,\mathbb{E}|\mathcal{L}_{k+1}-\mathcal{L}_k| \to \mathrm{MAD}`, so this row shows
        each curve's level with the :math:`1/k` taken out.
    """
    fig, blocks = _stacked_panels(headings)
    for axes, name in zip(blocks, feature_sweeps):
        _draw_feature_vs_direct(axes, feature_sweeps[name], direct_sweeps[name], settings)
    return fig
