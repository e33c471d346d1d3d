"""Chapter 01: its module against dense ground truth, and a papermill smoke run of the chapter."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import assert_glue_complete

from lhlib.chapters.ch01_loss_difference import (
    first_relu_change,
    fitted_order,
    identity_error,
    rounding_floor,
    taylor_check,
    taylor_facts,
    triangle_split,
)
from lhlib.engine.ball import isotropic_direction
from lhlib.engine.models import build_mlp
from lhlib.engine.parameters import weight_list
from lhlib.engine.tangents import forward_factors


def _problem(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return build_mlp(5, 6, 1, 3, seed=0), x, torch.randint(0, 3, (n,), generator=g)


def test_identity_error_is_rounding_for_rows_and_single_networks():
    losses = torch.rand(3, 500, generator=torch.Generator().manual_seed(1))
    assert identity_error(losses) < 1e-15 and identity_error(losses[0]) < 1e-15


def test_first_relu_change_is_the_last_radius_with_every_mask_unchanged():
    model, x, _ = _problem()
    direction = isotropic_direction(model, 3).double()
    radii = torch.logspace(-4, 1, 30, dtype=torch.float64)
    kink = first_relu_change(model, x, direction, radii)
    weights, pieces = weight_list(model), direction.split([w.numel() for w in weight_list(model)])
    base = forward_factors(weights, x).masks

    def same(r):
        moved = [w + r * d.reshape(w.shape) for w, d in zip(weights, pieces)]
        return all(torch.equal(a, b) for a, b in zip(base, forward_factors(moved, x).masks))

    assert 0 < kink < float(radii[-1]) and same(kink)
    assert not same(float(radii[radii > kink][0]))


def test_fitted_order_reads_a_power_law_and_refuses_the_rounding_floor():
    radii = torch.logspace(-6, 0, 25, dtype=torch.float64)
    error = torch.stack([2.0 * radii**2, 3.0 * radii**2])
    assert fitted_order(error, radii, 1.0, 1e-30) == pytest.approx(2.0)
    assert math.isnan(fitted_order(error, radii, 1.0, 10.0))  # nothing above the floor
    assert rounding_floor(torch.tensor([1.0, 4.0, 100.0]), 1) == pytest.approx(1e2 * 2.220446049250313e-16 * 4.0 / 2)


def test_taylor_check_orders_and_splits_on_a_small_network():
    model, x, y = _problem(60)
    radii = torch.logspace(-5, 0, 16, dtype=torch.float64)
    check = taylor_check(model, x, y, 30, radii, directions=2, seed=0)
    assert set(check.errors) == {"second order (SymPy)", "paper's coefficient", "Assumption 1 (no gradient)"}
    assert all(e.shape == (2, 16) for e in check.errors.values()) and len(check.kinks) == 2
    facts = taylor_facts(check, floor=1e-16)
    # Inside one activation region: errors of order 3 (SymPy), 2 (the paper's coefficient), 1 (no gradient).
    for name, order in (("order_second", 3), ("order_paper", 2), ("order_assumption", 1)):
        assert abs(facts[name] - order) < 0.25, name
    assert facts["second_max_error"] < 1e-3 * facts["value_scale"]
    split, curves = triangle_split(check, delta_h=1.0, k=30)
    assert split["derived_split_held_fraction_smooth"] == 1.0
    assert torch.all(curves["derived"] >= abs(split["value_term"]))
    assert 0 <= split["paper_split_held_fraction"] <= 1


ROOT = Path(__file__).resolve().parents[2]


def test_chapter_01_smoke(run_chapter_smoke, tmp_path):
    summary = run_chapter_smoke("01_loss_difference")
    assert_glue_complete(tmp_path / "01_loss_difference.ipynb")
    findings = summary["findings"]
    assert findings["identity_error"] < 1e-12
    assert findings["n_seeds"] + findings["collapsed_seeds"] == len(summary["parameters"]["seeds"])
    assert summary["coefficients"]["hessian_sympy"] == "1/(2*k + 2)"
    assert summary["coefficients"]["hessian_paper"] == "1/(k + 1)"
    # fitted error orders inside the smooth region ("nan" when too few radii rise above rounding)
    for name, expected in (("order_assumption", 1), ("order_paper", 2)):
        if findings[name] != "nan":
            assert abs(findings[name] - expected) < 0.2
    assert findings["order_assumption"] != "nan"
    assert findings["second_max_error"] < 1e-6 * findings["value_scale"]  # third order: far below the value
    assert findings["derived_split_held_fraction_smooth"] == 1.0
