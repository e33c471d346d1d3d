"""lhlib: the engine behind *Unraveling the Hessian, executed*, for use on your own models.

The names below are what a researcher needs to run the book's measurements on any ``nn.Module`` and data:
train a seed ensemble, measure every sample's G-term and Hessian norm, draw and fit the loss-difference
curves, find the sample size :math:`k^*`, and say what holds across seeds. Each is documented, with its
formula, in :mod:`lhlib.engine` (the API page). They load on first use, so ``import lhlib`` stays light
and a chapter's torch-free check cell stays torch-free.

The chapters' own experiments are in :mod:`lhlib.chapters`, the book's build in :mod:`lhlib.build`.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the engine module that defines it
_EXPORTS = {
    # networks and training
    "MLP": "models",
    "build_mlp": "models",
    "build_network": "architectures",
    "train": "train",
    "train_ensemble": "ensemble",
    "ensemble_per_sample_losses": "ensemble",
    "resolve_device": "train",
    # per-sample curvature
    "computation_paths": "parameters",
    "per_sample_jjt": "per_sample",
    "per_sample_ggn_norms": "per_sample",
    "per_sample_ggn_traces": "per_sample",
    "per_sample_hessian_norms": "spectral",
    "dataset_hessian_top_eigenvalues": "spectral",
    "per_sample_matvec": "tangents",
    "mean_matvec": "tangents",
    "lemma_difference_norms": "per_sample",
    # the loss difference and its rate
    "per_sample_losses": "landscape",
    "loss_difference_curves": "landscape",
    "fit_rate_exponent": "landscape",
    "RateFit": "landscape",
    # bounds
    "corrected_bound_per_sample": "bounds",
    "theorem1_bound_per_sample": "bounds",
    "lemma_bound": "bounds",
    # sample size
    "sufficient_sample_size": "sample_size",
    "sufficient_sample_sizes": "sample_size",
    "SampleSize": "sample_size",
    # across seeds
    "interval_across_seeds": "seed_stats",
    "positive_interval_across_seeds": "seed_stats",
    "trend_test": "seed_stats",
    "family_verdicts": "seed_stats",
    "is_collapsed": "seed_stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Load an exported name from its engine module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lhlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lhlib.engine.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
