"""Papermill smoke runs of chapter 05: the offline backbone (the smoke profile), a tiny ViT checkpoint
through the real transformers path, and parameter validation before any work."""

from __future__ import annotations

import pytest
from conftest import check_configuration_row

CHAPTER = "05_feature_extraction"


def _check_common(summary: dict) -> dict:
    digits = summary["datasets"]["digits"]
    assert len(digits["configurations"]) == len(digits["direct_configurations"]) == 3
    for row in digits["configurations"] + digits["direct_configurations"]:
        assert all(level > 0 for level in row["levels"])
        check_configuration_row(row, summary["settings"]["seeds"])
    assert {t["panel"] for t in summary["ordering_tests"]} == {"hidden_size", "num_layers"}
    assert len(summary["ordering_tests"]) == len(summary["ordering_tests_pixels"]) == 4
    assert summary["findings"]["rgb_max_difference"] == 0
    assert digits["images_per_second"] > 0
    return digits


def test_smoke_offline_backbone(run_chapter_smoke):
    summary = run_chapter_smoke(CHAPTER)
    digits = _check_common(summary)
    assert summary["backbone"] == "offline-cnn" and digits["feature_dim"] == 768
    assert "NOT the paper's ViT" in digits["backbone_provenance"]
    assert "digits training images 400..1796" in digits["backbone_provenance"]


def test_smoke_tiny_vit_checkpoint(run_chapter_smoke, tiny_vit):
    summary = run_chapter_smoke(CHAPTER, backbone=str(tiny_vit))
    digits = _check_common(summary)
    assert digits["feature_dim"] == 32
    assert "pooler output" in digits["backbone_provenance"] and "seed 0" in digits["backbone_provenance"]


def test_bad_backbone_fails_before_any_work(run_chapter_smoke):
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="backbone must be 'offline-cnn'"):
        run_chapter_smoke(CHAPTER, backbone="vit-base")


def test_a_sweep_beside_itself_gives_unit_ratios_and_one_figure(toy_sweep):
    from lhlib.build.plotting import check_figure
    from lhlib.chapters.ch05_feature_extraction import paired_sweep_facts, plot_feature_vs_direct

    results, settings = toy_sweep
    # The same sweep as its own pixel twin: every ratio is one, every gap zero.
    paired = paired_sweep_facts({"toy": results}, {"toy": results})
    assert paired["n_networks"] == 9 and paired["exponent_gap_max"] == 0.0
    assert paired["level_ratio_median"] == 1.0 and paired["lower_with_features"].startswith("0 of")
    headings = {"first": "first dataset", "second": "second dataset"}
    both = {"first": results, "second": results}
    fig = plot_feature_vs_direct(both, both, settings, headings)
    assert len(fig.axes) == 8
    assert [block.get_suptitle() for block in fig.subfigs] == ["first dataset", "second dataset"]
    fig.draw_without_rendering()
    check_figure(fig, "sweep")


def test_a_pair_with_a_collapsed_network_on_either_side_is_left_out(collapsed_configuration):
    from lhlib.chapters.ch05_feature_extraction import paired_sweep_facts
    from lhlib.engine.sweep import combine_members

    members, result, settings = collapsed_configuration
    pixels = combine_members(4, 0, 2, [members[2], members[0], members[1], members[2]], settings)
    paired = paired_sweep_facts({"toy": {(4, 0): result}}, {"toy": {(4, 0): pixels}})
    assert paired["n_networks"] == 4 and paired["n_fitted_pairs"] == 1  # only seed 0 is kept on both sides
    assert paired["level_ratio_median"] == pytest.approx(members[0].level / members[2].level)
    assert paired["collapsed_counts"] == "2 of 4 feature heads and 1 of 4 pixel networks"
