"""What a chapter can be asked to run, checked without torch.

- :class:`SweepSettings`, its fields' declarations :data:`SWEEP_PARAMETERS` and :func:`check_sweep_settings`:
  the paper's architecture sweep (chapters 03-08), with :func:`sweep_configurations`, the
  ``(h, num_layers)`` pairs it trains.
- :data:`FAMILIES` and :func:`check_family_sizes`: the architecture families of chapter 08.
- :func:`check_backbone`, :func:`check_revision` and :data:`POOLINGS`: chapter 05's feature
  extractor.

Like :mod:`lhlib.engine.validation` and :mod:`lhlib.engine.declarations`, it imports no torch, scipy or
matplotlib, so a chapter's validation cell refuses a bad value about a second after the kernel starts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lhlib.engine.declarations import Parameter, check_value
from lhlib.engine.validation import MAX_SEED, check_device

__all__ = [
    "DEFAULT_BACKBONE",
    "FAMILIES",
    "OFFLINE_BACKBONE",
    "PANELS",
    "POOLINGS",
    "SWEEP_PARAMETERS",
    "SweepSettings",
    "check_backbone",
    "check_family_sizes",
    "check_revision",
    "check_sweep_settings",
    "is_commit",
    "is_local_checkpoint",
    "sweep_configurations",
]


@dataclass(frozen=True)
class SweepSettings:
    r"""Everything that determines a sweep's numbers besides the data (the paper's values by default).

    The sweep trains the widths ``hidden_sizes`` at depth ``fixed_num_layers`` and the depths
    ``num_layers`` at width ``fixed_hidden_size`` (:func:`sweep_configurations`), each once per seed.

    Attributes:
        epochs: Training epochs of every network.
        batch_size: Mini-batch size of the training.
        lr: Adam's learning rate.
        hidden_sizes: The widths :math:`h` of the first panel.
        num_layers: The depths of the second panel (the MLP's hidden-to-hidden layers).
        fixed_hidden_size: The width :math:`h` every network of the depth panel has.
        fixed_num_layers: The depth every network of the width panel has.
        permutations: How many random orders of the samples :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|`
            is averaged over.
        ema: The smoothing factor of the paper's exponential moving average of the curves.
        seeds: The seeds of each configuration's ensemble (at least two, distinct).
        collapse_share: A network counts as collapsed when at least this share of its per-sample losses
            sits at chance, :math:`\ln K`.
        device: Where to train: ``"auto"``, ``"cpu"``, ``"mps"``, ``"cuda"`` or ``"cuda:N"``.
        fit_k_min: The smallest :math:`k` of the power-law fit of the curves.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    hidden_sizes: tuple[int, ...] = (4, 8, 16, 32, 64)
    num_layers: tuple[int, ...] = (1, 3, 5, 7, 10)
    fixed_hidden_size: int = 16
    fixed_num_layers: int = 5
    permutations: int = 100
    ema: float = 0.99
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    collapse_share: float = 0.5
    device: str = "auto"
    fit_k_min: int = 10

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> SweepSettings:
        """The settings among ``values`` (a chapter's checked parameters); the fields missing keep their defaults.

        Args:
            values: Parameter names and values, such as :func:`lhlib.engine.declarations.check_parameters`
                returns; names that are not fields are ignored.

        Returns:
            The settings, list-valued fields as tuples.
        """
        fields = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        return cls(**{name: tuple(v) if isinstance(v, list) else v for name, v in fields.items()})


SWEEP_PARAMETERS: dict[str, Parameter] = {
    parameter.name: parameter
    for parameter in (
        Parameter("epochs", "int", 10, "training epochs of every network", 1, 1000),
        Parameter("batch_size", "int", 64, "mini-batch size", 1, 65536),
        Parameter("lr", "float", 1e-3, "Adam, constant", 1e-6, 10.0),  # below, float32 weights barely move
        Parameter(
            "hidden_sizes", "list[int]", [4, 8, 16, 32, 64], "widths h of the width panel", 1, 4096, entries=(1, 16)
        ),
        Parameter(
            "num_layers",
            "list[int]",
            [1, 3, 5, 7, 10],
            "hidden-to-hidden; num_layers + 2 matrices",
            0,
            64,
            entries=(1, 16),
        ),
        Parameter("fixed_hidden_size", "int", 16, "h in the number-of-layers panel", 1, 4096),
        Parameter("fixed_num_layers", "int", 5, "num_layers in the hidden-size panel", 0, 64),
        Parameter("permutations", "int", 100, "random orders averaged", 2, 100_000),
        # Near 1 the smoothed curve never leaves its first value.
        Parameter("ema", "float", 0.99, "the paper's smoothing factor", 0.0, 0.999),
        Parameter(
            "seeds", "list[int]", [0, 1, 2, 3, 4], "training seeds per configuration", 0, MAX_SEED, entries=(2, 64)
        ),
        Parameter(
            "collapse_share", "float", 0.5, "collapsed: this share of the losses sits at ln K", 0.0, 1.0, above=True
        ),
        Parameter(
            "device",
            "str",
            "auto",
            "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
            check=lambda name, value, values: check_device(name, value),
        ),
        Parameter("fit_k_min", "int", 10, "the power law is fitted on k in [fit_k_min, N - 1]", 1, 10_000_000),
    )
}
"""The declarations of :class:`SweepSettings`' fields (their defaults are the paper's), shared by the chapters."""


def check_sweep_settings(**parameters: Any) -> SweepSettings:
    """Validate a chapter's sweep parameters against :data:`SWEEP_PARAMETERS`.

    Args:
        **parameters: Any fields of :class:`SweepSettings`; those not given take its defaults.

    Returns:
        The checked settings, list-valued fields as tuples.

    Raises:
        ValueError: one line naming the unknown parameters, or the first bad one, its value and what is
            accepted.
    """
    unknown = set(parameters) - set(SweepSettings.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown sweep settings {sorted(unknown)}; accepted: {sorted(SweepSettings.__dataclass_fields__)}"
        )
    checked = {name: check_value(SWEEP_PARAMETERS[name], value, {}) for name, value in parameters.items()}
    return SweepSettings.from_values(checked)


def sweep_configurations(settings: SweepSettings) -> list[tuple[int, int]]:
    """The distinct ``(hidden_size, num_layers)`` pairs the two panels need, in a stable order.

    Args:
        settings: The sweep's settings.

    Returns:
        The width panel's pairs ``(h, fixed_num_layers)`` for ``h`` in ``hidden_sizes``, then the depth
        panel's ``(fixed_hidden_size, n)`` for ``n`` in ``num_layers``, each pair once.
    """
    pairs = [(h, settings.fixed_num_layers) for h in settings.hidden_sizes]
    pairs += [(settings.fixed_hidden_size, n) for n in settings.num_layers]
    return list(dict.fromkeys(pairs))


FAMILIES = ("mlp", "cnn", "vit")
"""The architecture families :func:`lhlib.engine.architectures.build_network` builds."""


PANELS = ("hidden_size", "num_layers")
"""The two panels of a sweep, named by the parameter each varies (the paper's left and right panels)."""


def check_family_sizes(sizes: Any) -> dict[str, tuple[tuple[int, int], ...]]:
    """Validate chapter 08's ``sizes``: a non-empty dict from families to ``[width, depth]`` pairs.

    Each family's list is non-empty and its pairs distinct. Widths are at least 1 (a ViT's even,
    for its 2 attention heads); depths at least 1 (0 allowed for the MLP).

    Args:
        sizes: The chapter's ``sizes`` parameter, a dict whose keys are :data:`FAMILIES`.

    Returns:
        The sizes as tuples of ``(width, depth)`` tuples, in the order given.

    Raises:
        ValueError: one line naming the first family or pair that breaks a rule above.
    """
    if not isinstance(sizes, dict) or not sizes:
        raise ValueError(
            f"sizes must be a non-empty dict from families {list(FAMILIES)} to [width, depth] lists, got {sizes!r}"
        )
    checked = {}
    for family, pairs in sizes.items():
        if family not in FAMILIES:
            raise ValueError(f"sizes has unknown family {family!r}; accepted: {list(FAMILIES)}")
        if not isinstance(pairs, (list, tuple)) or not pairs:
            raise ValueError(f"sizes[{family!r}] must be a non-empty list of [width, depth] pairs, got {pairs!r}")
        for pair in pairs:
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            ):
                raise ValueError(f"sizes[{family!r}] must hold [width, depth] pairs of ints, got {pair!r}")
            width, depth = pair
            if width < 1 or depth < (0 if family == "mlp" else 1):
                raise ValueError(
                    f"sizes[{family!r}] needs width >= 1 and depth >= {0 if family == 'mlp' else 1}, got {list(pair)}"
                )
            if family == "vit" and width % 2:
                raise ValueError(f"sizes['vit'] widths must be even (2 attention heads), got {width}")
        as_tuples = tuple(tuple(pair) for pair in pairs)
        if len(set(as_tuples)) != len(as_tuples):
            raise ValueError(f"sizes[{family!r}] repeats a [width, depth] pair: {[list(p) for p in as_tuples]}")
        checked[family] = as_tuples
    return checked


DEFAULT_BACKBONE = "google/vit-base-patch16-224"
"""The paper's backbone, a Hugging Face model id."""


OFFLINE_BACKBONE = "offline-cnn"
"""The small CNN this book trains offline in place of the ViT, clearly labelled as such."""


POOLINGS = ("pooler", "cls")
"""The ways a ViT's output becomes one feature vector (its pooler output, or the CLS token)."""


# An owner and a name of at most 96 ASCII letters, digits, ``.``, ``_`` and ``-`` each, as the hub allows.
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9_][\w.-]{0,95}$", re.ASCII)


_SHA = re.compile(r"^[0-9a-f]{40}$")


# A branch or tag name the hub accepts (``refs/pr/1`` included), and nothing that climbs out of a folder.
# Every part also avoids what git refuses: a trailing ``.`` or ``.lock``.
_REF = re.compile(r"^(?!.*(\.|\.lock)(/|$))[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


def is_local_checkpoint(backbone: str) -> bool:
    """Whether ``backbone`` names a folder holding a model's ``config.json``.

    Args:
        backbone: A path, or anything else a chapter was given as its backbone.

    Returns:
        ``True`` when ``backbone/config.json`` is a file.
    """
    try:
        return Path(backbone).is_dir() and (Path(backbone) / "config.json").is_file()
    except (OSError, ValueError):  # a name too long for the file system, or a NUL byte
        return False


def check_backbone(backbone: Any) -> str:
    """``backbone`` if it is ``"offline-cnn"``, a Hugging Face model id, or a local checkpoint folder.

    A local checkpoint folder is one holding a model's ``config.json``; a hub id must not name an
    existing path or climb out of a folder.

    Args:
        backbone: Chapter 05's ``backbone`` parameter.

    Returns:
        ``backbone`` itself.

    Raises:
        ValueError: when ``backbone`` is none of the three.
    """
    if isinstance(backbone, str) and backbone:
        if backbone == OFFLINE_BACKBONE or is_local_checkpoint(backbone):
            return backbone
        if _HF_ID.fullmatch(backbone) and ".." not in backbone and not os.path.lexists(backbone):
            return backbone
    raise ValueError(
        f"backbone must be {OFFLINE_BACKBONE!r}, a Hugging Face image-model id such as "
        f"{DEFAULT_BACKBONE!r}, or a local checkpoint folder holding a config.json; got {backbone!r}"
    )


def is_commit(revision: str) -> bool:
    """Whether ``revision`` is a 40-character lowercase hex commit hash.

    Args:
        revision: A revision string.

    Returns:
        ``True`` for a full commit hash.
    """
    return bool(_SHA.fullmatch(revision))


def check_revision(revision: Any) -> str:
    """``revision`` if it is a 40-character commit hash or a safe branch or tag name.

    A safe name (``refs/pr/1`` included) is made of letters, digits, ``.``, ``_``, ``-`` and ``/``-separated
    parts, and never climbs out of a folder with ``..``.

    Args:
        revision: Chapter 05's ``revision`` parameter, the backbone's revision on the hub.

    Returns:
        ``revision`` itself.

    Raises:
        ValueError: when ``revision`` is neither.
    """
    if isinstance(revision, str) and (is_commit(revision) or (_REF.fullmatch(revision) and ".." not in revision)):
        return revision
    raise ValueError(
        f"revision must be a commit hash (40 hex digits) or a branch or tag name such as 'main'; got {revision!r}"
    )
