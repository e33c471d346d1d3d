"""Chapter 03: its measurements against the engine, and a papermill smoke run of the chapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lhlib.chapters import ch03_hessian_in_practice as study
from lhlib.engine.data import load_dataset
from lhlib.engine.settings import check_sweep_settings


@pytest.fixture(scope="module")
def measured():
    data = {"digits": load_dataset("digits", 100)}
    # Five epochs at lr 3e-2: every network fits clearly better than the most frequent class (none collapsed).
    settings = check_sweep_settings(
        epochs=5,
        lr=3e-2,
        batch_size=64,
        hidden_sizes=[4, 8],
        num_layers=[0, 1],
        fixed_hidden_size=8,
        fixed_num_layers=0,
        seeds=[0, 1],
        device="cpu",
    )
    results = study.measure_networks(
        data, settings, full_samples=6, extreme_samples=2, top_k=2, tol=1e-3, seed=0, device=torch.device("cpu")
    )
    return data, settings, results


def test_every_configuration_is_measured_trained_and_at_initialisation(measured):
    _, settings, results = measured
    networks = results["digits"]
    assert set(networks) == {(4, 0), (8, 0), (8, 1)}
    for r in networks.values():
        assert r.net.seed == 0 and len(r.ggn_max_per_seed) == 2
        assert r.trained.ggn_norms.shape == r.initial.ggn_norms.shape == (100,)
        assert r.checks["corrected_per_sample"]["held_ggn"] and r.checks_init["corrected_per_sample"]["held_ggn"]
        assert r.ggn_max_per_seed[0] == pytest.approx(float(r.trained.ggn_norms.max()), rel=1e-5)
    assert 0 < study.lanczos_converged_fraction(results) <= 1
    header, rows = study.norms_table(networks)
    assert len(rows) == 3 and all(len(row) == len(header) for row in rows)
    record = study.configuration_record(networks[(8, 1)], (8, 1))
    assert record["weight_matrices"] == 3 and len(record["trained"]["top_eigenvalues_mean_hessian"]) == 2


def test_verdicts_and_facts(measured):
    data, settings, results = measured
    assert study.bound_verdict(results, "corrected_per_sample") == "held on every sample of every network"
    facts = study.bound_facts(results)
    assert facts["tight_corrected_per_sample_min"] >= 1 - 1e-5 and facts["M_W_min"] <= facts["M_W_max"]
    scaling, dead = study.scaling_across_seeds(results, settings)
    assert len(scaling["digits"]["h_slopes"]) == 2 and dead >= 0
    cited = study.scaling_facts(scaling, settings)
    assert cited["h_slope_law"] == 4 and cited["depth_factor_law"] == 64
    shares = study.hterm_shares(results)
    assert set(shares) == {("digits", "trained"), ("digits", "initial")} and len(shares[("digits", "trained")]) == 3
    names = {"digits": "Digits"}
    assert study.hterm_facts(results, shares, names)["hterm_share_trained_worst"].startswith("Digits with h = ")
    averaged = study.averaged_facts(results)
    # The averaged G-term's top eigenvalue is at most the mean, so at most the largest, per-sample norm.
    for r in results["digits"].values():
        assert r.trained.top_ggn[0] <= float(r.trained.ggn_norms.max()) * (1 + 1e-6)
    assert averaged["top_ratio_min"] <= averaged["top_ratio_max"]
    lemma = study.lemma_study(results, data, (8, 0), points=4, tol=1e-3, seed=0, device=torch.device("cpu"))
    assert len(lemma["digits"]["k"]) == len(lemma["digits"]["term"]) == len(lemma["digits"]["new_sample_norm"])
    facts = study.lemma_facts(lemma, results, (8, 0))
    assert facts["lemma_tail_min"] == facts["lemma_tail_max"] > 0  # one dataset: one tail


def test_measure_networks_refuses_a_seed_outside_the_sweep(measured):
    data, settings, _ = measured
    with pytest.raises(ValueError, match=r"^seed must be one of the sweep's seeds \[0, 1\], got 7$"):
        study.measure_networks(
            data, settings, full_samples=6, extreme_samples=2, top_k=2, tol=1e-3, seed=7, device=torch.device("cpu")
        )


def test_live_median_skips_samples_without_curvature():
    # torch's median of an even count is the lower middle value.
    assert study.live_median(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1.0, 1.0, 0.0])) == 1.0
    assert math.isnan(study.live_median(torch.ones(2), torch.zeros(2)))
    keys, xs, label = study.sweep_axis(check_sweep_settings(), "num_layers")
    assert np.array_equal(xs, np.array([1, 3, 5, 7, 10]) + 2) and "L = num_layers + 2" in label


def test_a_panel_is_hidden_size_or_num_layers():
    from lhlib.engine.sweep import panel_configurations

    with pytest.raises(ValueError, match="varying must be one of"):
        study.sweep_axis(check_sweep_settings(), "width")
    with pytest.raises(ValueError, match="varying must be one of"):
        panel_configurations({}, check_sweep_settings(), "depth")


def test_collapsed_networks_are_left_out_of_the_scaling_fits_and_counted(measured):
    import dataclasses

    _, settings, results = measured
    scaling, left_out = study.scaling_across_seeds(results, settings)
    assert not any(c for r in results["digits"].values() for c in r.collapsed_per_seed)
    networks = dict(results["digits"])
    networks[(4, 0)] = dataclasses.replace(networks[(4, 0)], collapsed_per_seed=[False, True])
    pruned, pruned_left_out = study.scaling_across_seeds({"digits": networks}, settings)
    assert pruned_left_out == left_out + 1
    # Seed 1 keeps one width only, so it has no width slope; seed 0's is unchanged, and one slope has no interval.
    assert pruned["digits"]["h_slopes"] == scaling["digits"]["h_slopes"][:1]
    assert np.isnan(pruned["digits"]["h_slope_ci95"][0])
    assert pruned["digits"]["depth_factors"] == scaling["digits"]["depth_factors"]
    # The factor is positive: its interval is on the log scale, around the geometric mean.
    low, high = scaling["digits"]["depth_factor_ci95"]
    assert 0 < low <= scaling["digits"]["depth_factor"] <= high


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
