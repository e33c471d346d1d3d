"""Progress bars for long loops: :func:`progress_bar` is ``tqdm.auto``'s bar, or none at all in book builds.

In Jupyter with ``ipywidgets`` (Colab) the bar is a widget; without it, text. tqdm's warning that
``ipywidgets`` is missing is silenced: it names the machine's path to tqdm and changes nothing.
``$LHLIB_PROGRESS=0`` hides every bar (:mod:`lhlib.build.book` sets it, since a static page has no use
for one).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable

from tqdm import TqdmWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled"]


def progress_enabled() -> bool:
    """Whether progress bars are shown: false when ``$LHLIB_PROGRESS`` is ``0``.

    Returns:
        ``False`` when ``$LHLIB_PROGRESS`` is ``"0"``, else ``True``.
    """
    return os.environ.get("LHLIB_PROGRESS", "1") != "0"


def progress_bar(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled when :func:`progress_enabled` is false.

    Args:
        iterable: What to iterate over (``None``: a bar updated by hand).
        **kwargs: Passed to ``tqdm.auto.tqdm`` (``total``, ``desc``, ``leave``, ...); ``disable`` is
            forced to ``True`` when bars are off.

    Returns:
        The ``tqdm`` bar, itself an iterable over ``iterable``.
    """
    if not progress_enabled():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
