"""Every figure of the book: one style, the plots the chapters share, and a checked save.

Every chapter calls :func:`use_style` once, then :func:`show_figure` for each figure: it saves
it (:func:`save_figure`, PNG for the book, PDF for papers) and glues it under its file name,
for the chapter's captioned ``{glue:figure}`` directive. :func:`save_figure` refuses a figure
that misleads: an axis whose range has collapsed to a point, or a plotted value that is a
clipping floor (a sentinel such as ``1e-12`` standing for "zero" or "not measured") rather than a
measurement.

The plots: :func:`plot_expansion_error` and :func:`plot_triangle_split` (chapter 01),
:func:`plot_softmax_hessian`, :func:`plot_full_hessian` and :func:`plot_tightness` (chapter 02),
:func:`plot_ggn_histograms`, :func:`plot_bounds`, :func:`plot_h_term`, :func:`plot_averaged_hessian`
and :func:`plot_lemma_term` (chapter 03),
:func:`plot_sweep` (the paper's Figures 2-5, chapter 04), :func:`plot_feature_vs_direct` (chapter
05), :func:`plot_ball_curves`, :func:`plot_ball_constants`, :func:`plot_ball_ratios`,
:func:`plot_gradient_norms`, :func:`plot_loss_slice` and :func:`plot_gaussian_criterion` (chapter
06), :func:`plot_sample_size_vs_tolerance`, :func:`plot_sample_size_vs_architecture` and
:func:`plot_holdout` (chapter 07), :func:`plot_family_curves` and :func:`plot_curvature` (chapter 08).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from lhlib.ball import LossSlice
from lhlib.ball_study import KINDS, Ball, BallNetwork, growth_slopes
from lhlib.bound_study import TIGHTNESS_FORMS
from lhlib.bounds import SOFTMAX_HESSIAN_NORM_PAPER, FullHessianCheck, lemma_bound
from lhlib.glue import glue
from lhlib.hessian_in_practice import FORM_LABELS, MeasuredNetwork, sweep_axis
from lhlib.landscape import log_binned
from lhlib.loss_difference import TaylorCheck
from lhlib.other_architectures import FAMILY_NAMES, FamilyConfiguration, NetworkCurvature
from lhlib.report import output_path
from lhlib.sample_size_study import NetworkSampleSizes
from lhlib.settings import SweepSettings
from lhlib.sweep import ConfigurationResult, panel_configurations

__all__ = [
    "CLIPPING_FLOORS",
    "STYLE_FILE",
    "check_figure",
    "plot_averaged_hessian",
    "plot_ball_constants",
    "plot_ball_curves",
    "plot_ball_ratios",
    "plot_bounds",
    "plot_curvature",
    "plot_expansion_error",
    "plot_family_curves",
    "plot_feature_vs_direct",
    "plot_full_hessian",
    "plot_ggn_histograms",
    "plot_gaussian_criterion",
    "plot_gradient_norms",
    "plot_h_term",
    "plot_holdout",
    "plot_lemma_term",
    "plot_loss_slice",
    "plot_sample_size_vs_architecture",
    "plot_sample_size_vs_tolerance",
    "plot_softmax_hessian",
    "plot_sweep",
    "plot_tightness",
    "plot_triangle_split",
    "save_figure",
    "show_figure",
    "sweep_colors",
    "use_style",
]

STYLE_FILE = Path(__file__).with_name("style.mplstyle")

CLIPPING_FLOORS = (
    1e-12,
    1e-15,
    1e-22,
    1e-30,
    1e-300,
    float(np.finfo(np.float32).tiny),
    float(np.finfo(np.float64).tiny),
)
"""Values that code writes in place of zero or of a missing number (``clamp_min(1e-12)`` and the
like); :func:`check_figure` refuses a figure that plots one as data."""


def use_style() -> None:
    """Apply the book's matplotlib style (``lhlib/style.mplstyle``)."""
    plt.style.use(STYLE_FILE)


def sweep_colors(count: int, cmap: str = "viridis") -> list:
    """``count`` colours ordered along ``cmap``, so a sweep reads from dark (small) to light (large).

    Args:
        count: The number of colours.
        cmap: A matplotlib colormap name.

    Returns:
        A list of ``count`` RGBA tuples, evenly spaced from 0 to 0.9 of the colormap (its lightest
        tenth is left out).
    """
    colormap = plt.get_cmap(cmap)
    return [colormap(0.9 * i / max(count - 1, 1)) for i in range(count)]


def _numbers(values) -> np.ndarray:
    """``values`` as a float array of the numbers shown (masked entries dropped); empty if not numeric."""
    try:
        return np.ma.asarray(values, dtype=float).compressed()
    except (TypeError, ValueError):  # categorical data: nothing to check
        return np.zeros(0)


def _plotted_values(ax: mpl.axes.Axes) -> list[tuple[str, np.ndarray]]:
    """``(axis, values)`` for the measurements an Axes draws where a clipping floor would show.

    Lines: their y values (x is usually a parameter such as ``k`` or a radius). Scatter points:
    both coordinates. Bars and histogram bins: their left edges and tops. Filled bands, error
    bars and reference lines are not read.
    """
    values = [("y", _numbers(line.get_ydata())) for line in ax.get_lines()]
    for collection in ax.collections:
        if isinstance(collection, mpl.collections.PathCollection):  # scatter
            offsets = np.ma.asarray(collection.get_offsets()).reshape(-1, 2)
            values += [("x", _numbers(offsets[:, 0])), ("y", _numbers(offsets[:, 1]))]
    for patch in ax.patches:
        if isinstance(patch, mpl.patches.Rectangle):
            values += [("x", np.array([patch.get_x()])), ("y", np.array([patch.get_y() + patch.get_height()]))]
    return values


def check_figure(fig: mpl.figure.Figure, name: str) -> None:
    """Refuse ``fig`` (a ValueError naming ``name`` and the panel) if it would mislead a reader.

    A panel that draws data fails when an axis range has collapsed (``top / bottom < 1.001`` on a
    log axis, a span below ``1e-9`` of the magnitude on a linear one: what is left is rounding) or
    when a line, scatter point or bar sits at a value of :data:`CLIPPING_FLOORS`. Colour bars and
    empty panels are not checked.

    Args:
        fig: The figure, drawn (its axis limits settled).
        name: The figure's name, for the message.

    Raises:
        ValueError: when an axis has collapsed or a plotted value is a clipping floor.
    """
    colour_bars = {
        id(image.colorbar.ax)
        for ax in fig.axes
        for image in [*ax.images, *ax.collections]
        if getattr(image, "colorbar", None) is not None
    }
    for index, ax in enumerate(fig.axes):
        values = _plotted_values(ax)
        if id(ax) in colour_bars or not any(v.size for _, v in values):
            continue
        where = f"figure {name!r}, panel {index} ({ax.get_title()!r})"
        for axis, (low, high), scale in (("x", ax.get_xlim(), ax.get_xscale()), ("y", ax.get_ylim(), ax.get_yscale())):
            low, high = sorted((low, high))
            if scale == "log" and low > 0:
                collapsed = math.log10(high) - math.log10(low) < math.log10(1.001)
            else:
                collapsed = high - low <= 1e-9 * max(abs(high), abs(low), 1e-300)
            if collapsed:
                raise ValueError(f"{where}: the {axis} axis has collapsed to [{low:.6g}, {high:.6g}]")
        for axis, data in values:
            for floor in CLIPPING_FLOORS:
                if np.any(np.isclose(data, floor, rtol=1e-9, atol=0)):
                    raise ValueError(f"{where}: {axis} value {floor:g} is a clipping floor, not a measurement")


def save_figure(fig: mpl.figure.Figure, output_dir: str | Path, name: str) -> Path:
    """Check ``fig`` (:func:`check_figure`), then save it as ``<output_dir>/<name>.png`` and ``.pdf``.

    Args:
        fig: The figure.
        output_dir: The chapter's output folder, created if needed.
        name: The file name without extension.

    Returns:
        The PNG's path.

    Raises:
        ValueError: when :func:`check_figure` refuses the figure.
    """
    fig.draw_without_rendering()  # settles the axis limits the check reads
    check_figure(fig, name)
    folder = output_path(output_dir)
    fig.savefig(folder / f"{name}.pdf")
    fig.savefig(folder / f"{name}.png")
    return folder / f"{name}.png"


def show_figure(fig: mpl.figure.Figure, output_dir: str | Path, name: str) -> None:
    """Save ``fig`` (:func:`save_figure`), show it glued as ``name`` under the cell, and close it.

    The chapter's Markdown places the figure with its caption, label and alt text:
    ``{glue:figure} name`` with ``:name: fig-...`` and ``:alt:``, cited with ``{numref}``. The cell
    that draws it is tagged ``remove-output``, so the built page shows the figure once, captioned,
    while Jupyter, JupyterLab and Colab show it under the cell. It returns nothing, so that no path
    prints under the figure; :func:`save_figure` says where the files go.

    Args:
        fig: The figure.
        output_dir: The chapter's output folder, created if needed.
        name: The file name without extension and the glue key.

    Raises:
        ValueError: when :func:`check_figure` refuses the figure.
    """
    save_figure(fig, output_dir, name)
    glue(name, fig, display=True)
    plt.close(fig)


def _configuration_name(result: ConfigurationResult, varying: str) -> str:
    name = (
        f"h = {result.hidden_size}"
        if varying == "hidden_size"
        else f"num_layers = {result.num_layers} (L = {result.weight_matrices})"
    )
    dead = sum(m.fit is None for m in result.members)
    notes = ([f"{result.collapsed_seeds}/{len(result.members)} collapsed"] if result.collapsed_seeds else []) + (
        [f"{dead} all at ln K"] if dead else []
    )
    return name + (f" ({', '.join(notes)})" if notes else "")


def _stacked_panels(headings: dict[str, str]) -> tuple[plt.Figure, list[np.ndarray]]:
    """A figure with a 2 x 2 block of panels per dataset, stacked, each block under its heading.

    Each row's panels share ``x``. Returns the figure and the blocks' axes, in ``headings``' order.
    """
    fig = plt.figure(figsize=(11, 8 * len(headings)), layout="constrained")
    blocks = []
    for block, heading in zip(np.atleast_1d(fig.subfigures(len(headings), 1)), headings.values()):
        axes = block.subplots(2, 2)
        for row in axes:
            row[1].sharex(row[0])
        block.suptitle(heading, fontsize="large")
        blocks.append(axes)
    return fig, blocks


def _draw_sweep(axes: np.ndarray, results, settings: SweepSettings) -> None:
    seeds = len(settings.seeds)
    for column, varying in enumerate(("hidden_size", "num_layers")):
        panel = panel_configurations(results, settings, varying)
        fixed = (
            f"num_layers = {settings.fixed_num_layers}"
            if varying == "hidden_size"
            else f"h = {settings.fixed_hidden_size}"
        )
        top, bottom = axes[0, column], axes[1, column]
        for result, color in zip(panel, sweep_colors(len(panel))):
            k = np.arange(1, result.mean.size + 1)
            top.plot(k, result.live_smoothed, color=color, label=_configuration_name(result, varying))
            top.fill_between(k, result.smoothed_low, result.smoothed_high, color=color, alpha=0.15, lw=0)
            centres, binned = log_binned(result.live_mean)
            low, high = log_binned(result.seed_low)[1], log_binned(result.seed_high)[1]
            low_ci, high_ci = result.rate_exponent_ci95
            bottom.plot(
                centres,
                binned,
                color=color,
                lw=1.2,
                label=f"{_configuration_name(result, varying)}: slope {result.rate_exponent:.3f} "
                f"[{low_ci:.3f}, {high_ci:.3f}]",
            )
            bottom.fill_between(centres, low, high, color=color, alpha=0.15, lw=0)
            for band in (result.order_lower, result.order_upper):
                bottom.plot(centres, log_binned(band)[1], color=color, ls=":", lw=0.7)
        top.set(
            yscale="log",
            xlabel="sample size k",
            ylabel=r"EMA of mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)",
            title=f"{'hidden size' if varying == 'hidden_size' else 'number of layers'} sweep, "
            f"{fixed}\nline: mean, shaded: range, over {seeds} seeds",
        )
        bottom.set(
            xscale="log",
            yscale="log",
            xlabel="sample size k",
            ylabel=r"mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)",
            title="unsmoothed, log bins; shaded: seeds' range\n"
            "dotted: 25-75 % of random orders; slope: mean [95 % CI] over seeds",
        )
        top.legend(loc="upper right")
        bottom.legend(loc="lower left")


def plot_sweep(sweeps: dict[str, dict], settings: SweepSettings, headings: dict[str, str]) -> plt.Figure:
    r"""The paper's two panels per dataset, with what the smoothing hides below them.

    Args:
        sweeps: Per dataset, :func:`lhlib.sweep.run_sweep`'s results.
        settings: The sweep's settings (the panels' sizes).
        headings: Per dataset, the heading of its block of panels.

    Returns:
        The figure, a 2 x 2 block of panels per dataset. On top, the EMA of the mean of
        :math:`|\mathcal{L}_{k+1}-\mathcal{L}_k|` over seeds and orders, log ``y``, shaded from the
        lowest to the highest seed (seeds whose losses are all equal, with a zero curve, are left out of
        lines and bands and counted in the legend). Below, the unsmoothed mean on log-log axes (log
        bins of ``k``), the seeds' range shaded and the 25-75 % band over random orders dotted.
    """
    fig, blocks = _stacked_panels(headings)
    for axes, results in zip(blocks, sweeps.values()):
        _draw_sweep(axes, results, settings)
    return fig


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
        feature_sweeps: Per dataset, :func:`lhlib.sweep.run_sweep`'s results on the features.
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


def plot_family_curves(results: dict[str, dict[tuple[str, int, int], FamilyConfiguration]]) -> plt.Figure:
    r"""The loss-difference curves of every family, one row per dataset and one panel per family.

    Args:
        results: Per dataset, :func:`lhlib.other_architectures.run_families`'s results.

    Returns:
        The figure — per size, the unsmoothed mean :math:`|\mathcal{L}_{k+1}-\mathcal{L}_k|` over orders
        and seeds on log-log axes (log bins of ``k``), shaded from the lowest to the highest seed, with
        :math:`C/(k+1)` at the level of the family's first size dashed.
    """
    families = list(dict.fromkeys(key[0] for sweep in results.values() for key in sweep))
    fig, axes = plt.subplots(
        len(results), len(families), figsize=(4.3 * len(families), 3.9 * len(results)), sharey="row", squeeze=False
    )
    for row, (dataset, sweep) in zip(axes, results.items()):
        for ax, family in zip(row, families):
            members = [r for r in sweep.values() if r.family == family]
            for r, color in zip(members, sweep_colors(len(members))):
                c = r.curves
                centres, binned = log_binned(c.live_mean)
                low, high = log_binned(c.seed_low)[1], log_binned(c.seed_high)[1]
                ax.plot(
                    centres,
                    binned,
                    color=color,
                    label=f"width {r.width}, depth {r.depth}: exponent {c.rate_exponent:.2f}",
                )
                ax.fill_between(centres, low, high, color=color, alpha=0.2, lw=0)
            reference = members[0].curves
            k = np.arange(1, reference.mean.size + 1)
            ax.plot(k, reference.level_mean / (k + 1), color="0.3", ls="--", lw=1, label="C/(k+1), first size")
            ax.set(xscale="log", yscale="log", xlabel="sample size k", title=f"{dataset}: {FAMILY_NAMES[family]}")
            ax.legend(loc="lower left")
        row[0].set_ylabel(r"mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)")
    fig.tight_layout()
    return fig


FAMILY_MARKERS = {"mlp": "o", "cnn": "s", "vit": "^"}
FAMILY_COLORS = {"mlp": "C0", "cnn": "C1", "vit": "C2"}  # categorical: the families are not an ordered sweep


def _draw_ggn_medians(ax, sweep, measured_by_key: dict, dataset: str) -> None:
    for family in dict.fromkeys(key[0] for key in measured_by_key):
        keys = [key for key in measured_by_key if key[0] == family]
        for i, key in enumerate(keys):
            medians = [float(m.ggn_norms.median()) for m in measured_by_key[key]]
            ax.scatter(
                [sweep[key].parameters] * len(medians),
                medians,
                marker=FAMILY_MARKERS[family],
                color=FAMILY_COLORS[family],
                label=FAMILY_NAMES[family] if i == 0 else None,
                alpha=0.8,
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters P",
        ylabel=r"median $\|J_i^\top A_i J_i\|_2$ (nats per parameter$^2$)",
        title=f"{dataset}: G-term norm, one point per seed",
    )
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw_bound_ratios(ax, sweep, measured_by_key: dict, dataset: str) -> None:
    for family in dict.fromkeys(key[0] for key in measured_by_key):
        keys = [key for key in measured_by_key if key[0] == family and measured_by_key[key][0].bound is not None]
        for i, key in enumerate(keys):
            measured = measured_by_key[key]
            ratios = np.sort(np.concatenate([(m.ggn_norms / m.bound).numpy() for m in measured]))
            ratios = ratios[ratios > 0]
            ax.step(
                ratios,
                np.arange(1, ratios.size + 1) / ratios.size,
                where="post",
                color=FAMILY_COLORS[family],
                ls=["-", "--", ":"][i % 3],
                label=f"{family} w{sweep[key].width} d{sweep[key].depth}",
            )
    ax.axvline(1, color="0.3", ls="--", lw=1, label="bound reached")
    ax.set(
        xscale="log",
        xlabel="G-term norm / layer-norm bound",
        ylabel="fraction of samples (all seeds)",
        title=f"{dataset}: how tight the bound is",
    )


def _draw_scaling_exponents(ax, sweep, measured_by_key: dict, dataset: str) -> None:
    labels, relu_labelled = [], False
    families = dict.fromkeys(key[0] for key in measured_by_key)
    for key in [key for family in families for key in measured_by_key if key[0] == family]:
        measured, family, r = measured_by_key[key], key[0], sweep[key]
        exponents = np.concatenate([m.scaling_exponents.numpy() for m in measured])
        exponents = exponents[np.isfinite(exponents)]
        position = len(labels)
        labels.append(f"{family} w{r.width} d{r.depth}")
        jitter = np.linspace(-0.25, 0.25, exponents.size) if exponents.size > 1 else np.zeros(1)
        ax.scatter(
            position + jitter[: exponents.size],
            exponents,
            marker=FAMILY_MARKERS[family],
            color=FAMILY_COLORS[family],
            s=8,
            alpha=0.5,
        )
        if family != "vit":
            label = "2(L-1), bias-free ReLU" if not relu_labelled else None
            ax.hlines(2.0 * (r.curves.weight_matrices - 1), position - 0.4, position + 0.4, color="0.2", lw=1.5,
                      label=label)  # fmt: skip
            relu_labelled = True
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45, ha="right")
    ax.set(
        xlabel="family, width w, depth d",
        ylabel=r"exponent of $\|J_iJ_i^\top\|$ under $\theta\to c\,\theta$",
        title=f"{dataset}: homogeneity, one point per sample",
    )


def plot_curvature(
    results: dict[str, dict[tuple[str, int, int], FamilyConfiguration]],
    curvature: dict[str, dict[tuple[str, int, int], list[NetworkCurvature]]],
) -> plt.Figure:
    r"""The per-sample curvature of every family, one row per dataset.

    Args:
        results: Per dataset, :func:`lhlib.other_architectures.run_families`'s results.
        curvature: Per dataset, :func:`lhlib.other_architectures.family_curvature`'s measurements.

    Returns:
        The figure — left, the median per-sample G-term norm :math:`\|J_i^\top A_i J_i\|_2` against the
        parameter count, one point per seed. Middle: the empirical distribution function of G-term /
        layer-norm bound (MLP and CNN). Right: the scaling exponent of :math:`\|J_i J_i^\top\|` under
        :math:`\theta \to c\,\theta` of every sample, per size, with :math:`2(L-1)` (the value of every
        bias-free ReLU network) marked for the MLP and the CNN.
    """
    fig, axes = plt.subplots(len(results), 3, figsize=(14, 4.2 * len(results)), squeeze=False)
    for row, (dataset, sweep) in zip(axes, results.items()):
        for ax, draw in zip(row, (_draw_ggn_medians, _draw_bound_ratios, _draw_scaling_exponents)):
            draw(ax, sweep, curvature[dataset], dataset)
            ax.legend()
    fig.tight_layout()
    return fig


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
        results: :func:`lhlib.sample_size_study.sample_size_study`'s results.
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
        results: :func:`lhlib.sample_size_study.sample_size_study`'s results.
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
        holdout: :func:`lhlib.sample_size_study.holdout_check`'s cases.
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


def plot_expansion_error(check: TaylorCheck, orders: dict[str, float], floor: float, k: int) -> plt.Figure:
    r"""The error of each Taylor prediction of :math:`D(r)` against :math:`r`, median over directions.

    Args:
        check: :func:`lhlib.loss_difference.taylor_check`'s measurements.
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
        check: :func:`lhlib.loss_difference.taylor_check`'s measurements.
        curves: :func:`lhlib.loss_difference.triangle_split`'s ``true``, ``paper`` and ``derived``.
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


def plot_ball_curves(ball: Ball, network: BallNetwork, relative_radii: list[float], title: str) -> plt.Figure:
    r"""One network's mean :math:`|\mathcal{L}_{k+1}(\theta)-\mathcal{L}_k(\theta)|` at distance :math:`R`.

    Args:
        ball: :func:`lhlib.ball_study.measure_balls`'s measurements of the network.
        network: The network's :class:`lhlib.ball_study.BallNetwork` (its :math:`M_\ell` and
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
        balls: :func:`lhlib.ball_study.measure_balls`'s results.
        networks: :func:`lhlib.ball_study.ball_networks`'s first-seed networks.
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
        records: :func:`lhlib.ball_study.ball_records`'s records.

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
        gradient: Per dataset, :func:`lhlib.ball_study.gradient_study`'s result.
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
        plane: :func:`lhlib.ball.loss_slice`'s values on the plane
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
        study: :func:`lhlib.ball_study.gaussian_study`'s balls.

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


def plot_softmax_hessian(rows: list[dict], num_logits: int) -> plt.Figure:
    r"""The worst :math:`\|\mathrm{diag}(p)-pp^\top\|_2` found in each bin of the largest probability :math:`q`.

    Args:
        rows: :func:`lhlib.bound_study.softmax_hessian_study`'s result, one line per :math:`K`.
        num_logits: Logit vectors per :math:`K`, for the title.

    Returns:
        The figure with the Gershgorin envelope dashed (:math:`2q(1-q)` for :math:`q \geq 1/2`,
        :math:`1/2` below) and the paper's :math:`\sqrt2` dotted.
    """
    bins = np.linspace(0, 1, 41)
    fig, ax = plt.subplots()
    # The curves of every K coincide where they overlap (the worst case depends on q alone): the larger K
    # are drawn first with larger open markers, so each stays visible around the ones drawn over it.
    for index, r in reversed(list(enumerate(rows))):
        which = np.digitize(r["pmax"].numpy(), bins) - 1
        spec, q = r["spec"].numpy(), r["pmax"].numpy()
        # In each bin, the worst logit vector found, drawn at its own q.
        picks = [
            np.flatnonzero(which == b)[spec[which == b].argmax()] for b in range(len(bins) - 1) if (which == b).any()
        ]
        ax.plot(q[picks], spec[picks], "-", marker="os^Dv"[index % 5], ms=3 + 2 * index, mfc="none", lw=0.8,
                color=f"C{index}", label=f"largest found, K = {r['K']}")  # fmt: skip
    q = np.linspace(0, 1, 401)
    ax.plot(q, np.where(q >= 0.5, 2 * q * (1 - q), 0.5), "k--", lw=1, label=r"Gershgorin: $2q(1-q)$ for $q \geq 1/2$")
    ax.axhline(SOFTMAX_HESSIAN_NORM_PAPER, color="0.4", ls=":", label=r"paper: $\sqrt{2}$")
    ax.set_ylim(0, 1.5)
    ax.set(
        xlabel=r"largest probability $q = \max_k p_k$ (dimensionless)",
        ylabel=r"$\|\mathrm{diag}(p) - pp^\top\|_2$ (dimensionless)",
        title=f"Worst case over {num_logits} random logit vectors per K (one per bin of q)",
    )
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(rows)))[::-1] + list(range(len(rows), len(labels)))  # K ascending, then the rest
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7, ncol=2)
    return fig


def plot_full_hessian(families: dict[str, list[FullHessianCheck]]) -> plt.Figure:
    r"""The largest per-sample full-Hessian and G-term norms of each network against the corrected constant.

    Args:
        families: Per family, :func:`lhlib.bound_study.full_hessian_families`'s checks. Only the first
            two families are drawn (colours C0 and C1).

    Returns:
        A log-log scatter against :math:`\tfrac12 L M_x^2 M_W^{2(L-1)}`, one point per network and kind,
        with the diagonal dashed. Networks whose ReLU paths are all off have no G-term to draw on a log
        axis; the legend counts them.
    """
    fig, ax = plt.subplots()
    for (name, checks), color in zip(families.items(), ("C0", "C1")):
        constant = np.array([c.constant for c in checks])
        ax.loglog(
            constant, [float(c.full.max()) for c in checks], "o", ms=3, color=color, label=f"{name}: full Hessian"
        )
        gterm = np.array([float(c.gterm.max()) for c in checks])
        live = gterm > 0
        hidden = f" ({int((~live).sum())} at 0 not shown)" if not live.all() else ""
        ax.loglog(constant[live], gterm[live], "x", ms=3, color=color, alpha=0.5, label=f"{name}: G-term{hidden}")
    span = np.array(ax.get_xlim())
    ax.loglog(span, span, "k--", lw=1, label="= corrected constant")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-8))
    ax.set(
        xlabel=r"corrected constant $\frac{1}{2} L M_x^2 M_W^{2(L-1)}$ (loss units)",
        ylabel=r"largest per-sample norm (loss units)",
        title="Random bias-free networks: one point per network",
    )
    ax.legend(fontsize=7)
    return fig


def plot_tightness(tight: dict[str, dict]) -> plt.Figure:
    r"""Box plots of bound / :math:`\|J_i^\top A_iJ_i\|_2` per sample, one panel per family of networks.

    Args:
        tight: :func:`lhlib.bound_study.tightness`'s result.

    Returns:
        The figure — one box per form of :data:`lhlib.bound_study.TIGHTNESS_FORMS` (numbered, named
        below the panels), whiskers over the full range, the line at 1 dashed (below it: violated).
    """
    fig, axes = plt.subplots(1, len(tight), figsize=(11, 3.8), sharey=True, squeeze=False)
    for ax, (family, forms) in zip(axes[0], tight.items()):
        ax.boxplot([forms[name]["ratios"].numpy() for name in TIGHTNESS_FORMS], whis=(0, 100), showfliers=False)
        ax.set_xticks(range(1, len(TIGHTNESS_FORMS) + 1), [f"({j + 1})" for j in range(len(TIGHTNESS_FORMS))])
        ax.axhline(1, color="C3", ls="--", lw=1)
        ax.set(yscale="log", title=family, xlabel="form of the bound")
    axes[0, 0].set_ylabel(r"bound / $\|J_i^\top A_i J_i\|_2$  (below 1: violated)")
    names = "   ".join(f"({j + 1}) {label}" for j, label in enumerate(TIGHTNESS_FORMS.values()))
    fig.text(0.5, -0.06, names, ha="center", fontsize=8)
    return fig


Measured = dict[str, dict[tuple[int, int], MeasuredNetwork]]
FORM_COLORS = dict(zip(FORM_LABELS, ("C3", "C1", "C2", "C4", "C0")))
FORM_MARKERS = dict(zip(FORM_LABELS, ("o", "D", "v", "^", "s")))
SWEEPS = ("hidden_size", "num_layers")


def plot_ggn_histograms(results: Measured, settings: SweepSettings, names: dict[str, str]) -> plt.Figure:
    r"""Histograms of the per-sample G-term norm :math:`\|\mathbf G_i\|_2` of every training sample.

    Args:
        results: :func:`lhlib.hessian_in_practice.measure_networks`'s measurements.
        settings: The sweep's settings (the panels' configurations).
        names: Per dataset, the name shown.

    Returns:
        One row per dataset, the hidden-size sweep left and the depth sweep right, log-log. A sample
        whose ReLU paths are all off has no curvature; a log axis cannot show it, so the legend
        counts such samples.
    """
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.2 * len(results)), squeeze=False)
    for row, (name, networks) in zip(axes, results.items()):
        for ax, varying in zip(row, SWEEPS):
            keys = sweep_axis(settings, varying)[0]
            norms = [networks[k].trained.ggn_norms.double() for k in keys]
            positive = [v[v > 0] for v in norms]
            shown = torch.cat(positive)
            if shown.numel() == 0:  # every network of the panel is dead: nothing to draw
                ax.set_axis_off()
                continue
            bins = np.geomspace(float(shown.min()), float(shown.max()), 60)
            for (h, n), values, live, color in zip(keys, norms, positive, sweep_colors(len(keys))):
                label = f"h = {h}" if varying == "hidden_size" else f"num_layers = {n} (L = {n + 2})"
                if values.numel() > live.numel():
                    label += f", {values.numel() - live.numel()} at 0"
                ax.hist(live.numpy(), bins=bins, histtype="step", color=color, label=label)
            sweep = (
                f"hidden size, num_layers = {settings.fixed_num_layers}"
                if varying == "hidden_size"
                else f"depth, h = {settings.fixed_hidden_size}"
            )
            ax.set(
                xscale="log",
                yscale="log",
                xlabel=r"per-sample G-term norm $\|\mathbf{G}_i\|_2$ (loss units per parameter$^2$)",
                ylabel="number of samples",
                title=f"{names[name]}: {sweep}",
            )
            ax.legend()
    fig.tight_layout()
    return fig


def _bound_value(check: dict) -> float:
    value = check["value"]
    return value["max"] if isinstance(value, dict) else value


def plot_bounds(results: Measured, settings: SweepSettings, names: dict[str, str]) -> plt.Figure:
    r"""Every form of Theorem 1 against the measured norms, and each form's tightness, per dataset.

    Args:
        results: :func:`lhlib.hessian_in_practice.measure_networks`'s measurements.
        settings: The sweep's settings (the panels' configurations).
        names: Per dataset, the name shown.

    Returns:
        Two rows per dataset. Upper — the bounds, the largest G-term norm over all samples and the
        largest full-Hessian norm on the Lanczos subset against the hidden size and the depth, with the
        paper's scaling :math:`L\,h^{2L}` dotted (anchored at the first point). Lower: the smallest
        bound / norm over samples (solid: G-term, dotted: full Hessian), with the line at 1.
    """
    fig, axes = plt.subplots(2 * len(results), 2, figsize=(10, 6.4 * len(results) + 0.8), squeeze=False)
    for block, (name, networks) in enumerate(results.items()):
        for col, varying in enumerate(SWEEPS):
            keys, xs, xlabel = sweep_axis(settings, varying)
            rs = [networks[k] for k in keys]
            top, bottom = axes[2 * block, col], axes[2 * block + 1, col]
            g_max = np.array([float(r.trained.ggn_norms.max()) for r in rs])
            h_max = np.array([float(r.trained.hessian["norms"].max()) for r in rs])
            for form, label in FORM_LABELS.items():
                # A marker per form keeps forms apart where their lines coincide (corrected and its per-sample form).
                style = {"color": FORM_COLORS[form], "marker": FORM_MARKERS[form], "mfc": "none"}
                top.plot(xs, [_bound_value(r.checks[form]) for r in rs], "-", label=label, ms=5, **style)
                bottom.plot(xs, [r.checks[form]["tightness_ggn"] for r in rs], "-", ms=5, **style)
                bottom.plot(xs, [r.checks[form]["tightness_hessian"] for r in rs], ":", ms=3, **style)
            top.plot(xs, g_max, "ks-", label=r"measured max $\|G_i\|_2$ (all samples)")
            top.plot(xs, h_max, "k^--", label=r"measured max $\|H_i\|_2$ (Lanczos samples)", mfc="none")
            law = np.array([(n + 2) * float(h) ** (2 * (n + 2)) for h, n in keys])
            top.plot(xs, g_max[0] * law / law[0], ":", color="0.5", label=r"$\propto L\,h^{2L}$ (paper's scaling)")
            top.set_ylim(max(1e-3, 0.3 * min(g_max.min(), h_max.min())), None)
            bottom.axhline(1.0, color="k", lw=0.8)
            top.set(ylabel="spectral norm (loss units)", title=f"{names[name]}: bounds and measured norms")
            bottom.set(
                ylabel="tightness: min over samples of bound / norm",
                title=f"{names[name]}: tightness of each bound",
            )
            for ax in (top, bottom):
                ax.set(yscale="log", xlabel=xlabel)
                if varying == "hidden_size":
                    ax.set_xscale("log", base=2)
    # One legend for all panels: every panel draws the same lines, and eight small legends hid the data.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", ls=ls) for ls in ("-", ":")]
    labels += [r"tightness: bound / $\|G_i\|_2$", r"tightness: bound / $\|H_i\|_2$"]
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()))
    return fig


HTERM_STATES = {"trained": ("C0", "-", "trained"), "initial": ("C3", "--", "initialisation")}
DATASET_MARKERS = ["o", "s", "^", "D"]


def _draw_h_against_g(ax, results: Measured, reference: tuple[int, int], names: dict[str, str]) -> None:
    for name, marker in zip(results, DATASET_MARKERS):
        for which, (color, _, label) in HTERM_STATES.items():
            m = getattr(results[name][reference], which)
            index = m.full_index[: m.random_count]
            live = m.ggn_norms[index] > 0  # a log axis cannot show a sample with no G-term
            full = m.hessian["norms"][: m.random_count][live]
            ax.scatter(m.ggn_norms[index][live].double(), full, s=8, marker=marker, color=color, alpha=0.5,
                       label=f"{names[name]}, {label}")  # fmt: skip
    lims = np.array(ax.get_xlim() + ax.get_ylim())
    ax.plot([lims.min(), lims.max()], [lims.min(), lims.max()], "k-", lw=0.8, label=r"$\|H_i\| = \|G_i\|$")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=r"G-term norm $\|\mathbf{G}_i\|_2$ (loss units)",
        ylabel=r"full Hessian norm $\|\mathbf{H}_i\|_2$ (loss units)",
        title=f"per sample, h = {reference[0]}, num_layers = {reference[1]}",
    )
    ax.legend(fontsize=6)


def _draw_h_term_shares(ax, results: Measured, shares: dict, names: dict[str, str]) -> None:
    configurations = list(next(iter(results.values())))
    for name, marker in zip(results, DATASET_MARKERS):
        for which, (color, style, label) in HTERM_STATES.items():
            ax.plot(range(len(configurations)), shares[(name, which)], marker=marker, color=color, ls=style,
                    label=f"{names[name]}, {label}", ms=4)  # fmt: skip
    ax.set_xticks(range(len(configurations)), [f"{h}/{n}" for h, n in configurations], rotation=60, fontsize=7)
    ax.set(
        xlabel="configuration h / num_layers",
        ylabel=r"median $\|H_i - G_i\|_2 / \|H_i\|_2$",
        yscale="log",
        title="relative size of the H-term",
    )
    ax.legend(fontsize=6)


def plot_h_term(
    results: Measured, shares: dict[tuple[str, str], list[float]], reference: tuple[int, int], names: dict[str, str]
) -> plt.Figure:
    r"""The H-term the paper drops.

    Args:
        results: :func:`lhlib.hessian_in_practice.measure_networks`'s measurements.
        shares: :func:`lhlib.hessian_in_practice.hterm_shares`'s medians.
        reference: The configuration of the left panel.
        names: Per dataset, the name shown.

    Returns:
        Left — per sample of the reference configuration's Lanczos subset, the full Hessian norm
        against the G-term norm (trained and at initialisation) with the diagonal. Right: per
        configuration, the median :math:`\|H_i-G_i\|_2/\|H_i\|_2` (trained solid, initial dashed).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _draw_h_against_g(left, results, reference, names)
    _draw_h_term_shares(right, results, shares, names)
    fig.tight_layout()
    return fig


def plot_averaged_hessian(results: Measured, settings: SweepSettings, names: dict[str, str]) -> plt.Figure:
    r"""The top eigenvalue of the averaged Hessian and G-term beside the largest per-sample G-term norm.

    Args:
        results: :func:`lhlib.hessian_in_practice.measure_networks`'s measurements.
        settings: The sweep's settings (the panels' configurations).
        names: Per dataset, the name shown.

    Returns:
        Two log panels, against the hidden size and the depth, one colour per dataset — solid the
        averaged Hessian's :math:`\lambda_1`, dashed the averaged G-term's, dotted :math:`\max_i\|G_i\|`.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    markers = DATASET_MARKERS
    for ax, varying in zip(axes, SWEEPS):
        keys, xs, xlabel = sweep_axis(settings, varying)
        for name, marker, color in zip(results, markers, sweep_colors(len(results), "tab10")):
            rs = [results[name][k].trained for k in keys]
            label = names[name]
            ax.plot(xs, [m.top_hessian[0] for m in rs], marker=marker, color=color,
                    label=rf"{label}: $\lambda_1$ of mean $H$")  # fmt: skip
            ax.plot(xs, [m.top_ggn[0] for m in rs], marker=marker, color=color, ls="--", mfc="none",
                    label=rf"{label}: $\lambda_1$ of mean $G$")  # fmt: skip
            ax.plot(xs, [float(m.ggn_norms.max()) for m in rs], marker=marker, color=color, ls=":", alpha=0.6,
                    label=rf"{label}: max$_i\,\|G_i\|$")  # fmt: skip
        ax.set(yscale="log", xlabel=xlabel, ylabel="eigenvalue / norm (loss units)")
        if varying == "hidden_size":
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_lemma_term(
    lemma: dict[str, dict], results: Measured, reference: tuple[int, int], names: dict[str, str]
) -> plt.Figure:
    r"""The lemma's Hessian term :math:`\|H_{k+1}-\bar H_k\|_2` against ``k``, per dataset.

    Args:
        lemma: :func:`lhlib.hessian_in_practice.lemma_study`'s result.
        results: :func:`lhlib.hessian_in_practice.measure_networks`'s measurements.
        reference: ``(h, num_layers)`` of the network measured.
        names: Per dataset, the name shown.

    Returns:
        Log-log — the term (circles), the newly added sample's :math:`\|H_{k+1}\|_2` (crosses), the
        full average's :math:`\lambda_1` (dashed) and the proof's bound :math:`2\max_i\|G_i\|_2`
        (dash-dotted).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, color in zip(lemma, sweep_colors(len(lemma), "tab10")):
        m, v, label = results[name][reference].trained, lemma[name], names[name]
        ax.plot(v["k"], v["term"], "o-", color=color, label=rf"{label}: $\|H_{{k+1}} - \bar H_k\|_2$")
        ax.plot(v["k"], v["new_sample_norm"], "x:", color=color, label=rf"{label}: $\|H_{{k+1}}\|_2$")
        ax.axhline(m.top_hessian[0], color=color, lw=0.8, ls="--", label=rf"{label}: $\lambda_1(\bar H_N)$")
        bound = 2 * float(m.ggn_norms.max())
        ax.axhline(bound, color=color, lw=0.8, ls="-.", label=rf"{label}: $2\max_i\|G_i\|_2$")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="number of samples k already in the average",
        ylabel="spectral norm (loss units)",
        title=f"the lemma's Hessian term, h = {reference[0]}, num_layers = {reference[1]}",
    )
    ax.legend(fontsize=6)
    return fig
