"""The paper's architecture sweep across training seeds: each (h, num_layers), its loss-difference curves.

Figures 2-5 each show two panels per dataset: hidden sizes ``hidden_sizes`` at ``fixed_num_layers``
and depths ``num_layers`` at ``fixed_hidden_size``. :func:`run_sweep` trains every configuration
both panels need (the shared one once) as a seed ensemble and measures every member;
:func:`lhlib.figures.plot_sweep` draws the paper's panels with the spread across seeds beside the spread across
random orders; :func:`ordering_tests` turns the paper's "wider gives smaller, deeper gives larger"
into one-sided trend tests over all (configuration, seed) pairs; :func:`summary_rows` gives the
numbers a chapter writes to ``summary.json``. Chapters 04 (pixels) and 05 (backbone features) use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch

from lhlib.experiment import TrainedNetwork, trained_networks
from lhlib.landscape import (
    RateFit,
    ema,
    fit_rate_exponent,
    loss_difference_curves,
    mean_abs_deviation,
)
from lhlib.progress import progress_bar
from lhlib.seed_stats import interval_across_seeds, share_at_chance, trend_test
from lhlib.settings import SweepSettings, sweep_configurations

__all__ = [
    "ConfigurationResult",
    "SeedResult",
    "combine_members",
    "measure_member",
    "ordering_table",
    "ordering_tests",
    "panel_configurations",
    "paper_values",
    "run_sweep",
    "summary_rows",
    "sweep_table",
]

# The paper's two ordering claims (§5): the panel, the claimed direction of the level, the words.
ORDERING_CLAIMS = {
    "hidden_size": ("decreasing", "wider networks give smaller differences"),
    "num_layers": ("increasing", "deeper networks give larger differences"),
}


def _level(mean: np.ndarray) -> float:
    """``(k + 1)`` times the mean curve averaged over the last tenth of ``k``: the ``C`` in ``C / (k + 1)``."""
    k = np.arange(1, mean.size + 1)
    tail = slice(-max(1, mean.size // 10), None)
    return float(((k[tail] + 1) * mean[tail]).mean())


@dataclass(frozen=True)
class SeedResult:
    """One trained network (one seed) of a configuration and its curves over random orders.

    ``mean`` is ``|L_{k+1} - L_k|`` averaged over orders, ``k = 1 .. N - 1``; ``fit`` its power law
    (``None`` when the curve is zero somewhere in the fitted range, as it is for a network whose
    losses are all equal: a power law has no exponent there);
    ``share_at_chance`` the fraction of per-sample losses at ``ln K``; ``collapsed`` whether that
    share reaches the sweep's ``collapse_share``.
    """

    seed: int
    train_loss: float
    train_accuracy: float
    epoch_loss: list[float]
    losses: torch.Tensor
    mean: np.ndarray
    order_lower: np.ndarray
    order_upper: np.ndarray
    fit: RateFit | None
    mean_abs_deviation: float
    share_at_chance: float
    collapsed: bool

    @property
    def level(self) -> float:
        """The curve's constant ``C`` in ``C / (k + 1)``; equal to ``mean_abs_deviation`` in the limit."""
        return _level(self.mean)


@dataclass(frozen=True)
class ConfigurationResult:
    """One configuration across seeds.

    Curves are indexed by ``k = 1 .. N - 1``: ``mean`` is the average over seeds of each seed's mean
    over orders, ``smoothed`` the paper's EMA of it. The spreads are over the *live* seeds, those
    whose curve is not identically zero (all of them if none is): ``live_mean`` (and its EMA
    ``live_smoothed``) their mean, ``seed_low``/``seed_high`` (and their EMAs
    ``smoothed_low``/``smoothed_high``) the smallest and largest live seed's curve at each ``k``, and
    ``order_lower``/``order_upper`` the 25 % and 75 % quantiles across orders, averaged over them.
    """

    hidden_size: int
    num_layers: int
    weight_matrices: int
    members: tuple[SeedResult, ...]
    mean: np.ndarray
    smoothed: np.ndarray
    live_mean: np.ndarray
    live_smoothed: np.ndarray
    seed_low: np.ndarray
    seed_high: np.ndarray
    smoothed_low: np.ndarray
    smoothed_high: np.ndarray
    order_lower: np.ndarray
    order_upper: np.ndarray

    @property
    def seeds(self) -> list[int]:
        """The training seeds of the members."""
        return [m.seed for m in self.members]

    @property
    def levels(self) -> list[float]:
        """Each member's level (the tail mean of ``(k + 1) E|L_{k+1} - L_k|``)."""
        return [m.level for m in self.members]

    @property
    def accuracies(self) -> list[float]:
        """Each member's training accuracy."""
        return [m.train_accuracy for m in self.members]

    @property
    def collapsed_seeds(self) -> int:
        """How many members collapsed."""
        return sum(m.collapsed for m in self.members)

    @property
    def level_mean(self) -> float:
        """Mean level across the members."""
        return float(np.mean(self.levels))

    @property
    def level_ci95(self) -> tuple[float, float]:
        """95 % Student-t interval of the level across seeds."""
        return interval_across_seeds(self.levels)[1]

    @property
    def rate_exponents(self) -> list[float | None]:
        """Each seed's fitted exponent (``None`` where the curve has none)."""
        return [m.fit.exponent if m.fit is not None else None for m in self.members]

    @property
    def rate_exponent(self) -> float:
        """The fitted exponent, averaged over the seeds that have one (NaN if none has)."""
        fitted = [e for e in self.rate_exponents if e is not None]
        return float(np.mean(fitted)) if fitted else float("nan")

    @property
    def rate_exponent_ci95(self) -> tuple[float, float]:
        """95 % Student-t interval of the fitted exponent across the seeds that have one (NaN if
        fewer than two have).
        """
        fitted = [e for e in self.rate_exponents if e is not None]
        return interval_across_seeds(fitted)[1] if len(fitted) >= 2 else (float("nan"), float("nan"))

    @property
    def mean_abs_deviation(self) -> float:
        """Mean over seeds of the MAD of the per-sample losses."""
        return float(np.mean([m.mean_abs_deviation for m in self.members]))

    @property
    def level(self) -> float:
        """The level of the across-seed mean curve (equal to :attr:`level_mean`, the level being linear)."""
        return _level(self.mean)


def measure_member(network: TrainedNetwork, settings: SweepSettings, num_classes: int) -> SeedResult:
    """One network's curves over ``settings.permutations`` random orders, their power-law fit, MAD and collapse."""
    curves = loss_difference_curves(network.losses, settings.permutations, network.seed).numpy()
    lower, upper = np.quantile(curves, [0.25, 0.75], axis=0)
    share = share_at_chance(network.losses, num_classes)
    mean = curves.mean(axis=0)
    k_min = min(settings.fit_k_min, curves.shape[1] - 1)
    fit = fit_rate_exponent(curves, k_min=k_min, seed=network.seed) if (mean[k_min - 1 :] > 0).all() else None
    return SeedResult(
        network.seed,
        network.train_loss,
        network.train_accuracy,
        network.epoch_loss,
        network.losses,
        mean,
        lower,
        upper,
        fit,
        float(mean_abs_deviation(network.losses.double())),
        share,
        share >= settings.collapse_share,
    )


def combine_members(hidden_size, num_layers, weight_matrices, members, settings) -> ConfigurationResult:
    """One configuration's :class:`ConfigurationResult` from its members (one :class:`SeedResult` per seed)."""
    mean = np.mean([m.mean for m in members], axis=0)
    # A network whose losses are all equal has a zero curve: it has no place on a log axis.
    live = [m for m in members if m.fit is not None] or list(members)
    curves = np.stack([m.mean for m in live])
    smoothed_curves = ema(curves, settings.ema)
    live_mean = curves.mean(axis=0)
    return ConfigurationResult(
        hidden_size,
        num_layers,
        weight_matrices,
        tuple(members),
        mean,
        ema(mean, settings.ema),
        live_mean,
        ema(live_mean, settings.ema),
        curves.min(axis=0),
        curves.max(axis=0),
        smoothed_curves.min(axis=0),
        smoothed_curves.max(axis=0),
        np.mean([m.order_lower for m in live], axis=0),
        np.mean([m.order_upper for m in live], axis=0),
    )


def run_sweep(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, settings: SweepSettings, label: str = ""
) -> dict[tuple[int, int], ConfigurationResult]:
    """Train (or load from the results store) every configuration's seed ensemble and measure each member."""
    results = {}
    for hidden_size, num_layers in progress_bar(sweep_configurations(settings), desc=f"{label} configurations".strip()):
        networks = trained_networks(
            x,
            y,
            num_classes=num_classes,
            hidden_size=hidden_size,
            num_layers=num_layers,
            seeds=settings.seeds,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            device=settings.device,
        )
        members = [measure_member(network, settings, num_classes) for network in networks]
        results[(hidden_size, num_layers)] = combine_members(
            hidden_size, num_layers, networks[0].model.weight_matrices, members, settings
        )
    return results


def panel_configurations(results, settings, varying: str) -> list[ConfigurationResult]:
    """The results of one panel: the hidden sizes at ``fixed_num_layers``, or the depths at ``fixed_hidden_size``."""
    if varying == "hidden_size":
        return [results[(h, settings.fixed_num_layers)] for h in settings.hidden_sizes]
    return [results[(settings.fixed_hidden_size, n)] for n in settings.num_layers]


def ordering_tests(
    results: dict[tuple[int, int], ConfigurationResult],
    settings: SweepSettings,
    dataset: str,
    *,
    permutations: int = 10000,
) -> list[dict[str, Any]]:
    """The paper's two ordering claims as one-sided Spearman trend tests of the level over every
    (configuration, seed) pair of a panel, once with every seed and once without collapsed seeds.
    """
    tests = []
    for panel, (direction, claim) in ORDERING_CLAIMS.items():
        configurations = panel_configurations(results, settings, panel)
        for excluding in (False, True):
            pairs = [
                (getattr(r, panel), m.level)
                for r in configurations
                for m in r.members
                if not (excluding and m.collapsed)
            ]
            x, levels = (np.array([p[i] for p in pairs], dtype=float) for i in (0, 1))
            test = trend_test(x, levels, direction, permutations=permutations)
            tests.append(
                {"dataset": dataset, "panel": panel, "claim": claim, "excluding_collapsed": excluding, **test.as_dict()}
            )
    return tests


def sweep_table(results: dict[tuple[int, int], ConfigurationResult]) -> str:
    """A Markdown table of every configuration across its seeds: accuracy (mean and range), collapsed
    seeds, level and fitted exponent (mean and 95 % interval across seeds).
    """
    lines = []
    for r in results.values():
        accuracy = 100 * np.array(r.accuracies)
        (level_low, level_high), (exp_low, exp_high) = r.level_ci95, r.rate_exponent_ci95
        lines.append(
            f"| {r.hidden_size} | {r.num_layers} | {r.weight_matrices} | {accuracy.mean():.1f} "
            f"({accuracy.min():.1f}-{accuracy.max():.1f}) | {r.collapsed_seeds} of {len(r.members)} "
            f"| {r.level_mean:.4f} [{level_low:.4f}, {level_high:.4f}] "
            f"| {r.rate_exponent:.3f} [{exp_low:.3f}, {exp_high:.3f}] |"
        )
    return (
        "| h | num_layers | weight matrices L | train accuracy % (range) | collapsed seeds "
        "| level C [95 % CI] | fitted exponent [95 % CI] |\n|---|---|---|---|---|---|---|\n" + "\n".join(lines)
    )


def ordering_table(tests: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`ordering_tests` results."""
    rows = [
        f"| {t['dataset']} | {t['claim']} | {'without' if t['excluding_collapsed'] else 'with'} | {t['pairs']} "
        f"| {t['statistic']:.3f} | {t['p_value']:.4f} | {t['verdict']} |"
        for t in tests
    ]
    return (
        "| dataset | claim | collapsed seeds | pairs | Spearman rho | one-sided p | verdict |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )


def summary_rows(results: dict[tuple[int, int], ConfigurationResult]) -> list[dict[str, Any]]:
    """Per-configuration numbers for ``summary.json`` (lists are per seed, in ``seeds`` order)."""
    return [
        {
            "hidden_size": r.hidden_size,
            "num_layers": r.num_layers,
            "weight_matrices": r.weight_matrices,
            "seeds": r.seeds,
            "accuracies": r.accuracies,
            "train_losses": [m.train_loss for m in r.members],
            "levels": r.levels,
            "level_mean": r.level_mean,
            "level_ci95": list(r.level_ci95),
            "rate_exponents": r.rate_exponents,
            "rate_exponent": r.rate_exponent,
            "rate_exponent_ci95": list(r.rate_exponent_ci95),
            "mean_abs_deviations": [m.mean_abs_deviation for m in r.members],
            "shares_at_chance": [m.share_at_chance for m in r.members],
            "collapsed_seeds": r.collapsed_seeds,
        }
        for r in results.values()
    ]


def paper_values(name: str) -> dict[str, Any]:
    """An entry of ``lhlib/paper_values.json``: numbers read off the paper, with their provenance."""
    table = json.loads(resources.files("lhlib").joinpath("paper_values.json").read_text())
    if name not in table:
        raise ValueError(f"name must be one of {sorted(table)}, got {name!r}")
    return table[name]
