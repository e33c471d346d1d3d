"""The book's figures: one style, a checked save, and the sweep panels two chapters draw.

Every chapter calls :func:`use_style` once, then :func:`show_figure` for each figure: it saves it
(:func:`save_figure`, PNG for the book, PDF for papers) and glues it under its file name, for the
chapter's captioned ``{glue:figure}`` directive. :func:`save_figure` refuses a figure that misleads: an
axis whose range has collapsed to a point, or a plotted value that is a clipping floor (a sentinel such as
``1e-12`` standing for "zero" or "not measured") rather than a measurement. :func:`plot_sweep` draws the
paper's Figures 2-5 (chapters 04 and 05). Each chapter's own figures are in its chapter module.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from lhlib.build.glue import glue
from lhlib.build.report import output_path
from lhlib.engine.landscape import log_binned
from lhlib.engine.settings import SweepSettings
from lhlib.engine.sweep import ConfigurationResult, panel_configurations

__all__ = [
    "CLIPPING_FLOORS",
    "STYLE_FILE",
    "check_figure",
    "plot_sweep",
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
    """Apply the book's matplotlib style (``lhlib/build/style.mplstyle``)."""
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
        sweeps: Per dataset, :func:`lhlib.engine.sweep.run_sweep`'s results.
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
