"""The intro's findings are read from the chapters' summaries, and refused when they cannot be."""

import pytest

from lhlib.build import intro_findings


def test_the_table_escapes_markdown_and_links_every_chapter():
    rows = [{"claim": "a|b", "verdict": "fashion_mnist: *supported*", "evidence": "x", "chapters": ("04_direct",)}]
    table = intro_findings.findings_table(rows, "cpu").splitlines()
    assert table[0] == "| the paper's claim | verdict (this copy, `cpu` profile) | evidence | chapter |"
    assert table[2] == "| a\\|b | fashion\\_mnist: \\*supported\\* | x | {doc}`04 <../notebooks/04_direct>` |"


def test_every_claim_names_chapters_of_the_book():
    from lhlib.build.book import chapters

    known = set(chapters())
    assert all(set(f.chapters) <= known for f in intro_findings.FINDINGS)
    assert {c for f in intro_findings.FINDINGS for c in f.chapters} == known  # every chapter is cited


def test_staging_refuses_an_intro_without_its_marker_or_a_chapter_without_its_summary(tmp_path):
    intro = tmp_path / "intro.md"
    intro.write_text("# Intro\n\nno marker\n")
    with pytest.raises(ValueError, match="intro must hold a line '% findings'"):
        intro_findings.stage_intro(intro, tmp_path, "smoke", ["01_loss_difference"])
    intro.write_text(f"# Intro\n\n{intro_findings.MARKER}\n")
    with pytest.raises(FileNotFoundError, match="summary.json"):
        intro_findings.stage_intro(intro, tmp_path, "smoke", ["01_loss_difference"])
    assert intro.read_text() == f"# Intro\n\n{intro_findings.MARKER}\n"  # nothing written
