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
