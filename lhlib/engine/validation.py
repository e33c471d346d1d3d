"""One-line parameter checks, run before any expensive work starts.

Every check raises :class:`ValueError` whose message names the parameter, the value it got and
what is accepted, so a papermill or command-line user sees at once what to change. The module
imports nothing heavier than the standard library, so a chapter's checks run before torch loads.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "MAX_SEED",
    "check_choice",
    "check_choices",
    "check_configurations",
    "check_device",
    "check_float",
    "check_int",
    "check_int_list",
    "check_output_dir",
    "check_positive_floats",
    "check_seeds",
]


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``, or a ValueError naming ``name``.

    Args:
        name: The parameter's name, for the message.
        value: What the parameter was given; a ``bool`` is refused although it is an ``int``.
        minimum: The smallest value accepted (``None``: no lower bound).
        maximum: The largest value accepted (``None``: no upper bound).

    Returns:
        ``value`` itself.

    Raises:
        ValueError: when ``value`` is not an integer or lies outside the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict_minimum: bool = False,
) -> float:
    r"""``value`` as a finite float in the stated range, or a ValueError naming ``name``.

    NaN would pass every comparison unnoticed, and no parameter of this book means anything at
    :math:`\pm\infty`, so both are refused.

    Args:
        name: The parameter's name, for the message.
        value: What the parameter was given: an int or a float (a ``bool`` is refused).
        minimum: The lower bound, itself accepted unless ``strict_minimum`` (``None``: no lower bound).
        maximum: The largest value accepted (``None``: no upper bound).
        strict_minimum: Whether ``minimum`` itself is refused (``value > minimum`` rather than ``>=``).

    Returns:
        ``value`` converted to ``float``.

    Raises:
        ValueError: when ``value`` is not a number, not finite or outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    # NaN passes every comparison below unnoticed, and no parameter of this book means anything at +-inf.
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if minimum is not None and (value <= minimum if strict_minimum else value < minimum):
        relation = ">" if strict_minimum else ">="
        raise ValueError(f"{name} must be a number {relation} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be a number <= {maximum}, got {value}")
    return value


def check_choice(name: str, value: Any, accepted: Iterable[str]) -> str:
    """``value`` if it is one of ``accepted``, else a ValueError listing them.

    Args:
        name: The parameter's name, for the message.
        value: What the parameter was given.
        accepted: The values allowed.

    Returns:
        ``value`` itself.

    Raises:
        ValueError: when ``value`` is not among ``accepted``.
    """
    accepted = list(accepted)
    if value not in accepted:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, accepted))}; got {value!r}")
    return value


def check_choices(name: str, values: Any, accepted: Iterable[str]) -> list[str]:
    """A non-empty list of distinct members of ``accepted``.

    Args:
        name: The parameter's name, for the message.
        values: What the parameter was given: a sequence other than a string.
        accepted: The values allowed.

    Returns:
        ``values`` as a new list, in the order given.

    Raises:
        ValueError: when ``values`` is a string, not a sequence, empty, repeats an entry or holds a
            value not in ``accepted``.
    """
    accepted = list(accepted)
    if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list drawn from {accepted}, got {values!r}")
    for value in values:
        check_choice(name, value, accepted)
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat entries, got {values!r}")
    return list(values)


def check_int_list(name: str, values: Any, *, minimum: int | None = None, maximum: int | None = None) -> list[int]:
    """A non-empty list of distinct integers, each ``>= minimum`` and ``<= maximum`` (where given).

    Args:
        name: The parameter's name, for the message.
        values: What the parameter was given: a sequence other than a string or bytes.
        minimum: The smallest value accepted (``None``: no lower bound).
        maximum: The largest value accepted (``None``: no upper bound).

    Returns:
        ``values`` as a new list, in the order given.

    Raises:
        ValueError: when ``values`` is not a non-empty sequence of integers (``bool`` refused), has one
            out of bounds, or repeats one.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of integers, got {values!r}")
    for value in values:
        below = minimum is not None and isinstance(value, int) and value < minimum
        above = maximum is not None and isinstance(value, int) and value > maximum
        if isinstance(value, bool) or not isinstance(value, int) or below or above:
            bounds = [f">= {minimum}"] * (minimum is not None) + [f"<= {maximum}"] * (maximum is not None)
            bound = f" {' and '.join(bounds)}" if bounds else ""
            raise ValueError(f"{name} must be a list of integers{bound}, got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat entries, got {values!r}")
    return list(values)


def check_configurations(name: str, value) -> list[tuple[int, int]]:
    """A non-empty list of distinct ``[hidden_size, num_layers]`` pairs, as tuples.

    Each pair holds two integers with ``hidden_size >= 1`` and ``num_layers >= 0``.

    Args:
        name: The parameter's name, for the message.
        value: What the parameter was given: a sequence of two-element sequences.

    Returns:
        The pairs as a list of ``(hidden_size, num_layers)`` tuples, in the order given.

    Raises:
        ValueError: one line naming ``name``, when ``value`` is empty, not a sequence, holds a pair that
            is not two integers in range, or repeats a pair.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty list of [hidden_size, num_layers] pairs, got {value!r}")
    pairs = []
    for item in value:
        ok = (
            not isinstance(item, (str, bytes))
            and isinstance(item, Sequence)
            and len(item) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            and item[0] >= 1
            and item[1] >= 0
        )
        if not ok:
            raise ValueError(
                f"{name} must be a list of [hidden_size >= 1, num_layers >= 0] integer pairs, got {item!r}"
            )
        pairs.append((int(item[0]), int(item[1])))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"{name} must not repeat configurations, got {value!r}")
    return pairs


def check_positive_floats(name: str, value) -> list[float]:
    """A non-empty list of distinct numbers ``> 0``, as floats, in the order given.

    Args:
        name: The parameter's name, for the message.
        value: What the parameter was given: a sequence of numbers.

    Returns:
        The numbers as a list of finite floats, in the order given.

    Raises:
        ValueError: when ``value`` is empty or not a sequence, holds a number that is not finite and
            ``> 0``, or repeats one.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {value!r}")
    values = [check_float(name, v, minimum=0.0, strict_minimum=True) for v in value]
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat entries, got {value!r}")
    return values


MAX_NAME_BYTES, MAX_PATH_BYTES = 255, 4096
"""The longest file name and path most file systems take (Linux's ``NAME_MAX`` and ``PATH_MAX``)."""


MAX_SEED = 2**32 - 1
"""The largest seed accepted (torch's CPU generator keeps 32 bits of a seed, so ``s`` and ``s + 2**32`` draw alike)."""


def check_seeds(name: str, values: Any, *, minimum_count: int = 2) -> list[int]:
    """A list of at least ``minimum_count`` distinct integer seeds in ``[0, MAX_SEED]``.

    An interval across seeds needs two, hence the default.

    Args:
        name: The parameter's name, for the message.
        values: What the parameter was given: a sequence of integers.
        minimum_count: The fewest seeds accepted.

    Returns:
        The seeds as a new list, in the order given.

    Raises:
        ValueError: when ``values`` fails :func:`check_int_list` with ``minimum=0`` and ``maximum=MAX_SEED``
            or has fewer than ``minimum_count`` entries.
    """
    seeds = check_int_list(name, values, minimum=0, maximum=MAX_SEED)
    if len(seeds) < minimum_count:
        raise ValueError(f"{name} must list at least {minimum_count} distinct seeds (integers >= 0), got {values!r}")
    return seeds


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def check_device(name: str, value: Any) -> str:
    """``value`` if it names a device: ``"auto"``, ``"cpu"``, ``"mps"``, ``"cuda"`` or ``"cuda:N"``.

    Whether the device is present is :func:`lhlib.engine.train.resolve_device`'s question; this check
    only reads the string, so it runs without torch.

    Args:
        name: The parameter's name, for the message.
        value: What the parameter was given.

    Returns:
        ``value`` itself.

    Raises:
        ValueError: when ``value`` is not one of the device strings above.
    """
    if isinstance(value, str) and _DEVICE.fullmatch(value):
        return value
    raise ValueError(f"{name} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}")


def check_output_dir(name: str, value: Any) -> str:
    """``value`` normalised, as a folder a chapter may write its figures and summary into.

    An absolute path is accepted (a Colab user writes to Drive); a relative one must stay inside the
    working directory. Refused: an empty path, a NUL character, a leading ``~`` (not expanded), a name
    longer than :data:`MAX_NAME_BYTES` or a path longer than :data:`MAX_PATH_BYTES`, the working directory
    itself or a folder above it, a path that climbs out of it, a folder under ``/proc``, ``/sys`` or
    ``/dev``, a folder that holds notebooks (the chapters' own folder), an existing file or a path through
    one, and a folder this user cannot write (or whose nearest existing parent it cannot).

    Args:
        name: The parameter's name, for the message.
        value: What the parameter was given: a string or path-like object.

    Returns:
        The path as a normalised string (:func:`os.path.normpath`); the folder is not created.

    Raises:
        ValueError: when the path is one of those refused above.
    """
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise ValueError(f"{name} must be a non-empty folder path, got {value!r}")
    if "\0" in str(value):
        raise ValueError(f"{name} must not hold a NUL character, got {value!r}")
    if str(value).startswith("~"):
        raise ValueError(f"{name} must spell out the home folder (a chapter does not expand ~), got {value!r}")
    normalised = os.path.normpath(str(value))
    longest = max((len(os.fsencode(part)) for part in Path(normalised).parts), default=0)
    if longest > MAX_NAME_BYTES or len(os.fsencode(normalised)) > MAX_PATH_BYTES:
        raise ValueError(
            f"{name} must have names of at most {MAX_NAME_BYTES} bytes and {MAX_PATH_BYTES} in all, "
            f"got {len(normalised)} characters"
        )
    if normalised == ".":
        raise ValueError(f"{name} must be a folder below the working directory, not the working directory itself")
    if not os.path.isabs(normalised) and normalised.split(os.sep)[0] == "..":
        raise ValueError(f"{name} must be an absolute path or stay inside the working directory, got {value!r}")
    folder = Path(normalised)
    resolved = folder.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise ValueError(
            f"{name} must be a folder below the working directory, not it or a folder above, got {value!r}"
        )
    if resolved.parts[1:2] in (("proc",), ("sys",), ("dev",)):
        raise ValueError(f"{name} must be an ordinary folder, not under /{resolved.parts[1]}, got {value!r}")
    if folder.is_dir() and any(folder.glob("*.ipynb")):
        raise ValueError(f"{name} must not be a folder holding notebooks, got {value!r}")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} must be a folder, but {value!r} is a file")
    existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{name} must be a folder, but {str(existing)!r} on its path is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} must be a folder this user can write, but {str(existing)!r} is read-only")
    return normalised
