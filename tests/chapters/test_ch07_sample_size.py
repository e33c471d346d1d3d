"""Chapter 07: a papermill smoke run of the chapter (the engine's sample size is in tests/engine)."""

from __future__ import annotations

import math

import pytest


def test_chapter_07_smoke(run_chapter_smoke):
    summary = run_chapter_smoke("07_sample_size")
    assert summary["known_answer"]["extrapolated"] == pytest.approx(999.0)
    assert abs(summary["known_answer"]["measured"] - 999) <= 30
    configurations = summary["configurations"]
    assert {(c["hidden_size"], c["num_layers"]) for c in configurations} == {(4, 1), (8, 1), (8, 2)}
    for c in configurations:
        assert [r["epsilon"] for r in c["at_theta_hat"]] == [0.01, 0.001]
        for r in c["at_theta_hat"]:
            assert r["extrapolated"] > 0 and r["bound"] >= 1
            if r["reached"]:
                assert r["measured"] <= summary["settings"]["train_size"]
        # A smaller tolerance never needs fewer samples.
        assert c["at_theta_hat"][1]["extrapolated"] > c["at_theta_hat"][0]["extrapolated"]
        assert all(b["bound"] >= a["bound"] for a, b in zip(c["at_theta_hat"], c["in_ball"]))
    seeds = summary["settings"]["seeds"]
    assert len(configurations) == 3 * len(seeds) >= 6
    for row in summary["k_star_across_seeds"]:
        assert row["seeds"] == seeds and len(row["extrapolated"]) == len(seeds)
        assert set(row["kept_seeds"]) <= set(seeds)
        if len(row["kept_seeds"]) >= 2:  # over the seeds that did not collapse, on the log scale
            centre, (low, high) = row["extrapolated_geometric_mean_ci95"]
            assert 0 < low <= centre <= high
    recipe = summary["recipe"]
    assert recipe["dataset"] == "digits" and math.isfinite(recipe["extrapolated"])
