def test_chapter_04_smoke(run_chapter_smoke):
    summary = run_chapter_smoke("04_direct_classification")
    rows = summary["datasets"]["digits"]["configurations"]
    assert {(r["hidden_size"], r["num_layers"]) for r in rows} == {(4, 1), (8, 1), (8, 2)}
    for row in rows:
        assert row["weight_matrices"] == row["num_layers"] + 2
        low, high = row["rate_exponent_ci"]
        assert low <= row["rate_exponent"] <= high
        assert 0.0 <= row["train_accuracy"] <= 1.0 and row["final_abs_diff"] > 0
    assert summary["checks"]["identity_max_error"] < 1e-12


def test_chapter_04_rejects_bad_parameters_before_work(run_chapter_smoke):
    import papermill
    import pytest

    with pytest.raises(papermill.PapermillExecutionError, match="datasets must be one of"):
        run_chapter_smoke("04_direct_classification", datasets=["svhn"])
