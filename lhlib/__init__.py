"""lhlib: the engine behind *Unraveling the Hessian, executed*, for use on your own models.

The names below are what a researcher needs to run the book's measurements on any ``nn.Module`` and data:
train a seed ensemble, measure every sample's G-term and Hessian norm, draw and fit the loss-difference
curves, find the sample size :math:`k^*`, and say what holds across seeds. Each is documented, with its
formula, in its engine module on the API page (``lhlib.train`` is ``lhlib.engine.train.train``, the
function). They load on first use, so ``import lhlib`` stays light and a chapter's torch-free check cell
stays torch-free.

The chapters' own experiments are in ``lhlib.chapters``, the book's build in ``lhlib.build``.
"""

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

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
    "HessianNorms": "spectral",
    "TopEigenvalues": "spectral",
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
    "TrendTest": "seed_stats",
}

__all__ = [  # the keys of _EXPORTS (a test keeps them equal), spelled out for static tools
    "HessianNorms",
    "MLP",
    "RateFit",
    "SampleSize",
    "TopEigenvalues",
    "TrendTest",
    "build_mlp",
    "build_network",
    "computation_paths",
    "corrected_bound_per_sample",
    "dataset_hessian_top_eigenvalues",
    "ensemble_per_sample_losses",
    "family_verdicts",
    "fit_rate_exponent",
    "interval_across_seeds",
    "is_collapsed",
    "lemma_bound",
    "lemma_difference_norms",
    "loss_difference_curves",
    "mean_matvec",
    "per_sample_ggn_norms",
    "per_sample_ggn_traces",
    "per_sample_hessian_norms",
    "per_sample_jjt",
    "per_sample_losses",
    "per_sample_matvec",
    "positive_interval_across_seeds",
    "resolve_device",
    "sufficient_sample_size",
    "sufficient_sample_sizes",
    "theorem1_bound_per_sample",
    "train",
    "train_ensemble",
    "trend_test",
]


def __getattr__(name: str) -> _Any:
    """Load an exported name from its engine module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lhlib' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f"lhlib.engine.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if not name.startswith("_"))})


if _TYPE_CHECKING:  # what static tools and IDEs see; tests/engine/test_public_api.py keeps it equal to _EXPORTS
    from lhlib.engine.architectures import build_network
    from lhlib.engine.bounds import corrected_bound_per_sample, lemma_bound, theorem1_bound_per_sample
    from lhlib.engine.ensemble import ensemble_per_sample_losses, train_ensemble
    from lhlib.engine.landscape import RateFit, fit_rate_exponent, loss_difference_curves, per_sample_losses
    from lhlib.engine.models import MLP, build_mlp
    from lhlib.engine.parameters import computation_paths
    from lhlib.engine.per_sample import (
        lemma_difference_norms,
        per_sample_ggn_norms,
        per_sample_ggn_traces,
        per_sample_jjt,
    )
    from lhlib.engine.sample_size import SampleSize, sufficient_sample_size, sufficient_sample_sizes
    from lhlib.engine.seed_stats import (
        TrendTest,
        family_verdicts,
        interval_across_seeds,
        is_collapsed,
        positive_interval_across_seeds,
        trend_test,
    )
    from lhlib.engine.spectral import (
        HessianNorms,
        TopEigenvalues,
        dataset_hessian_top_eigenvalues,
        per_sample_hessian_norms,
    )
    from lhlib.engine.tangents import mean_matvec, per_sample_matvec
    from lhlib.engine.train import resolve_device, train
