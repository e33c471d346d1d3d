"""Chapter 03 runs end to end under the smoke profile and writes the summary the issue asks for."""

from __future__ import annotations

import math

FORMS = {"paper", "paper_per_sample", "corrected", "corrected_per_sample", "activation_per_sample"}


def test_chapter_03_smoke(run_chapter_smoke):
    summary = run_chapter_smoke("03_hessian_in_practice")
    dataset = summary["datasets"]["digits"]
    rows = dataset["configurations"]
    assert {(r["hidden_size"], r["num_layers"]) for r in rows} == {(4, 1), (8, 1), (8, 2)}
    for row in rows:
        assert row["weight_matrices"] == row["num_layers"] + 2
        assert row["M_W"] == max(row["layer_norms"]) > 0
        for stage in ("trained", "initialisation"):
            measured = row[stage]
            g = measured["ggn_norm"]
            assert g["count"] == summary["settings"]["train_size"]
            assert 0 <= g["min"] <= g["q50"] <= g["q90"] <= g["q99"] <= g["max"]
            assert measured["hessian_norm_random_subset"]["count"] == summary["settings"]["full_hessian_samples"]
            assert set(measured["held"]) == FORMS
            for form in FORMS:
                bound = measured["bounds"][form]
                assert isinstance(bound["held_ggn"], bool) and isinstance(bound["held_hessian"], bool)
                assert bound["held_ggn"] == (bound["violations_ggn"] == 0)
                assert bound["held_ggn"] == (bound["tightness_ggn"] >= 1 - 1e-5)
            # The corrected bound is a theorem for the G-term: it must hold on every sample.
            assert measured["bounds"]["corrected_per_sample"]["held_ggn"]
            assert measured["bounds"]["activation_per_sample"]["held_ggn"]
        top_h, top_g = row["trained"]["top_eigenvalues_mean_hessian"], row["trained"]["top_eigenvalues_mean_ggn"]
        assert len(top_h) == len(top_g) == summary["settings"]["top_k"]
        assert top_g[0] <= row["trained"]["ggn_norm"]["max"] * (1 + 1e-6)  # an average is bounded by its worst term
    lemma = dataset["lemma"]
    assert len(lemma["k"]) == len(lemma["term"]) >= 2
    assert all(value > 0 and math.isfinite(value) for value in lemma["term"])
    assert 0 < summary["lanczos_converged_fraction"] <= 1
    scaling = summary["scaling_across_seeds"]["digits"]
    seeds = summary["settings"]["seeds"]
    # One fit per seed with two points left in its panel (collapsed networks are left out of the fits).
    assert 1 <= len(scaling["h_slopes"]) <= len(seeds) and 1 <= len(scaling["depth_factors"]) <= len(seeds)
    if len(scaling["h_slopes"]) >= 2:
        low, high = scaling["h_slope_ci95"]
        assert low <= scaling["h_slope"] <= high


def test_chapter_03_rejects_bad_parameters_before_work(run_chapter_smoke):
    import papermill
    import pytest

    with pytest.raises(papermill.PapermillExecutionError, match="full_hessian_samples"):
        run_chapter_smoke("03_hessian_in_practice", full_hessian_samples=0)
