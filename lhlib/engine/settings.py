"""What a chapter can be asked to run, checked without torch.

A chapter's first code cell after its parameters checks every one of them with this module,
:mod:`lhlib.engine.validation` and :func:`lhlib.engine.data.check_datasets`. None of the three imports torch,
scipy or matplotlib, so a bad value is refused about a second after the kernel starts, before the
chapter's heavy imports, any data or any network.

- :class:`SweepSettings` and :func:`check_sweep_settings`: the paper's architecture sweep
  (chapters 03-08), with :func:`sweep_configurations`, the ``(h, num_layers)`` pairs it trains.
- :data:`FAMILIES` and :func:`check_family_sizes`: the architecture families of chapter 08.
- :func:`check_backbone`, :func:`check_revision` and :data:`POOLINGS`: chapter 05's feature
  extractor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lhlib.engine.validation import check_device, check_float, check_int, check_int_list, check_seeds

__all__ = [
    "DEFAULT_BACKBONE",
    "FAMILIES",
    "OFFLINE_BACKBONE",
    "PANELS",
    "POOLINGS",
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


def check_sweep_settings(**parameters: Any) -> SweepSettings:
    """Validate a chapter's sweep parameters.

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
    settings = {**SweepSettings().__dict__, **parameters}
    check_int("epochs", settings["epochs"], minimum=1)
    check_int("batch_size", settings["batch_size"], minimum=1)
    check_float("lr", settings["lr"], minimum=0.0, strict_minimum=True)
    settings["hidden_sizes"] = tuple(check_int_list("hidden_sizes", settings["hidden_sizes"], minimum=1))
    settings["num_layers"] = tuple(check_int_list("num_layers", settings["num_layers"], minimum=0))
    check_int("fixed_hidden_size", settings["fixed_hidden_size"], minimum=1)
    check_int("fixed_num_layers", settings["fixed_num_layers"], minimum=0)
    check_int("permutations", settings["permutations"], minimum=2)
    check_float("ema", settings["ema"], minimum=0.0, maximum=1.0)
    settings["seeds"] = tuple(check_seeds("seeds", settings["seeds"]))
    check_float("collapse_share", settings["collapse_share"], minimum=0.0, maximum=1.0, strict_minimum=True)
    check_int("fit_k_min", settings["fit_k_min"], minimum=1)
    check_device("device", settings["device"])
    return SweepSettings(**settings)


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


_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9_][\w.-]*$")


_SHA = re.compile(r"^[0-9a-f]{40}$")


# A branch or tag name the hub accepts (``refs/pr/1`` included), and nothing that climbs out of a folder.
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


def is_local_checkpoint(backbone: str) -> bool:
    """Whether ``backbone`` names a folder holding a model's ``config.json``.

    Args:
        backbone: A path, or anything else a chapter was given as its backbone.

    Returns:
        ``True`` when ``backbone/config.json`` is a file.
    """
    return Path(backbone).is_dir() and (Path(backbone) / "config.json").is_file()


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
        if _HF_ID.fullmatch(backbone) and ".." not in backbone and not Path(backbone).exists():
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
