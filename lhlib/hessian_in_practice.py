"""Chapter 03's experiment: what the per-sample Hessians of a trained network look like.

:func:`curvature_measurements` measures one network with the engine of :mod:`lhlib.hessian` and
caches the result in the results store: the exact G-term norm of every sample, the full-Hessian and
H-term norms of a random subset plus the samples with the largest G-term (batched Lanczos), and the
top eigenvalues of the averaged Hessian and G-term. :func:`theorem1_checks` compares those norms
with every form of Theorem 1 in :mod:`lhlib.bounds` (:data:`BOUND_FORMS`); :func:`quantile_summary`
condenses a per-sample array for ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lhlib import bounds
from lhlib.cache import cached, tensor_fingerprint
from lhlib.hessian import dataset_hessian_top_eigenvalues, per_sample_ggn_norms, per_sample_hessian_norms
from lhlib.validation import check_int

__all__ = [
    "BOUND_FORMS",
    "CurvatureMeasurements",
    "curvature_measurements",
    "quantile_summary",
    "theorem1_checks",
]

#: Bump when a change here alters what :func:`curvature_measurements` returns (its cache key).
MEASUREMENTS_VERSION = 1


@dataclass(frozen=True)
class CurvatureMeasurements:
    """Curvature of one network on ``(x, y)``.

    ``ggn_norms`` ``(N,)``: exact ``||G_i||_2`` of every sample. ``full_index``: the samples that
    got Lanczos on the full Hessian, the first ``random_count`` a uniform random subset, the rest
    the samples with the largest G-term norm (where a bound is most at risk). For those,
    ``hessian`` (full ``H_i``) and ``hterm`` (``H_i - G_i``) hold :class:`lhlib.hessian.HessianNorms`-style
    tensors: ``norms``, ``lambda_min``, ``lambda_max``, ``converged``. ``top_hessian``/``top_ggn``:
    the largest eigenvalues of the averaged matrices over ``eigen_count`` samples (empty if none).
    """

    ggn_norms: torch.Tensor
    full_index: torch.Tensor
    random_count: int
    hessian: dict
    hterm: dict
    top_hessian: np.ndarray
    top_ggn: np.ndarray
    eigen_count: int
    from_cache: bool


def _lanczos_subset(ggn: torch.Tensor, full_samples: int, extreme_samples: int, seed: int) -> torch.Tensor:
    """``full_samples`` uniformly random samples, then the ``extreme_samples`` others of largest G-term."""
    n = ggn.shape[0]
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:full_samples]
    rest = torch.ones(n, dtype=torch.bool)
    rest[chosen] = False
    candidates = torch.nonzero(rest).squeeze(1)
    return torch.cat([chosen, candidates[ggn[candidates].argsort(descending=True)[:extreme_samples]]])


def _extreme_eigenvalues(model, x, y, operator: str, *, max_iter: int, tol: float, seed: int) -> dict:
    """:func:`lhlib.hessian.per_sample_hessian_norms` of ``operator`` on ``(x, y)``, as a dict of tensors."""
    if not x.shape[0]:
        empty = torch.zeros(0, dtype=torch.float64)
        return {"norms": empty, "lambda_min": empty, "lambda_max": empty, "converged": torch.zeros(0, dtype=torch.bool)}
    r = per_sample_hessian_norms(model, x, y, operator=operator, max_iter=max_iter, tol=tol, seed=seed)
    return {"norms": r.norms, "lambda_min": r.lambda_min, "lambda_max": r.lambda_max, "converged": r.converged}


def _measure(model, x, y, settings: dict) -> dict:
    """What :func:`curvature_measurements` stores, computed (``settings``: its keyword arguments)."""
    parameter = next(model.parameters())
    x, y = x.to(device=parameter.device, dtype=parameter.dtype), y.to(parameter.device)
    ggn = per_sample_ggn_norms(model, x).cpu()
    index = _lanczos_subset(ggn, settings["full_samples"], settings["extreme_samples"], settings["seed"])
    out = {"ggn_norms": ggn, "full_index": index, "random_count": min(settings["full_samples"], ggn.shape[0])}
    on_device = index.to(parameter.device)
    lanczos = {key: settings[key] for key in ("max_iter", "tol", "seed")}
    out["hessian"] = _extreme_eigenvalues(model, x[on_device], y[on_device], "hessian", **lanczos)
    out["hterm"] = (
        _extreme_eigenvalues(model, x[on_device], y[on_device], "hterm", **lanczos) if settings["hterm"] else {}
    )
    top_k, count = settings["top_k"], settings["eigen_samples"]
    if top_k and top_k < sum(p.numel() for p in model.parameters()):
        top = dataset_hessian_top_eigenvalues(
            model, x[:count], y[:count], k=top_k, tol=settings["eig_tol"], seed=settings["seed"]
        )
        out["top_hessian"], out["top_ggn"] = torch.as_tensor(top.hessian.copy()), torch.as_tensor(top.ggn.copy())
    else:
        out["top_hessian"] = out["top_ggn"] = torch.zeros(0, dtype=torch.float64)
    return out


def curvature_measurements(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    full_samples: int = 256,
    extreme_samples: int = 16,
    top_k: int = 5,
    eigen_samples: int | None = None,
    max_iter: int = 80,
    tol: float = 1e-3,
    eig_tol: float = 1e-4,
    hterm: bool = True,
    seed: int = 0,
    use_cache: bool = True,
) -> CurvatureMeasurements:
    """Everything chapter 03 measures on one network, from the results store when measured before.

    G-term norms of every sample; full-Hessian and H-term norms (batched Lanczos, ``max_iter``
    steps, relative residual ``tol``) of ``full_samples`` random plus ``extreme_samples``
    largest-G samples; the top ``top_k`` eigenvalues of the averaged Hessian and G-term over the
    first ``eigen_samples`` samples (all when ``None``, none when ``top_k == 0``; ARPACK tolerance
    ``eig_tol``). The store key holds the weights' and data's fingerprints and every setting.
    """
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (N, n) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    n = x.shape[0]
    settings = {
        "full_samples": check_int("full_samples", full_samples, minimum=0, maximum=n),
        "extreme_samples": check_int("extreme_samples", extreme_samples, minimum=0, maximum=n),
        "top_k": check_int("top_k", top_k, minimum=0),
        "eigen_samples": n
        if eigen_samples is None
        else check_int("eigen_samples", eigen_samples, minimum=1, maximum=n),
        "max_iter": max_iter,
        "tol": tol,
        "eig_tol": eig_tol,
        "hterm": hterm,
        "seed": check_int("seed", seed, minimum=0),
    }
    params = {
        "version": MEASUREMENTS_VERSION,
        "model": tensor_fingerprint(*[p.detach() for p in model.parameters()]),
        "model_class": type(model).__name__,
        "data": tensor_fingerprint(x, y),
        **settings,
        "torch": torch.__version__.split("+")[0],
    }
    computed = False

    def compute() -> dict:
        nonlocal computed
        computed = True
        return _measure(model, x, y, settings)

    result = cached("curvature_measurements", params, compute, enabled=use_cache)
    return CurvatureMeasurements(
        result["ggn_norms"],
        result["full_index"],
        int(result["random_count"]),
        result["hessian"],
        result["hterm"],
        result["top_hessian"].numpy(),
        result["top_ggn"].numpy(),
        settings["eigen_samples"],
        from_cache=not computed,
    )


def quantile_summary(values: torch.Tensor | np.ndarray, quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> dict:
    """``{"min", "q50", "q90", "q99", "max", "mean", "count"}`` of a 1-D array (float64), for summaries."""
    values = np.asarray(torch.as_tensor(values).double().cpu())
    if values.size == 0:
        return {"count": 0}
    out = {
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
    out.update({f"q{round(100 * q)}": float(np.quantile(values, q)) for q in quantiles})
    return out


#: The forms of Theorem 1 that :func:`theorem1_checks` evaluates (all from :mod:`lhlib.bounds`).
BOUND_FORMS = {
    "paper": "Theorem 1 as stated (M_x, M_W maxima, sqrt 2, +1 bias rows)",
    "paper_per_sample": "A.2's form with each ||x_i|| and the actual layer norms",
    "corrected": "corrected: (1/2) M_x^2 sum_p prod_{s != p} ||W^(s)||^2",
    "corrected_per_sample": "corrected with each ||x_i||",
    "activation_per_sample": "(1/2) sum_p ||x_i^(p)||^2 ||G_i^(p)||^2 (actual activations)",
}


def theorem1_checks(
    model: nn.Module,
    x: torch.Tensor,
    ggn_norms: torch.Tensor,
    full_index: torch.Tensor,
    hessian_norms: torch.Tensor,
    *,
    slack: float = 1e-5,
) -> dict:
    """Every form of Theorem 1 in :data:`BOUND_FORMS` against measured norms.

    For each form: ``value`` (the number, or the quantiles of the per-sample numbers), ``held_ggn``
    (bound >= ``||G_i||_2 (1 - slack)`` on every sample), ``held_hessian`` (the same for the full
    ``||H_i||_2`` on the ``full_index`` samples), ``violations_ggn``/``violations_hessian`` (counts)
    and ``tightness_ggn``/``tightness_hessian``: the smallest ratio bound / measured norm over the
    samples with a nonzero norm (for a single-number bound that is bound / max norm; NaN when every
    norm is zero), ``median_ratio_ggn`` the median ratio. A ratio below 1 is a violation.
    ``slack`` absorbs float32 rounding of the measured norms.
    """
    ggn = ggn_norms.double().cpu()
    full = hessian_norms.double().cpu()
    index = full_index.cpu()
    forms = {
        "paper": bounds.theorem1_bound_paper(model, x),
        "paper_per_sample": bounds.theorem1_bound_per_sample(model, x).cpu(),
        "corrected": bounds.corrected_bound(model, x),
        "corrected_per_sample": bounds.corrected_bound_per_sample(model, x).cpu(),
        "activation_per_sample": bounds.activation_bound_per_sample(model, x).cpu(),
    }
    out = {}
    for name, bound in forms.items():
        per_sample = torch.as_tensor(bound, dtype=torch.float64).expand_as(ggn) if not torch.is_tensor(bound) else bound
        # Ratios only where the measured norm is positive: a sample whose logits do not depend on the
        # weights (every ReLU path dead) has zero curvature, and any bound holds there trivially.
        live_g, live_h = ggn > 0, full > 0
        ratio_g = per_sample[live_g] / ggn[live_g]
        ratio_h = per_sample[index][live_h] / full[live_h]
        out[name] = {
            "description": BOUND_FORMS[name],
            "value": float(bound) if not torch.is_tensor(bound) else quantile_summary(bound),
            "held_ggn": bool((per_sample >= ggn * (1 - slack)).all()),
            "violations_ggn": int((per_sample < ggn * (1 - slack)).sum()),
            "tightness_ggn": float(ratio_g.min()) if ratio_g.numel() else float("nan"),
            "median_ratio_ggn": float(ratio_g.median()) if ratio_g.numel() else float("nan"),
            "held_hessian": bool((per_sample[index] >= full * (1 - slack)).all()),
            "violations_hessian": int((per_sample[index] < full * (1 - slack)).sum()),
            "tightness_hessian": float(ratio_h.min()) if ratio_h.numel() else float("nan"),
        }
    return out
