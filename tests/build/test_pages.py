"""A staged page says what its copy ran and shows its parameters once."""

from pathlib import Path

import nbformat
import pytest

from lhlib.build import pages

DEFAULTS = "\n".join(
    [
        "seeds: list[int] = [0, 1, 2, 3, 4]  # training seeds",  # typed, as the chapters' cells are
        'datasets = ["mnist", "cifar10"]',
        "k = 5000",
        'output_dir = "results/paper/x"',
    ]
)


def _executed(tmp_path, injected: dict):
    """A chapter as papermill leaves it: title, defaults cell, injected cell, parameters in the metadata."""
    notebook = nbformat.v4.new_notebook()
    injected_source = "\n".join(f"{name} = {value!r}" for name, value in injected.items())
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# 09. A chapter\n\nIts argument."),
        nbformat.v4.new_code_cell(DEFAULTS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(injected_source, metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(k)"),
    ]
    notebook.metadata["papermill"] = {"parameters": injected}
    path = tmp_path / "09_chapter.ipynb"
    nbformat.write(notebook, path)
    return path


def test_differences_are_read_from_the_run_against_the_paper_profile(tmp_path):
    path = _executed(tmp_path, {"seeds": [0, 1], "datasets": ["mnist"], "output_dir": "results/cpu/x"})
    notebook = nbformat.read(path, 4)
    assert pages.run_differences(notebook, {}) == [
        ("seeds", [0, 1], [0, 1, 2, 3, 4]),
        ("datasets", ["mnist"], ["mnist", "cifar10"]),
    ]
    # What the paper profile sets counts as the paper's value; a value equal to it is no difference.
    assert pages.run_differences(notebook, {"seeds": [0, 1]}) == [("datasets", ["mnist"], ["mnist", "cifar10"])]
    assert pages.run_differences(notebook, {"seeds": [0, 1], "datasets": ["mnist"]}) == []


def test_staged_chapter_has_the_banner_and_one_parameter_cell(tmp_path):
    path = _executed(tmp_path, {"seeds": [0, 1], "output_dir": "results/cpu/x"})
    differences = pages.stage_chapter(path, tmp_path / "staged.ipynb", "cpu", {})
    staged = nbformat.read(tmp_path / "staged.ipynb", 4)
    nbformat.validate(staged)
    assert differences == [("seeds", [0, 1], [0, 1, 2, 3, 4])]
    kinds = [(c.cell_type, c.metadata.get("tags", [])) for c in staged.cells]
    assert kinds == [("markdown", []), ("markdown", []), ("markdown", []), ("code", ["parameters"]), ("code", [])]
    banner = staged.cells[1].source
    assert banner.startswith(":::{admonition} What this copy ran") and "`cpu` profile" in banner
    assert "- `seeds`: this copy ran `0, 1`; the `paper` profile adds `2, 3, 4`." in banner
    assert "`cpu` profile's values written in" in staged.cells[2].source
    assert staged.cells[3].source.splitlines() == [
        "seeds: list[int] = [0, 1]  # cpu profile (paper: [0, 1, 2, 3, 4]); training seeds",
        'datasets = ["mnist", "cifar10"]',
        "k = 5000",
        'output_dir = "results/cpu/x"  # where this build writes',
    ]
    # The merged cell sets what the defaults and the injected cell set together.
    merged, together = {}, {}
    exec(staged.cells[3].source, merged)  # noqa: S102 -- literals written by the test
    exec(DEFAULTS + "\nseeds = [0, 1]\noutput_dir = 'results/cpu/x'", together)  # noqa: S102
    assert {k: merged[k] for k in ("seeds", "datasets", "k", "output_dir")} == {
        k: together[k] for k in ("seeds", "datasets", "k", "output_dir")
    }


def test_a_chapter_with_the_paper_settings_gets_no_banner(tmp_path):
    path = _executed(tmp_path, {"output_dir": "results/paper/x"})
    assert pages.stage_chapter(path, tmp_path / "staged.ipynb", "paper", {}) == []
    staged = nbformat.read(tmp_path / "staged.ipynb", 4)
    assert not any("What this copy ran" in c.source for c in staged.cells)
    assert pages.intro_banner("paper", {"09_chapter": []}) == ""


def test_intro_banner_groups_the_differences_over_chapters():
    seeds = ("seeds", [0, 1], [0, 1, 2, 3, 4])
    banner = pages.intro_banner("cpu", {"03_a": [seeds], "04_b": [seeds, ("backbone", "offline-cnn", "vit")]})
    assert "- `seeds`: this copy ran `0, 1`; the `paper` profile adds `2, 3, 4` (chapters 03, 04)." in banner
    assert "- `backbone`: this copy ran `offline-cnn`; the `paper` profile uses `vit` (chapter 04)." in banner


def test_the_staged_api_page_lists_every_chapter_module(tmp_path):
    from lhlib.build.pages import API_MARKER, stage_api

    root = Path(__file__).resolve().parents[2]
    api = tmp_path / "api.md"
    api.write_text((root / "book" / "api.md").read_text())
    stage_api(api, root)
    text = api.read_text()
    assert API_MARKER not in text
    for notebook in sorted((root / "notebooks").glob("*.ipynb")):
        assert f".. automodule:: lhlib.chapters.ch{notebook.stem}\n" in text
    api.write_text("# API\n")
    with pytest.raises(ValueError, match="chapter-modules"):
        stage_api(api, root)


def test_the_api_page_documents_every_engine_and_build_module():
    root = Path(__file__).resolve().parents[2]
    text = (root / "book" / "api.md").read_text()
    for layer in ("engine", "build"):
        for path in sorted((root / "lhlib" / layer).glob("*.py")):
            if path.name != "__init__.py":
                assert f".. automodule:: lhlib.{layer}.{path.stem}\n" in text, path
    assert ".. automodule:: lhlib.build.declarations\n" in text
