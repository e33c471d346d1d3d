"""The paper's architecture sweep across training seeds: each (h, num_layers), its loss-difference curves.

Figures 2-5 each show two panels per dataset: hidden sizes ``hidden_sizes`` at ``fixed_num_layers``
and depths ``num_layers`` at ``fixed_hidden_size``. :func:`run_sweep` trains every configuration
both panels need (the shared one once) as a seed ensemble and measures every member, keeping the
spread across seeds beside the spread across random orders (the book draws both);
:func:`ordering_tests` turns the paper's "wider gives smaller, deeper gives larger" into one-sided
trend tests over all (configuration, seed) pairs; :func:`summary_rows` gives the numbers a chapter
writes to ``summary.json``. Chapters 04 (pixels) and 05 (backbone features) use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lhlib.engine.experiment import TrainedNetwork, settings_networks
from lhlib.engine.landscape import RateFit, ema, fit_rate_exponent, loss_difference_curves, mean_abs_deviation
from lhlib.engine.progress import progress_bar
from lhlib.engine.seed_stats import (
    interval_across_seeds,
    is_collapsed,
    p_value_text,
    positive_interval_across_seeds,
    share_at_chance,
    trend_test,
)
from lhlib.engine.settings import PANELS, SweepSettings, sweep_configurations
from lhlib.engine.validation import check_choice

__all__ = [
    "ConfigurationResult",
    "SeedResult",
    "combine_members",
    "measure_member",
    "ordering_table",
    "ordering_tests",
    "ordering_verdicts",
    "panel_configurations",
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
    r"""One trained network (one seed) of a configuration and its curves over random orders.

    With the per-sample losses :math:`\ell_1, \dots, \ell_N` at the trained point :math:`\hat\theta` taken in a random
    order :math:`\pi`, :math:`\mathcal{L}_k = \frac{1}{k} \sum_{i \le k} \ell_{\pi(i)}`; every curve is indexed by
    :math:`k = 1, \dots, N - 1` (column :math:`j` holds :math:`k = j + 1`).

    Attributes:
        seed: The training seed (initialisation and mini-batch order); it also seeds the random orders.
        train_loss: The mean per-sample loss at :math:`\hat\theta`.
        train_accuracy: The fraction of the training samples classified correctly.
        epoch_loss: The mean mini-batch loss of each training epoch.
        losses: The ``(N,)`` per-sample losses :math:`\ell_i` at :math:`\hat\theta`.
        mean: The ``(N - 1,)`` curve :math:`d_k`, :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|` averaged over the orders.
        order_lower: The ``(N - 1,)`` 25 % quantile of :math:`|\mathcal{L}_{k+1} - \mathcal{L}_k|` across the orders.
        order_upper: The ``(N - 1,)`` 75 % quantile across the orders.
        fit: The power law :math:`d_k \approx C k^{\alpha}` (:class:`lhlib.engine.landscape.RateFit`), or ``None``
            when the
            curve is zero somewhere in the fitted range, as it is for a network whose losses are all equal: a power law
            has no exponent there.
        mean_abs_deviation: The MAD :math:`\frac{1}{N} \sum_i |\ell_i - \bar\ell|` of the losses.
        share_at_chance: The fraction of the per-sample losses within :math:`10^{-4}` of :math:`\ln K`.
        collapsed: Whether the network collapsed (:func:`lhlib.engine.seed_stats.is_collapsed`: ``share_at_chance``
            reaches the sweep's ``collapse_share``, or the accuracy is no better than the most frequent class).
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
        r"""The level :math:`C` of :math:`C / (k + 1)`, the mean of :math:`(k + 1)\, d_k` over the last tenth of the
        :math:`k`, close to ``mean_abs_deviation`` for large :math:`N`.
        """
        return _level(self.mean)


@dataclass(frozen=True)
class ConfigurationResult:
    r"""One configuration across seeds.

    Curves are indexed by :math:`k = 1, \dots, N - 1`. Every mean, spread, fit and interval is over the *kept*
    seeds: those that did not collapse (``collapsed`` of :class:`SeedResult`) and have a fitted exponent. A collapsed
    network's level says how many of its units died, not how its landscape converges, and a network whose losses
    are all equal has a zero curve, which has no place on a log axis. When no seed is kept the curves fall back on
    the fitted seeds (or all of them), so that a figure can still show the configuration, and its level, exponent
    and intervals are NaN.

    Attributes:
        hidden_size: The width :math:`h` (for the families of :mod:`lhlib.engine.architectures`, their width).
        num_layers: The depth (for the MLP, its hidden-to-hidden layers).
        weight_matrices: The number :math:`L` of weight matrices (linear layers) of the network.
        members: One :class:`SeedResult` per seed, in seed order.
        mean: The average over every seed of the seeds' mean curves, :math:`\bar d_k`.
        smoothed: The paper's exponential moving average of ``mean``.
        live_mean: The average of the kept seeds' mean curves.
        live_smoothed: The exponential moving average of ``live_mean``.
        seed_low: The smallest kept seed's mean curve at each :math:`k`.
        seed_high: The largest kept seed's mean curve at each :math:`k`.
        smoothed_low: The smallest of the kept seeds' smoothed curves at each :math:`k`.
        smoothed_high: The largest of the kept seeds' smoothed curves at each :math:`k`.
        order_lower: The 25 % quantile across orders, averaged over the kept seeds.
        order_upper: The 75 % quantile across orders, averaged over the kept seeds.
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
    def kept(self) -> list[SeedResult]:
        """The members every statistic is over, those that did not collapse and have a fitted exponent."""
        return [m for m in self.members if not m.collapsed and m.fit is not None]

    @property
    def levels(self) -> list[float]:
        """Each member's level :math:`C` (:attr:`SeedResult.level`), in seed order, collapsed ones included."""
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
        """The mean level across the kept seeds (NaN if none is kept)."""
        kept = [m.level for m in self.kept]
        return float(np.mean(kept)) if kept else float("nan")

    @property
    def level_geometric_mean(self) -> float:
        """The geometric mean level across the kept seeds, the centre of :attr:`level_ci95` (NaN if none is kept)."""
        kept = [m.level for m in self.kept]
        return float(np.exp(np.mean(np.log(kept)))) if kept else float("nan")

    @property
    def level_ci95(self) -> tuple[float, float]:
        """The 95 % interval of the level across the kept seeds, taken on the log scale because a level is
        positive (:func:`lhlib.engine.seed_stats.positive_interval_across_seeds`; NaN if fewer than two seeds are kept).
        """
        kept = [m.level for m in self.kept]
        return positive_interval_across_seeds(kept)[1] if len(kept) >= 2 else (float("nan"), float("nan"))

    @property
    def rate_exponents(self) -> list[float | None]:
        """Each seed's fitted exponent (``None`` where the curve has none), collapsed seeds included."""
        return [m.fit.exponent if m.fit is not None else None for m in self.members]

    @property
    def rate_exponent(self) -> float:
        """The fitted exponent, averaged over the kept seeds (NaN if none is kept)."""
        kept = [m.fit.exponent for m in self.kept]
        return float(np.mean(kept)) if kept else float("nan")

    @property
    def rate_exponent_ci95(self) -> tuple[float, float]:
        """The 95 % Student-t interval of the fitted exponent across the kept seeds (NaN if fewer than two)."""
        kept = [m.fit.exponent for m in self.kept]
        return interval_across_seeds(kept)[1] if len(kept) >= 2 else (float("nan"), float("nan"))

    @property
    def mean_abs_deviation(self) -> float:
        """The mean over the kept seeds of the MAD of the per-sample losses (NaN if none is kept)."""
        kept = [m.mean_abs_deviation for m in self.kept]
        return float(np.mean(kept)) if kept else float("nan")

    @property
    def level(self) -> float:
        """The level of the kept seeds' mean curve (equal to :attr:`level_mean`, the level being linear; NaN if none
        is kept).
        """
        return _level(self.live_mean) if self.kept else float("nan")


def measure_member(
    network: TrainedNetwork, settings: SweepSettings, labels: torch.Tensor, num_classes: int
) -> SeedResult:
    r"""One network's loss-difference curves over random orders, their power-law fit, MAD and collapse.

    With the per-sample losses :math:`\ell_i` of ``network`` at :math:`\hat\theta` in
    :math:`P` = ``settings.permutations`` random orders :math:`\pi_1, \dots, \pi_P`
    (:func:`lhlib.engine.landscape.loss_difference_curves`),

    .. math::

        d_k = \frac{1}{P} \sum_{p=1}^{P} \bigl|\mathcal{L}^{\pi_p}_{k+1} - \mathcal{L}^{\pi_p}_k\bigr|, \qquad
        \mathcal{L}^{\pi}_k = \frac{1}{k} \sum_{i=1}^{k} \ell_{\pi(i)}, \qquad k = 1, \dots, N - 1,

    and :math:`d_k \approx C k^{\alpha}` is fitted on :math:`k \ge` ``settings.fit_k_min`` (at most :math:`N - 2`)
    unless :math:`d_k = 0` somewhere there.

    Args:
        network: The trained network and its per-sample losses at :math:`\hat\theta`; its seed also seeds the orders
            and the fit's bootstrap.
        settings: The sweep's settings (``permutations``, ``fit_k_min``, ``collapse_share``).
        labels: The ``(N,)`` training labels, whose most frequent class marks a collapse
            (:func:`lhlib.engine.seed_stats.is_collapsed`).
        num_classes: The number of classes :math:`K`, whose chance loss :math:`\ln K` marks a collapse.

    Returns:
        The network's :class:`SeedResult`.
    """
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
        is_collapsed(network.losses, network.train_accuracy, labels, num_classes, settings.collapse_share),
    )


def combine_members(hidden_size, num_layers, weight_matrices, members, settings) -> ConfigurationResult:
    r"""One configuration's :class:`ConfigurationResult` from its members (one :class:`SeedResult` per seed).

    With :math:`d^{(s)}_k` the mean curve of seed :math:`s` of :math:`S` and :math:`\beta` = ``settings.ema``,

    .. math::

        \bar d_k = \frac{1}{S} \sum_{s=1}^{S} d^{(s)}_k, \qquad
        e_1 = \bar d_1, \quad e_k = \beta\, e_{k-1} + (1 - \beta)\, \bar d_k,

    and the same over the kept seeds (:attr:`ConfigurationResult.kept`), whose spreads are :math:`\min_s d^{(s)}_k`
    and :math:`\max_s d^{(s)}_k` (and the same of their smoothed curves).

    Args:
        hidden_size: The width :math:`h`, recorded in the result.
        num_layers: The depth, recorded in the result.
        weight_matrices: The number :math:`L` of weight matrices, recorded in the result.
        members: The configuration's :class:`SeedResult` objects, one per seed.
        settings: The sweep's settings (``ema``, the smoothing factor :math:`\beta`).

    Returns:
        The configuration's curves and their spreads across seeds.
    """
    mean = np.mean([m.mean for m in members], axis=0)
    # A collapsed network's curve measures its dead units, and a zero curve has no place on a log axis.
    live = (
        [m for m in members if not m.collapsed and m.fit is not None]
        or [m for m in members if m.fit is not None]
        or list(members)
    )
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
    r"""Train (or load from the results store) every configuration's seed ensemble and measure each member.

    For every ``(hidden_size, num_layers)`` of :func:`lhlib.engine.settings.sweep_configurations` and every seed
    :math:`s`,
    :func:`measure_member` measures

    .. math::

        d^{(s)}_k = \mathbb{E}_\pi \bigl|\mathcal{L}_{k+1}(\hat\theta_s) - \mathcal{L}_k(\hat\theta_s)\bigr|,
        \qquad k = 1, \dots, N - 1,

    the expectation over the order of the training samples estimated from ``settings.permutations`` random orders.

    Args:
        x: The ``(N, n)`` training inputs.
        y: The ``(N,)`` training labels.
        num_classes: The number of classes :math:`K`.
        settings: The sweep's configurations, training recipe, seeds and measurement settings.
        label: A prefix of the progress bar's description (the dataset's name).

    Returns:
        Per ``(hidden_size, num_layers)``, its :class:`ConfigurationResult`.
    """
    results = {}
    for hidden_size, num_layers in progress_bar(sweep_configurations(settings), desc=f"{label} configurations".strip()):
        networks = settings_networks(x, y, num_classes, hidden_size, num_layers, settings)
        members = [measure_member(network, settings, y, num_classes) for network in networks]
        results[(hidden_size, num_layers)] = combine_members(
            hidden_size, num_layers, networks[0].model.weight_matrices, members, settings
        )
    return results


def panel_configurations(results, settings, varying: str) -> list[ConfigurationResult]:
    """The results of one panel: the hidden sizes at ``fixed_num_layers``, or the depths at ``fixed_hidden_size``.

    Args:
        results: :func:`run_sweep`'s results.
        settings: The sweep's settings (its panels).
        varying: ``"hidden_size"`` for the width panel, ``"num_layers"`` for the depth panel.

    Returns:
        The panel's :class:`ConfigurationResult` objects, in the order of ``hidden_sizes`` or ``num_layers``.

    Raises:
        ValueError: when ``varying`` is neither ``"hidden_size"`` nor ``"num_layers"``.
    """
    check_choice("varying", varying, PANELS)
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
    r"""The paper's two ordering claims as one-sided Spearman trend tests of the level over a panel's pairs.

    Each panel is tested over every (configuration, seed) pair :math:`(x_j, C_j)`, :math:`x_j` the varied ``h`` or
    ``num_layers`` and :math:`C_j` the seed's level, once with every seed and once without the collapsed seeds
    (:func:`lhlib.engine.seed_stats.trend_test`, ties ranked by their average rank):

    .. math::

        \rho = \operatorname{corr}\bigl(\operatorname{rank}(x), \operatorname{rank}(C)\bigr), \qquad
        p = \frac{1 + \#\{b \le B : \rho_b \le \rho\}}{1 + B},

    for the claimed decrease with ``h`` (:math:`\rho_b \ge \rho` for the claimed increase with depth),
    :math:`\rho_b` the correlation after the :math:`b`-th of :math:`B` random permutations of the levels.

    Args:
        results: :func:`run_sweep`'s results for one dataset.
        settings: The sweep's settings (its panels).
        dataset: The dataset's name, recorded in every test.
        permutations: :math:`B`, the random permutations behind each p-value.

    Returns:
        Four dicts (two panels, with and without the collapsed seeds), each with ``dataset``, ``panel``, ``claim``,
        ``excluding_collapsed`` and the fields of :class:`lhlib.engine.seed_stats.TrendTest`.
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


def sweep_table(results: dict[tuple[int, int], ConfigurationResult]) -> tuple[list[str], list[list[str]]]:
    """Every configuration across its seeds, as a table.

    The columns: ``h``, ``num_layers``, the weight matrices :math:`L`, the training accuracy (mean and range), the
    collapsed seeds, and over the kept seeds the level (geometric mean, 95 % interval on the log scale) and the
    fitted exponent (mean and 95 % interval).

    Args:
        results: :func:`run_sweep`'s results.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
    """
    rows = []
    for r in results.values():
        accuracy = 100 * np.array(r.accuracies)
        (level_low, level_high), (exp_low, exp_high) = r.level_ci95, r.rate_exponent_ci95
        rows.append(
            [
                r.hidden_size,
                r.num_layers,
                r.weight_matrices,
                f"{accuracy.mean():.1f} ({accuracy.min():.1f}-{accuracy.max():.1f})",
                f"{r.collapsed_seeds} of {len(r.members)}",
                f"{r.level_geometric_mean:.4f} [{level_low:.4f}, {level_high:.4f}]"
                if r.kept
                else "every seed collapsed",
                f"{r.rate_exponent:.3f} [{exp_low:.3f}, {exp_high:.3f}]" if r.kept else "",
            ]
        )
    header = [
        "h",
        "num_layers",
        "weight matrices L",
        "train accuracy % (range)",
        "collapsed seeds (left out)",
        "level C, geometric mean [95 % CI, log scale]",
        "fitted exponent [95 % CI]",
    ]
    return header, rows


def ordering_table(tests: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The :func:`ordering_tests` results as a table, one row per test, with both verdicts.

    Args:
        tests: :func:`ordering_tests` results of one family (any datasets), corrected by
            :func:`lhlib.engine.seed_stats.family_verdicts`.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
    """
    threshold = tests[0]["family_threshold"] if tests else float("nan")
    header = [
        "dataset",
        "claim",
        "collapsed seeds",
        "pairs",
        "Spearman rho",
        "one-sided p",
        "uncorrected verdict",
        f"verdict (family-wise, p < {threshold:.2g})",
    ]
    rows = [
        [
            t["dataset"],
            t["claim"],
            "without" if t["excluding_collapsed"] else "with",
            t["pairs"],
            f"{t['statistic']:.3f}",
            p_value_text(t["p_value"], t["p_floor"]),
            t["verdict_uncorrected"],
            t["verdict"],
        ]
        for t in tests
    ]
    return header, rows


def ordering_verdicts(tests: list[dict[str, Any]], panel: str, excluding: bool) -> str:
    """One phrase per dataset for the prose: ``"mnist: supported (rho -0.52, p <= 1e-04); ..."``.

    Args:
        tests: :func:`ordering_tests` results of one family, corrected by
            :func:`lhlib.engine.seed_stats.family_verdicts`
            (the phrase gives the family-wise verdict).
        panel: ``"hidden_size"`` or ``"num_layers"``.
        excluding: The tests without the collapsed seeds (``True``) or with every seed.

    Returns:
        The matching tests' phrases joined by ``"; "`` (empty when none matches).
    """
    return "; ".join(
        f"{t['dataset']}: {t['verdict']} (rho {t['statistic']:.2f}, p {p_value_text(t['p_value'], t['p_floor'])})"
        for t in tests
        if t["panel"] == panel and t["excluding_collapsed"] == excluding
    )


def summary_rows(results: dict[tuple[int, int], ConfigurationResult]) -> list[dict[str, Any]]:
    """Per-configuration numbers for ``summary.json`` (lists are per seed, in ``seeds`` order).

    Args:
        results: :func:`run_sweep`'s results.

    Returns:
        One JSON-ready dict per configuration with its sizes, seeds, accuracies, training losses, levels, fitted
        exponents, MADs and shares at chance (every seed), the kept seeds, the means and 95 % intervals over
        them (the level's on the log scale) and the number of collapsed seeds.
    """
    return [
        {
            "hidden_size": r.hidden_size,
            "num_layers": r.num_layers,
            "weight_matrices": r.weight_matrices,
            "seeds": r.seeds,
            "accuracies": r.accuracies,
            "train_losses": [m.train_loss for m in r.members],
            "levels": r.levels,
            "kept_seeds": [m.seed for m in r.kept],
            "level_mean": r.level_mean,
            "level_geometric_mean": r.level_geometric_mean,
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
