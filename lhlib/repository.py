"""Where the book lives: one setting, the ``repository`` section of ``_config.yml``, and what follows from it.

``url: https://github.com/OWNER/NAME`` and ``branch`` there decide

* Jupyter Book's launch and repository buttons (it reads ``_config.yml`` itself);
* every chapter's Colab install cell, which installs lhlib from ``OWNER/NAME`` at ``branch``, the ref
  the Colab button opens, so that notebook and package always match;
* ``[project.urls]`` in ``pyproject.toml`` and ``repository-code`` and ``url`` in ``CITATION.cff``.

:func:`disagreements` lists every place that does not follow the setting; :func:`set_repository`
rewrites the setting and everything that follows from it
(``python -m lhlib.book set-repository OWNER/NAME [--branch BRANCH]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Repository",
    "colab_install_source",
    "disagreements",
    "parse_slug",
    "read_repository",
    "set_repository",
    "sync_repository",
]

_SLUG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")
# The tag that hides the install cell's output in the rendered page.
INSTALL_CELL_TAG = "remove-output"


@dataclass(frozen=True)
class Repository:
    """A GitHub repository and the branch the book is published from."""

    owner: str
    name: str
    branch: str

    @property
    def url(self) -> str:
        """``https://github.com/OWNER/NAME``."""
        return f"https://github.com/{self.owner}/{self.name}"

    @property
    def pages_url(self) -> str:
        """The GitHub Pages address of the built book."""
        return f"https://{self.owner.lower()}.github.io/{self.name}/"

    @property
    def requirement(self) -> str:
        """The pip requirement that installs lhlib from this repository at ``branch``."""
        return f"lhlib @ git+{self.url}@{self.branch}"


def parse_slug(slug: str, branch: str = "main") -> Repository:
    """``OWNER/NAME`` (as GitHub spells it) and a branch name as a :class:`Repository`."""
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise ValueError(f"repository must be OWNER/NAME (letters, digits, '-', '.', '_'), got {slug!r}")
    if not isinstance(branch, str) or not _BRANCH.fullmatch(branch) or ".." in branch or branch.startswith("/"):
        raise ValueError(f"branch must be a git branch name (letters, digits, '.', '_', '-', '/'), got {branch!r}")
    owner, name = slug.split("/")
    return Repository(owner, name, branch)


def _repository_block(config: str) -> tuple[int, int]:
    """Start and end offsets of the indented block under the top-level ``repository:`` key."""
    match = re.search(r"^repository:[ \t]*\n((?:[ \t]+.*\n?)*)", config, re.M)
    if match is None:
        raise ValueError("_config.yml has no top-level 'repository:' section")
    return match.start(1), match.end(1)


def read_repository(root: Path) -> Repository:
    """The repository and branch that ``_config.yml`` names."""
    config = (root / "_config.yml").read_text()
    start, end = _repository_block(config)
    block = config[start:end]
    url = re.search(r"^[ \t]+url:[ \t]*(\S+)", block, re.M)
    branch = re.search(r"^[ \t]+branch:[ \t]*(\S+)", block, re.M)
    if url is None or not url.group(1).startswith("https://github.com/"):
        raise ValueError("_config.yml: repository.url must be https://github.com/OWNER/NAME")
    return parse_slug(url.group(1).removeprefix("https://github.com/"), branch.group(1) if branch else "main")


def colab_install_source(repository: Repository) -> str:
    """The source of every chapter's first code cell."""
    return (
        "# On Colab only: install lhlib's light core from the book's repository, at the branch the Colab\n"
        "# button opened, so that notebook and package match. Colab's own torch and Jupyter are kept.\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        f'    %pip install -q "{repository.requirement}"'
    )


def _project_urls(repository: Repository) -> str:
    return (
        "[project.urls]\n"
        f'Homepage = "{repository.pages_url}"\n'
        f'Repository = "{repository.url}"\n'
        f'Issues = "{repository.url}/issues"\n'
    )


def _citation_lines(repository: Repository) -> dict[str, str]:
    return {"repository-code": f'"{repository.url}"', "url": f'"{repository.pages_url}"'}


def _notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("*.ipynb"))


def disagreements(root: Path) -> list[str]:
    """Every place that does not follow ``_config.yml``'s repository setting, one line each (empty: all agree)."""
    import nbformat

    repository = read_repository(root)
    problems = []
    expected_cell = colab_install_source(repository)
    for path in _notebooks(root):
        code = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
        if not code or code[0].source != expected_cell:
            problems.append(f"{path.name}: the first code cell is not the install cell for {repository.requirement}")
        elif INSTALL_CELL_TAG not in code[0].metadata.get("tags", []):
            problems.append(f"{path.name}: the install cell is not tagged {INSTALL_CELL_TAG!r}")
    if _project_urls(repository) not in (root / "pyproject.toml").read_text():
        problems.append(f"pyproject.toml: [project.urls] does not point at {repository.url}")
    citation = (root / "CITATION.cff").read_text()
    for key, value in _citation_lines(repository).items():
        if not re.search(rf"^{re.escape(key)}: {re.escape(value)}$", citation, re.M):
            problems.append(f"CITATION.cff: {key} is not {value}")
    return problems


def sync_repository(root: Path) -> list[Path]:
    """Rewrite every place that follows ``_config.yml``'s repository setting; returns the files changed."""
    import nbformat

    repository = read_repository(root)
    changed = []
    for path in _notebooks(root):
        notebook = nbformat.read(path, as_version=4)
        first = next(cell for cell in notebook.cells if cell.cell_type == "code")
        tags = first.metadata.get("tags", [])
        if first.source != colab_install_source(repository) or INSTALL_CELL_TAG not in tags:
            first.source = colab_install_source(repository)
            first.metadata["tags"] = [*(t for t in tags if t != INSTALL_CELL_TAG), INSTALL_CELL_TAG]
            nbformat.write(notebook, path)
            changed.append(path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    updated = re.sub(r"^\[project\.urls\]\n(?:[^\[\n].*\n)*", _project_urls(repository), text, count=1, flags=re.M)
    if updated != text:
        pyproject.write_text(updated)
        changed.append(pyproject)
    citation = root / "CITATION.cff"
    text = updated = citation.read_text()
    for key, value in _citation_lines(repository).items():
        updated = re.sub(rf"^{re.escape(key)}: .*$", f"{key}: {value}", updated, count=1, flags=re.M)
    if updated != text:
        citation.write_text(updated)
        changed.append(citation)
    return changed


def set_repository(root: Path, slug: str, branch: str | None = None) -> list[Path]:
    """Point the book at ``OWNER/NAME`` (and ``branch``, when given): ``_config.yml`` and all that follows it.

    Returns the files changed.
    """
    current = read_repository(root)
    repository = parse_slug(slug, current.branch if branch is None else branch)
    path = root / "_config.yml"
    config = path.read_text()
    start, end = _repository_block(config)
    block = re.sub(r"^([ \t]+url:[ \t]*)\S+", rf"\g<1>{repository.url}", config[start:end], count=1, flags=re.M)
    block = re.sub(r"^([ \t]+branch:[ \t]*)\S+", rf"\g<1>{repository.branch}", block, count=1, flags=re.M)
    changed = []
    if block != config[start:end]:
        path.write_text(config[:start] + block + config[end:])
        changed.append(path)
    return changed + sync_repository(root)
