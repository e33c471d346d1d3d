import math

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
from lhlib.chapters.ch05_feature_extraction import paired_sweep_facts
from lhlib.engine.experiment import TrainedNetwork
from lhlib.engine.models import build_mlp
from lhlib.engine.seed_stats import family_verdicts
from lhlib.engine.settings import check_sweep_settings
from lhlib.engine.sweep import (
    combine_members,
    measure_member,
    ordering_table,
    ordering_tests,
    ordering_verdicts,
    run_sweep,
    summary_rows,
    sweep_table,
)


def _toy(n=240):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def test_sweep_reports_every_seed_and_tests_both_claims():
    x, y = _toy()
    settings = check_sweep_settings(  # trained long enough that the networks learn (collapsed ones are left out)
        epochs=5,
        lr=3e-2,
        batch_size=32,
        hidden_sizes=[3, 6],
        num_layers=[0, 1],
        fixed_hidden_size=6,
        fixed_num_layers=1,
        permutations=4,
        seeds=[0, 1, 2],
        device="cpu",
    )
    results = run_sweep(x, y, 4, settings)
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

    # The same sweep as its own pixel twin: every ratio is one, every gap zero.
    paired = paired_sweep_facts({"toy": results}, {"toy": results})
    assert paired["n_networks"] == 9 and paired["exponent_gap_max"] == 0.0
    assert paired["level_ratio_median"] == 1.0 and paired["lower_with_features"].startswith("0 of")

    # The paper's panel uses other sizes and 5 layers: no comparison, and the prose says so.
    figure = paper_values("figure4_fashion_mnist_hidden_size")
    assert compare_with_paper_figure(results, settings, figure) == []
    assert "skipped" in comparison_phrase([])

    # One figure for every dataset: a 2 x 2 block each, titled by its heading, and it passes the checks.
    from lhlib.build.plotting import check_figure, plot_sweep
    from lhlib.chapters.ch05_feature_extraction import plot_feature_vs_direct

    headings = {"first": "first dataset", "second": "second dataset"}
    for fig in (
        plot_sweep({"first": results, "second": results}, settings, headings),
        plot_feature_vs_direct(
            {"first": results, "second": results}, {"first": results, "second": results}, settings, headings
        ),
    ):
        assert len(fig.axes) == 8
        assert [block.get_suptitle() for block in fig.subfigs] == ["first dataset", "second dataset"]
        fig.draw_without_rendering()
        check_figure(fig, "sweep")


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


def test_a_dead_network_is_collapsed_and_has_no_exponent():
    settings = check_sweep_settings(permutations=4, seeds=[0, 1], fit_k_min=2)
    losses = torch.full((50,), math.log(10.0))
    dead = TrainedNetwork(0, build_mlp(4, 2, 0, 10, seed=0), losses, float(losses.mean()), 0.1, [2.3], False)
    member = measure_member(dead, settings, torch.arange(50) % 10, 10)
    assert member.collapsed and member.share_at_chance == 1.0
    assert member.fit is None and member.level == 0.0 and member.mean_abs_deviation == 0.0


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="seeds must list at least 2"):
        check_sweep_settings(seeds=[0])
    with pytest.raises(ValueError, match="collapse_share"):
        check_sweep_settings(collapse_share=0.0)
    with pytest.raises(ValueError, match="unknown sweep settings"):
        check_sweep_settings(seed=0)


def test_paper_values_carry_their_provenance():
    figure = paper_values("figure4_fashion_mnist_hidden_size")
    assert set(figure["values"]) == {"4", "8", "16", "32", "64"} and "PDF" in figure["provenance"]
    with pytest.raises(ValueError, match="name must be one of"):
        paper_values("figure9")


def test_a_collapsed_seed_is_left_out_of_every_statistic_and_counted():
    """Chapter 04's Fashion-MNIST h = 4, num_layers = 5: two of four seeds collapsed, and a Student-t interval on
    the levels reached below zero ([-0.042, 0.595] around 0.276). The level is positive: its interval is taken on
    the log scale, over the seeds that did not collapse."""
    settings = check_sweep_settings(permutations=30, seeds=[0, 1, 2, 3], fit_k_min=2)
    generator = torch.Generator().manual_seed(0)

    def member(seed, losses):
        network = TrainedNetwork(
            seed, build_mlp(4, 2, 0, 10, seed=seed), losses, float(losses.mean()), 0.5, [1.0], False
        )
        return measure_member(network, settings, torch.arange(60) % 10, 10)

    chance = math.log(10.0)
    collapsed = torch.full((60,), chance)
    collapsed[:25] = torch.rand(25, generator=generator)  # most losses at ln K, some learned: collapsed, yet fitted
    members = [member(0, torch.rand(60, generator=generator) * 3), member(1, collapsed),
               member(2, torch.rand(60, generator=generator) * 0.3), member(3, collapsed.clone())]  # fmt: skip
    assert [m.collapsed for m in members] == [False, True, False, True]
    assert members[1].fit is not None  # fitted, and still left out
    result = combine_members(4, 0, 2, members, settings)
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
    facts = sweep_facts({"toy": {(4, 0): result}})
    assert facts["n_collapsed"] == 2 and facts["n_fitted"] == 2
    assert facts["exponent_min"] == min(members[0].fit.exponent, members[2].fit.exponent)

    every_seed = combine_members(4, 0, 2, [members[1], members[3]], settings)  # both collapsed
    assert every_seed.kept == [] and np.isnan(every_seed.level) and np.isnan(every_seed.level_mean)
    assert sweep_table({(4, 0): every_seed})[1][0][-2:] == ["every seed collapsed", ""]

    # Chapter 05 pairs feature heads with pixel networks: a pair with a collapsed network on either side is out.
    pixels = combine_members(4, 0, 2, [members[2], members[0], members[1], members[2]], settings)
    paired = paired_sweep_facts({"toy": {(4, 0): result}}, {"toy": {(4, 0): pixels}})
    assert paired["n_networks"] == 4 and paired["n_fitted_pairs"] == 1  # only seed 0 is kept on both sides
    assert paired["level_ratio_median"] == pytest.approx(members[0].level / members[2].level)
    assert paired["collapsed_counts"] == "2 of 4 feature heads and 1 of 4 pixel networks"
