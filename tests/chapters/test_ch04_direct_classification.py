"""Chapter 04: its comparison with the paper's figures, and papermill smoke runs of the chapter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import check_configuration_row

from lhlib.chapters.ch04_direct_classification import (
    compare_with_paper_figure,
    comparison_phrase,
    comparison_table,
    hidden_size_peaks,
    identity_max_error,
    paper_values,
    sweep_facts,
)
from lhlib.engine.settings import check_sweep_settings
from lhlib.engine.sweep import (
    run_sweep,
)


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
    with pytest.raises(papermill.PapermillExecutionError, match="seeds must hold 2 to 64 entries"):
        run_chapter_smoke("04_direct_classification", seeds=[3])


def test_chapter_04_recomputes_damaged_store_entries(run_chapter_smoke, tmp_path, monkeypatch):
    """One flipped bit in every stored network and its per-sample losses: the next run discards and
    recomputes them, and the chapter's results equal those of the clean run."""
    monkeypatch.setenv("LHLIB_CACHE", str(tmp_path / "store-of-this-test"))
    clean = run_chapter_smoke("04_direct_classification", fresh=True)
    entries = sorted((tmp_path / "store-of-this-test" / "store").rglob("*.pt"))
    assert entries, "the chapter stores its networks"
    for entry in entries:
        data = bytearray(entry.read_bytes())
        data[len(data) // 2] ^= 0x01
        entry.write_bytes(bytes(data))
    again = run_chapter_smoke("04_direct_classification", fresh=True)
    assert again == clean
    executed = (tmp_path / "04_direct_classification.ipynb").read_text()
    assert executed.count("lhlib.engine.store: discarded the stored trained_network entry") == len(entries)


def _toy(n=240):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def test_the_identity_of_chapter_01_reproduces_the_curves():
    x, y = _toy(80)
    settings = check_sweep_settings(
        epochs=1, hidden_sizes=[4], num_layers=[0], fixed_hidden_size=4, fixed_num_layers=0, seeds=[0, 1]
    )
    member = run_sweep(x, y, 4, settings)[(4, 0)].members[1]
    assert identity_max_error(member, permutations=6) < 1e-12


def test_the_comparison_with_the_paper_reads_the_panel_at_its_k():
    figure = {"k": 3, "fixed_num_layers": 1, "values": {"2": 0.5, "4": 0.01}}

    class Curve:
        def __init__(self, level):
            self.smoothed = np.full(5, 1.0)  # every seed, collapsed ones included: not what is compared
            self.live_smoothed = np.full(5, level)  # the seeds that did not collapse
            self.smoothed_low, self.smoothed_high = self.live_smoothed / 2, self.live_smoothed * 2
            self.collapsed_seeds = 0

    sweep = {(2, 1): Curve(0.4), (4, 1): Curve(0.1)}
    settings = check_sweep_settings(hidden_sizes=[2, 4], num_layers=[1], fixed_hidden_size=2, fixed_num_layers=1)
    rows = compare_with_paper_figure(sweep, settings, figure)
    assert [r["paper"] for r in rows] == [0.5, 0.01] and rows[0]["mean_over_seeds"] == 0.4
    assert comparison_phrase(rows).endswith("for 1 of 2 hidden sizes, and the lowest mean curve here is h = 4")
    header, table = comparison_table(rows)
    assert table[1][1] == "1.00e-02" and len(header) == len(table[1])
    too_short = {**figure, "k": 6}  # a curve of 5 points has no k = 6
    assert compare_with_paper_figure(sweep, settings, too_short) == []


def test_paper_values_carry_their_provenance():
    figure = paper_values("figure4_fashion_mnist_hidden_size")
    assert set(figure["values"]) == {"4", "8", "16", "32", "64"} and "PDF" in figure["provenance"]
    with pytest.raises(ValueError, match="name must be one of"):
        paper_values("figure9")


def test_the_chapters_facts_about_a_sweep(toy_sweep):
    results, settings = toy_sweep
    facts = sweep_facts({"toy": results})
    members = [m for r in results.values() for m in r.members]
    assert facts["n_networks"] == len(members) == 9 and facts["n_configurations"] == 3
    kept = [m for r in results.values() for m in r.kept]
    assert facts["n_fitted"] == len(kept) and facts["n_collapsed"] == sum(m.collapsed for m in members)
    assert facts["n_fitted"] + facts["n_collapsed"] + sum(m.fit is None and not m.collapsed for m in members) == 9
    fitted = [m.fit.exponent for m in kept]
    assert fitted and facts["exponent_min"] == min(fitted) and facts["exponent_max"] == max(fitted)
    live = [[m.level for m in r.members if not m.collapsed] for r in results.values()]
    assert facts["seed_level_spread_max"] == max(max(v) / min(v) for v in live if len(v) >= 2)
    assert hidden_size_peaks({"toy": results}, settings) in ("toy: h = 3", "toy: h = 6")
    # The paper's panel uses other sizes and 5 layers: no comparison, and the prose says so.
    figure = paper_values("figure4_fashion_mnist_hidden_size")
    assert compare_with_paper_figure(results, settings, figure) == []
    assert "skipped" in comparison_phrase([])


def test_the_facts_leave_a_collapsed_seed_out(collapsed_configuration):
    members, result, _ = collapsed_configuration
    facts = sweep_facts({"toy": {(4, 0): result}})
    assert facts["n_collapsed"] == 2 and facts["n_fitted"] == 2
    assert facts["exponent_min"] == min(members[0].fit.exponent, members[2].fit.exponent)
