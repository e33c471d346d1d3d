import math

import numpy as np
import pytest
import torch
from conftest import check_configuration_row

from lhlib.engine.experiment import TrainedNetwork
from lhlib.engine.models import build_mlp
from lhlib.engine.seed_stats import family_verdicts
from lhlib.engine.settings import SweepSettings, check_sweep_settings
from lhlib.engine.sweep import (
    combine_members,
    measure_member,
    ordering_table,
    ordering_tests,
    ordering_verdicts,
    summary_rows,
    sweep_table,
)


def _toy(n=240):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def test_sweep_reports_every_seed_and_tests_both_claims(toy_sweep):
    results, settings = toy_sweep
    assert set(results) == {(3, 1), (6, 1), (6, 0)}
    for r in results.values():
        assert r.seeds == [0, 1, 2]
        np.testing.assert_allclose(r.level, r.level_mean)  # the level is linear in the curve
        assert np.all(r.seed_low <= r.live_mean + 1e-15) and np.all(r.live_mean <= r.seed_high + 1e-15)
    rows = summary_rows(results)
    for row in rows:
        assert len(row["levels"]) == 3
        check_configuration_row(row, [0, 1, 2])
    tests = ordering_tests(results, settings, "toy", permutations=50)
    assert [(t["panel"], t["excluding_collapsed"]) for t in tests] == [
        ("hidden_size", False),
        ("hidden_size", True),
        ("num_layers", False),
        ("num_layers", True),
    ]
    assert tests[0]["pairs"] == 6 and tests[0]["direction"] == "decreasing"
    header, rows = sweep_table(results)
    assert len(rows) == len(results) and all(len(row) == len(header) for row in rows)
    tests = family_verdicts(tests)
    header, rows = ordering_table(tests)
    assert len(rows) == len(tests) and all(len(row) == len(header) for row in rows)
    assert header[-1] == f"verdict (family-wise, p < {tests[0]['family_threshold']:.2g})"
    assert ordering_verdicts(tests, "hidden_size", False).startswith(f"toy: {tests[0]['verdict']} (rho ")


def test_a_dead_network_is_collapsed_and_has_no_exponent():
    settings = check_sweep_settings(permutations=4, seeds=[0, 1], fit_k_min=2)
    losses = torch.full((50,), math.log(10.0))
    dead = TrainedNetwork(0, build_mlp(4, 2, 0, 10, seed=0), losses, float(losses.mean()), 0.1, [2.3], False)
    member = measure_member(dead, settings, torch.arange(50) % 10, 10)
    assert member.collapsed and member.share_at_chance == 1.0
    assert member.fit is None and member.level == 0.0 and member.mean_abs_deviation == 0.0


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="seeds must hold 2 to 64 entries"):
        check_sweep_settings(seeds=[0])
    with pytest.raises(ValueError, match="collapse_share"):
        check_sweep_settings(collapse_share=0.0)
    with pytest.raises(ValueError, match="unknown sweep settings"):
        check_sweep_settings(seed=0)


def test_a_collapsed_seed_is_left_out_of_every_statistic_and_counted(collapsed_configuration):
    """Chapter 04's Fashion-MNIST h = 4, num_layers = 5: two of four seeds collapsed, and a Student-t interval on
    the levels reached below zero ([-0.042, 0.595] around 0.276). The level is positive: its interval is taken on
    the log scale, over the seeds that did not collapse."""
    members, result, settings = collapsed_configuration
    assert [m.collapsed for m in members] == [False, True, False, True]
    assert members[1].fit is not None  # fitted, and still left out
    assert result.collapsed_seeds == 2 and [m.seed for m in result.kept] == [0, 2]
    kept_levels = [members[0].level, members[2].level]
    assert result.level_mean == pytest.approx(np.mean(kept_levels))
    assert result.level_geometric_mean == pytest.approx(math.sqrt(kept_levels[0] * kept_levels[1]))
    low, high = result.level_ci95
    assert 0 < low < result.level_geometric_mean < high
    assert result.rate_exponent == pytest.approx(np.mean([members[0].fit.exponent, members[2].fit.exponent]))
    np.testing.assert_allclose(result.live_mean, (members[0].mean + members[2].mean) / 2)
    np.testing.assert_allclose(result.level, result.level_mean)
    row = summary_rows({(4, 0): result})[0]
    assert row["kept_seeds"] == [0, 2] and row["collapsed_seeds"] == 2 and len(row["levels"]) == 4

    # The trend tests "excluding collapsed" leave out the collapsed seeds, fitted or not.
    one_configuration = SweepSettings(hidden_sizes=(4,), num_layers=(0,), fixed_hidden_size=4, fixed_num_layers=0)
    tests = ordering_tests({(4, 0): result}, one_configuration, "toy", permutations=10)
    assert [(t["excluding_collapsed"], t["pairs"]) for t in tests] == [(False, 4), (True, 2)] * 2

    every_seed = combine_members(4, 0, 2, [members[1], members[3]], settings)  # both collapsed
    assert every_seed.kept == [] and np.isnan(every_seed.level) and np.isnan(every_seed.level_mean)
    assert sweep_table({(4, 0): every_seed})[1][0][-2:] == ["every seed collapsed", ""]
