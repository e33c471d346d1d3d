"""Glue a chapter's numbers and figures into its prose: :func:`glue` is ``myst_nb.glue`` when it is there.

The book's pages cite computed values with ``{glue:text}`` roles, which ``myst-nb`` fills in when it
renders an executed notebook. A reader who runs a chapter on Colab has no ``myst-nb`` (installing it
there would upgrade IPython and Jupyter under the running kernel), so there :func:`glue` shows each
value once, as ``name = value`` text under the cell that computed it, and each figure as a figure.
"""

from __future__ import annotations

from typing import Any

__all__ = ["glue", "myst_nb_available"]


def myst_nb_available() -> bool:
    """Whether ``myst_nb`` can be imported (it is on the machine that builds the book).

    Returns:
        ``True`` when the import succeeds.
    """
    try:
        import myst_nb  # noqa: F401
    except ImportError:
        return False
    return True


def glue(name: str, value: Any, display: bool = True) -> None:
    """``myst_nb.glue(name, value, display)``; without ``myst-nb``, a plain display of ``value``.

    The fallback displays figures as they are and everything else as one line ``name = value``,
    whatever ``display`` says: there is no page to carry the value otherwise.

    Args:
        name: The name the prose cites, as ``{glue:text}`name```.
        value: The value: a number, a string, a matplotlib figure or anything ``myst_nb`` glues.
        display: Whether ``myst_nb`` also shows the value under the cell (ignored by the fallback).
    """
    if myst_nb_available():
        from myst_nb import glue as myst_glue

        myst_glue(name, value, display=display)
        return
    from IPython.display import display as show
    from matplotlib.figure import Figure

    if isinstance(value, Figure):
        show(value)
    else:
        print(f"{name} = {value}")
