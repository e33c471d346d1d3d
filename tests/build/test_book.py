"""The book runner, the notebooks' house rules, and a full `-W` build of the book in the smoke profile."""

import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest

from lhlib.build import book, declarations

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_follow_the_house_rules(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "outputs must be stripped"
    tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged parameters"
    assert "output_dir" in tagged[0].source
    assert 'if "google.colab" in sys.modules:' in code[0].source, "first code cell installs lhlib on Colab only"
    assert "torch=" not in code[0].source and "install -q torch" not in code[0].source, "never pin torch on Colab"
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    # Chapters run where the book's build tools are absent (Colab): lhlib.build.glue, not myst_nb.
    imports = re.findall(r"^\s*(?:from|import) ([\w.]+)", "\n".join(c.source for c in code), re.M)
    assert not {name.split(".")[0] for name in imports} & {"myst_nb", "papermill", "sphinx", "jupyter_book", "tqdm"}


def test_every_chapter_is_in_the_table_of_contents():
    toc = (ROOT / "_toc.yml").read_text()
    assert [p.stem for p in NOTEBOOKS] == book.chapters()
    for name in book.chapters():
        assert f"notebooks/{name}" in toc


def test_every_chapter_declares_its_parameters_and_profiles_that_pass_them():
    for profile in book.PROFILES:
        assert book.cell_timeout(profile) == book.CELL_TIMEOUT_S[profile] >= 60
    for chapter in book.chapters():
        module = declarations.declaration(chapter)
        assert set(module.PROFILES) <= {"smoke", "cpu"} and module.PROFILES["smoke"], chapter
        for profile in book.PROFILES:
            assert book.profile_parameters(profile, chapter) == module.PROFILES.get(profile, {})


def test_a_profile_that_breaks_the_declaration_is_refused_when_loaded(monkeypatch):
    module = declarations.declaration("04_direct_classification")
    monkeypatch.setitem(module.PROFILES, "smoke", {"epoch": 1})
    with pytest.raises(ValueError, match=r"^profile smoke, chapter 04_direct_classification: epoch is not a param"):
        book.profile_parameters("smoke", "04_direct_classification")
    monkeypatch.setitem(module.PROFILES, "smoke", {"fit_k_min": 9000, "train_size": 400})
    with pytest.raises(ValueError, match=r"fit_k_min must be an integer in \[1, 398 \(train_size - 2\)\], got 9000"):
        book.profile_parameters("smoke", "04_direct_classification")


def test_runner_rejects_unknown_profile_and_chapter():
    with pytest.raises(SystemExit):
        book.main(["run", "--profile", "huge"])
    with pytest.raises(SystemExit):
        book.main(["run", "99_nothing", "--profile", "smoke"])
    with pytest.raises(ValueError, match="profile must be one of"):
        book.profile_parameters("huge", "04_direct_classification")


def _mini_root(tmp_path, source):
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    parameters = nbformat.v4.new_code_cell("output_dir = 'x'")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell(source)]
    path = tmp_path / "notebooks" / "01_mini.ipynb"
    nbformat.write(notebook, path)
    return path


def test_runner_leaves_sources_alone_and_fails_loudly(tmp_path, capsys):
    path = _mini_root(tmp_path, "raise RuntimeError('chapter exploded')")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="chapters failed under profile 'smoke': 01_mini"):
        book.run_chapters([], "smoke", root=tmp_path)
    assert "chapter exploded" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert (tmp_path / "_build" / "executed" / "smoke" / "01_mini.ipynb").exists()


def test_runner_injects_a_relative_output_dir_and_hides_progress_bars(tmp_path, monkeypatch):
    for name in book.KERNEL_WAITING:  # the runner's defaults: passive waiting after a brief spin
        monkeypatch.delenv(name, raising=False)
    _mini_root(
        tmp_path,
        "import os\nfrom pathlib import Path\nPath(output_dir).mkdir(parents=True)\n"
        "print(output_dir, os.environ['LHLIB_PROGRESS'], os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])",
    )
    book.run_chapters(["01_mini"], "cpu", root=tmp_path)
    assert (tmp_path / "results" / "cpu" / "01_mini").is_dir()
    executed = nbformat.read(tmp_path / "_build" / "executed" / "cpu" / "01_mini.ipynb", 4)
    assert executed.cells[-1].outputs[0]["text"] == "results/cpu/01_mini 0 PASSIVE 10000\n"
    recorded = executed.metadata["papermill"]
    assert (recorded["input_path"], recorded["output_path"]) == (
        "notebooks/01_mini.ipynb",
        "_build/executed/cpu/01_mini.ipynb",
    )
    for name in ("LHLIB_PROGRESS", *book.KERNEL_WAITING):
        assert name not in os.environ, "the runner's kernel environment must not leak into this process"


def test_a_hung_cell_fails_its_chapter_and_is_named(tmp_path, capsys):
    _mini_root(tmp_path, "import time\ntime.sleep(60)")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"01_mini \(cell 2 \('import time'\) timed out after 2 s\)"):
        book.run_chapters([], "smoke", root=tmp_path, timeout=2)
    assert time.perf_counter() - start < 50, "the cell must be stopped at its timeout, not run to its end"
    assert "ran past the 2 s cell timeout" in capsys.readouterr().err
    with pytest.raises(ValueError, match="timeout must be"):
        book.run_chapters([], "smoke", root=tmp_path, timeout=0)


def test_a_dead_kernel_fails_its_chapter_and_the_others_still_run(tmp_path, capsys):
    _mini_root(tmp_path, "import os\nos._exit(1)")
    (tmp_path / "fine").mkdir()
    _mini_root(tmp_path / "fine", "x = 1")
    shutil.copy2(tmp_path / "fine" / "notebooks" / "01_mini.ipynb", tmp_path / "notebooks" / "02_fine.ipynb")
    with pytest.raises(RuntimeError, match=r"profile 'smoke': 01_mini \(DeadKernelError\)"):
        book.run_chapters([], "smoke", root=tmp_path, timeout=30.5)  # fractional: rounded up for nbclient
    report = json.loads((tmp_path / "_build" / "executed" / "smoke" / "report.json").read_text())
    assert [(r["chapter"], r["reason"]) for r in report] == [
        ("01_mini", "failed"),
        ("02_fine", "no earlier successful run"),
    ]
    assert "01_mini FAILED: DeadKernelError" in capsys.readouterr().err


def test_the_chapters_are_valid_and_stripped():
    assert book.notebook_problems(sorted((ROOT / "notebooks").glob("*.ipynb"))) == []


def test_check_notebooks_finds_outputs_and_schema_errors(tmp_path):
    path = _mini_root(tmp_path, "1 + 1")
    assert book.notebook_problems([path]) == []
    notebook = nbformat.read(path, 4)
    notebook.cells[1].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    nbformat.write(notebook, path)
    assert book.notebook_problems([path]) == [f"{path}: outputs not stripped in cells 2"]
    raw = json.loads(path.read_text())
    raw["nbformat_minor"] = 4  # cell ids need nbformat 4.5
    raw["cells"][1]["outputs"], raw["cells"][1]["execution_count"] = [], None
    raw["cells"][1]["id"] = "an-id"
    path.write_text(json.dumps(raw))
    assert book.notebook_problems([path]) == [
        f"{path}: not valid nbformat 4.4: Additional properties are not allowed ('id' was unexpected)"
    ]


@pytest.fixture(scope="module")
def smoke_html(smoke_book) -> Path:
    """The book built under the smoke profile (every chapter executed) in the run's copy of the book.

    The chapters' executions are shared with their smoke tests (``SmokeBook`` in ``tests/conftest.py``); this
    executes those no other worker is executing, in reverse order so that two workers start at opposite ends.
    ``build_book`` also checks every page's rendering (``lhlib.build.html_check``) and fails on a problem.
    """
    smoke_book.execute(book.chapters(smoke_book.root)[::-1])
    with smoke_book.environment():
        index = book.build_book([], "smoke", root=smoke_book.root)
    assert index.exists()
    return smoke_book.root


def test_smoke_book_builds_with_warnings_as_errors(smoke_html):
    """Every chapter runs under the smoke profile and the HTML builds with -W (offline MathJax included)."""
    tmp_path = smoke_html
    html = tmp_path / "_build" / "book" / "smoke" / "_build" / "html"
    assert (html / "notebooks" / "04_direct_classification.html").exists()
    page = (html / "notebooks" / "04_direct_classification.html").read_text()
    assert "colab.research.google.com" in page
    assert "cdn.jsdelivr.net/npm/mathjax" not in page, "MathJax must be served from the book itself"
    # No page may show where the book was built: not the build tree, this checkout, its virtual
    # environment, the home folder (the results store) or the temporary folder.
    machine_paths = {str(tmp_path), str(ROOT), sys.prefix, str(Path.home()) + "/", tempfile.gettempdir() + "/"}
    for path in sorted(p for p in html.rglob("*") if p.suffix in {".html", ".ipynb", ".txt", ".js", ".json"}):
        text = path.read_text(errors="replace")
        found = [m for m in machine_paths if m in text]
        assert not found, f"{path.relative_to(html)} shows the build machine's path {found[0]!r}"


def test_no_chapter_prints_a_stray_value(smoke_html):
    """A cell's last expression shows its value under the cell (a check's return, a figure's path)."""
    for path in sorted((smoke_html / "_build" / "executed" / "smoke").glob("*.ipynb")):
        for index, cell in enumerate(nbformat.read(path, 4).cells):
            results = [o for o in cell.get("outputs", []) if o.output_type == "execute_result"]
            assert not results, f"{path.stem} cell {index} shows {results[0]['data']['text/plain'][:60]!r}"


def test_every_page_says_what_it_ran_and_shows_its_parameters_once(smoke_html):
    html = smoke_html / "_build" / "book" / "smoke" / "_build" / "html"
    intro = (html / "book" / "intro.html").read_text()
    assert "What this copy ran" in intro and "smoke" in intro
    for name in book.chapters(smoke_html):
        page = (html / "notebooks" / f"{name}.html").read_text()
        assert "What this copy ran" in page, name
        assert "smoke profile (paper:" in page, name
        staged = nbformat.read(smoke_html / "_build" / "stage" / "smoke" / "notebooks" / f"{name}.ipynb", 4)
        tags = [tag for cell in staged.cells for tag in cell.metadata.get("tags", [])]
        assert tags.count("parameters") == 1 and "injected-parameters" not in tags, name


def test_the_intro_states_the_findings_the_chapters_computed(smoke_html):
    """Every claim's row, with the verdict read from this build's summaries, and the figure beside it."""
    import html as html_module

    from lhlib.build import intro_findings

    summaries = {
        name: json.loads((smoke_html / "results" / "smoke" / name / "summary.json").read_text())
        for name in book.chapters(smoke_html)
    }
    staged = (smoke_html / "_build" / "stage" / "smoke" / "book" / "intro.md").read_text()
    assert intro_findings.MARKER not in staged
    rows = intro_findings.findings_rows(summaries)
    assert len(rows) == len(intro_findings.FINDINGS)
    for row in rows:
        assert intro_findings.findings_table([row], "smoke").splitlines()[-1] in staged, row["claim"]
    intro_html = smoke_html / "_build" / "book" / "smoke" / "_build" / "html" / "book" / "intro.html"
    page = html_module.unescape(intro_html.read_text()).replace("\u2019", "'")  # Sphinx's smart quotes
    assert all(row["claim"].split("$")[-1].strip() in page for row in rows)  # the math renders as MathJax spans
    assert 'id="fig-intro-slack"' in page and "findings_slack.png" in page


def test_the_rendering_check_catches_a_broken_formula_on_a_built_page(smoke_html, tmp_path):
    """The check passed the build; planted on a copy of a built page, a broken formula, an unknown command and a
    stray ``$$`` are caught, statically and, where a browser is installed, by what MathJax drew."""
    from lhlib.build import html_check

    html = tmp_path / "html"
    shutil.copytree(smoke_html / "_build" / "book" / "smoke" / "_build" / "html", html)
    page = html / "book" / "errata.html"
    for other in html.rglob("*.html"):  # the build checked every page; the planted problems need only this one
        if other not in (page, html / "index.html") and "_static" not in other.parts:
            other.unlink()
    broken = (
        '<span class="math notranslate nohighlight">\\(\\frac{1}{2\\)</span> and $$x$$ raw, and '
        '<span class="math notranslate nohighlight">\\(\\nosuchcommand{x}\\)</span>'
    )
    page.write_text(page.read_text().replace("</h1>", f"</h1><p>{broken}</p>", 1))
    problems = html_check.check_book(html)
    assert list(problems) == ["book/errata.html"], problems
    found = problems["book/errata.html"]
    assert any("unbalanced braces" in p for p in found) and any("raw '$'" in p for p in found)
    if html_check.browser():  # MathJax itself: the brace leaves its formula untypeset, the command is unknown
        assert any(p.startswith("MathJax left a formula untypeset") for p in found), found
        assert "MathJax error: it does not know '\\\\nosuchcommand'" in found, found


def _reasons(root, profile="smoke", **options):
    return {plan.name: (plan.run, plan.reason) for plan in book.plan_chapters([], profile, root, **options)}


def test_execution_cache_reuses_chapters_until_an_input_changes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "book"
    root.mkdir()
    writes = "from pathlib import Path\nPath(output_dir).mkdir(parents=True, exist_ok=True)"
    first = _mini_root(root, writes)
    second = first.with_name("02_other.ipynb")
    shutil.copy2(first, second)
    book.run_chapters([], "smoke", root)
    report = json.loads((root / "_build" / "executed" / "smoke" / "report.json").read_text())
    assert [(r["chapter"], r["ran"], r["reason"]) for r in report] == [
        ("01_mini", True, "no earlier successful run"),
        ("02_other", True, "no earlier successful run"),
    ]
    assert [r["store_added"] for r in report] == [{}, {}]
    capsys.readouterr()
    book.run_chapters([], "smoke", root)  # nothing changed: nothing runs
    assert capsys.readouterr().err.count(": reused, unchanged since ") == 2

    assert all(not ran for ran, _ in _reasons(root).values())

    # Each input, changed alone, re-executes exactly the chapters it determines.
    notebook = nbformat.read(first, 4)
    notebook.cells[1].source += "\n# an edited comment"
    nbformat.write(notebook, first)
    reasons = _reasons(root)
    assert reasons["01_mini"] == (True, "the notebook changed") and not reasons["02_other"][0]
    book.run_chapters(["01_mini"], "smoke", root)
    real_parameters = book.profile_parameters
    monkeypatch.setattr(
        book, "profile_parameters", lambda p, c: {"seed": 1} if c == "02_other" else real_parameters(p, c)
    )
    assert _reasons(root)["02_other"] == (True, "its parameters changed") and not _reasons(root)["01_mini"][0]
    monkeypatch.setattr(book, "profile_parameters", real_parameters)
    extra = tmp_path / "extra.py"
    extra.write_text("x = 1\n")
    real_files = book._package_files
    monkeypatch.setattr(book, "_package_files", lambda chapter=None: [*real_files(chapter), extra])
    book.run_chapters([], "smoke", root)  # records the package with extra.py
    extra.write_text("x = 2\n")
    assert set(_reasons(root).values()) == {(True, "lhlib changed")}
    extra.write_text("x = 1\n")
    (root / "requirements.txt").write_text("torch==0\n")
    assert set(_reasons(root).values()) == {(True, "the requirements changed")}
    (root / "requirements.txt").unlink()
    (tmp_path / "cache" / "data").mkdir(parents=True)
    (tmp_path / "cache" / "data" / "decoded.npy").write_bytes(b"new data")
    assert set(_reasons(root).values()) == {(True, "the data changed")}
    (tmp_path / "cache" / "data" / "decoded.npy").unlink()
    assert all(not ran for ran, _ in _reasons(root).values())
    shutil.rmtree(root / "results" / "smoke" / "02_other")
    assert _reasons(root)["02_other"] == (True, "its results folder is missing")
    assert set(_reasons(root, force=True).values()) == {(True, "forced (--force)")}
    # Another profile has its own executed copies.
    assert set(_reasons(root, profile="cpu").values()) == {(True, "no earlier successful run")}

    # A failed run leaves no record, so the chapter runs again next time.
    notebook.cells[1].source = "raise RuntimeError('broken')"
    nbformat.write(notebook, first)
    with pytest.raises(RuntimeError, match="01_mini"):
        book.run_chapters(["01_mini"], "smoke", root)
    notebook.cells[1].source = writes
    nbformat.write(notebook, first)
    assert _reasons(root)["01_mini"] == (True, "no earlier successful run")


def test_the_runner_says_what_the_store_gained(tmp_path, monkeypatch, capsys):
    """A chapter that trains adds store entries, and the runner counts them; run again, it adds none."""
    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "cache"))
    trains = (
        "import os, pathlib\n"
        "folder = pathlib.Path(os.environ['LHLIB_CACHE'], 'store', 'trained_network')\n"
        "folder.mkdir(parents=True, exist_ok=True)\n"
        "(folder / 'a.pt').touch(); (folder / 'b.pt').touch()"
    )
    _mini_root(tmp_path, trains)
    book.run_chapters([], "smoke", root=tmp_path)
    assert "; the store gained 2 trained_network\n" in capsys.readouterr().err
    book.run_chapters([], "smoke", root=tmp_path, force=True)
    assert "the store gained nothing: every entry reused" in capsys.readouterr().err
    report = json.loads((tmp_path / "_build" / "executed" / "smoke" / "report.json").read_text())
    assert report[0]["store_added"] == {"trained_network": 0}


def test_a_chapter_depends_on_the_engine_the_build_and_its_own_module_only():
    own = {p.name for p in book._package_files("01_loss_difference") if p.parent.name == "chapters"}
    assert "ch01_loss_difference.py" in own and "ch08_other_architectures.py" not in own
    names = {f"{p.parent.name}/{p.name}" for p in book._package_files("01_loss_difference")}
    assert {"engine/per_sample.py", "build/plotting.py", "chapters/paper_values.json"} <= names
    assert "declarations/ch01_loss_difference.py" in names and "declarations/ch08_other_architectures.py" not in names
    assert "build/style.mplstyle" in names  # the figures' style is part of every chapter's output
    every = {p.name for p in book._package_files() if p.parent.name == "chapters"}
    assert {"ch01_loss_difference.py", "ch08_other_architectures.py"} <= every


def test_rewriting_a_data_file_of_the_same_size_changes_the_data_digest(tmp_path):
    (tmp_path / "mnist").mkdir()
    images = tmp_path / "mnist" / "train-images.npy"
    images.write_bytes(b"0" * 64)
    before = book._listing_digest(tmp_path)
    images.write_bytes(b"1" * 64)
    os.utime(images, ns=(images.stat().st_atime_ns, images.stat().st_mtime_ns + 10**9))
    assert book._listing_digest(tmp_path) != before
