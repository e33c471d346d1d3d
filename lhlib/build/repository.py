"""Where the book lives: one setting, the ``repository`` section of ``_config.yml``, and what follows from it.

``url: https://github.com/OWNER/NAME`` and ``branch`` there decide

* Jupyter Book's launch and repository buttons (it reads ``_config.yml`` itself);
* every chapter's Colab install cell, which installs lhlib from ``OWNER/NAME`` at ``branch``, the ref
  the Colab button opens, so that notebook and package always match;
* ``[project.urls]`` in ``pyproject.toml`` and ``repository-code`` and ``url`` in ``CITATION.cff``;
* the branch that ``.github/workflows/book.yml`` builds and deploys.

:func:`disagreements` lists every place that does not follow the setting; :func:`set_repository`
rewrites the setting and everything that follows from it
(``python -m lhlib.build.book set-repository OWNER/NAME [--branch BRANCH]``). Files are read with YAML and
TOML parsers, edited line by line (comments and other keys stay as they are) and parsed again to
confirm the edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INSTALL_CELL_TAG",
    "Repository",
    "colab_install_source",
    "disagreements",
    "parse_slug",
    "read_repository",
    "set_repository",
    "sync_repository",
]


# GitHub's rules: an owner of letters, digits and single inner hyphens (at most 39); a name of letters,
# digits, ".", "_" and "-" (at most 100) other than "." and "..", and not ending in ".git".
_SLUG = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}/(?!\.\.?$)(?!.*\.git$)[A-Za-z0-9._-]{1,100}")


_BRANCH = re.compile(r"[A-Za-z0-9._/-]{1,200}")


def _is_branch_name(branch: object) -> bool:
    """Whether ``branch`` is a branch name git accepts (``git check-ref-format --branch``), in the letters
    this book allows: no empty, leading-dot or ``.lock`` component, no ``..``, not starting with ``-``,
    not ending with ``/`` or ``.``.
    """
    if not isinstance(branch, str) or not _BRANCH.fullmatch(branch) or branch.startswith("-"):
        return False
    parts = branch.split("/")
    return (
        ".." not in branch
        and not branch.endswith(".")
        and all(part and not part.startswith(".") and not part.endswith(".lock") for part in parts)
    )


# The tag that hides the install cell's output in the rendered page.
INSTALL_CELL_TAG = "remove-output"


# What marks a chapter's install cell (the house rules require it in the first code cell).
INSTALL_GUARD = 'if "google.colab" in sys.modules:'


WORKFLOW = Path(".github") / "workflows" / "book.yml"


URL_KEYS = ("Homepage", "Repository", "Issues")


@dataclass(frozen=True)
class Repository:
    """A GitHub repository and the branch the book is published from.

    Attributes:
        owner: The GitHub user or organisation, as GitHub spells it.
        name: The repository's name.
        branch: The branch the book is built, deployed and installed from.
    """

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

    def project_urls(self) -> dict[str, str]:
        """``[project.urls]`` of ``pyproject.toml``.

        Returns:
            ``Homepage`` (the GitHub Pages address), ``Repository`` (:attr:`Repository.url`) and ``Issues``, by key.
        """
        return dict(zip(URL_KEYS, (self.pages_url, self.url, f"{self.url}/issues")))


def parse_slug(slug: str, branch: str = "main") -> Repository:
    """``OWNER/NAME`` (as GitHub spells it) and a branch name as a :class:`Repository`.

    Args:
        slug: ``OWNER/NAME``: an owner of letters, digits and single inner ``-`` (at most 39 characters),
            a name of letters, digits, ``.``, ``_`` and ``-`` other than ``.`` and ``..``, not ending in
            ``.git``.
        branch: A git branch name: letters, digits, ``.``, ``_``, ``-`` and ``/``, as
            ``git check-ref-format --branch`` accepts it.

    Returns:
        The :class:`Repository`.

    Raises:
        ValueError: when ``slug`` or ``branch`` does not have that form.
    """
    if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
        raise ValueError(f"repository must be OWNER/NAME (letters, digits, '-', '.', '_'), got {slug!r}")
    if not _is_branch_name(branch):
        raise ValueError(
            f"branch must be a git branch name (letters, digits, '.', '_', '-', '/'; no '..', no leading '-' "
            f"or '.', no empty part), got {branch!r}"
        )
    owner, name = slug.split("/")
    return Repository(owner, name, branch)


def _load_toml(text: str) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _load_yaml(text: str):
    import yaml

    return yaml.safe_load(text)


def read_repository(root: Path) -> Repository:
    """The repository and branch that ``_config.yml`` names (``branch`` defaults to ``main``).

    Args:
        root: The repository's root folder, holding ``_config.yml``.

    Returns:
        The :class:`Repository` of ``repository.url`` and ``repository.branch``.

    Raises:
        ValueError: when ``repository.url`` is not ``https://github.com/OWNER/NAME`` or names no valid
            repository or branch.
    """
    return _repository_of_config((root / "_config.yml").read_text())


def _repository_of_config(config: str) -> Repository:
    setting = (_load_yaml(config) or {}).get("repository") or {}
    url = str(setting.get("url", ""))
    if not url.startswith("https://github.com/"):
        raise ValueError(f"_config.yml: repository.url must be https://github.com/OWNER/NAME, got {url!r}")
    return parse_slug(url.removeprefix("https://github.com/").rstrip("/"), str(setting.get("branch", "main")))


def colab_install_source(repository: Repository) -> str:
    """The source of every chapter's install cell, its first code cell.

    On Colab only, it installs lhlib with ``%pip`` from ``repository`` at its branch, the ref the Colab
    button opens, so that notebook and package match.

    Args:
        repository: The repository the book points at.

    Returns:
        The cell's source text.
    """
    return (
        "# On Colab only: install lhlib's light core from the book's repository,\n"
        "# at the branch the Colab button opened, so that notebook and package\n"
        "# match. Colab's own torch and Jupyter are kept.\n"
        "import sys\n"
        "\n"
        f"{INSTALL_GUARD}\n"
        f'    %pip install -q "{repository.requirement}"'
    )


def _notebooks(root: Path) -> list[Path]:
    return sorted((root / "notebooks").glob("*.ipynb"))


def _citation_values(repository: Repository) -> dict[str, str]:
    return {"repository-code": repository.url, "url": repository.pages_url}


def _workflow_branches(workflow: dict) -> tuple[list, list[str]]:
    """The push branches of the workflow and the branches its ``refs/heads/...`` conditions name."""
    triggers = workflow.get(True, workflow.get("on")) or {}  # YAML 1.1 reads the key `on` as True
    pushed = ((triggers.get("push") or {}).get("branches")) or []
    return pushed, re.findall(r"refs/heads/([A-Za-z0-9._/-]+)", repr(workflow))


def disagreements(root: Path) -> list[str]:
    """Every place that does not follow ``_config.yml``'s repository setting, one line each.

    Checked: each notebook's first code cell (the install cell, tagged ``INSTALL_CELL_TAG``),
    ``[project.urls]`` of ``pyproject.toml``, ``repository-code`` and ``url`` of ``CITATION.cff``, and the
    branch that ``.github/workflows/book.yml`` (when there) builds and deploys.

    Args:
        root: The repository's root folder.

    Returns:
        One line per disagreement, naming the file; empty when all agree.

    Raises:
        ValueError: when ``_config.yml``'s repository setting itself is invalid (:func:`read_repository`).
    """
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
    urls = _load_toml((root / "pyproject.toml").read_text()).get("project", {}).get("urls", {})
    for key, value in repository.project_urls().items():
        if urls.get(key) != value:
            problems.append(f"pyproject.toml: [project.urls] {key} is {urls.get(key)!r}, not {value!r}")
    for key, value in urls.items():
        if key not in URL_KEYS and ("github.com/" in value or "github.io/" in value) and repository.url not in value:
            problems.append(f"pyproject.toml: [project.urls] {key} points at another repository ({value})")
    citation = _load_yaml((root / "CITATION.cff").read_text()) or {}
    for key, value in _citation_values(repository).items():
        if citation.get(key) != value:
            problems.append(f"CITATION.cff: {key} is {citation.get(key)!r}, not {value!r}")
    if (root / WORKFLOW).is_file():
        pushed, conditions = _workflow_branches(_load_yaml((root / WORKFLOW).read_text()) or {})
        if pushed != [repository.branch] or any(branch != repository.branch for branch in conditions):
            problems.append(f"{WORKFLOW}: does not build and deploy the branch {repository.branch!r}")
    return problems


def _install_cell_index(cells: list) -> int | None:
    for index, cell in enumerate(cells):
        if cell.cell_type == "code" and INSTALL_GUARD in cell.source:
            return index
    return None


def _sync_notebook(path: Path, repository: Repository) -> bool:
    """Make the notebook's first code cell the install cell; never overwrite a cell of the chapter's own."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    index = _install_cell_index(notebook.cells)
    source = colab_install_source(repository)
    if index is None:
        first_code = next((i for i, c in enumerate(notebook.cells) if c.cell_type == "code"), len(notebook.cells))
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = [INSTALL_CELL_TAG]
        notebook.cells.insert(first_code, cell)
    else:
        cell = notebook.cells[index]
        tags = cell.metadata.get("tags", [])
        first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
        if cell.source == source and INSTALL_CELL_TAG in tags and index == first_code:
            return False
        cell.source = source
        cell.metadata["tags"] = [*(t for t in tags if t != INSTALL_CELL_TAG), INSTALL_CELL_TAG]
        if index != first_code:
            notebook.cells.insert(first_code, notebook.cells.pop(index))
    nbformat.write(notebook, path)
    return True


def _section_lines(lines: list[str], is_header, is_end) -> tuple[int, int]:
    """``[start, end)`` of the lines after the header line that ``is_header`` picks, up to ``is_end``."""
    start = next((i for i, line in enumerate(lines) if is_header(line)), None)
    if start is None:
        raise ValueError("section not found")
    end = next((i for i in range(start + 1, len(lines)) if is_end(lines[i])), len(lines))
    return start + 1, end


def _set_keys(
    lines: list[str], start: int, end: int, values: dict[str, str], *, pattern: str, value: str, new_key: str
) -> list[str]:
    """Set ``key`` lines between ``start`` and ``end``.

    ``pattern`` matches a key's line with group 1 the text before its value, ``value`` formats the
    value; a key not there is inserted after the section's last key line, its text before the value
    formatted by ``new_key`` (``{indent}`` is the indentation of the section's keys).
    """
    lines = list(lines)
    for key, text in values.items():
        regex = re.compile(pattern.format(key=re.escape(key)))
        hits = [i for i in range(start, end) if regex.match(lines[i])]
        if hits:
            lines[hits[0]] = regex.match(lines[hits[0]]).group(1) + value.format(text)
            continue
        keyed = [i for i in range(start, end) if lines[i].strip() and not lines[i].lstrip().startswith("#")]
        indent = re.match(r"\s*", lines[keyed[0]]).group(0) if keyed else "  "
        lines.insert(keyed[-1] + 1 if keyed else start, new_key.format(indent=indent, key=key) + value.format(text))
        end += 1
    return lines


def _rewrite_config(text: str, repository: Repository) -> str:
    lines = text.splitlines(keepends=False)
    start, end = _section_lines(
        lines, lambda line: re.match(r"repository:\s*(#.*)?$", line), lambda line: re.match(r"[^\s#]", line)
    )
    values = {"url": repository.url, "branch": repository.branch}
    lines = _set_keys(lines, start, end, values, pattern=r"(\s+{key}:\s*)\S*", value="{}", new_key="{indent}{key}: ")
    return "\n".join(lines) + "\n"


def _rewrite_pyproject(text: str, repository: Repository) -> str:
    lines = text.splitlines(keepends=False)
    try:
        start, end = _section_lines(
            lines, lambda line: line.strip() == "[project.urls]", lambda line: line.startswith("[")
        )
    except ValueError:
        lines += ["", "[project.urls]"]
        start = end = len(lines)
    lines = _set_keys(
        lines, start, end, repository.project_urls(), pattern=r'({key}\s*=\s*)".*"', value='"{}"', new_key="{key} = "
    )
    return "\n".join(lines) + "\n"


def _rewrite_citation(text: str, repository: Repository) -> str:
    lines = text.splitlines(keepends=False)
    for key, value in _citation_values(repository).items():
        hits = [i for i, line in enumerate(lines) if re.match(rf"{re.escape(key)}:", line)]
        if hits:
            lines[hits[0]] = f'{key}: "{value}"'
        else:
            lines.append(f'{key}: "{value}"')
    return "\n".join(lines) + "\n"


def _rewrite_workflow(text: str, repository: Repository) -> str:
    text = re.sub(r"^(\s+branches:\s*)\[[^\]]*\]", rf"\g<1>[{repository.branch}]", text, count=1, flags=re.M)
    return re.sub(r"refs/heads/[A-Za-z0-9._/-]+", f"refs/heads/{repository.branch}", text)


def sync_repository(root: Path) -> list[Path]:
    """Rewrite every place that follows ``_config.yml``'s repository setting.

    The notebooks' install cells, ``pyproject.toml``, ``CITATION.cff`` and the workflow are edited line
    by line (a notebook's own cells are never overwritten), then :func:`disagreements` is asked again.

    Args:
        root: The repository's root folder.

    Returns:
        The files changed.

    Raises:
        ValueError: when a rewritten file still does not agree (nothing more is written then).
    """
    repository = read_repository(root)
    changed = [path for path in _notebooks(root) if _sync_notebook(path, repository)]
    rewrites = [
        (root / "pyproject.toml", _rewrite_pyproject),
        (root / "CITATION.cff", _rewrite_citation),
        (root / WORKFLOW, _rewrite_workflow),
    ]
    for path, rewrite in rewrites:
        if not path.is_file():
            continue
        text = path.read_text()
        updated = rewrite(text, repository)
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    remaining = disagreements(root)
    if remaining:
        raise ValueError(f"after rewriting, still disagrees: {remaining[0]}")
    return changed


def set_repository(root: Path, slug: str, branch: str | None = None) -> list[Path]:
    """Point the book at ``OWNER/NAME`` (and ``branch``, when given): ``_config.yml`` and all that follows it.

    ``_config.yml``'s ``repository`` section is rewritten, parsed again to confirm it, and then
    :func:`sync_repository` brings the rest into line.

    Args:
        root: The repository's root folder.
        slug: ``OWNER/NAME`` of the GitHub repository (:func:`parse_slug`).
        branch: The branch to publish from (``None``: keep the current one).

    Returns:
        The files changed, ``_config.yml`` first when it changed.

    Raises:
        ValueError: when ``slug`` or ``branch`` is invalid, ``_config.yml`` could not be rewritten, or
            the other files still disagree afterwards.
    """
    current = read_repository(root)
    repository = parse_slug(slug, current.branch if branch is None else branch)
    path = root / "_config.yml"
    text = path.read_text()
    updated = _rewrite_config(text, repository)
    if _repository_of_config(updated) != repository:
        raise ValueError("_config.yml: could not rewrite the repository section (edit it by hand)")
    changed = []
    if updated != text:
        path.write_text(updated)
        changed.append(path)
    return changed + sync_repository(root)
