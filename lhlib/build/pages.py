"""What a built page shows beyond its executed notebook: what the copy ran, and the parameters once.

A chapter's defaults are the paper's settings; a copy of the book built under another profile ran
with other values (fewer datasets, a backbone the book trains itself, fewer seeds). The staged page
says so, from the executed notebook itself:

* :func:`run_differences` compares the parameters papermill injected into an executed chapter with
  the values the ``paper`` profile would use (the notebook's defaults, overlaid by that profile);
* :func:`chapter_banner` and :func:`intro_banner` turn those differences into a note at the top of
  the chapter and of the introduction;
* :func:`stage_chapter` writes the staged copy: the banner under the title, and one parameter cell
  (papermill runs the defaults cell and then an injected cell of overrides; the page shows the
  defaults with the overrides written in, which is what the two cells together set);
* :func:`stage_api` lists every chapter module on the staged API page.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

__all__ = [
    "API_MARKER",
    "chapter_banner",
    "intro_banner",
    "notebook_defaults",
    "run_differences",
    "stage_api",
    "stage_chapter",
]


BANNER_TITLE = "What this copy ran"


def _parameters_cell(notebook) -> Any:
    return next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))


def notebook_defaults(notebook) -> dict[str, Any]:
    """The values a chapter's ``parameters`` cell assigns (its defaults: the paper's settings).

    Args:
        notebook: The chapter, as an ``nbformat`` notebook.

    Returns:
        Each assigned name and its value (``ast.literal_eval`` of the right-hand side).
    """
    return {name: ast.literal_eval(node.value) for name, node in _assignments(_parameters_cell(notebook).source)}


def _assignments(source: str) -> list[tuple[str, ast.Assign | ast.AnnAssign]]:
    """The ``name = value`` and ``name: type = value`` statements of a parameters cell, by name."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found.append((node.targets[0].id, node))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            found.append((node.target.id, node))
    return found


def run_differences(executed, paper_overrides: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The parameters an executed chapter ran with that differ from what the ``paper`` profile uses.

    Args:
        executed: The executed chapter (``nbformat`` notebook); papermill keeps the injected values
            in ``metadata.papermill.parameters``.
        paper_overrides: What the ``paper`` profile sets for the chapter (the defaults fill in the rest).

    Returns:
        ``(name, value this copy used, value under the paper profile)`` for each parameter that
        differs, in the order of the parameter cell; ``output_dir`` is left out.
    """
    paper = {**notebook_defaults(executed), **paper_overrides}
    used = {**paper, **executed.metadata.get("papermill", {}).get("parameters", {})}
    return [
        (name, used[name], paper[name])
        for name in paper
        if name != "output_dir" and _normalised(used[name]) != _normalised(paper[name])
    ]


def _normalised(value: Any) -> str:
    """One spelling per value: JSON turns tuples into lists, as papermill's injection does."""
    return json.dumps(value, sort_keys=True)


def _plain(value: Any) -> str:
    """A value as a reader reads it: lists without brackets, dicts as ``key: value``."""
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_plain(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(json.dumps(item) if isinstance(item, list | tuple) else str(item) for item in value)
    return str(value)


def _difference(name: str, used: Any, paper: Any) -> str:
    """One parameter's difference as a phrase: what this copy ran, and what the paper profile adds or uses."""
    if isinstance(used, list) and isinstance(paper, list) and all(item in paper for item in used):
        added = [item for item in paper if item not in used]
        return f"`{name}`: this copy ran `{_plain(used)}`; the `paper` profile adds `{_plain(added)}`"
    return f"`{name}`: this copy ran `{_plain(used)}`; the `paper` profile uses `{_plain(paper)}`"


def chapter_banner(profile: str, differences: list[tuple[str, Any, Any]]) -> str:
    """The note at the top of a chapter built under ``profile``: what it ran instead of the paper's settings.

    Args:
        profile: The profile the copy was built with.
        differences: :func:`run_differences` of the chapter.

    Returns:
        A MyST admonition (empty when the chapter ran with the paper's settings).
    """
    if not differences:
        return ""
    items = "\n".join(f"- {_difference(*row)}." for row in differences)
    return (
        f":::{{admonition}} {BANNER_TITLE}\n:class: note\n"
        f"This page was built with the `{profile}` profile, not with the paper's settings, and every number on it "
        f"comes from this run:\n\n{items}\n\n"
        "*Reproducing this book* says how to run the chapter with the paper's settings.\n:::"
    )


def intro_banner(profile: str, differences: dict[str, list[tuple[str, Any, Any]]]) -> str:
    """The note at the top of the introduction: what this copy ran, grouped over the chapters.

    Args:
        profile: The profile the copy was built with.
        differences: Per chapter (its name, ``NN_stem``), :func:`run_differences`.

    Returns:
        A MyST admonition (empty when every chapter ran with the paper's settings).
    """
    grouped: dict[str, tuple[tuple[str, Any, Any], list[str]]] = {}
    for chapter, rows in differences.items():
        for row in rows:
            grouped.setdefault(_normalised(row), (row, []))[1].append(chapter[:2])
    if not grouped:
        return ""
    items = "\n".join(
        f"- {_difference(*row)} (chapter{'s' if len(chapters) > 1 else ''} {', '.join(chapters)})."
        for row, chapters in grouped.values()
    )
    return (
        f":::{{admonition}} {BANNER_TITLE}\n:class: note\n"
        f"This copy of the book was built with the `{profile}` profile, not with the paper's settings: the "
        f"findings below are this run's, on what it ran.\n\n{items}\n:::"
    )


def _markdown_cell(notebook, text: str):
    """A new Markdown cell for ``notebook`` (cell ids exist from nbformat 4.5 on)."""
    import nbformat

    cell = nbformat.v4.new_markdown_cell(text)
    if notebook.nbformat_minor < 5:
        del cell["id"]
    return cell


def _one_parameter_cell(notebook, profile: str) -> None:
    """Fold papermill's injected cell into the defaults cell and say where the values came from."""
    cells = notebook.cells
    defaults = _parameters_cell(notebook)
    injected = next((c for c in cells if "injected-parameters" in c.metadata.get("tags", [])), None)
    if injected is None:
        return
    values = notebook.metadata.get("papermill", {}).get("parameters", {})
    lines = defaults.source.splitlines()
    for name, node in sorted(_assignments(defaults.source), key=lambda item: -item[1].lineno):
        if name not in values or _normalised(values[name]) == _normalised(ast.literal_eval(node.value)):
            continue
        value = values[name]
        spelled = json.dumps(value) if isinstance(value, str) else repr(value)
        if name == "output_dir":
            note = "# where this build writes"
        else:
            last = lines[node.end_lineno - 1]
            comment = last[node.end_col_offset :].strip().lstrip("#").strip() if node.lineno == node.end_lineno else ""
            default = ast.get_source_segment(defaults.source, node.value)
            note = f"# {profile} profile (paper: {default})" + (f"; {comment}" if comment else "")
        annotation = f": {ast.unparse(node.annotation)}" if isinstance(node, ast.AnnAssign) else ""
        lines[node.lineno - 1 : node.end_lineno] = [f"{name}{annotation} = {spelled}  {note}"]
    defaults.source = "\n".join(lines)
    cells.remove(injected)
    where = (
        f"The parameters this page ran with: the chapter's defaults (the paper's settings), with the "
        f"`{profile}` profile's values written in where it sets them (marked `{profile} profile`, "
        "beside the paper's value)."
    )
    cells.insert(cells.index(defaults), _markdown_cell(notebook, where))


def stage_chapter(executed: Path, target: Path, profile: str, paper_overrides: dict[str, Any]) -> list:
    """Copy an executed chapter to the stage, with its banner and with one parameter cell.

    Args:
        executed: The executed notebook.
        target: Where the staged copy goes.
        profile: The profile it was executed with.
        paper_overrides: What the ``paper`` profile sets for the chapter.

    Returns:
        The chapter's :func:`run_differences`.
    """
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    differences = run_differences(notebook, paper_overrides)
    _one_parameter_cell(notebook, profile)
    banner = chapter_banner(profile, differences)
    if banner:
        notebook.cells.insert(1, _markdown_cell(notebook, banner))
    nbformat.write(notebook, target)
    return differences


API_MARKER = "% chapter-modules"
"""The line of ``book/api.md`` where the staged page lists every chapter module."""


def stage_api(api: Path, root: Path) -> None:
    """Replace the staged API page's :data:`API_MARKER` line with one section per chapter module.

    So a new chapter's module is on the API page without an edit to it.

    Args:
        api: The staged ``api.md``.
        root: The repository, whose ``lhlib/chapters/ch*.py`` are listed in file-name order.

    Raises:
        ValueError: when ``api`` has no line :data:`API_MARKER`.
    """
    text = api.read_text()
    if f"\n{API_MARKER}\n" not in text:
        raise ValueError(f"the API page must hold a line {API_MARKER!r} where the chapter modules go, got {api}")
    sections = [
        f"### `lhlib.chapters.{path.stem}`\n\n```{{eval-rst}}\n.. automodule:: lhlib.chapters.{path.stem}\n"
        "   :members:\n```\n"
        for path in sorted((root / "lhlib" / "chapters").glob("ch*.py"))
    ]
    api.write_text(text.replace(f"\n{API_MARKER}\n", "\n" + "\n".join(sections) + "\n"))
