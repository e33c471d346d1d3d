import math

import papermill
import pytest


def test_chapter_06_smoke(run_chapter_smoke):
    summary = run_chapter_smoke("06_convergence_in_a_ball")
    networks = summary["networks"]
    across = summary["networks_across_seeds"]
    assert {(n["hidden_size"], n["num_layers"]) for n in across} == {(8, 1), (4, 1)}
    # Every configuration with a seed that did not collapse is measured in full, the reference (8, 1) always.
    assert (
        {(n["hidden_size"], n["num_layers"]) for n in networks}
        == {(n["hidden_size"], n["num_layers"]) for n in across if n["seeds"]}
        >= {(8, 1)}
    )
    kinds = {"isotropic", "filter-normalised", "top eigenvector", "ascent"}
    points = summary["points"]
    assert len(points) == len(networks) * len(kinds) * len(summary["settings"]["relative_radii"])
    assert {p["kind"] for p in points} == kinds
    for p in points:
        if p["tail_constant"] > 0:  # a point where every loss is equal has a zero curve and no exponent
            low, high = p["exponent_ci"]
            assert low <= p["exponent"] <= high
        assert p["bound_constant"] > 0 and p["tail_constant"] >= 0
        assert p["max_scaled"] <= p["loss_range"] + 1e-9 <= p["max_loss"] + 1e-9
    for n in networks:
        assert n["weight_matrices"] == n["num_layers"] + 2
        assert n["grad_full_norm"] > 0 and n["M_H_max_ggn"] > 0
    seeds = summary["settings"]["seeds"]
    for row in across:
        assert sorted(row["seeds"] + row["collapsed_seeds"]) == seeds
        assert len(row["M_H"]) == len(row["seeds"]) and all(m > 0 for m in row["M_l"])
    gaussian = summary["gaussian"]
    assert len(gaussian) == 2 and all(len(g["monte_carlo"]) == len(g["ks"]) for g in gaussian)
    assert gaussian[0]["relative_error"] < 0.2
    assert all(d > 0 for d in summary["slice"]["max_abs_difference"])


def test_chapter_06_rejects_bad_parameters_before_work(run_chapter_smoke):
    with pytest.raises(papermill.PapermillExecutionError, match="configurations must be a list"):
        run_chapter_smoke("06_convergence_in_a_ball", configurations=[[0, 1]])


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
