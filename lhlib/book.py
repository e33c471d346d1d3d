"""Execute the book's chapters with papermill under a named profile, and build the HTML.

    python -m lhlib.book run [CHAPTER ...] --profile smoke|cpu|paper
    python -m lhlib.book build [CHAPTER ...] --profile smoke|cpu|paper

``run`` executes each chapter (all when none is named) into ``_build/executed/<profile>/`` with
``output_dir`` set to ``results/<profile>/<chapter>/`` and the profile's parameters from
``lhlib/profiles.json``; the source notebooks are never written to. ``build`` runs them, stages the
executed copies beside the book's pages in ``_build/stage/<profile>/`` and builds the HTML there with
Jupyter Book, warnings treated as errors, into ``_build/book/<profile>/``.

Profiles: ``smoke`` (seconds per chapter, for tests), ``cpu`` (the paper's settings on the datasets
this machine can load offline), ``paper`` (the notebooks' own defaults: everything, for a GPU).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lhlib.validation import check_choice

__all__ = ["PROFILES", "build_book", "chapters", "profile_parameters", "repository_root", "run_chapters"]

PROFILES = ("smoke", "cpu", "paper")


def repository_root() -> Path:
    """The folder holding ``_config.yml`` and ``notebooks/`` (the repository this lhlib lives in)."""
    return Path(__file__).resolve().parent.parent


def chapters(root: Path | None = None) -> list[str]:
    """Names of the chapters, in reading order (the notebooks' file stems)."""
    root = root or repository_root()
    return sorted(path.stem for path in (root / "notebooks").glob("*.ipynb"))


def profile_parameters(profile: str, chapter: str) -> dict:
    """The parameters a profile sets for a chapter (the notebook's defaults fill in the rest)."""
    check_choice("profile", profile, PROFILES)
    profiles = json.loads(Path(__file__).with_name("profiles.json").read_text())
    return dict(profiles.get(profile, {}).get(chapter, {}))


def _check_chapters(names: list[str], root: Path) -> list[str]:
    available = chapters(root)
    for name in names:
        check_choice("chapter", name, available)
    return names or available


def run_chapters(names: list[str], profile: str, root: Path | None = None) -> list[Path]:
    """Execute chapters with papermill; returns the executed notebooks. Raises on the first failure
    only after the remaining chapters ran, so one broken chapter does not hide the state of the rest."""
    import papermill

    root = root or repository_root()
    check_choice("profile", profile, PROFILES)
    names = _check_chapters(names, root)
    executed_dir = root / "_build" / "executed" / profile
    executed_dir.mkdir(parents=True, exist_ok=True)
    executed, failures = [], []
    for name in names:
        parameters = profile_parameters(profile, name)
        parameters["output_dir"] = str(root / "results" / profile / name)
        target = executed_dir / f"{name}.ipynb"
        print(f"[lhlib.book] {name} ({profile}) ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(root / "notebooks" / f"{name}.ipynb"), str(target), parameters=parameters,
                kernel_name="python3", cwd=str(root / "notebooks"), progress_bar=False,
            )
        except papermill.PapermillExecutionError as error:
            print(f"[lhlib.book] {name} FAILED:\n{error}", file=sys.stderr, flush=True)
            failures.append(name)
            continue
        print(f"[lhlib.book] {name} done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        executed.append(target)
    if failures:
        raise RuntimeError(f"chapters failed under profile {profile!r}: {', '.join(failures)} (tracebacks above)")
    return executed


def build_book(names: list[str], profile: str, root: Path | None = None) -> Path:
    """Run the chapters, stage them with the book's pages and build the HTML; returns ``index.html``."""
    root = root or repository_root()
    run_chapters(names, profile, root)
    stage = root / "_build" / "stage" / profile
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "notebooks").mkdir(parents=True)
    for item in ("_config.yml", "_toc.yml", "book"):
        source = root / item
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, stage / item)
    # The table of contents lists every chapter; chapters not run now come from an earlier run.
    for name in chapters(root):
        executed = root / "_build" / "executed" / profile / f"{name}.ipynb"
        if not executed.exists():
            raise RuntimeError(f"chapter {name} has no executed copy for profile {profile!r}: run it first")
        shutil.copy2(executed, stage / "notebooks" / f"{name}.ipynb")
    output = root / "_build" / "book" / profile
    subprocess.run(
        [str(Path(sys.executable).with_name("jupyter-book")), "build", str(stage), "--path-output", str(output), "-W", "-n", "--keep-going"],
        check=True,
    )
    index = output / "_build" / "html" / "index.html"
    print(index)
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lhlib.book", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "build"))
    parser.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    parser.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)}")
    args = parser.parse_args(argv)
    try:
        check_choice("profile", args.profile, PROFILES)
        _check_chapters(args.chapters, repository_root())
    except ValueError as error:
        parser.error(str(error))
    if args.command == "run":
        run_chapters(args.chapters, args.profile)
    else:
        build_book(args.chapters, args.profile)


if __name__ == "__main__":
    main()
