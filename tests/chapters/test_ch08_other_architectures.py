"""Chapter 08's experiment: size validation, training of every family through the results store,
per-network curvature, trend tests, and the chapter itself under the smoke profile."""

from __future__ import annotations

import pytest
import torch
from conftest import check_configuration_row

from lhlib.chapters.ch08_other_architectures import (
    conclusions_table,
    curvature_citations,
    curvature_facts,
    family_curvature,
    family_summary_rows,
    family_table,
    family_trend_tests,
    landscape_facts,
    network_curvature,
    panel_sizes,
    run_families,
    size_trend_tests,
    trend_citations,
)
from lhlib.engine.experiment import trained_networks
from lhlib.engine.seed_stats import family_verdicts
from lhlib.engine.settings import check_family_sizes, check_sweep_settings
from lhlib.engine.sweep import combine_members

CORRECTION_FIELDS = {"verdict_uncorrected", "attainable_p", "family_threshold", "family_size"}


IMAGE = (1, 8, 8)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(60, 64, generator=generator) * 2 - 1
    return x, (x[:, :32].sum(1) > x[:, 32:].sum(1)).long() + 2 * (x[:, 0] > 0).long()


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({}, "sizes must be a non-empty dict"),
        ({"rnn": [[4, 1]]}, "unknown family 'rnn'"),
        ({"cnn": []}, r"sizes\['cnn'\] must be a non-empty list"),
        ({"cnn": [[4]]}, r"must hold \[width, depth\] pairs of ints"),
        ({"cnn": [[4, 1.5]]}, r"must hold \[width, depth\] pairs of ints"),
        ({"cnn": [[4, 0]]}, r"needs width >= 1 and depth >= 1"),
        ({"vit": [[5, 1]]}, "widths must be even"),
        ({"mlp": [[4, 1], [4, 1]]}, "repeats a"),
    ],
)
def test_check_family_sizes_rejects_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        check_family_sizes(sizes)


def test_panels_vary_the_first_size_in_width_or_depth():
    pairs = check_family_sizes({"cnn": [[8, 2], [16, 2], [8, 3], [4, 2]]})["cnn"]
    assert panel_sizes(pairs, "width") == [(4, 2), (8, 2), (16, 2)]
    assert panel_sizes(pairs, "depth") == [(8, 2), (8, 3)]
    assert check_family_sizes({"mlp": [[4, 0]]}) == {"mlp": ((4, 0),)}


def test_trained_networks_of_other_families_are_stored_per_seed(images):
    x, y = images
    settings = {
        "num_classes": 4,
        "hidden_size": 4,
        "num_layers": 1,
        "epochs": 1,
        "batch_size": 16,
        "device": "cpu",
        "family": "cnn",
        "image_shape": IMAGE,
    }
    first = trained_networks(x, y, seeds=[0, 1], **settings)
    again = trained_networks(x, y, seeds=[1, 0, 2], **settings)
    assert [n.from_cache for n in again] == [True, True, False]
    assert torch.equal(again[1].losses, first[0].losses)
    assert torch.equal(again[1].model.head.weight, first[0].model.head.weight)
    assert not torch.equal(first[0].losses, first[1].losses)
    with pytest.raises(ValueError, match="image_shape .* is needed for family = 'cnn'"):
        trained_networks(x, y, seeds=[0, 1], **{**settings, "image_shape": None})
    with pytest.raises(ValueError, match="image_shape must be .* with 64 entries"):
        trained_networks(x, y, seeds=[0, 1], **{**settings, "image_shape": (1, 4, 4)})


def test_run_families_and_curvature_on_every_family(images):
    x, y = images
    sizes = check_family_sizes({"mlp": [[4, 1], [8, 1]], "cnn": [[2, 1], [2, 2]], "vit": [[4, 1]]})
    # Ten epochs at lr 3e-2: the MLPs and CNNs learn, so none of them collapsed.
    settings = check_sweep_settings(epochs=10, lr=3e-2, batch_size=16, permutations=4, seeds=[0, 1], device="cpu")
    results = run_families(x, y, 4, IMAGE, sizes, settings)
    assert list(results) == [("mlp", 4, 1), ("mlp", 8, 1), ("cnn", 2, 1), ("cnn", 2, 2), ("vit", 4, 1)]
    assert results[("cnn", 2, 2)].curves.weight_matrices == 3
    assert results[("mlp", 8, 1)].parameters == 64 * 8 + 8 * 8 + 8 * 4
    curvature = family_curvature(results, x, y, samples=20, hessian_samples=3)
    for key, measured in curvature.items():
        assert [m.seed for m in measured] == [0, 1]
        for m in measured:
            assert m.ggn_norms.shape == m.jjt_norms.shape == (20,) and m.hessian_norms.shape == (3,)
            # ||J^T A J|| <= ||A|| ||J J^T|| with ||A|| <= 1/2; samples with J = 0 are left out of the ratio.
            assert (m.ggn_norms <= m.jjt_norms / 2 * (1 + 1e-9)).all()
            assert m.softmax_slack.numel() == int((m.jjt_norms > 0).sum()) and (m.softmax_slack <= 1 + 1e-9).all()
            assert m.hterm_norms.shape == (3,) and m.converged_hessian_ratios.numel() == int(m.hessian_converged.sum())
            assert (m.bound is None) == (key[0] == "vit")
            if m.bound is not None:
                assert (m.ggn_norms <= m.bound * (1 + 1e-9)).all()
    network = results[("cnn", 2, 1)].networks[0]
    assert network_curvature(network, x, y, samples=20, hessian_samples=3).from_cache
    with pytest.raises(ValueError, match="hessian_samples must be"):
        network_curvature(network, x, y, samples=20, hessian_samples=21)
    facts = curvature_facts({"data": results}, {"data": curvature})
    assert facts["cnn"]["bound_held"] == facts["cnn"]["bound_samples"] == 2 * 2 * 20  # two sizes, two seeds
    assert facts["cnn"]["max_deviation_from_relu"] < 1e-6 and facts["mlp"]["max_deviation_from_relu"] < 1e-6
    assert "bound_held" not in facts["vit"] and "max_deviation_from_relu" not in facts["vit"]
    assert 0 < facts["vit"]["softmax_slack"] <= 1
    landscape = landscape_facts({"data": results})
    assert landscape["mlp"]["networks"] == 4 and landscape["vit"]["networks"] == 2
    # A collapsed seed is left out of the landscape's ranges and of the family table, and counted.
    import dataclasses

    mlp = results[("mlp", 8, 1)]
    first = dataclasses.replace(mlp.curves.members[0], collapsed=True)
    pruned = combine_members(8, 1, 3, [first, *mlp.curves.members[1:]], settings)
    with_collapse = {**results, ("mlp", 8, 1): dataclasses.replace(mlp, curves=pruned)}
    pruned_facts = landscape_facts({"data": with_collapse})["mlp"]
    assert pruned_facts["collapsed"] == landscape["mlp"]["collapsed"] + (not mlp.curves.members[0].collapsed)
    assert pruned_facts["fitted"] == landscape["mlp"]["fitted"] - (
        first.fit is not None and not mlp.curves.members[0].collapsed
    )
    header, table = family_table(with_collapse)
    row = table[list(with_collapse).index(("mlp", 8, 1))]
    assert header[5] == "collapsed seeds (left out)" and row[5] == f"{pruned.collapsed_seeds} of 2"
    assert 0.5 < landscape["cnn"]["level_to_mad_range"][0] <= landscape["cnn"]["level_to_mad_range"][1] < 1.5
    rows = family_summary_rows(results, curvature)
    assert {r["family"] for r in rows} == {"mlp", "cnn", "vit"}
    assert all(len(r["ggn_norm_median"]) == 2 for r in rows)
    medians = {key: [float(m.ggn_norms.median()) for m in measured] for key, measured in curvature.items()}
    tests = size_trend_tests(medians, sizes, {"width": "increasing", "depth": "increasing"}, permutations=100)
    # The ViT has one size, so no panel of two; the MLP has no depth panel.
    assert [(t["family"], t["varying"]) for t in tests] == [("mlp", "width"), ("cnn", "depth")]
    assert all(t["pairs"] == 4 for t in tests)
    every = family_trend_tests({"data": results}, {"data": curvature}, sizes, permutations=100)
    flat = [t for kind in every.values() for t in kind]
    raw = [
        {k: v for k, v in t.items() if k not in CORRECTION_FIELDS} | {"verdict": t["verdict_uncorrected"]} for t in flat
    ]
    assert flat == family_verdicts(raw)  # all kinds, one family
    assert [{k: t[k] for k in tests[0] if k != "verdict"} for t in every["ggn"]] == [
        {k: v for k, v in t.items() if k != "verdict"} for t in tests
    ]
    assert [t["verdict_uncorrected"] for t in every["ggn"]] == [t["verdict"] for t in tests]
    assert {t["quantity"] for t in every["ggn"]} == {"median G-term norm"}
    assert [t["family"] for t in every["bound"]] == ["mlp"]  # the CNN's bound panel varies depth only
    cited = trend_citations(every, sizes)
    assert cited["vit_ggn_width"] == "not tested" and cited["mlp_ggn_width"].startswith("data: ")
    assert cited["n_trend_tests"] == sum(map(len, every.values()))
    assert cited["family_threshold"] == flat[0]["family_threshold"]
    assert cited["family_decided"] + cited["family_untestable"] <= cited["n_trend_tests"]
    assert curvature_citations(facts)["bound_verdict"] == "every sample lies within the layer-norm bound"
    header, rows = conclusions_table(landscape, facts, every)
    assert header[1:] == ["MLP (the paper's)", "CNN", "ViT"] and all(len(row) == 4 for row in rows)
    assert rows[4][3].startswith("none derived")  # no layer-norm bound for the ViT


def test_chapter_08_smoke(run_chapter_smoke):
    summary = run_chapter_smoke("08_other_architectures")
    seeds, samples = summary["settings"]["seeds"], summary["settings"]["curvature_samples"]
    rows = summary["datasets"]["digits"]["configurations"]
    assert {r["family"] for r in rows} == {"mlp", "cnn", "vit"} and len(rows) == 9
    for row in rows:
        assert row["seeds"] == seeds and len(row["ggn_norm_median"]) == len(seeds)
        check_configuration_row(row, seeds)
        assert all(value > 0 for value in row["ggn_norm_median"])
        if row["family"] == "vit":
            assert "bound_held" not in row
        else:
            assert row["bound_held"] == [samples] * len(seeds)
            for low, high in row["scaling_exponent_range"]:
                assert low == pytest.approx(2 * (row["linear_layers"] - 1)) == high
    assert {t["verdict"] for t in summary["trend_tests"]} <= {
        "supported",
        "not supported",
        "contradicted",
        "not testable",
        "not testable at this size",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sizes": {"rnn": [[4, 1]]}}, "unknown family 'rnn'"),
        ({"hessian_samples": 500}, "hessian_samples must be"),
        ({"scaling_factor": 1.0}, "scaling_factor must be at most 1/1.1 or at least 1.1"),
    ],
)
def test_chapter_08_rejects_bad_parameters_before_work(run_chapter_smoke, overrides, message):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match=message):
        run_chapter_smoke("08_other_architectures", **overrides)


def test_a_sample_counts_as_converged_only_when_both_lanczos_runs_converged(monkeypatch):
    """The full Hessian's run and the H-term's: a ratio is kept only where both converged."""
    from lhlib.chapters import ch08_other_architectures as chapter
    from lhlib.engine.architectures import build_network
    from lhlib.engine.spectral import HessianNorms

    flags = {"hessian": torch.tensor([True, False, True, True]), "hterm": torch.tensor([True, True, False, True])}

    def fake_norms(model, x, y, *, operator, **kwargs):
        ones = torch.ones(len(x))
        return HessianNorms(ones, -ones, ones, flags[operator], torch.full((len(x),), 3))

    monkeypatch.setattr(chapter, "per_sample_hessian_norms", fake_norms)
    model = build_network("cnn", (1, 8, 8), 2, 1, 10, seed=0)
    out = chapter._measure_curvature(model, torch.randn(6, 64), torch.arange(6), 4, 3.0, seed=0)
    assert out["hessian_converged"].tolist() == [True, False, False, True]
