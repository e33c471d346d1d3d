"""What a chapter reports besides its figures: ``summary.json`` and its tables.

Every chapter ends with :func:`write_summary`; tables it shows go through :func:`markdown_table`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lhlib.cache import atomic_write_bytes

__all__ = ["markdown_table", "output_path", "write_summary"]


def output_path(output_dir: str | Path) -> Path:
    """``output_dir`` as a Path, created if needed."""
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
