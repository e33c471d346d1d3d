"""Parameters declared once: name, type, default, bounds, relations and one line of help.

A chapter declares its parameters as a tuple of :class:`Parameter`, in reading order. From that one
declaration come the chapter's ``parameters`` cell (:func:`parameters_cell`), the check the next
cell runs (:func:`check_parameters`), the check of every profile before a build, and the cases of
the bad-input tests. Like :mod:`lhlib.engine.validation`, this module imports only the standard
library, so a bad value is refused before torch loads.

A bound is a number, or an expression in parameters declared earlier, such as ``"train_size - 1"``:
names, numbers, ``+``, ``-``, ``*``, ``//`` and the functions ``min``, ``max`` and ``len``. A bound's
message names the expression beside its value. Relations that bounds cannot say (two increasing
sizes, a depth the image allows) are functions of the checked values that raise :class:`ValueError`.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import reprlib
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "TYPES",
    "Parameter",
    "check_parameters",
    "check_value",
    "matches_type",
    "parameters_cell",
    "submitted_names",
]

TYPES = (
    "int",
    "float",
    "str",
    "list[int]",
    "list[float]",
    "list[str]",
    "list[list[int]]",
    "dict[str, list[list[int]]]",
)
"""Every type a parameter may have, as papermill's ``--help-notebook`` shows it and JSON carries it."""

_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "list[int]": "a list of integers",
    "list[float]": "a list of numbers",
    "list[str]": "a list of strings",
    "list[list[int]]": "a list of integer lists",
    "dict[str, list[list[int]]]": "a dict from names to lists of integer lists",
}

Bound = int | float | str | None


@dataclass(frozen=True)
class Parameter:
    """One parameter of a chapter, declared once.

    Attributes:
        name: The variable the ``parameters`` cell assigns.
        type: One of :data:`TYPES`.
        default: The value the chapter runs with unless told otherwise (the paper's setting).
        help: One line of documentation, the comment beside the value in the ``parameters`` cell.
        minimum: The smallest value, or of each entry of a list (a number or an expression).
        maximum: The largest value, or of each entry of a list (a number or an expression).
        above: Whether ``minimum`` itself is refused.
        below: Whether ``maximum`` itself is refused.
        entries: The fewest and the most entries of a list (or keys of a dict).
        order: ``"ascending"`` or ``"descending"``: a list comes back sorted so; ``None``: as given.
        check: A further check ``check(name, value, values)`` that returns the value to use or raises
            :class:`ValueError`; ``values`` holds the parameters declared before, checked.
    """

    name: str
    type: str
    default: Any
    help: str
    minimum: Bound = None
    maximum: Bound = None
    above: bool = False
    below: bool = False
    entries: tuple[int, int] = (1, 64)
    order: str | None = None
    check: Callable[[str, Any, Mapping[str, Any]], Any] | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"type of parameter {self.name} must be one of {', '.join(TYPES)}, got {self.type!r}")
        if self.order not in (None, "ascending", "descending"):
            raise ValueError(f"order of parameter {self.name} must be 'ascending', 'descending' or None")

    def but(self, **changes: Any) -> Parameter:
        """This declaration with some fields changed (a chapter's own default, help or bounds).

        Args:
            **changes: Fields of :class:`Parameter` and their new values.

        Returns:
            A new :class:`Parameter`.
        """
        return replace(self, **changes)


def matches_type(value: Any, type: str) -> bool:
    """Whether ``value`` has the declared ``type`` (an int is also a float; a bool is neither).

    Args:
        value: A value, as JSON or papermill carries it.
        type: One of :data:`TYPES`.

    Returns:
        ``True`` when every level of ``value`` has the type ``type`` names.
    """
    if type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if type == "str":
        return isinstance(value, str)
    if type.startswith("list["):
        return (
            isinstance(value, Sequence)
            and not isinstance(value, str | bytes)
            and all(matches_type(item, type[5:-1]) for item in value)
        )
    inner = type[len("dict[str, ") : -1]
    return isinstance(value, Mapping) and all(isinstance(k, str) and matches_type(v, inner) for k, v in value.items())


_FUNCTIONS = {"min": min, "max": max, "len": len}
_OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}
_OPERATORS[ast.FloorDiv] = lambda a, b: a // b


def _evaluate(node: ast.expr, values: Mapping[str, Any]) -> Any:
    """The value of a bound's expression, from numbers, names of checked parameters and a few operations."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.Name) and node.id in values:
        return values[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        return _FUNCTIONS[node.func.id](*(_evaluate(arg, values) for arg in node.args))
    raise ValueError(
        f"a bound may use numbers, earlier parameters, + - * // and min, max, len; got {ast.unparse(node)}"
    )


def _bound(bound: Bound, values: Mapping[str, Any]) -> tuple[Any, str]:
    """A bound's value and how a message writes it (``"9999 (train_size - 1)"`` for an expression)."""
    if not isinstance(bound, str):
        return bound, f"{bound}"
    value = _evaluate(ast.parse(bound, mode="eval").body, values)
    return value, f"{value} ({bound})"


def _interval(parameter: Parameter, values: Mapping[str, Any]) -> tuple[Callable[[Any], bool], str]:
    """Whether a number lies within ``parameter``'s bounds, and the interval written out."""
    low, low_text = _bound(parameter.minimum, values)
    high, high_text = _bound(parameter.maximum, values)

    def inside(number: Any) -> bool:
        if isinstance(number, float) and not math.isfinite(number):
            return False
        above_low = low is None or (number > low if parameter.above else number >= low)
        return above_low and (high is None or (number < high if parameter.below else number <= high))

    left = "-inf" if low is None else low_text
    right = "inf" if high is None else high_text
    brackets = ("(" if parameter.above or low is None else "[", ")" if parameter.below or high is None else "]")
    return inside, f"{brackets[0]}{left}, {right}{brackets[1]}"


def _parsed(value: Any, type: str) -> Any:
    """A list or dict given as its text (papermill's ``-p`` passes ``'[8, 128]'`` as a string) as the value."""
    if isinstance(value, str) and type != "str":
        try:
            return ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # TypeError: {[1]: 2}
            return value
    return value


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, at most 200 characters (and safe for a list nested thousands deep)."""
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxdict, shown.maxstring, shown.maxother = 4, 12, 8, 120, 120
    return shown.repr(value)[:200]


def check_value(parameter: Parameter, value: Any, values: Mapping[str, Any]) -> Any:
    """``value`` checked against ``parameter``'s declaration, as the chapter will use it.

    Args:
        parameter: The declaration.
        value: What the parameter was given.
        values: The parameters declared before it, checked (for bounds written as expressions).

    Returns:
        The value the chapter will use, a float for a ``float``, a new sorted list for a list with an
        ``order``, and whatever the declaration's ``check`` returns.

    Raises:
        ValueError: one line that starts with the parameter's name, says what is accepted and shows the
            value.
    """
    name, type = parameter.name, parameter.type
    value = _parsed(value, type)
    if not matches_type(value, type):
        raise ValueError(f"{name} must be {_WORDS[type]}, got {_shown(value)}")
    if type.startswith(("list", "dict")):
        fewest, most = parameter.entries
        if not fewest <= len(value) <= most:
            raise ValueError(f"{name} must hold {fewest} to {most} entries, got {len(value)}: {value!r}")
    if type in ("int", "float", "list[int]", "list[float]") and (
        parameter.minimum is not None or parameter.maximum is not None or type.endswith("float")
    ):
        inside, interval = _interval(parameter, values)
        numbers = value if type.startswith("list") else [value]
        if not all(inside(number) for number in numbers):
            noun = {"int": "an integer", "float": "a number", "list[int]": "integers", "list[float]": "numbers"}[type]
            what = f"a list of {noun} in {interval}" if type.startswith("list") else f"{noun} in {interval}"
            raise ValueError(f"{name} must be {what}, got {value!r}")
    if type == "float":
        value = float(value)
    if type in ("list[int]", "list[float]", "list[str]"):
        value = [float(v) for v in value] if type == "list[float]" else list(value)
        if len(set(value)) != len(value):
            raise ValueError(f"{name} must not repeat entries, got {value!r}")
        if parameter.order:
            value = sorted(value, reverse=parameter.order == "descending")
    if parameter.check is not None:
        value = parameter.check(name, value, values)
    return value


def _input_history(namespace: Mapping[str, Any]) -> list:
    """IPython's own input history (which a parameter named ``In`` cannot replace), else ``namespace["In"]``."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    history = shell.history_manager.input_hist_raw if shell is not None else namespace.get("In")
    return history if isinstance(history, list) else []


def submitted_names(namespace: Mapping[str, Any]) -> list[str]:
    """The names papermill's injected cell assigned, read from IPython's input history in ``namespace``.

    papermill writes the values it was given into a cell that starts with ``# Parameters``, just after
    the ``parameters`` cell. A misspelt name (``-p epoch 1``) lands there, and nowhere else shows it.

    Args:
        namespace: The notebook's globals, whose ``In`` is IPython's input history (the cell being run
            last).

    Returns:
        The names assigned in the cell run just before this one when papermill injected it; empty
        otherwise (and outside IPython).
    """
    history = _input_history(namespace)
    if len(history) < 2 or not isinstance(history[-2], str) or not history[-2].startswith("# Parameters"):
        return []
    tree = ast.parse(history[-2])
    return [target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets]


def check_parameters(
    parameters: Sequence[Parameter],
    namespace: Mapping[str, Any],
    relations: Sequence[Callable[[Mapping[str, Any]], None]] = (),
    *,
    submitted: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every declared parameter checked, in the declaration's order, then the relations among them.

    Args:
        parameters: The chapter's declaration.
        namespace: Where the values are: the notebook's globals, or a dict of name and value.
        relations: Functions of the checked values that raise :class:`ValueError` (one line, starting
            with a parameter's name) when the values do not fit together.
        submitted: The names the run was given (``None``: :func:`submitted_names` of ``namespace``). A
            name not declared is refused, with the closest declared one.

    Returns:
        Each parameter's checked value, by name (see :func:`check_value`).

    Raises:
        ValueError: one line naming the first unknown or bad parameter.
    """
    declared = [parameter.name for parameter in parameters]
    for name in submitted_names(namespace) if submitted is None else submitted:
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; the chapter has {', '.join(declared)}"
            raise ValueError(f"{name} is not a parameter of this chapter{hint}")
    values: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.name not in namespace:
            raise ValueError(f"{parameter.name} is not set: run the parameters cell first")
        values[parameter.name] = check_value(parameter, namespace[parameter.name], values)
    for relation in relations:
        relation(values)
    return values


def _literal(value: Any) -> str:
    """A value as the ``parameters`` cell writes it: strings in double quotes, ``1e-3`` rather than ``0.001``."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = f"{value:.12e}".partition("e")
        short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return short if abs(value) < 1e-2 and value != 0 and float(short) == value else text
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    return repr(value)


def parameters_cell(parameters: Sequence[Parameter], width: int = 79) -> str:
    """The source of a chapter's ``parameters`` cell: ``name: type = default  # help``, one per parameter.

    A line that would be longer than ``width`` puts its help on the lines above; a dict that still
    does not fit is written one key per line.

    Args:
        parameters: The chapter's declaration.
        width: The longest line.

    Returns:
        The cell's source, without a trailing newline.
    """
    lines = []
    for parameter in parameters:
        assignment = f"{parameter.name}: {parameter.type} = {_literal(parameter.default)}"
        if len(f"{assignment}  # {parameter.help}") <= width:
            lines.append(f"{assignment}  # {parameter.help}")
            continue
        lines += textwrap.wrap(parameter.help, width, initial_indent="# ", subsequent_indent="# ")
        if len(assignment) > width and isinstance(parameter.default, Mapping):
            items = [f"    {_literal(k)}: {_literal(v)}," for k, v in parameter.default.items()]
            assignment = "\n".join([f"{parameter.name}: {parameter.type} = {{", *items, "}"])
        lines.append(assignment)
    return "\n".join(lines)
