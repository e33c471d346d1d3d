"""Chapter 03: its measurements against the engine, and a papermill smoke run of the chapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import spectral_norms

from lhlib.chapters import ch03_hessian_in_practice as hip
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


RTOL = 1e-6  # float64 against the dense ground truth


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


def test_curvature_measurements_and_cache(problem):
    model, x, y, dense_h, dense_g = problem
    first = hip.curvature_measurements(
        model, x, y, full_samples=3, extreme_samples=2, top_k=2, tol=1e-10, max_iter=200, eig_tol=1e-12, seed=0
    )
    assert not first.from_cache and first.random_count == 3 and first.full_index.numel() == 5
    torch.testing.assert_close(first.ggn_norms, spectral_norms(dense_g), rtol=RTOL, atol=0)
    rest = [i for i in range(len(x)) if i not in first.full_index[:3].tolist()]
    largest = sorted(rest, key=lambda i: -float(spectral_norms(dense_g[i : i + 1])))[:2]
    assert sorted(first.full_index[3:].tolist()) == sorted(largest)
    index = first.full_index
    torch.testing.assert_close(first.hessian["norms"], spectral_norms(dense_h[index]), rtol=RTOL, atol=0)
    torch.testing.assert_close(first.hterm["norms"], spectral_norms((dense_h - dense_g)[index]), rtol=RTOL, atol=0)
    assert first.top_hessian == pytest.approx(torch.linalg.eigvalsh(dense_h.mean(0)).flip(0)[:2].numpy(), rel=RTOL)
    again = hip.curvature_measurements(
        model, x, y, full_samples=3, extreme_samples=2, top_k=2, tol=1e-10, max_iter=200, eig_tol=1e-12, seed=0
    )
    assert again.from_cache
    torch.testing.assert_close(again.hessian["norms"], first.hessian["norms"])


def test_theorem1_checks_fields_and_validity(problem):
    model, x, _, dense_h, dense_g = problem
    ggn = spectral_norms(dense_g)
    index = torch.arange(len(x))
    checks = hip.theorem1_checks(model, x, ggn, index, spectral_norms(dense_h))
    assert set(checks) == set(hip.BOUND_FORMS)
    for form, check in checks.items():
        assert check["held_ggn"] == (check["violations_ggn"] == 0)
        assert check["held_ggn"] == (check["tightness_ggn"] >= 1 - 1e-5), form
    for form in ("corrected", "corrected_per_sample", "activation_per_sample"):  # valid bounds on the G-term
        assert checks[form]["held_ggn"]
    # A bound far below the measurements is reported as violated, not hidden.
    fake = hip.theorem1_checks(model, x, ggn * 1e12, index, spectral_norms(dense_h) * 1e12)
    assert not fake["paper"]["held_ggn"] and fake["paper"]["violations_ggn"] == len(x)
    # Samples with zero curvature hold trivially and do not enter the ratios.
    zero = ggn.clone()
    zero[0] = 0
    assert torch.isfinite(
        torch.tensor(hip.theorem1_checks(model, x, zero, index, spectral_norms(dense_h))["paper"]["median_ratio_ggn"])
    )


def test_quantile_summary():
    summary = hip.quantile_summary(torch.arange(101.0))
    assert summary == {"count": 101, "min": 0.0, "max": 100.0, "mean": 50.0, "q50": 50.0, "q90": 90.0, "q99": 99.0}
    assert hip.quantile_summary(torch.zeros(0)) == {"count": 0}


def test_a_damaged_curvature_entry_is_recomputed_to_the_same_numbers(problem, capsys):
    from lhlib.engine.store import cache_root

    model, x, y, _, _ = problem
    settings = {"full_samples": 3, "extreme_samples": 1, "top_k": 1, "tol": 1e-10, "max_iter": 200, "seed": 5}
    first = hip.curvature_measurements(model, x, y, **settings)
    entry = max((cache_root() / "store" / "curvature_measurements").glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x10
    entry.write_bytes(bytes(data))
    capsys.readouterr()
    again = hip.curvature_measurements(model, x, y, **settings)
    assert not again.from_cache and "discarded the stored curvature_measurements entry" in capsys.readouterr().err
    torch.testing.assert_close(again.hessian["norms"], first.hessian["norms"], rtol=0, atol=0)
    torch.testing.assert_close(again.ggn_norms, first.ggn_norms, rtol=0, atol=0)
