"""What publishing needs: the workflow and citation files valid, one repository setting that every
place follows, a light package whose wheel installs and imports, and chapters that run on Colab
without the book's build tools."""

import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import nbformat
import pytest
import yaml

from lhlib.build import book, repository

ROOT = Path(__file__).resolve().parents[2]
CHECK_JSONSCHEMA = str(Path(sys.executable).with_name("check-jsonschema"))
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _validate(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120
    )


def test_workflows_follow_githubs_schema(tmp_path):
    assert WORKFLOWS, "the book needs a workflow that tests, builds and deploys it"
    for path in WORKFLOWS:
        result = _validate("vendor.github-workflows", path)
        assert result.returncode == 0, result.stdout + result.stderr
    # The validator can fail: a job without `runs-on` is refused.
    broken = yaml.safe_load(WORKFLOWS[0].read_text())
    del broken["jobs"]["test"]["runs-on"]
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    assert _validate("vendor.github-workflows", tmp_path / "broken.yml").returncode != 0


def test_workflow_tests_builds_and_deploys_the_book():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers
    assert triggers["workflow_dispatch"]["inputs"]["profile"]["options"] == list(book.PROFILES[1:]) + ["smoke"]
    steps = {name: job["steps"] for name, job in workflow["jobs"].items()}
    runs = {name: [step.get("run", "") for step in job] for name, job in steps.items()}
    uses = {name: [step.get("uses", "").split("@")[0] for step in job] for name, job in steps.items()}
    assert "make test" in runs["test"] and 'make book PROFILE="$PROFILE"' in runs["book"]
    assert "actions/cache" in uses["test"] and "actions/cache" in uses["book"]
    cached = {
        step["uses"].split("@")[0]: step for step in steps["book"] if step.get("uses", "").startswith("actions/cache")
    }
    assert cached["actions/cache"]["with"]["path"] == "~/.cache/pip"
    # The results store is restored before the build and saved after it even when the build failed.
    restore, save = cached["actions/cache/restore"], cached["actions/cache/save"]
    assert restore["with"]["path"] == save["with"]["path"] == "~/.cache/lhlib" and save["if"] == "always()"
    assert steps["book"].index(restore) < runs["book"].index('make book PROFILE="$PROFILE"') < steps["book"].index(save)
    # GitHub's runners take torch's CPU wheels; the self-hosted GPU runner (profile paper) PyPI's.
    assert "download.pytorch.org/whl/cpu" in workflow["env"]["PIP_EXTRA_INDEX_URL"]
    assert "actions/upload-artifact" in uses["book"] and "actions/upload-pages-artifact" in uses["book"]
    assert uses["deploy"] == ["actions/deploy-pages"]
    assert workflow["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert workflow["jobs"]["deploy"]["concurrency"]["group"] == "pages"
    assert "gpu" in workflow["jobs"]["book"]["runs-on"] and "self-hosted" in workflow["jobs"]["book"]["runs-on"]
    assert "`gpu`" in (ROOT / "book" / "reproducing.md").read_text(), "the GPU runner's label is documented"
    # `make book PROFILE=...` is the same runner `make book` uses.
    assert "$(PY) -m lhlib.build.book build --profile $(PROFILE)" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# The majors current in December 2026; Dependabot (.github/dependabot.yml) proposes the next ones.
CURRENT_MAJORS = {
    "actions/checkout": "v7",
    "actions/setup-python": "v7",
    "actions/cache": "v5",
    "actions/cache/restore": "v5",
    "actions/cache/save": "v5",
    "actions/upload-artifact": "v7",
    "actions/upload-pages-artifact": "v5",
    "actions/deploy-pages": "v5",
}


def test_every_action_is_on_its_current_major_and_dependabot_keeps_it_there():
    for path in WORKFLOWS:
        used = re.findall(r"uses: ([\w./-]+)@(\S+)", path.read_text())
        assert used and all(CURRENT_MAJORS.get(action) == major for action, major in used), (path.name, used)
    dependabot = ROOT / ".github" / "dependabot.yml"
    result = _validate("vendor.dependabot", dependabot)
    assert result.returncode == 0, result.stdout + result.stderr
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load(dependabot.read_text())["updates"]}
    assert ecosystems == {"github-actions", "pip"}


def test_the_supported_pythons_are_stated_once_and_followed_everywhere():
    """pyproject.toml's requires-python and classifiers; the docs, CI's matrix and ruff follow them."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lowest = project["project"]["requires-python"].removeprefix(">=")
    listed = [c.rsplit(" ", 1)[1] for c in project["project"]["classifiers"] if re.fullmatch(r".*:: 3\.\d+", c)]
    assert listed[0] == lowest and listed == sorted(listed, key=lambda v: int(v.split(".")[1]))
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    assert workflow["jobs"]["test"]["strategy"]["matrix"]["python-version"] == [lowest, listed[-1]]
    assert f"Python {lowest} to {listed[-1]}" in (ROOT / "book" / "reproducing.md").read_text()
    assert not re.search(
        r"Python 3\.\d+\+", (ROOT / "README.md").read_text() + (ROOT / "book" / "reproducing.md").read_text()
    )
    assert project["tool"]["ruff"]["target-version"] == "py" + lowest.replace(".", "")
    assert sys.version_info[:2] >= tuple(map(int, lowest.split(".")))


def test_debian_packages_are_installed_as_root_or_with_sudo_that_asks_no_password():
    makefile = (ROOT / "Makefile").read_text()
    assert 'SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)' in makefile
    installs = re.findall(r"\(\$\(SUDO\) apt-get install[^|]*\|\| \(\$\(SUDO\) apt-get update", makefile)
    assert len(installs) == 2 and makefile.count('[ "$(CAN_INSTALL)" = yes ]') == 2


def test_citation_file_is_valid_and_cites_book_and_paper(tmp_path):
    result = _validate("vendor.citation-file-format", ROOT / "CITATION.cff")
    assert result.returncode == 0, result.stdout + result.stderr
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["type"] == "software" and citation["license"] == ["MIT", "CC-BY-4.0"]
    (paper,) = citation["references"]
    assert paper["doi"] == "10.48550/arXiv.2409.11995"
    assert [a["family-names"] for a in paper["authors"]] == ["Kiselev", "Grabovoy"]
    broken = {**citation, "cff-version": "not a version"}
    (tmp_path / "CITATION.cff").write_text(yaml.safe_dump(broken))
    assert _validate("vendor.citation-file-format", tmp_path / "CITATION.cff").returncode != 0


def test_the_release_metadata_agrees_with_the_citation_and_the_changelog(tmp_path):
    """.zenodo.json (what Zenodo archives at a tag) says what CITATION.cff says; one version everywhere."""
    import json
    import tomllib

    zenodo = json.loads((ROOT / ".zenodo.json").read_text())
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1)
    assert zenodo["version"] == citation["version"] == version == newest
    assert zenodo["title"] == citation["title"] and zenodo["upload_type"] == "software"
    assert zenodo["license"] in citation["license"] and set(zenodo["keywords"]) == set(citation["keywords"])
    assert [c["name"] for c in zenodo["creators"]] == [a["name"] for a in citation["authors"]]
    assert " ".join(zenodo["description"].split()) == " ".join(citation["abstract"].split())
    (paper,) = citation["references"]
    assert {"identifier": paper["doi"], "relation": "isSupplementTo"}.items() <= zenodo["related_identifiers"][
        0
    ].items()
    # The recipe for a release is documented, and the workflow builds a tag as it builds main.
    assert "git tag -a v" in (ROOT / "book" / "reproducing.md").read_text()
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]


def test_every_place_follows_the_repository_setting():
    assert repository.disagreements(ROOT) == []
    config = repository.read_repository(ROOT)
    assert (config.owner, config.name, config.branch) == ("lhlib-book", "unraveling-the-hessian", "main")


def _copy_of_the_book(tmp_path) -> Path:
    for item in ("_config.yml", "pyproject.toml", "CITATION.cff", "notebooks", ".github"):
        source = ROOT / item
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, tmp_path / item)
    return tmp_path


def test_set_repository_rewrites_every_place(tmp_path):
    root = _copy_of_the_book(tmp_path)
    old = repository.read_repository(root)
    changed = repository.set_repository(root, "someone/my-fork", branch="draft")
    assert len(changed) == 4 + len(book.chapters(root))
    assert repository.disagreements(root) == []
    new = repository.read_repository(root)
    assert (new.owner, new.name, new.branch) == ("someone", "my-fork", "draft")
    for path in [root / "_config.yml", root / "pyproject.toml", root / "CITATION.cff", *root.glob("notebooks/*")]:
        text = path.read_text()
        assert old.url not in text and old.pages_url not in text, path.name
        assert new.url in text, path.name
    workflow = (root / ".github" / "workflows" / "book.yml").read_text()
    assert "branches: [draft]" in workflow and "refs/heads/draft" in workflow and "refs/heads/main" not in workflow
    assert (
        "lhlib @ git+https://github.com/someone/my-fork@draft"
        in (root / "notebooks" / "04_direct_classification.ipynb").read_text()
    )
    # Rewriting again changes nothing; a place edited by hand is reported, then repaired.
    assert repository.set_repository(root, "someone/my-fork") == []
    citation = root / "CITATION.cff"
    citation.write_text(citation.read_text().replace("someone/my-fork", "someone/elsewhere"))
    assert repository.disagreements(root) == [
        "CITATION.cff: repository-code is 'https://github.com/someone/elsewhere', not 'https://github.com/someone/my-fork'"
    ]
    assert repository.sync_repository(root) == [citation] and repository.disagreements(root) == []


def test_set_repository_keeps_comments_other_keys_and_the_chapters_own_cells(tmp_path):
    root = _copy_of_the_book(tmp_path)
    config = root / "_config.yml"
    # A blank line and a comment inside the section, and no branch key: YAML allows both.
    text = config.read_text()
    assert '  path_to_book: ""\n  branch: main\n' in text
    config.write_text(
        text.replace('  path_to_book: ""\n  branch: main\n', '\n# where the book lives\n  path_to_book: ""\n')
    )
    assert repository.read_repository(root).branch == "main"
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("[project.urls]\n", '[project.urls]\nChangelog = "https://example.org/changes"\n')
    )
    notebook_path = root / "notebooks" / "07_sample_size.ipynb"
    notebook = nbformat.read(notebook_path, 4)
    first_code = next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    notebook.cells.insert(first_code, nbformat.v4.new_code_cell("import numpy as np  # the chapter's own first cell"))
    nbformat.write(notebook, notebook_path)
    assert any("07_sample_size" in p for p in repository.disagreements(root))
    repository.set_repository(root, "someone/my-fork", branch="draft")
    assert repository.disagreements(root) == []
    assert repository.read_repository(root).branch == "draft"
    assert "# where the book lives" in config.read_text()
    assert 'Changelog = "https://example.org/changes"' in pyproject.read_text()
    cells = [c.source for c in nbformat.read(notebook_path, 4).cells if c.cell_type == "code"]
    assert cells[0] == repository.colab_install_source(repository.read_repository(root))
    assert cells[1] == "import numpy as np  # the chapter's own first cell"
    assert sum(repository.INSTALL_GUARD in c for c in cells) == 1


def test_disagreements_see_every_url_and_the_workflow_branch(tmp_path):
    root = _copy_of_the_book(tmp_path)
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        text.replace("[project.urls]\n", '[project.urls]\nDocumentation = "https://github.com/old/place"\n')
    )
    assert repository.disagreements(root) == [
        "pyproject.toml: [project.urls] Documentation points at another repository (https://github.com/old/place)"
    ]
    issues_line = 'Issues = "https://github.com/lhlib-book/unraveling-the-hessian/issues"\n'
    assert issues_line in text
    pyproject.write_text(text.replace(issues_line, ""))
    assert repository.disagreements(root) == [
        "pyproject.toml: [project.urls] Issues is None, not 'https://github.com/lhlib-book/unraveling-the-hessian/issues'"
    ]
    repository.sync_repository(root)
    assert repository.disagreements(root) == [] and issues_line in pyproject.read_text()
    workflow = root / ".github" / "workflows" / "book.yml"
    workflow.write_text(workflow.read_text().replace("branches: [main]", "branches: [elsewhere]"))
    assert repository.disagreements(root) == [".github/workflows/book.yml: does not build and deploy the branch 'main'"]


@pytest.mark.parametrize(
    ("slug", "branch", "message"),
    [
        ("no-slash", None, "repository must be OWNER/NAME"),
        ("a/b/c", None, "repository must be OWNER/NAME"),
        ("owner/name with space", None, "repository must be OWNER/NAME"),
        ("owner/name", "../x", "branch must be a git branch name"),
        ("owner/name", "a b", "branch must be a git branch name"),
        # what git and GitHub refuse (issue 28's hostile pass)
        ("a/..", None, "repository must be OWNER/NAME"),
        ("a/.", None, "repository must be OWNER/NAME"),
        ("-a/b", None, "repository must be OWNER/NAME"),
        ("a--b/c", None, "repository must be OWNER/NAME"),
        ("a/b.git", None, "repository must be OWNER/NAME"),
        ("owner/name", "-x", "branch must be a git branch name"),
        ("owner/name", "", "branch must be a git branch name"),
        ("owner/name", "a//b", "branch must be a git branch name"),
        ("owner/name", "a/", "branch must be a git branch name"),
        ("owner/name", ".hidden", "branch must be a git branch name"),
        ("owner/name", "x.lock", "branch must be a git branch name"),
        ("owner/name", "x.", "branch must be a git branch name"),
    ],
)
def test_set_repository_refuses_bad_coordinates_and_leaves_files_alone(tmp_path, slug, branch, message):
    root = _copy_of_the_book(tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=message):
        repository.set_repository(root, slug, branch)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_command_line_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        book.main(["set-repository", "not a slug"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith("error: repository must be OWNER/NAME (letters, digits, '-', '.', '_'), got 'not a slug'")
    for argv, message in (
        (["set-repository", "a/b", "--branch", ""], "error: branch must be a git branch name"),
        (["set-repository", "a/b", "--branch=-x"], "error: branch must be a git branch name"),
        (["check-notebooks", "/nonexistent/chapter.ipynb"], "is not a file"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            book.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and message in lines[-1] and "Traceback" not in "\n".join(lines), argv


def test_install_cell_installs_the_light_core_from_the_branch_and_hides_its_output():
    config = repository.read_repository(ROOT)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = next(c for c in nbformat.read(path, 4).cells if c.cell_type == "code")
        assert f'%pip install -q "lhlib @ git+{config.url}@{config.branch}"' in first.source, path.name
        assert "remove-output" in first.metadata["tags"]
    # The light core: nothing that would replace Colab's IPython, Jupyter or torch build.
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=\[ ;]", requirement)[0].lower() for requirement in project["dependencies"]}
    assert core == {"torch", "torchvision", "numpy", "scipy", "sympy", "matplotlib", "scikit-learn", "tqdm"}
    assert not any(re.search(r"[<>=]", requirement) for requirement in project["dependencies"]), "never pin on Colab"
    assert set(project["optional-dependencies"]) == {"features", "book", "lab", "test"}


def test_package_metadata_is_complete():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for key in ("authors", "license", "license-files", "readme", "urls", "classifiers", "requires-python"):
        assert project.get(key), key
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "CC BY 4.0" in (ROOT / "LICENSE-CONTENT.md").read_text()
    pinned = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    assert f"ruff=={pinned['ruff']}" in project["optional-dependencies"]["test"]
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    ruff = next(r for r in hooks if r["repo"].endswith("ruff-pre-commit"))
    assert ruff["rev"] == f"v{pinned['ruff']}" and {h["id"] for h in ruff["hooks"]} == {"ruff-check", "ruff-format"}
    local = next(r for r in hooks if r["repo"] == "local")
    assert local["hooks"][0]["entry"] == ".venv/bin/python -m lhlib.build.book check-notebooks"


def test_wheel_installs_and_imports_without_the_repository(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for item in ("lhlib", "pyproject.toml", "README.md", "LICENSE"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy2)(ROOT / item, source / item)
    shutil.rmtree(source / "lhlib" / "__pycache__", ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("lhlib-*.whl")
    environment = tmp_path / "env"
    venv.create(environment, with_pip=False)
    python = environment / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies come from this environment's site-packages, appended after the new one's.
    dependencies = subprocess.run(
        [sys.executable, "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(dependencies + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
        check=True,
        timeout=300,
    )
    modules = sorted(
        ".".join(p.relative_to(ROOT / "lhlib").with_suffix("").parts)
        for p in (ROOT / "lhlib").rglob("*.py")
        if p.name != "__init__.py"
    )
    check = f"""
import importlib, json, sys
from importlib import resources
import lhlib
assert lhlib.__file__.startswith({site!r}), lhlib.__file__
for name in {modules!r}:
    importlib.import_module("lhlib." + name)
json.loads(resources.files("lhlib.chapters").joinpath("paper_values.json").read_text())
from lhlib.build.plotting import STYLE_FILE, use_style
assert STYLE_FILE.is_file() and STYLE_FILE.is_relative_to({site!r})
use_style()
import matplotlib
assert matplotlib.rcParams["savefig.bbox"] == "tight"
# The light core: importing lhlib does not import the book's build tools or the backbone's library.
heavy = sorted({{"papermill", "myst_nb", "sphinx", "transformers", "nbformat"}} & set(sys.modules))
assert not heavy, heavy
print("ok")
"""
    result = subprocess.run([str(python), "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.stdout.strip() == "ok", result.stderr


def test_a_chapter_runs_without_the_book_build_tools(run_chapter_smoke, tmp_path):
    """As on Colab: no myst-nb, papermill or Sphinx in the kernel; glue falls back to a plain display."""
    summary = run_chapter_smoke("07_sample_size", hide=("myst_nb", "papermill", "sphinx", "jupyter_book"))
    assert summary
    executed = nbformat.read(tmp_path / "07_sample_size.ipynb", 4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert not any(o.get("output_type") == "error" for o in outputs)
    assert not any("scrapbook" in o.get("metadata", {}) for o in outputs), "myst_nb.glue must not have run"
    shown = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert re.search(r"^\w+ = \S", shown, re.M), "the glued values are shown as text"


def test_glue_falls_back_to_plain_text_and_figures(monkeypatch, capsys):
    import matplotlib.pyplot as plt
    from IPython import display as ipython_display

    from lhlib.build import glue as glue_module

    shown = []
    monkeypatch.setattr(glue_module, "myst_nb_available", lambda: False)
    monkeypatch.setattr(ipython_display, "display", shown.append)
    glue_module.glue("rate", 0.25, display=False)
    glue_module.glue("verdict", "holds")
    assert capsys.readouterr().out == "rate = 0.25\nverdict = holds\n"
    fig = plt.figure()
    glue_module.glue("fig_curves", fig, display=False)
    assert shown == [fig]
    plt.close(fig)


def test_progress_bars_are_hidden_by_the_book_runner(monkeypatch):
    from lhlib.engine.progress import progress_bar, progress_enabled

    monkeypatch.setenv("LHLIB_PROGRESS", "0")
    assert not progress_enabled() and progress_bar(range(3), disable=False).disable
    monkeypatch.setenv("LHLIB_PROGRESS", "1")
    assert progress_enabled() and not progress_bar(range(3)).disable


def test_jupyterlab_renders_the_chapters_myst():
    """`jupyter lab notebooks/` (the README's entry) has the jupyterlab-myst extension enabled."""
    listing = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter")), "labextension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = (listing.stdout + listing.stderr).splitlines()
    myst = [line for line in lines if "jupyterlab-myst" in line]
    assert myst and "enabled" in myst[0] and "OK" in myst[0], "\n".join(lines)


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _rendered_markdown(dom: str) -> list[str]:
    """The text of every Markdown cell JupyterLab rendered with jupyterlab-myst (``lm-Widget myst``)."""
    from html.parser import HTMLParser

    class Rendered(HTMLParser):
        def __init__(self):
            super().__init__()
            self.depth, self.inside, self.texts = 0, None, []

        def handle_starttag(self, tag, attrs):
            self.depth += 1
            if self.inside is None and "lm-Widget myst" in (dict(attrs).get("class") or ""):
                self.inside = self.depth
                self.texts.append("")

        def handle_endtag(self, tag):
            if self.inside == self.depth:
                self.inside = None
            self.depth -= 1

        def handle_data(self, data):
            if self.inside is not None:
                self.texts[-1] += data

    parser = Rendered()
    parser.feed(dom)
    return parser.texts


def test_a_chapter_opened_in_jupyterlab_renders_its_myst(tmp_path):
    """Open chapter 04 in JupyterLab in a headless browser: its Markdown is rendered, no role is left raw."""
    import shutil
    import socket
    import time
    import urllib.request

    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        pytest.skip("no headless browser (make offline-packages installs chromium where it can)")
    # A copy, so that JupyterLab's checkpoints stay out of the repository.
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "04_direct_classification.ipynb", tmp_path / "notebooks")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lab = subprocess.Popen(
        [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", f"--port={port}",
         "--ServerApp.token=", "--ServerApp.password=", "--allow-root", f"--ServerApp.root_dir={tmp_path}",
         f"--ServerApp.runtime_dir={tmp_path}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab did not start within 90 s"
                time.sleep(1)
        page = f"http://127.0.0.1:{port}/lab/tree/notebooks/04_direct_classification.ipynb"
        dom = subprocess.run(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / '.profile'}",
             "--virtual-time-budget=30000", "--dump-dom", page],
            capture_output=True, text=True, timeout=180,
        ).stdout  # fmt: skip
    finally:
        lab.terminate()
        lab.wait(timeout=30)
    rendered = _rendered_markdown(dom)
    assert len(rendered) >= 3, "JupyterLab rendered fewer than three Markdown cells with jupyterlab-myst"
    assert rendered[0].startswith("04. Direct classification"), rendered[0][:120]
    for text in rendered:
        for role in ("{cite}`", "{glue:text}`", "{numref}`", "{doc}`"):
            assert role not in text, f"{role} left raw in: {text[:160]}"
    assert "kiselev2024unraveling" in rendered[0]  # the citation, rendered by its key
