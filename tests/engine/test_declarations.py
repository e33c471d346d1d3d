"""Parameters declared once: types, bounds (numbers and expressions), lists, unknown names, the cell."""

from __future__ import annotations

import ast
import math

import pytest

from lhlib.engine.declarations import Parameter, check_parameters, check_value, matches_type, parameters_cell

TRAIN_SIZE = Parameter("train_size", "int", 100, "images", 3, 60000)
K = Parameter("k", "int", 50, "objects compared", 1, "train_size - 1")
RADII = Parameter("radii", "list[float]", [0.1, 1.0], "radii", 0.0, 10.0, above=True, order="ascending")


def test_types_match_as_json_carries_them():
    assert matches_type(3, "int") and not matches_type(True, "int") and not matches_type(3.0, "int")
    assert matches_type(3, "float") and not matches_type("3", "float")
    assert matches_type([[1, 2]], "list[list[int]]") and not matches_type([[1, 2.5]], "list[list[int]]")
    assert matches_type({"cnn": [[4, 1]]}, "dict[str, list[list[int]]]") and not matches_type(
        {"cnn": [4]}, "dict[str, list[list[int]]]"
    )
    assert not matches_type("[1]", "list[int]") and matches_type((1, 2), "list[int]")


def test_a_bound_may_be_an_expression_and_the_message_shows_it():
    assert check_value(K, 99, {"train_size": 100}) == 99
    with pytest.raises(ValueError, match=r"^k must be an integer in \[1, 99 \(train_size - 1\)\], got 100$"):
        check_value(K, 100, {"train_size": 100})
    for expression in ("__import__('os')", "train_size ** 2", "train_size.bit_length()", "unknown + 1"):
        with pytest.raises(ValueError, match="a bound may use"):
            check_value(K.but(maximum=expression), 1, {"train_size": 100})


def test_numbers_are_refused_outside_their_interval_and_when_not_finite():
    lr = Parameter("lr", "float", 1e-3, "step", 0.0, 10.0, above=True)
    assert check_value(lr, 1, {}) == 1.0 and isinstance(check_value(lr, 1, {}), float)
    for bad in (0.0, -1.0, 10.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^lr must be a number in \(0.0, 10.0\], got"):
            check_value(lr, bad, {})
    ema = Parameter("ema", "float", 0.99, "smoothing", 0.0, 1.0, below=True)
    assert check_value(ema, 0.0, {}) == 0.0
    with pytest.raises(ValueError, match=r"^ema must be a number in \[0.0, 1.0\), got 1.0"):
        check_value(ema, 1.0, {})
    with pytest.raises(ValueError, match="^train_size must be an integer, got True"):
        check_value(TRAIN_SIZE, True, {})


def test_lists_are_bounded_in_length_and_entries_distinct_and_come_back_ordered():
    assert check_value(RADII, [1, 0.1], {}) == [0.1, 1.0]
    assert check_value(RADII, "[1, 0.5]", {}) == [0.5, 1.0]  # papermill's -p passes a list as its text
    with pytest.raises(ValueError, match=r"^radii must hold 1 to 64 entries, got 0"):
        check_value(RADII, [], {})
    with pytest.raises(ValueError, match=r"^radii must not repeat entries"):
        check_value(RADII, [0.1, 0.1], {})
    with pytest.raises(ValueError, match=r"^radii must be a list of numbers in \(0.0, 10.0\], got \[0.1, nan\]"):
        check_value(RADII, [0.1, math.nan], {})
    with pytest.raises(ValueError, match=r"^radii must be a list of numbers, got '\[1, '"):
        check_value(RADII, "[1, ", {})


def test_a_declared_check_gets_the_values_before_it():
    def below_train_size(name, value, values):
        if value >= values["train_size"]:
            raise ValueError(f"{name} must be below train_size")
        return value * 2

    doubled = Parameter("n", "int", 1, "n", 0, 10**6, check=below_train_size)
    assert check_parameters([TRAIN_SIZE, doubled], {"train_size": 10, "n": 4}) == {"train_size": 10, "n": 8}
    with pytest.raises(ValueError, match="^n must be below train_size"):
        check_parameters([TRAIN_SIZE, doubled], {"train_size": 10, "n": 10})


def test_relations_run_after_every_parameter_is_checked():
    def k_even(values):
        if values["k"] % 2:
            raise ValueError(f"k must be even, got {values['k']}")

    assert check_parameters([TRAIN_SIZE, K], {"train_size": 10, "k": 4}, [k_even]) == {"train_size": 10, "k": 4}
    with pytest.raises(ValueError, match="^k must be even"):
        check_parameters([TRAIN_SIZE, K], {"train_size": 10, "k": 3}, [k_even])


def test_a_name_papermill_injected_that_is_not_declared_is_refused_with_the_closest():
    history = ["", "train_size: int = 100\nk: int = 50", "# Parameters\nk = 7\ntrain_sise = 1\n", "check()"]
    namespace = {"train_size": 100, "k": 7, "train_sise": 1, "In": history}
    with pytest.raises(ValueError, match="^train_sise is not a parameter of this chapter; did you mean train_size\\?$"):
        check_parameters([TRAIN_SIZE, K], namespace)
    with pytest.raises(ValueError, match="^zzz is not a parameter of this chapter; the chapter has train_size, k$"):
        check_parameters([TRAIN_SIZE, K], {"train_size": 100, "k": 7}, submitted=["zzz"])
    # Run again later in an interactive session, the cell before is not papermill's: nothing is refused.
    rerun = {**namespace, "In": ["", "train_sise = 1", "check()"]}
    assert check_parameters([TRAIN_SIZE, K], rerun) == {"train_size": 100, "k": 7}


def test_the_parameters_cell_assigns_the_defaults_with_their_types_and_help():
    sizes = Parameter(
        "sizes",
        "dict[str, list[list[int]]]",
        {"mlp": [[16, 5], [64, 5]], "cnn": [[16, 2], [32, 2], [16, 3]]},
        "family: [width, depth] pairs",
        entries=(1, 3),
        check=lambda name, value, values: value,
    )
    lr = Parameter("lr", "float", 1e-3, "Adam's step", 0.0, 1.0, above=True)
    cell = parameters_cell([TRAIN_SIZE, K, RADII, lr, sizes])
    assert "train_size: int = 100  # images\n" in cell and "lr: float = 1e-3  # Adam's step" in cell
    assert max(map(len, cell.splitlines())) <= 79
    namespace: dict = {}
    exec(cell, namespace)  # noqa: S102
    assert {name: namespace[name] for name in ("train_size", "k", "radii", "lr", "sizes")} == {
        "train_size": 100,
        "k": 50,
        "radii": [0.1, 1.0],
        "lr": 1e-3,
        "sizes": sizes.default,
    }
    annotations = {node.target.id: ast.unparse(node.annotation) for node in ast.parse(cell).body}
    assert annotations == {p.name: p.type for p in (TRAIN_SIZE, K, RADII, lr, sizes)}


def test_a_declaration_refuses_an_unknown_type_or_order():
    with pytest.raises(ValueError, match="type of parameter x must be one of"):
        Parameter("x", "tuple", (), "x")
    with pytest.raises(ValueError, match="order of parameter x"):
        Parameter("x", "list[int]", [1], "x", order="up")


def test_a_number_without_bounds_is_still_finite_and_a_list_may_come_back_descending():
    free = Parameter("x", "float", 1.0, "x")
    assert check_value(free, -1e300, {}) == -1e300
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match=r"^x must be a number in \(-inf, inf\), got"):
            check_value(free, bad, {})
    tolerances = Parameter("eps", "list[float]", [1e-3], "eps", 0.0, 1.0, above=True, order="descending")
    assert check_value(tolerances, [1e-5, 1e-3, 1e-4], {}) == [1e-3, 1e-4, 1e-5]


def test_a_parameter_the_namespace_lacks_is_named():
    with pytest.raises(ValueError, match="^k is not set: run the parameters cell first$"):
        check_parameters([TRAIN_SIZE, K], {"train_size": 10})
