"""Serve MathJax 3 from the built book instead of a CDN, so the HTML reads offline.

The MathJax files come from the PyPI package ``sphinx-mathjax-offline``, whose own extension cannot
be imported (its folder name contains hyphens); this does what it intends: point ``mathjax_path`` at
``_static/mathjax/tex-chtml.js`` and copy the files there once the build succeeded.
"""

from importlib.metadata import distribution
from pathlib import Path

from sphinx.util.fileutil import copy_asset


def _mathjax_files() -> Path:
    return Path(distribution("sphinx-mathjax-offline").locate_file("sphinx-mathjax-offline/static/mathjax"))


def _use_local_mathjax(app, config):
    config.mathjax_path = "mathjax/tex-chtml.js"


def _copy_mathjax(app, exception):
    if exception is None:
        copy_asset(str(_mathjax_files()), str(Path(app.outdir) / "_static" / "mathjax"))


def setup(app):
    if not (_mathjax_files() / "tex-chtml.js").exists():
        raise RuntimeError("MathJax files not found: pip install sphinx-mathjax-offline")
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
