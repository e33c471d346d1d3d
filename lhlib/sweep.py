"""The paper's architecture sweep: train each (h, num_layers), measure its loss-difference curves.

Figures 2-5 each show two panels per dataset: hidden sizes ``hidden_sizes`` at ``fixed_num_layers``
and depths ``num_layers`` at ``fixed_hidden_size``. :func:`run_sweep` computes every configuration
both panels need (the shared one once), :func:`plot_sweep` draws the paper's panels (EMA-smoothed,
log y) above the unsmoothed mean with its spread and the fitted power law, and
:func:`summary_rows` gives the per-configuration numbers a chapter writes to ``summary.json``.
Chapters 04 (pixels) and 05 (backbone features) both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from lhlib.experiment import trained_network
from lhlib.landscape import RateFit, ema, fit_rate_exponent, log_binned, loss_difference_curves, mean_abs_deviation
from lhlib.style import sweep_colors
from lhlib.train import resolve_device
from lhlib.validation import check_float, check_int, check_int_list

__all__ = ["SweepSettings", "ConfigurationResult", "check_sweep_settings", "sweep_configurations",
           "run_sweep", "plot_sweep", "summary_rows"]


@dataclass(frozen=True)
class SweepSettings:
    """Everything that determines a sweep's numbers besides the data (the paper's values by default)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    hidden_sizes: tuple[int, ...] = (4, 8, 16, 32, 64)
    num_layers: tuple[int, ...] = (1, 3, 5, 7, 10)
    fixed_hidden_size: int = 16
    fixed_num_layers: int = 5
    permutations: int = 100
    ema: float = 0.99
    seed: int = 0
    device: str = "auto"
    fit_k_min: int = 10


def check_sweep_settings(**parameters: Any) -> SweepSettings:
    """Validate a chapter's sweep parameters (one-line ValueError naming the first bad one)."""
    settings = dict(parameters)
    check_int("epochs", settings["epochs"], minimum=1)
    check_int("batch_size", settings["batch_size"], minimum=1)
    check_float("lr", settings["lr"], minimum=0.0, strict_minimum=True)
    settings["hidden_sizes"] = tuple(check_int_list("hidden_sizes", settings["hidden_sizes"], minimum=1))
    settings["num_layers"] = tuple(check_int_list("num_layers", settings["num_layers"], minimum=0))
    check_int("fixed_hidden_size", settings["fixed_hidden_size"], minimum=1)
    check_int("fixed_num_layers", settings["fixed_num_layers"], minimum=0)
    check_int("permutations", settings["permutations"], minimum=2)
    check_float("ema", settings["ema"], minimum=0.0, maximum=1.0)
    check_int("seed", settings["seed"], minimum=0)
    check_int("fit_k_min", settings["fit_k_min"], minimum=1)
    resolve_device(settings["device"])
    return SweepSettings(**settings)


def sweep_configurations(settings: SweepSettings) -> list[tuple[int, int]]:
    """The distinct ``(hidden_size, num_layers)`` pairs the two panels need, in a stable order."""
    pairs = [(h, settings.fixed_num_layers) for h in settings.hidden_sizes]
    pairs += [(settings.fixed_hidden_size, n) for n in settings.num_layers]
    return list(dict.fromkeys(pairs))


@dataclass(frozen=True)
class ConfigurationResult:
    """One configuration's trained network and loss-difference statistics over random orders.

    Curves are indexed by ``k = 1 .. N - 1``: ``mean`` is the average of ``|L_{k+1} - L_k|``
    over orders, ``lower``/``upper`` its 25 % and 75 % quantiles across orders, ``smoothed`` the
    paper's EMA of ``mean``. ``mean_abs_deviation`` is ``mean_i |l_i - mean(l)|``: at a fixed
    point ``E|L_{k+1} - L_k| ~ mean_abs_deviation / (k + 1)`` for large ``k``.
    """

    hidden_size: int
    num_layers: int
    weight_matrices: int
    train_loss: float
    train_accuracy: float
    epoch_loss: list[float]
    losses: torch.Tensor
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    smoothed: np.ndarray
    fit: RateFit
    mean_abs_deviation: float

    @property
    def final_abs_diff(self) -> float:
        """Mean ``|L_N - L_{N-1}|`` over orders: the last point of the curve."""
        return float(self.mean[-1])

    @property
    def level(self) -> float:
        """``(k + 1)`` times the mean curve, averaged over the last tenth of ``k``.

        The curve's constant ``C`` in ``C / (k + 1)``; far less noisy than the last point alone, and
        equal to ``mean_abs_deviation`` in the limit.
        """
        k = np.arange(1, self.mean.size + 1)
        tail = slice(-max(1, self.mean.size // 10), None)
        return float(((k[tail] + 1) * self.mean[tail]).mean())


def _measure(network, settings: SweepSettings, hidden_size: int, num_layers: int) -> ConfigurationResult:
    curves = loss_difference_curves(network.losses, settings.permutations, settings.seed).numpy()
    lower, upper = np.quantile(curves, [0.25, 0.75], axis=0)
    mean = curves.mean(axis=0)
    return ConfigurationResult(
        hidden_size, num_layers, network.model.weight_matrices, network.train_loss, network.train_accuracy,
        network.epoch_loss, network.losses, mean, lower, upper, ema(mean, settings.ema),
        fit_rate_exponent(curves, k_min=min(settings.fit_k_min, curves.shape[1] - 1), seed=settings.seed),
        float(mean_abs_deviation(network.losses.double())),
    )


def run_sweep(x: torch.Tensor, y: torch.Tensor, num_classes: int, settings: SweepSettings,
              label: str = "") -> dict[tuple[int, int], ConfigurationResult]:
    """Train (or load from the results store) and measure every configuration of the sweep."""
    results = {}
    for hidden_size, num_layers in tqdm(sweep_configurations(settings), desc=f"{label} configurations".strip()):
        network = trained_network(
            x, y, num_classes=num_classes, hidden_size=hidden_size, num_layers=num_layers, epochs=settings.epochs,
            batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, device=settings.device,
        )
        results[(hidden_size, num_layers)] = _measure(network, settings, hidden_size, num_layers)
    return results


def _panel(results, settings, varying: str):
    if varying == "hidden_size":
        return [results[(h, settings.fixed_num_layers)] for h in settings.hidden_sizes], "h"
    return [results[(settings.fixed_hidden_size, n)] for n in settings.num_layers], "L"


def plot_sweep(results: dict[tuple[int, int], ConfigurationResult], settings: SweepSettings, title: str) -> plt.Figure:
    """The paper's two panels (top: EMA of the mean, log y) and, below, the unsmoothed mean with its
    interquartile band across orders on log-log axes (averaged in log-spaced bins of ``k``, so each
    decade is readable), with each configuration's fitted power law."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex="row")
    for column, varying in enumerate(("hidden_size", "num_layers")):
        panel, symbol = _panel(results, settings, varying)
        fixed = (f"num_layers = {settings.fixed_num_layers} (L = {settings.fixed_num_layers + 2} weight matrices)"
                 if varying == "hidden_size" else f"h = {settings.fixed_hidden_size}")
        for result, color in zip(panel, sweep_colors(len(panel))):
            name = (f"h = {result.hidden_size}" if varying == "hidden_size"
                    else f"num_layers = {result.num_layers} (L = {result.weight_matrices})")
            k = np.arange(1, result.mean.size + 1)
            axes[0, column].plot(k, result.smoothed, color=color, label=name)
            centres, binned_mean = log_binned(result.mean)
            axes[1, column].plot(centres, binned_mean, color=color, marker=".", ms=3, lw=1.0,
                                 label=f"{name}: slope {result.fit.exponent:.3f}")
            axes[1, column].fill_between(centres, log_binned(result.lower)[1], log_binned(result.upper)[1],
                                         color=color, alpha=0.12, lw=0)
            fit_k = np.array([result.fit.k_min, result.fit.k_max])
            axes[1, column].plot(fit_k, np.exp(result.fit.log_constant) * fit_k ** result.fit.exponent,
                                 color=color, ls="--", lw=0.8)
        axes[0, column].set(yscale="log", xlabel="sample size k",
                            ylabel=r"EMA of mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)",
                            title=f"{'hidden size' if symbol == 'h' else 'number of layers'} sweep, {fixed}")
        axes[1, column].set(xscale="log", yscale="log", xlabel="sample size k",
                            ylabel=r"mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)",
                            title="unsmoothed mean (log bins); band: 25-75 % of orders; dashed: fit")
        axes[0, column].legend(loc="upper right")
        axes[1, column].legend(loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def summary_rows(results: dict[tuple[int, int], ConfigurationResult]) -> list[dict[str, Any]]:
    """Per-configuration numbers for ``summary.json``."""
    return [
        {"hidden_size": r.hidden_size, "num_layers": r.num_layers, "weight_matrices": r.weight_matrices,
         "train_loss": r.train_loss, "train_accuracy": r.train_accuracy, "rate_exponent": r.fit.exponent,
         "rate_exponent_ci": list(r.fit.ci), "fit_k_range": [r.fit.k_min, r.fit.k_max],
         "final_abs_diff": r.final_abs_diff, "level": r.level, "mean_abs_deviation": r.mean_abs_deviation}
        for r in results.values()
    ]
