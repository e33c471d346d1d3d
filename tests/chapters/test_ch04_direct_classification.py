""""""

from __future__ import annotations

from conftest import check_configuration_row


def test_chapter_04_smoke(run_chapter_smoke):
    summary = run_chapter_smoke("04_direct_classification")
    seeds = summary["settings"]["seeds"]
    assert len(seeds) >= 2
    rows = summary["datasets"]["digits"]["configurations"]
    assert {(r["hidden_size"], r["num_layers"]) for r in rows} == {(4, 1), (8, 1), (8, 2)}
    for row in rows:
        assert row["weight_matrices"] == row["num_layers"] + 2
        assert row["seeds"] == seeds and len(row["accuracies"]) == len(row["levels"]) == len(seeds)
        check_configuration_row(row, seeds)
        assert all(0.0 <= a <= 1.0 for a in row["accuracies"])
    tests = summary["ordering_tests"]
    assert {(t["panel"], t["excluding_collapsed"]) for t in tests} == {
        (panel, excluding) for panel in ("hidden_size", "num_layers") for excluding in (False, True)
    }
    for t in tests:
        assert t["dataset"] == "digits"
        assert t["verdict"] in {
            "supported",
            "not supported",
            "contradicted",
            "not testable",
            "not testable at this size",
        }
        assert t["verdict_uncorrected"] == "not testable" or 0.0 < t["p_value"] <= 1.0
        assert t["family_size"] == len(tests)
    assert summary["findings"]["identity_max_error"] < 1e-12


def test_chapter_04_rejects_bad_parameters_before_work(run_chapter_smoke):
    import papermill
    import pytest

    with pytest.raises(papermill.PapermillExecutionError, match="datasets must be one of"):
        run_chapter_smoke("04_direct_classification", datasets=["svhn"])
    with pytest.raises(papermill.PapermillExecutionError, match="seeds must list at least 2"):
        run_chapter_smoke("04_direct_classification", seeds=[3])


def test_chapter_04_recomputes_damaged_store_entries(run_chapter_smoke, tmp_path, monkeypatch):
    """One flipped bit in every stored network and its per-sample losses: the next run discards and
    recomputes them, and the chapter's results equal those of the clean run."""
    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "store-of-this-test"))
    clean = run_chapter_smoke("04_direct_classification")
    entries = sorted((tmp_path / "store-of-this-test" / "store").rglob("*.pt"))
    assert entries, "the chapter stores its networks"
    for entry in entries:
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0x01
        entry.write_bytes(bytes(data))
    again = run_chapter_smoke("04_direct_classification")
    assert again == clean
    executed = (tmp_path / "04_direct_classification.ipynb").read_text()
    assert executed.count("lhlib.engine.store: discarded the stored trained_network entry") == len(entries)
