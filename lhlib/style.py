"""One figure style for the whole book, and the helpers that save figures and summaries.

Every chapter calls :func:`use_style` once, then :func:`save_figure` for each figure (PNG for
the book, PDF for papers) and :func:`write_summary` for its ``summary.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt

from lhlib.cache import atomic_write_bytes

__all__ = ["markdown_table", "output_path", "save_figure", "sweep_colors", "use_style", "write_summary"]

STYLE_FILE = Path(__file__).with_name("style.mplstyle")


def use_style() -> None:
    """Apply the book's matplotlib style (``lhlib/style.mplstyle``)."""
    plt.style.use(STYLE_FILE)


def sweep_colors(count: int, cmap: str = "viridis") -> list:
    """``count`` colours ordered along ``cmap``, so a sweep reads from dark (small) to light (large)."""
    colormap = plt.get_cmap(cmap)
    return [colormap(0.9 * i / max(count - 1, 1)) for i in range(count)]


def output_path(output_dir: str | Path) -> Path:
    """``output_dir`` as a Path, created if needed."""
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: mpl.figure.Figure, output_dir: str | Path, name: str) -> Path:
    """Save ``fig`` as ``<output_dir>/<name>.png`` and ``.pdf``; returns the PNG path."""
    folder = output_path(output_dir)
    fig.savefig(folder / f"{name}.pdf")
    fig.savefig(folder / f"{name}.png")
    return folder / f"{name}.png"


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_summary(output_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``summary`` as ``<output_dir>/summary.json`` atomically (numpy/torch scalars converted)."""
    path = output_path(output_dir) / "summary.json"
    text = json.dumps(_json_safe(summary), indent=2, sort_keys=True)
    atomic_write_bytes(path, lambda file: file.write(text.encode()))
    return path


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (``display(Markdown(...))`` renders it) with ``header`` and one line per row."""
    if any(len(row) != len(header) for row in rows):
        raise ValueError(f"every row must have {len(header)} cells, the header's length")

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows])
