"""Chapter 07: a papermill smoke run of the chapter (the engine's sample size is in tests/engine)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pytest

from lhlib.build.plotting import check_figure  # noqa: E402
from lhlib.engine.sample_size import sufficient_sample_size


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


def test_the_study_sizes_every_seed_of_every_configuration_and_checks_a_pilot():
    from lhlib.chapters.ch07_sample_size import (
        holdout_check,
        holdout_facts,
        nearest_tolerance,
        sample_size_facts,
        sample_size_study,
        sample_size_table,
        study_summary,
    )
    from lhlib.engine.data import load_dataset
    from lhlib.engine.settings import check_sweep_settings

    data = {"digits": load_dataset("digits", 300)}
    # Five epochs at lr 1e-2: every network fits better than the most frequent class (none collapsed).
    settings = check_sweep_settings(
        epochs=5,
        lr=1e-2,
        batch_size=32,
        hidden_sizes=[4, 8],
        num_layers=[1],
        fixed_hidden_size=8,
        fixed_num_layers=1,
        permutations=8,
        seeds=[0, 1],
        device="cpu",
    )
    epsilons = [1e-2, 1e-3]
    results = sample_size_study(data, settings, epsilons, bound_relative_radius=0.01, bootstrap=20, confidence=0.9)
    assert set(results) == {("digits", 4, 1), ("digits", 8, 1)}
    member = results[("digits", 8, 1)][1]
    assert member.seed == 1 and set(member.at_theta_hat) == set(member.in_ball) == set(epsilons)
    # The ball's constant is the largest per-sample G-term norm, and a ball never needs fewer objects.
    assert all(m.in_ball[e].bound >= m.at_theta_hat[e].bound for ms in results.values() for m in ms for e in epsilons)
    assert member.in_ball[1e-3].hessian_bound == member.hessian_bound > 0
    direct = sufficient_sample_size(member.losses, 1e-3, permutations=8, seed=1, bootstrap=20, confidence=0.9)
    assert member.at_theta_hat[1e-3].extrapolated == direct.extrapolated
    assert member.at_theta_hat[1e-3].measured == direct.measured

    assert nearest_tolerance(epsilons, 2e-3) == 1e-3 and nearest_tolerance(epsilons, 5e-2) == 1e-2
    header, rows = sample_size_table(results, "digits", 1e-3)
    assert len(rows) == 2 and all(len(row) == len(header) for row in rows)
    facts = sample_size_facts(results, epsilons, 1e-3)
    extrapolated = {key: [m.at_theta_hat[1e-3].extrapolated for m in ms] for key, ms in results.items()}
    means = [np.mean(v) for v in extrapolated.values()]
    assert facts["architecture_spread"] == pytest.approx(max(means) / min(means))
    summary = study_summary(results, 1e-3)
    assert len(summary["configurations"]) == 4 and len(summary["k_star_across_seeds"]) == 2

    holdout = holdout_check(results, 100, epsilons, permutations=8, seed=0, bootstrap=20, confidence=0.9)
    assert all(h["seed"] == 0 and h["observed"] >= 10 for h in holdout)
    assert not any(m.collapsed for ms in results.values() for m in ms)

    # A collapsed seed is left out of every spread, mean, interval and check, and counted.
    import dataclasses

    first = results[("digits", 4, 1)][0]
    floor = {e: dataclasses.replace(s, extrapolated=1.0) for e, s in first.at_theta_hat.items()}
    collapsed = {**results, ("digits", 4, 1): [dataclasses.replace(first, collapsed=True, at_theta_hat=floor),
                                               results[("digits", 4, 1)][1]]}  # fmt: skip
    facts = sample_size_facts(collapsed, epsilons, 1e-3)
    kept = {key: [m.at_theta_hat[1e-3].extrapolated for m in ms if not m.collapsed] for key, ms in collapsed.items()}
    assert facts["collapsed_networks"] == "1 of 4"
    assert facts["architecture_spread"] == pytest.approx(
        max(map(np.mean, kept.values())) / min(map(np.mean, kept.values()))
    )
    assert facts["seed_spread_where"] == "digits, h = 8, num_layers = 1"  # the only configuration with two kept
    header, rows = sample_size_table(collapsed, "digits", 1e-3)
    assert header[2] == "collapsed seeds (left out)" and [row[2] for row in rows] == ["1 of 2", "0 of 2"]
    assert rows[0][5] == f"{kept[('digits', 4, 1)][0]:.0f}"  # one kept seed: its value, no interval
    holdout = holdout_check(collapsed, 100, epsilons, permutations=8, seed=0, bootstrap=20, confidence=0.9)
    assert {h["seed"] for h in holdout if h["hidden_size"] == 4} <= {1}
    across = study_summary(collapsed, 1e-3)["k_star_across_seeds"]
    assert across[0]["kept_seeds"] == [1] and across[0]["extrapolated_geometric_mean_ci95"] is None
    assert holdout_facts([])["holdout_cases"] == 0
    exact = [{"predicted": 100.0, "observed": 100, "predicted_ci": [90, 110]},
             {"predicted": 200.0, "observed": 100, "predicted_ci": [150, 250]}]  # fmt: skip
    facts = holdout_facts(exact)
    assert facts["holdout_max_error"] == pytest.approx(1.0) and facts["holdout_within_ci"] == 0.5


def test_a_collapsed_seed_is_left_out_and_counted():
    """A collapsed network's k* measures its dead units (and at its floor of 1 it is a clamp): drawn on the log
    axis, it would squash every real value."""
    from types import SimpleNamespace

    from lhlib.chapters.ch07_sample_size import plot_sample_size_vs_architecture
    from lhlib.engine.settings import check_sweep_settings

    settings = check_sweep_settings(hidden_sizes=[4, 8], num_layers=[1, 2], fixed_hidden_size=8, fixed_num_layers=1)

    def network(k_star, collapsed=False):
        size = SimpleNamespace(extrapolated=k_star, measured=k_star, reached=True)
        return SimpleNamespace(at_theta_hat={1e-3: size}, collapsed=collapsed)

    keys = {(4, 1), (8, 1), (8, 2)}
    # Every network at the floor, or without a finite k*, or collapsed: nothing to draw, and no log axis to break.
    for k_star, collapsed in ((1.0, False), (float("nan"), False), (500.0, True)):
        fig = plot_sample_size_vs_architecture(
            {("d", *key): [network(k_star, collapsed)] * 2 for key in keys}, settings, {"d": "digits"}, 1e-3
        )
        assert "6 collapsed network(s) left out" in fig.axes[1].get_legend().get_texts()[0].get_text()
        plt.close(fig)
    for odd in (network(1.0), network(20.0, collapsed=True)):
        results = {("d", *key): [odd if key == (4, 1) else network(3000.0), network(4000.0)] for key in keys}
        fig = plot_sample_size_vs_architecture(results, settings, {"d": "digits"}, 1e-3)
        drawn = np.concatenate([line.get_ydata() for ax in fig.axes for line in ax.get_lines()]).astype(float)
        assert np.nanmin(drawn) > 1000, "the collapsed seed must not be drawn"
        assert "1 collapsed network(s) left out" in fig.axes[1].get_legend().get_texts()[0].get_text()
    check_figure(fig, "sample_size_vs_architecture")
