"""The figure checks of lhlib.build.plotting and the writers of lhlib.build.report."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch

from lhlib.build.plotting import CLIPPING_FLOORS, check_figure, save_figure, show_figure, sweep_colors, use_style  # noqa: E402
from lhlib.build.report import Findings, markdown_table, show_table, write_summary  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    use_style()
    yield
    plt.close("all")


def _figure(x, y, *, xscale="log", yscale="log", kind="plot"):
    fig, ax = plt.subplots()
    getattr(ax, kind)(x, y)
    ax.set(xscale=xscale, yscale=yscale, title="a panel")
    fig.canvas.draw()
    return fig


def test_an_ordinary_figure_is_saved_as_png_and_pdf(tmp_path):
    k = np.arange(1, 100)
    fig = _figure(k, 1 / k)
    path = save_figure(fig, tmp_path / "out", "ordinary")
    assert path == tmp_path / "out" / "ordinary.png" and path.stat().st_size > 0
    assert (tmp_path / "out" / "ordinary.pdf").stat().st_size > 0


@pytest.mark.parametrize("floor", CLIPPING_FLOORS)
@pytest.mark.parametrize("kind", ["plot", "scatter"])
def test_a_clipping_floor_plotted_as_data_is_refused(floor, kind, tmp_path):
    values = np.array([1e-3, 1e-2, 1e-1])
    fig = _figure([1.0, 2.0, 3.0, 4.0], np.append(values, floor), kind=kind)
    with pytest.raises(ValueError, match=r"^figure 'clipped', panel 0 \('a panel'\): y value .* clipping floor"):
        save_figure(fig, tmp_path, "clipped")
    assert not list(tmp_path.iterdir()), "nothing is written for a refused figure"


def test_a_histogram_whose_bins_start_at_a_floor_is_refused():
    fig, ax = plt.subplots()
    ax.hist(np.r_[np.full(5, 1e-12), np.geomspace(1e-3, 1.0, 50)], bins=np.geomspace(1e-12, 1.0, 30))
    ax.set_xscale("log")
    with pytest.raises(ValueError, match="x value 1e-12 is a clipping floor"):
        check_figure(fig, "histogram")


def test_a_scatter_point_missing_one_coordinate_does_not_hide_a_floor():
    fig, ax = plt.subplots()
    ax.scatter([1.0, np.nan, 3.0], [1e-3, 1e-2, 1e-12])
    ax.set(xscale="log", yscale="log")
    with pytest.raises(ValueError, match="y value 1e-12 is a clipping floor"):
        check_figure(fig, "scatter")


def test_values_near_a_floor_but_measured_pass():
    fig = _figure([1.0, 2.0, 3.0], [1.0000001e-12, 3e-12, 1e-11])
    check_figure(fig, "near")


@pytest.mark.parametrize(
    "y, yscale",
    [([5.0, 5.0 + 1e-12, 5.0], "linear"), ([1e5, 1e5 * (1 + 1e-6), 1e5], "log")],
)
def test_a_collapsed_axis_is_refused(y, yscale):
    fig = _figure([1.0, 2.0, 3.0], y, xscale="linear", yscale=yscale)
    fig.axes[0].set_ylim(min(y), max(y))
    with pytest.raises(ValueError, match="the y axis has collapsed"):
        check_figure(fig, "flat")


def test_a_parameter_on_the_x_axis_of_a_line_may_equal_a_floor_and_categories_pass():
    fig, (radii, categories) = plt.subplots(1, 2)
    radii.loglog([1e-12, 1e-9, 1e-6], [1e-20, 1e-14, 1e-8])  # a line's x is a parameter, not a measurement
    categories.plot(["a", "b", "c"], [1.0, 2.0, 3.0])
    fig.canvas.draw()
    check_figure(fig, "parameters")


def test_an_empty_panel_and_a_colour_bar_are_not_checked():
    fig, (ax, empty) = plt.subplots(1, 2)
    image = ax.imshow(np.array([[1.0, 1.0 + 1e-12]]))
    fig.colorbar(image, ax=ax)
    empty.axis("off")
    fig.canvas.draw()
    check_figure(fig, "with colour bar")


def test_sweep_colors_are_distinct_and_ordered():
    colors = sweep_colors(5)
    assert len({tuple(c) for c in colors}) == 5
    assert sweep_colors(1) == [plt.get_cmap("viridis")(0.0)]


def test_write_summary_converts_scalars_arrays_and_non_finite_numbers(tmp_path):

    summary = {"a": np.float64(1.5), "b": [math.inf, np.int64(2)], 3: math.nan}
    summary |= {"array": np.array([1.0, np.nan]), "tensor": torch.tensor([[1, 2]])}
    path = write_summary(tmp_path / "chapter", summary)
    expected = {"a": 1.5, "b": ["inf", 2], "3": "nan", "array": [1.0, "nan"], "tensor": [[1, 2]]}
    assert json.loads(path.read_text()) == expected


def test_markdown_table_escapes_pipes_and_checks_row_lengths():
    table = markdown_table(["name", "value"], [["a|b", 1], ["c\nd", 2.5]])
    assert table.splitlines() == ["| name | value |", "|---|---|", "| a\\|b | 1 |", "| c d | 2.5 |"]
    with pytest.raises(ValueError, match="every row must have 2 cells"):
        markdown_table(["name", "value"], [["only one"]])


def test_findings_glue_what_the_prose_cites_and_write_everything_once(tmp_path, monkeypatch):
    import lhlib.build.report as report

    glued = []
    monkeypatch.setattr(report, "glue", lambda name, value, display: glued.append((name, value, display)))
    findings = Findings(tmp_path / "chapter")
    findings.cite(n_seeds=5, ratio=np.float64(0.25))
    findings.record(settings={"seeds": [0, 1]})
    assert glued == [("n_seeds", 5, False), ("ratio", 0.25, False)] and findings["settings"] == {"seeds": [0, 1]}
    assert type(glued[1][1]) is float  # numpy scalars glue as plain numbers, so {glue:text}`ratio:.2f` formats
    for twice in ({"n_seeds": 3}, {"settings": {}}, {"findings": 1}):
        with pytest.raises(ValueError, match="recorded twice"):
            findings.record(**twice)
    summary = json.loads(findings.write().read_text())
    assert summary == {"settings": {"seeds": [0, 1]}, "findings": {"n_seeds": 5, "ratio": 0.25}}


def test_show_table_displays_one_markdown_table(monkeypatch, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", shown.append)
    show_table(["a", "b"], [[1, 2]], title="Numbers")
    assert shown[0].data == "**Numbers**\n\n| a | b |\n|---|---|\n| 1 | 2 |"


def test_show_figure_saves_glues_and_closes(tmp_path, monkeypatch):
    from lhlib.build import plotting

    glued = []
    monkeypatch.setattr(plotting, "glue", lambda name, value, display: glued.append((name, display)))
    fig = _figure(np.arange(1, 10), np.arange(1, 10) ** -1.0)
    assert show_figure(fig, tmp_path, "curve") is None  # nothing prints under the figure
    assert (tmp_path / "curve.png").is_file() and (tmp_path / "curve.pdf").is_file()
    assert glued == [("curve", True)] and not plt.fignum_exists(fig.number)


def test_the_sweep_figure_draws_every_dataset(toy_sweep):
    """One figure for every dataset: a 2 x 2 block each, titled by its heading, and it passes the checks."""
    from lhlib.build.plotting import check_figure, plot_sweep

    results, settings = toy_sweep
    headings = {"first": "first dataset", "second": "second dataset"}
    fig = plot_sweep({"first": results, "second": results}, settings, headings)
    assert len(fig.axes) == 8
    assert [block.get_suptitle() for block in fig.subfigs] == ["first dataset", "second dataset"]
    fig.draw_without_rendering()
    check_figure(fig, "sweep")
