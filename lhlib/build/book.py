"""Execute the book's chapters with papermill under a named profile, build the HTML, and keep the book's settings.

Command line::

    python -m lhlib.build.book run [CHAPTER ...] --profile smoke|cpu|paper [--cell-timeout SECONDS]
    python -m lhlib.build.book build [CHAPTER ...] --profile smoke|cpu|paper [--cell-timeout SECONDS]
    python -m lhlib.build.book set-repository OWNER/NAME [--branch BRANCH]
    python -m lhlib.build.book check-repository
    python -m lhlib.build.book check-notebooks [NOTEBOOK ...]
    python -m lhlib.build.book write-parameters
    python -m lhlib.build.book check-html --profile smoke|cpu|paper

``run`` executes each chapter (all when none is named) into ``_build/executed/<profile>/`` with
``output_dir`` set to ``results/<profile>/<chapter>`` (relative to the repository, which is the
chapters' working directory, so no page shows the build machine's paths) and the profile's
parameters from the chapter's declaration (``lhlib/build/declarations/ch<chapter>.py``); the source
notebooks are never written to. A cell that runs longer than the profile's :data:`CELL_TIMEOUT_S` fails
its chapter, and the error names the cell.
A chapter whose inputs have not changed since its last successful run is reused (``--force``
re-executes it). ``build`` runs them, stages the executed copies beside the book's pages in
``_build/stage/<profile>/`` (each page saying what it ran where that is not the paper's settings, and
showing its parameters once: :mod:`lhlib.build.pages`) and builds the HTML there with Jupyter Book,
warnings treated as errors, into ``_build/book/<profile>/``; it fails when a page breaks its math or leaves markup raw
(:mod:`lhlib.build.html_check`, which ``check-html`` runs on its own).

``set-repository`` points the book at another GitHub repository (:mod:`lhlib.build.repository`);
``check-repository`` lists what disagrees with ``_config.yml``; ``check-notebooks`` checks that
notebooks are valid nbformat, committed with their outputs stripped and with the parameters cell their
declaration writes (the pre-commit hook); ``write-parameters`` rewrites every chapter's parameters cell
from its declaration (:mod:`lhlib.build.declarations`).

Profiles: ``smoke`` (seconds per chapter, for tests), ``cpu`` (the paper's settings on the datasets
this machine can load offline), ``paper`` (the notebooks' own defaults: everything, for a GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lhlib.build import intro_findings, pages
from lhlib.build.declarations import PROFILE_NAMES, declaration, is_declared, profile_overrides
from lhlib.engine.declarations import parameters_cell
from lhlib.engine.validation import check_choice, check_float

__all__ = [
    "CELL_TIMEOUT_S",
    "ChapterPlan",
    "PROFILES",
    "build_book",
    "cell_timeout",
    "chapter_inputs",
    "chapters",
    "notebook_problems",
    "plan_chapters",
    "profile_parameters",
    "repository_root",
    "run_chapters",
    "write_parameter_cells",
]


PROFILES = PROFILE_NAMES


CELL_TIMEOUT_S = {"smoke": 300, "cpu": 3600, "paper": 7200}
"""Seconds one cell may run under each profile before its chapter fails."""


KERNEL_WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}
"""How the chapters' OpenMP threads wait, unless this process's environment says otherwise. They sleep
(passive), after spinning 10 000 rounds (libgomp's ``GOMP_SPINCOUNT``, which overrides the passive policy's
zero)."""


def repository_root() -> Path:
    """The folder holding ``_config.yml`` and ``notebooks/`` (the repository this lhlib lives in).

    Returns:
        The parent of the ``lhlib`` package's folder.
    """
    return Path(__file__).resolve().parents[2]


def chapters(root: Path | None = None) -> list[str]:
    """Names of the chapters, in reading order (the notebooks' file stems).

    Args:
        root: The repository's root (``None``: :func:`repository_root`).

    Returns:
        The stems of ``notebooks/*.ipynb``, sorted.
    """
    root = root or repository_root()
    return sorted(path.stem for path in (root / "notebooks").glob("*.ipynb"))


def profile_parameters(profile: str, chapter: str) -> dict:
    """The parameters a profile sets for a chapter (the declared defaults fill in the rest).

    Args:
        profile: One of ``PROFILES``.
        chapter: The chapter's name.

    Returns:
        A new dict of the parameters from the chapter's declaration's ``PROFILES``; empty for a chapter the
        profile leaves at its defaults, and for a notebook without a declaration (a test's).

    Raises:
        ValueError: when ``profile`` is unknown, or the profile's values break the chapter's declaration.
    """
    check_choice("profile", profile, PROFILES)
    return profile_overrides(chapter, profile) if is_declared(chapter) else {}


def cell_timeout(profile: str) -> float:
    """Seconds one cell may run under ``profile`` before its chapter fails (:data:`CELL_TIMEOUT_S`).

    Args:
        profile: One of ``PROFILES``.

    Returns:
        The profile's timeout as a float.

    Raises:
        ValueError: when ``profile`` is unknown.
    """
    check_choice("profile", profile, PROFILES)
    return float(CELL_TIMEOUT_S[profile])


def _check_chapters(names: list[str], root: Path) -> list[str]:
    available = chapters(root)
    for name in names:
        check_choice("chapter", name, available)
    return names or available


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _package_files(chapter: str | None = None) -> list[Path]:
    """The sources and data files of lhlib a chapter depends on.

    The engine, the build and the package's own files, and of the chapter modules and the chapters'
    declarations only the chapter's own ``chapters/ch<chapter>.py`` and ``declarations/ch<chapter>.py``
    (``chapter=None``: all of them). Another chapter's module cannot change this one (``test_layering``
    forbids the import), and its profile values are its own input.
    """
    package = Path(__file__).resolve().parents[1]
    suffixes = {".py", ".json", ".mplstyle"}
    files = [p for p in package.rglob("*") if p.is_file() and p.suffix in suffixes]
    if chapter is not None:
        files = [p for p in files if not _is_per_chapter(p) or p.name == f"ch{chapter}.py"]
    return sorted(files)


def _is_per_chapter(path: Path) -> bool:
    return path.parent.name in ("chapters", "declarations") and path.name.startswith("ch") and path.suffix == ".py"


@functools.lru_cache(maxsize=1)
def _environment() -> bytes:
    """Python, every installed distribution and its version, and whether torch sees a GPU."""
    from importlib import metadata

    import torch

    installed = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    return "\n".join([sys.version, f"cuda {torch.cuda.is_available()}", *installed]).encode()


def _listing_digest(folder: Path) -> str:
    """SHA-256 of the relative path, size and modification time of every file under ``folder``."""
    if not folder.is_dir():
        return _sha256(b"")
    entries = sorted(
        f"{p.relative_to(folder)}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in folder.rglob("*") if p.is_file()
    )
    return _sha256("\n".join(entries).encode())


def chapter_inputs(root: Path, profile: str, name: str) -> dict[str, str]:
    """SHA-256 digests of everything that determines a chapter's executed copy.

    ``notebook``: the source notebook's bytes; ``parameters``: the profile's parameters for it (and
    ``output_dir``); ``lhlib``: the engine, the build and this chapter's own module (``_package_files``;
    editing another chapter's module does not rerun this one);
    ``requirements``: ``requirements.txt``, the Python version, every installed distribution's version
    and whether a GPU is visible (a chapter with ``device="auto"`` computes on it); ``data``: the
    listing (path, size, modification time) of the data folder, which changes whenever a dataset is
    fetched or decoded again.

    Args:
        root: The repository's root.
        profile: One of ``PROFILES``.
        name: The chapter's name.

    Returns:
        The hex digest of each of the five inputs, keyed by the names above.

    Raises:
        ValueError: when ``profile`` is unknown.
    """
    from lhlib.engine.store import cache_root

    parameters = {**profile_parameters(profile, name), "output_dir": f"results/{profile}/{name}"}
    package = b"".join(p.name.encode() + b"\0" + p.read_bytes() + b"\0" for p in _package_files(name))
    requirements = root / "requirements.txt"
    environment = (requirements.read_bytes() if requirements.is_file() else b"") + b"\n" + _environment()
    return {
        "notebook": _sha256((root / "notebooks" / f"{name}.ipynb").read_bytes()),
        "parameters": _sha256(json.dumps(parameters, sort_keys=True).encode()),
        "lhlib": _sha256(package),
        "requirements": _sha256(environment),
        "data": _listing_digest(cache_root() / "data"),
    }


_CHANGED = {
    "notebook": "the notebook changed",
    "parameters": "its parameters changed",
    "lhlib": "lhlib changed",
    "requirements": "the requirements changed",
    "data": "the data changed",
}


@dataclass(frozen=True)
class ChapterPlan:
    """Whether :func:`run_chapters` executes a chapter (``run``) or reuses its last run, and why.

    Attributes:
        name: The chapter's name.
        run: Whether the chapter is executed (``False``: its last successful run is reused).
        reason: Why, in words, e.g. ``"the notebook changed"`` or ``"unchanged since <time>"``.
        inputs: The chapter's :func:`chapter_inputs` now, recorded after a successful run.
    """

    name: str
    run: bool
    reason: str
    inputs: dict[str, str]


def _record_path(root: Path, profile: str, name: str) -> Path:
    return root / "_build" / "executed" / profile / f"{name}.inputs.json"


def plan_chapters(
    names: list[str], profile: str, root: Path | None = None, *, force: bool = False
) -> list[ChapterPlan]:
    """For each chapter: re-execute it, or reuse the executed copy and ``results/`` of its last successful run.

    A chapter is reused only when its last run succeeded, its executed copy and results folder
    are still there, and every one of its :func:`chapter_inputs` is unchanged.

    Args:
        names: The chapters to plan (empty: all of them).
        profile: One of ``PROFILES``.
        root: The repository's root (``None``: :func:`repository_root`).
        force: Re-execute every chapter, changed or not.

    Returns:
        One :class:`ChapterPlan` per chapter, in the order of ``names`` (reading order for all).

    Raises:
        ValueError: when ``profile`` or a chapter name is unknown.
    """
    root = root or repository_root()
    check_choice("profile", profile, PROFILES)
    plans = []
    for name in _check_chapters(names, root):
        inputs = chapter_inputs(root, profile, name)
        record_path = _record_path(root, profile, name)
        record = _read_record(record_path)
        executed = root / "_build" / "executed" / profile / f"{name}.ipynb"
        changed = [] if record is None else [_CHANGED[k] for k in _CHANGED if record["inputs"].get(k) != inputs[k]]
        if force:
            reason = "forced (--force)"
        elif record is None:
            reason = "no earlier successful run"
        elif changed:
            reason = ", ".join(changed)
        elif not executed.is_file():
            reason = "its executed copy is missing"
        elif not (root / "results" / profile / name).is_dir():
            reason = "its results folder is missing"
        else:
            plans.append(ChapterPlan(name, False, f"unchanged since {record['finished']}", inputs))
            continue
        plans.append(ChapterPlan(name, True, reason, inputs))
    return plans


def _store_entries() -> dict[str, set[str]]:
    """The results store's entries by kind (``trained_network``, ``features``, ...): what a chapter reused or added."""
    from lhlib.engine.store import cache_root

    store = cache_root() / "store"
    kinds = [folder for folder in store.iterdir() if folder.is_dir()] if store.is_dir() else []
    return {folder.name: {p.name for p in folder.glob("*.pt")} for folder in kinds}


def _store_added(before: dict[str, set[str]]) -> dict[str, int]:
    """How many entries of each kind the store gained since ``before`` (:func:`_store_entries`)."""
    return {kind: len(names - before.get(kind, set())) for kind, names in sorted(_store_entries().items())}


def _read_record(path: Path) -> dict | None:
    """The record of a chapter's last successful run, or None (also when it is unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict) or "finished" not in record:
        return None
    return record


@contextlib.contextmanager
def _kernel_environment(**variables: str) -> Iterator[None]:
    """Set environment variables for the kernels papermill starts (they inherit this process's)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _timed_out_cell(executed: Path) -> str:
    """``cell N ('first line')`` for the last cell papermill started, numbered as in the source notebook."""
    import nbformat

    cells = [
        c
        for c in nbformat.read(executed, as_version=4).cells
        if "injected-parameters" not in c.metadata.get("tags", [])
    ]
    started = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time")]
    if not started:
        return "an unknown cell"
    index = started[-1]
    first_line = next((line for line in cells[index].source.splitlines() if line.strip()), "")
    return f"cell {index + 1} ({first_line[:60]!r})"


def _record_relative_paths(executed: Path, root: Path) -> None:
    """Papermill records the notebooks' absolute paths in the metadata; keep them relative to ``root``."""
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if record.get(key):
            record[key] = os.path.relpath(record[key], root)
    nbformat.write(notebook, executed)


def _execute(root: Path, name: str, target: Path, parameters: dict, timeout: int) -> tuple[str | None, str]:
    """Execute one chapter into ``target`` with papermill; ``(failure, detail)``, ``failure`` ``None`` on success."""
    import papermill
    from nbclient.exceptions import CellTimeoutError

    try:
        # A static page has no use for progress bars (lhlib.engine.progress). OpenMP threads that spin while
        # they wait hold cores a busy machine's other processes need, so a chapter slows far more than
        # in proportion to the load; passive waiting lets them sleep. Sleeping at once makes thousands
        # of small LAPACK calls pay a wake-up each (batched eigenvalues of 100 x 100 matrices ran ten
        # times slower), so libgomp spins briefly first (benchmarks/bench_load.py measures all three).
        waiting = {name: os.environ.get(name, default) for name, default in KERNEL_WAITING.items()}
        with _kernel_environment(LHLIB_PROGRESS="0", **waiting):
            papermill.execute_notebook(
                str(root / "notebooks" / f"{name}.ipynb"),
                str(target),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(root),
                progress_bar=False,
                execution_timeout=timeout,
            )
    except papermill.PapermillExecutionError as error:
        return name, f"\n{error}"
    except CellTimeoutError:
        cell = _timed_out_cell(target)
        return f"{name} ({cell} timed out after {timeout} s)", f": {cell} ran past the {timeout} s cell timeout"
    except Exception as error:  # noqa: BLE001 -- a dead kernel or one that never started: report, go on
        return f"{name} ({type(error).__name__})", f": {type(error).__name__}: {error}"
    finally:
        if target.exists():
            _record_relative_paths(target, root)
    return None, ""


def run_chapters(
    names: list[str],
    profile: str,
    root: Path | None = None,
    *,
    timeout: float | None = None,
    force: bool = False,
) -> list[Path]:
    """Execute the chapters that :func:`plan_chapters` says need it.

    Each chapter runs with the repository as its working directory and ``output_dir`` relative to it.
    Per chapter, one line on stderr says whether it ran or was reused and why, and what the results store
    gained while it ran (nothing, when every network and measurement it needs was stored before);
    ``_build/executed/<profile>/report.json`` keeps the same with the seconds each took. A failure is
    raised only after the remaining chapters ran, so one broken chapter does not hide the state of
    the rest.

    Args:
        names: The chapters to run (empty: all of them).
        profile: One of ``PROFILES``.
        root: The repository's root (``None``: :func:`repository_root`).
        timeout: Seconds every cell may take, at least 1, rounded up to whole seconds (``None``: the
            profile's :func:`cell_timeout`).
        force: Re-execute every chapter, changed or not.

    Returns:
        The executed notebooks in ``_build/executed/<profile>/``, run now or reused.

    Raises:
        ValueError: when ``profile``, a chapter name or ``timeout`` is invalid.
        RuntimeError: when a chapter failed or timed out; the message names every one that did.
    """
    root = root or repository_root()
    check_choice("profile", profile, PROFILES)
    # nbclient takes whole seconds.
    timeout = math.ceil(cell_timeout(profile) if timeout is None else check_float("timeout", timeout, minimum=1.0))
    plans = plan_chapters(names, profile, root, force=force)
    executed_dir = root / "_build" / "executed" / profile
    executed_dir.mkdir(parents=True, exist_ok=True)
    executed, failures, report = [], [], []
    for plan in plans:
        name = plan.name
        target = executed_dir / f"{name}.ipynb"
        if not plan.run:
            print(f"[lhlib.build.book] {name} ({profile}): reused, {plan.reason}", file=sys.stderr, flush=True)
            report.append({"chapter": name, "ran": False, "reason": plan.reason, "seconds": 0.0})
            executed.append(target)
            continue
        parameters = profile_parameters(profile, name)
        parameters["output_dir"] = f"results/{profile}/{name}"
        record = _record_path(root, profile, name)
        record.unlink(missing_ok=True)  # a run that fails or is killed leaves no record, so it runs again
        print(f"[lhlib.build.book] {name} ({profile}): running, {plan.reason} ...", file=sys.stderr, flush=True)
        start, store_before = time.perf_counter(), _store_entries()
        failure, detail = _execute(root, name, target, parameters, timeout)
        seconds, added = time.perf_counter() - start, _store_added(store_before)
        if failure is not None:
            print(f"[lhlib.build.book] {name} FAILED{detail}", file=sys.stderr, flush=True)
            failures.append(failure)
            report.append({"chapter": name, "ran": True, "reason": "failed", "seconds": round(seconds, 1)})
            continue
        finished = datetime.now(UTC).isoformat(timespec="seconds")
        record.write_text(json.dumps({"inputs": plan.inputs, "finished": finished, "seconds": round(seconds, 1)}))
        gained = ", ".join(f"{count} {kind}" for kind, count in added.items() if count) or "nothing: every entry reused"
        print(
            f"[lhlib.build.book] {name} done in {seconds:.0f} s; the store gained {gained}", file=sys.stderr, flush=True
        )
        report.append(
            {"chapter": name, "ran": True, "reason": plan.reason, "seconds": round(seconds, 1), "store_added": added}
        )
        executed.append(target)
    (executed_dir / "report.json").write_text(json.dumps(report, indent=1))
    if failures:
        raise RuntimeError(f"chapters failed under profile {profile!r}: {', '.join(failures)} (details above)")
    return executed


def build_book(
    names: list[str], profile: str, root: Path | None = None, *, timeout: float | None = None, force: bool = False
) -> Path:
    """Run the chapters, stage them with the book's pages and build the HTML.

    Chapters not named keep the executed copy of an earlier run; a warning says when that copy is
    outdated. Jupyter Book builds with warnings as errors; a failed build raises
    ``subprocess.CalledProcessError``.

    Args:
        names: The chapters to run first (empty: all of them).
        profile: One of ``PROFILES``.
        root: The repository's root (``None``: :func:`repository_root`).
        timeout: Seconds every cell may take (``None``: the profile's :func:`cell_timeout`).
        force: Re-execute the chapters to run, changed or not.

    Returns:
        The path of the built book's ``index.html``.

    Raises:
        ValueError: when ``profile``, a chapter name or ``timeout`` is invalid.
        RuntimeError: when a chapter fails or has no executed copy.
    """
    root = root or repository_root()
    run_chapters(names, profile, root, timeout=timeout, force=force)
    stage = root / "_build" / "stage" / profile
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "notebooks").mkdir(parents=True)
    for item in ("_config.yml", "_toc.yml", "book", "README.md"):  # the API page includes the README's table
        source = root / item
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, stage / item)
    # The table of contents lists every chapter; chapters not run now come from an earlier run.
    others = [n for n in chapters(root) if n not in names] if names else []
    for plan in plan_chapters(others, profile, root) if others else []:
        if plan.run:
            print(
                f"[lhlib.build.book] warning: {plan.name}'s page is from an outdated run ({plan.reason});"
                " build without chapter names to refresh it",
                file=sys.stderr,
            )
    # Each page says what it ran where that is not the paper's settings, and the intro sums it up.
    differences = {}
    for name in chapters(root):
        executed = root / "_build" / "executed" / profile / f"{name}.ipynb"
        if not executed.exists():
            raise RuntimeError(f"chapter {name} has no executed copy for profile {profile!r}: run it first")
        target = stage / "notebooks" / f"{name}.ipynb"
        differences[name] = pages.stage_chapter(executed, target, profile, profile_parameters("paper", name))
    pages.stage_api(stage / "book" / "api.md", root)
    intro = stage / "book" / "intro.md"
    intro_findings.stage_intro(intro, root, profile, chapters(root))
    banner = pages.intro_banner(profile, differences)
    if banner:
        title, rest = intro.read_text().split("\n", 1)
        intro.write_text(f"{title}\n\n{banner}\n{rest}")
    output = root / "_build" / "book" / profile
    subprocess.run(
        [
            str(Path(sys.executable).with_name("jupyter-book")),
            "build",
            str(stage),
            "--path-output",
            str(output),
            "-W",
            "-n",
            "--keep-going",
        ],
        check=True,
    )
    index = output / "_build" / "html" / "index.html"
    _report_rendering(index.parent)
    print(index)
    return index


def _report_rendering(html_dir: Path) -> None:
    """Fail a build whose pages break their math or leave markup raw (:mod:`lhlib.build.html_check`)."""
    from lhlib.build import html_check

    if html_check.browser() is None:
        print("[lhlib.build.book] no headless browser: pages checked before MathJax only", file=sys.stderr)
    problems = html_check.check_book(html_dir)
    for page, lines in problems.items():
        for line in lines:
            print(f"[lhlib.build.book] {page}: {line}", file=sys.stderr)
    if problems:
        raise RuntimeError(f"{sum(map(len, problems.values()))} rendering problems on {len(problems)} pages (above)")


def _declared_cell(path: Path) -> str:
    """The ``parameters`` cell the chapter ``path``'s declaration writes."""
    return parameters_cell(declaration(path.stem).PARAMETERS)


def write_parameter_cells(paths: list[Path]) -> list[Path]:
    """Rewrite each chapter's ``parameters`` cell from its declaration (:mod:`lhlib.build.declarations`).

    Args:
        paths: The chapters' notebooks.

    Returns:
        The notebooks whose cell changed.
    """
    import nbformat

    changed = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        if cell.source != _declared_cell(path):
            cell.source = _declared_cell(path)
            nbformat.write(notebook, path)
            changed.append(path)
    return changed


def notebook_problems(paths: list[Path]) -> list[str]:
    """One line per problem of the notebooks: a break of nbformat's schema, outputs left in, or a
    ``parameters`` cell other than the chapter's declaration writes.

    Args:
        paths: The notebooks to check.

    Returns:
        A line for each notebook that is not valid nbformat, for each with outputs or execution counts in
        its code cells, and for each whose ``parameters`` cell is not its declaration's; empty when all
        are right.
    """
    import nbformat

    problems = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        try:
            nbformat.validate(notebook)
        except nbformat.ValidationError as error:
            problems.append(
                f"{path}: not valid nbformat {notebook.nbformat}.{notebook.nbformat_minor}: {error.message}"
            )
        cells = notebook.cells
        dirty = [i + 1 for i, c in enumerate(cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        if dirty:
            problems.append(f"{path}: outputs not stripped in cells {', '.join(map(str, dirty))}")
        tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        if is_declared(path.stem) and [c.source for c in tagged] != [_declared_cell(path)]:
            problems.append(
                f"{path}: needs exactly one parameters cell, as its declaration writes it "
                "(python -m lhlib.build.book write-parameters)"
            )
    return problems


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lhlib.build.book", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timeouts = ", ".join(f"{seconds} s under {profile}" for profile, seconds in CELL_TIMEOUT_S.items())
    for command, what in (("run", "execute chapters"), ("build", "execute chapters, then build the HTML")):
        sub = commands.add_parser(command, help=what)
        sub.add_argument("chapters", nargs="*", help="chapter names (default: all)")
        sub.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)}")
        sub.add_argument("--cell-timeout", type=float, help=f"seconds per cell (default: {timeouts})")
        sub.add_argument("--force", action="store_true", help="re-execute every chapter, changed or not")
    sub = commands.add_parser("set-repository", help="point the book at another GitHub repository")
    sub.add_argument("slug", metavar="OWNER/NAME")
    sub.add_argument("--branch", help="the branch the book is published from (default: keep the current one)")
    commands.add_parser("check-repository", help="list what disagrees with _config.yml's repository")
    sub = commands.add_parser(
        "check-notebooks", help="fail on notebooks that break nbformat, keep outputs or stray from their declaration"
    )
    sub.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    commands.add_parser("write-parameters", help="rewrite every chapter's parameters cell from its declaration")
    sub = commands.add_parser("check-html", help="check every page of a built book: math renders, no raw markup")
    sub.add_argument("--profile", required=True, help=f"the build to check, one of {', '.join(PROFILES)}")
    return parser


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module docstring); a bad argument exits with one line naming it.

    Args:
        argv: The arguments (``None``: ``sys.argv[1:]``).

    Raises:
        SystemExit: status 2 for a bad argument, 1 when ``check-repository`` or ``check-notebooks``
            finds a problem.
    """
    from lhlib.build import repository

    parser = _parser()
    args = parser.parse_args(argv)
    root = repository_root()
    try:
        if args.command in ("run", "build", "check-html"):
            check_choice("profile", args.profile, PROFILES)
        if args.command in ("run", "build"):
            _check_chapters(args.chapters, root)
            if args.cell_timeout is not None:
                check_float("--cell-timeout", args.cell_timeout, minimum=1.0)
        elif args.command == "set-repository":
            repository.parse_slug(args.slug, "main" if args.branch is None else args.branch)
        elif args.command == "check-notebooks":
            for path in args.notebooks:
                if not path.is_file():
                    raise ValueError(f"notebooks must be notebook files, but {str(path)!r} is not a file")
    except ValueError as error:
        parser.error(str(error))
    if args.command == "check-html":
        html_dir = root / "_build" / "book" / args.profile / "_build" / "html"
        if not (html_dir / "index.html").is_file():
            parser.error(f"no book built with --profile {args.profile}: run 'python -m lhlib.build.book build' first")
        _report_rendering(html_dir)
    elif args.command == "run":
        run_chapters(args.chapters, args.profile, timeout=args.cell_timeout, force=args.force)
    elif args.command == "build":
        build_book(args.chapters, args.profile, timeout=args.cell_timeout, force=args.force)
    elif args.command == "set-repository":
        for path in repository.set_repository(root, args.slug, args.branch):
            print(f"rewrote {path.relative_to(root)}")
        print(f"the book now points at {repository.read_repository(root).url}")
    elif args.command == "write-parameters":
        for path in write_parameter_cells(sorted((root / "notebooks").glob("*.ipynb"))):
            print(f"rewrote the parameters cell of {path.relative_to(root)}")
    else:
        if args.command == "check-repository":
            problems = repository.disagreements(root)
        else:
            problems = notebook_problems(args.notebooks or sorted((root / "notebooks").glob("*.ipynb")))
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
