"""Chapter 06: its ball study, and papermill smoke runs of the chapter."""

from __future__ import annotations

import math

import numpy as np
import papermill
import pytest
import torch

from lhlib.chapters.ch06_convergence_in_a_ball import (
    KINDS,
    ball_facts,
    ball_networks,
    ball_records,
    gaussian_facts,
    gaussian_records,
    gaussian_study,
    gradient_facts,
    gradient_study,
    growth_slopes,
    measure_balls,
    network_records,
    network_table,
    reference_table,
    slice_facts,
)
from lhlib.engine.ball import LossSlice
from lhlib.engine.data import load_dataset
from lhlib.engine.per_sample import per_sample_ggn_norms


@pytest.fixture(scope="module")
def study():
    data = {"digits": load_dataset("digits", 300)}
    cpu = torch.device("cpu")
    # Five epochs at lr 3e-2: both seeds fit clearly better than the most frequent class, so neither collapsed.
    networks, across, collapsed = ball_networks(
        data, [(4, 1)], seeds=[0, 1], epochs=5, batch_size=64, lr=3e-2, device=cpu
    )
    radii = [0.01, 0.1, 1.0]
    common = dict(eigen_samples=40, ascent_samples=40, ascent_steps=2, permutations=4, fit_k_min=5, seed=0)
    balls = measure_balls(networks, data, radii, device=cpu, **common)
    return data, networks, across, balls, radii, collapsed


def test_constants_and_balls_of_every_network(study):
    data, networks, across, balls, radii, collapsed = study
    key = ("digits", 4, 1)
    v = networks[key]
    assert [w.net.seed for w in across[key]] == [0, 1] and across[key][0] is v
    assert v.M_l == float(v.net.losses.max())
    assert v.M_H == pytest.approx(float(per_sample_ggn_norms(v.model, data["digits"].x).max()))
    assert v.M_g > 0 and math.isnan(across[key][1].M_g)  # per-sample gradients: the first seed only
    assert v.top_eigenvalue > 0 and [p.kind for p in balls[key].points] == [k for k in KINDS for _ in radii]
    header, rows = network_table(networks, across, collapsed)
    assert len(rows) == 1 and len(rows[0]) == len(header)


def test_records_and_facts_agree_with_the_lemma(study):
    _, networks, across, balls, radii, collapsed = study
    key = ("digits", 4, 1)
    records = ball_records(balls, networks, radii)
    assert len(records) == len(KINDS) * len(radii)
    v = networks[key]
    for r in records:
        assert r["bound_constant"] == pytest.approx(2 * (v.M_l + v.M_H * r["radius"] ** 2))
        assert r["held_every_order"] == (r["loss_range"] <= r["bound_constant"])
    facts = ball_facts(records, networks, balls, key, radii)
    assert facts["n_points"] == len(records) and facts["small_R"] == 0.01 and facts["large_R"] == 1.0
    assert facts["ratio_min"] == min(r["ratio_tightest"] for r in records)
    header, rows = reference_table(balls[key], v)
    assert len(rows) == len(records) and len(rows[0]) == len(header)
    summary = network_records(networks, across, balls, collapsed)
    assert summary["networks"][0]["C0"] == balls[key].base.tail_constant
    assert summary["networks_across_seeds"][0]["seeds"] == [0, 1] and collapsed == {key: []}
    assert summary["networks_across_seeds"][0]["collapsed_seeds"] == []
    assert network_table(networks, across, collapsed)[0][3] == "collapsed seeds (left out)"


def test_growth_slopes_read_a_quadratic_rise():
    class Point:
        def __init__(self, kind, radius, constant):
            self.kind, self.radius, self.tail_constant = kind, radius, constant

    radii = np.geomspace(0.01, 1, 6)
    base = Point("trained point", 0.0, 1.0)
    ball = type("B", (), {"base": base, "points": [Point("isotropic", r, 1.0 + 3 * r**2) for r in radii]})()
    slopes = growth_slopes(ball, "isotropic")
    assert slopes["all"] == pytest.approx(2.0) and slopes["small_R"] == pytest.approx(2.0)


def test_gradient_and_gaussian_studies(study):
    data, networks, _, _, _, _ = study
    v, d = networks[("digits", 4, 1)], data["digits"]
    gradient = gradient_study(v, d, points=6, orders=3, seed=5, device=torch.device("cpu"))
    assert gradient["norms"].shape == (3, len(gradient["ks"])) and gradient["ks"][-1] == data["digits"].x.shape[0]
    # At k = N every order holds all samples: the norm is the full-batch gradient's.
    assert np.allclose(gradient["norms"][:, -1], v.grads.full_norm, rtol=1e-4)
    facts = gradient_facts({"digits": gradient}, v)
    assert facts["grad_sample_rms"] >= facts["grad_full_norm"]
    ks, balls = gaussian_study(
        v, d, [0.01, 0.05], k_points=3, orders=2, samples=4, probes=2, seed=0, device=torch.device("cpu")
    )
    facts = gaussian_facts(ks, balls)
    records = gaussian_records(ks, balls)
    assert facts["gauss_rel_error_small"] == records[0]["relative_error"] and len(records) == 2


def test_slice_facts_measure_the_largest_difference():
    losses = np.arange(9.0).reshape(3, 3)
    values = np.stack([np.stack([losses, losses + 0.5]), np.stack([losses, losses.copy()])])
    values[1, 1, 1, 1] += 0.05  # the large k: a difference at the centre only
    facts = slice_facts(LossSlice(np.linspace(-1, 1, 3), np.linspace(-1, 1, 3), [10, 1000], values))
    assert facts["slice_diff_small"] == 0.5 and facts["slice_diff_large"] == pytest.approx(0.05)
    assert facts["slice_diff_ratio"] == pytest.approx(10.0) and facts["slice_centre_fraction"] == 1.0
    assert facts["slice_k_ratio"] == pytest.approx(1001 / 11)


def test_a_collapsed_seed_is_left_out_of_the_constants_and_counted(monkeypatch):
    """Seed 0 collapses: the network measured in full is seed 1's, and seed 0 is counted, not measured."""
    import dataclasses

    from lhlib.chapters import ch06_convergence_in_a_ball as ch06

    data = {"digits": load_dataset("digits", 60)}
    original = ch06.trained_networks

    def trained_networks(*args, **options):
        # Seed 0 dead (every loss at ln K), the others fitted well: what collapses is set here, not by training.
        ensemble = [dataclasses.replace(m, train_accuracy=0.9) for m in original(*args, **options)]
        dead = torch.full_like(ensemble[0].losses, math.log(10.0))
        return [dataclasses.replace(ensemble[0], losses=dead), *ensemble[1:]]

    monkeypatch.setattr(ch06, "trained_networks", trained_networks)
    cpu = torch.device("cpu")
    networks, across, collapsed = ball_networks(data, [(4, 1)], seeds=[0, 1, 2], epochs=1, batch_size=32, lr=1e-3,
                                                device=cpu)  # fmt: skip
    key = ("digits", 4, 1)
    assert collapsed == {key: [0]} and networks[key].net.seed == 1
    assert [w.net.seed for w in across[key]] == [1, 2]
    header, rows = network_table(networks, across, collapsed)
    assert rows[0][3] == 1

    # Every seed of a configuration collapses: it is left out whole and counted; of the reference, refused.
    def every_seed_collapses(*args, hidden_size, **options):
        ensemble = [
            dataclasses.replace(m, train_accuracy=0.9) for m in original(*args, hidden_size=hidden_size, **options)
        ]
        if hidden_size == 2:
            return [dataclasses.replace(m, losses=torch.full_like(m.losses, math.log(10.0))) for m in ensemble]
        return ensemble

    monkeypatch.setattr(ch06, "trained_networks", every_seed_collapses)
    common = dict(seeds=[0, 1], epochs=1, batch_size=32, lr=1e-3, device=cpu)
    networks, across, collapsed = ball_networks(data, [(4, 1), (2, 1)], **common)
    assert list(networks) == [key] and collapsed[("digits", 2, 1)] == [0, 1]
    header, rows = network_table(networks, across, collapsed)
    assert rows[1][:5] == ["digits", 2, 1, 2, "every seed collapsed"] and len(rows[1]) == len(header)
    with pytest.raises(ValueError, match="every seed of the reference configuration collapsed on digits"):
        ball_networks(data, [(2, 1), (4, 1)], **common)


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
