import math

import numpy as np
import pytest
import torch

from lhlib.experiment import TrainedNetwork
from lhlib.models import build_mlp
from lhlib.settings import check_sweep_settings
from lhlib.sweep import (
    measure_member,
    ordering_table,
    ordering_tests,
    paper_values,
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
    settings = check_sweep_settings(
        epochs=1,
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
        assert np.all(r.seed_low <= r.mean + 1e-15) and np.all(r.mean <= r.seed_high + 1e-15)
    rows = summary_rows(results)
    assert all(len(row["levels"]) == 3 and row["level_ci95"][0] <= row["level_mean"] for row in rows)
    tests = ordering_tests(results, settings, "toy", permutations=50)
    assert [(t["panel"], t["excluding_collapsed"]) for t in tests] == [
        ("hidden_size", False),
        ("hidden_size", True),
        ("num_layers", False),
        ("num_layers", True),
    ]
    assert tests[0]["pairs"] == 6 and tests[0]["direction"] == "decreasing"
    assert sweep_table(results).count("\n") == 1 + len(results)  # header, rule, one row each
    assert ordering_table(tests).count("\n") == 1 + len(tests)


def test_a_dead_network_is_collapsed_and_has_no_exponent():
    settings = check_sweep_settings(permutations=4, seeds=[0, 1], fit_k_min=2)
    losses = torch.full((50,), math.log(10.0))
    dead = TrainedNetwork(0, build_mlp(4, 2, 0, 10, seed=0), losses, float(losses.mean()), 0.1, [2.3], False)
    member = measure_member(dead, settings, 10)
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
