"""What a chapter reports besides its figures: its findings, ``summary.json`` and its tables.

Every chapter keeps one :class:`Findings` record: the values its prose cites go in through
:meth:`Findings.cite` (glued for ``{glue:text}``), the data only the summary carries through
:meth:`Findings.record`, and :meth:`Findings.write` writes both to ``summary.json``
(:func:`write_summary`). Tables go through :func:`show_table` (:func:`markdown_table`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lhlib.build.glue import glue
from lhlib.engine.store import atomic_write_bytes

__all__ = ["Findings", "markdown_table", "output_path", "show_table", "write_summary"]


def output_path(output_dir: str | Path) -> Path:
    """``output_dir`` as a Path, created if needed.

    Args:
        output_dir: A chapter's output folder.

    Returns:
        The folder's ``Path``, which now exists (parents included).
    """
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) > 0:  # numpy arrays and tensors
        return _json_safe(value.tolist())
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_summary(output_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as ``<output_dir>/summary.json`` atomically.

    Numpy and torch scalars and arrays become numbers and lists, dict keys strings, and non-finite
    floats the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (JSON has no such numbers). Keys are sorted.

    Args:
        output_dir: The chapter's output folder, created if needed.
        summary: What to write.

    Returns:
        The path of ``summary.json``.
    """
    path = output_path(output_dir) / "summary.json"
    text = json.dumps(_json_safe(summary), indent=2, sort_keys=True)
    atomic_write_bytes(path, lambda file: file.write(text.encode()))
    return path


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (``display(Markdown(...))`` renders it) with ``header`` and one line per row.

    Cells are ``str()`` of the values, with ``|`` escaped and newlines turned into spaces.

    Args:
        header: The column names.
        rows: The rows, each with as many cells as ``header``.

    Returns:
        The table's Markdown source.

    Raises:
        ValueError: when a row's length differs from the header's.
    """
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row must have {len(header)} cells, the header's length")

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])


def show_table(header: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    """Display :func:`markdown_table` of ``header`` and ``rows`` under the cell, after a bold ``title``.

    The book renders Markdown outputs as MyST, so the table is an HTML table on the page.

    Args:
        header: The column names.
        rows: The rows, each with as many cells as ``header``.
        title: A heading shown in bold above the table (``None``: none).

    Raises:
        ValueError: when a row's length differs from the header's.
    """
    from IPython.display import Markdown, display

    table = markdown_table(header, rows)
    display(Markdown(f"**{title}**\n\n{table}" if title else table))


class Findings:
    """One chapter's findings: what its prose cites and what its ``summary.json`` holds.

    A value goes in once, under one name: :meth:`cite` for a value the prose cites as
    ``{glue:text}`name``` (it is glued and kept under ``"findings"`` in the summary), :meth:`record`
    for data only the summary carries (kept at the summary's top level). So every number on the page
    is in ``summary.json`` too, from the same record. ``findings[name]`` reads a value back.

    Args:
        output_dir: The chapter's output folder; :meth:`write` puts ``summary.json`` there.

    Attributes:
        output_dir: The chapter's output folder.
        cited: The values given to :meth:`cite`, by name.
        recorded: The values given to :meth:`record`, by name.
    """

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.cited: dict[str, Any] = {}
        self.recorded: dict[str, Any] = {}

    def _check_new(self, name: str) -> None:
        if name in self.cited or name in self.recorded or name == "findings":
            raise ValueError(f"finding {name!r} is recorded twice; every finding has one name")

    def cite(self, **values: Any) -> None:
        """Keep each value and glue it under its name for the prose (``myst_nb.glue``, not displayed).

        A numpy or torch scalar is kept as a plain Python number: glued as ``np.float64(...)`` no format
        spec could read it.

        Args:
            **values: The values, by the names the prose cites them under.

        Raises:
            ValueError: when a name was cited or recorded before, or is ``"findings"``.
        """
        for name, value in values.items():
            self._check_new(name)
            # A numpy or torch scalar glues as "np.float64(...)", which no format spec can read.
            if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
                value = value.item()
            self.cited[name] = value
            glue(name, value, display=False)

    def record(self, **values: Any) -> None:
        """Keep each value for ``summary.json`` only.

        Args:
            **values: The values, by the names they take at the summary's top level.

        Raises:
            ValueError: when a name was cited or recorded before, or is ``"findings"``.
        """
        for name, value in values.items():
            self._check_new(name)
            self.recorded[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.cited[name] if name in self.cited else self.recorded[name]

    def write(self) -> Path:
        """Write ``{**recorded, "findings": cited}`` as ``summary.json`` (:func:`write_summary`).

        Returns:
            The path of ``summary.json``.
        """
        return write_summary(self.output_dir, {**self.recorded, "findings": self.cited})
