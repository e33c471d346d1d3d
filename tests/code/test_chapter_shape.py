"""Every chapter in chapter 04's shape: short code cells, captioned figures, one findings record."""

from __future__ import annotations

import ast
import json
import re
import statistics
from collections import Counter
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


MAX_CELL_LINES, MAX_MEDIAN_LINES, MAX_LINE = 30, 12, 79


SHOWN = re.compile(r'show_figure\([^"]*"(\w+)"\)')


GLUED = re.compile(r"```\{glue:figure\} (\w+)\n((?::\w+:[^\n]*\n)*)\n?(.*?)```", re.S)


def _notebook(stem: str):
    return nbformat.read(next(p for p in NOTEBOOKS if p.stem == stem), as_version=4)


def _cells(stem: str, kind: str) -> list[str]:
    return [cell.source for cell in _notebook(stem).cells if cell.cell_type == kind]


def _figure_directives(stem: str) -> dict[str, dict[str, str]]:
    directives = {}
    for markdown in _cells(stem, "markdown"):
        for name, options, caption in GLUED.findall(markdown):
            fields = dict(re.findall(r":(\w+): *(.*)", options))
            directives[name] = {**fields, "caption": caption.strip()}
    return directives


@pytest.mark.parametrize("stem", [path.stem for path in NOTEBOOKS])
def test_code_cells_are_short_and_narrow(stem):
    code = _cells(stem, "code")
    # The parameters cell lists every parameter, one line each, as the declaration writes it.
    written = [
        c.source
        for c in _notebook(stem).cells
        if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
    ]
    lengths = [len(source.splitlines()) for source in written]
    assert max(lengths) <= MAX_CELL_LINES, f"a code cell of {max(lengths)} lines"
    assert statistics.median(lengths) <= MAX_MEDIAN_LINES
    # The install cell's pip line holds the repository's URL, whatever its length.
    lines = [line for source in code for line in source.splitlines() if "%pip install" not in line]
    wide = [line for line in lines if len(line) > MAX_LINE]
    assert not wide, f"{len(wide)} code lines over {MAX_LINE} characters, first: {wide[0]!r}"


@pytest.mark.parametrize("stem", [path.stem for path in NOTEBOOKS])
def test_every_figure_is_captioned_labelled_described_and_cited(stem):
    code, markdown = "\n".join(_cells(stem, "code")), "\n".join(_cells(stem, "markdown"))
    assert "save_figure(" not in code and "plt.show(" not in code, "figures go through show_figure"
    shown = SHOWN.findall(code)
    assert shown, "a chapter without figures"
    directives = _figure_directives(stem)
    for name in shown:
        assert name in directives, f"figure {name!r} has no {{glue:figure}} directive"
        figure = directives[name]
        label = figure.get("name", "")
        assert label.startswith(f"fig-{stem[:2]}-"), f"figure {name!r}: label {label!r}"
        assert len(figure.get("alt", "")) >= 40, f"figure {name!r}: alt text missing or too short"
        assert len(figure["caption"]) >= 40, f"figure {name!r}: caption missing or too short"
        assert f"{{numref}}`{label}`" in markdown, f"figure {name!r} is never cited with {{numref}}"
    assert set(directives) <= set(shown), "a {glue:figure} directive names no figure of the chapter"
    # Jupyter shows a figure under its cell; the page shows it once, captioned, where the prose places it.
    for cell in _notebook(stem).cells:
        if cell.cell_type == "code" and "show_figure(" in cell.source:
            assert "remove-output" in cell.metadata.get("tags", []), (
                f"figure cell not tagged remove-output: {cell.source[:60]}"
            )
            assert not re.search(r"\b(print|show_table|display)\(", cell.source), (
                "a figure cell's other output would be lost"
            )


@pytest.mark.parametrize("stem", [path.stem for path in NOTEBOOKS])
def test_tables_and_numbers_go_through_one_record(stem):
    code = _cells(stem, "code")
    joined = "\n".join(code)
    assert "|---" not in joined and "Markdown(" not in joined, "tables go through lhlib.build.report.show_table"
    assert "glue(" not in joined and "write_summary(" not in joined, "numbers go through one Findings record"
    assert joined.count("Findings(output_dir)") == 1
    assert "findings.write()" in code[-1], "the last code cell writes the findings"


def test_no_helper_is_defined_in_two_notebooks():
    defined = Counter()
    for path in NOTEBOOKS:
        for source in _cells(path.stem, "code"):
            # IPython magics become `pass`, keeping the cell's indentation valid Python.
            tree = ast.parse(re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M))
            defined.update({n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)})
    twice = sorted(name for name, count in defined.items() if count > 1)
    assert not twice, f"defined in more than one notebook cell: {twice}"


def _parameters_cell(chapter: str) -> dict:
    notebook = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    tagged = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    return tagged[0]


@pytest.mark.parametrize("chapter", [path.stem for path in NOTEBOOKS])
def test_notebook_is_stripped_and_has_conventions(chapter):
    notebook = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    assert notebook["nbformat"] == 4
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert notebook["cells"][0]["cell_type"] == "markdown"
    assert "".join(notebook["cells"][0]["source"]).startswith(f"# {chapter[:2]}. ")
    assert 'if "google.colab" in sys.modules:' in "".join(notebook["cells"][1]["source"])
    params = "".join(_parameters_cell(chapter)["source"])
    for name in ("seeds: list[int] = [", 'device: str = "auto"', f'output_dir: str = "results/paper/{chapter}"'):
        assert name in params


@pytest.mark.parametrize("chapter", [path.stem for path in NOTEBOOKS])
def test_papermill_sees_every_parameters_type(chapter):
    """``papermill --help-notebook`` lists each parameter with its type, from the cell's annotations."""
    from papermill.translators import PythonTranslator

    cell = nbformat.from_dict({**_parameters_cell(chapter), "source": "".join(_parameters_cell(chapter)["source"])})
    inspected = {p.name: p.inferred_type_name for p in PythonTranslator.inspect(cell)}
    assigned = [n.target.id for n in ast.parse(cell.source).body if isinstance(n, ast.AnnAssign)]
    assert len(assigned) == len(ast.parse(cell.source).body), "every parameter is annotated with its type"
    assert inspected == {name: inspected.get(name) for name in assigned} and "None" not in inspected.values()
