"""Chapter 03's experiment: what the per-sample Hessians of a trained network look like.

:func:`curvature_measurements` measures one network with the engine of :mod:`lhlib.engine.per_sample` and
caches the result in the results store: the exact G-term norm of every sample, the full-Hessian and
H-term norms of a random subset plus the samples with the largest G-term (batched Lanczos), and the
top eigenvalues of the averaged Hessian and G-term. :func:`theorem1_checks` compares those norms
with every form of Theorem 1 in :mod:`lhlib.engine.bounds` (:data:`BOUND_FORMS`); :func:`quantile_summary`
condenses a per-sample array for ``summary.json``. :func:`measure_networks` does this for every
configuration of the sweep; the functions after it turn the measurements into the chapter's
tables, findings, summary and figures (the ``plot_*`` functions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.lines import Line2D
from torch import nn

from lhlib.build.plotting import sweep_colors
from lhlib.engine import bounds
from lhlib.engine.data import Dataset
from lhlib.engine.experiment import TrainedNetwork, settings_networks
from lhlib.engine.models import build_mlp
from lhlib.engine.per_sample import lemma_difference_norms, per_sample_ggn_norms
from lhlib.engine.progress import progress_bar
from lhlib.engine.seed_stats import interval_across_seeds, is_collapsed, positive_interval_across_seeds
from lhlib.engine.settings import PANELS, SweepSettings, sweep_configurations
from lhlib.engine.spectral import dataset_hessian_top_eigenvalues, per_sample_hessian_norms
from lhlib.engine.store import cached, tensor_fingerprint
from lhlib.engine.validation import check_choice, check_int

__all__ = [
    "BOUND_FORMS",
    "CurvatureMeasurements",
    "FORM_LABELS",
    "MeasuredNetwork",
    "averaged_facts",
    "bound_facts",
    "bound_verdict",
    "configuration_record",
    "curvature_measurements",
    "hterm_facts",
    "hterm_shares",
    "lanczos_converged_fraction",
    "lemma_facts",
    "lemma_study",
    "live_median",
    "measure_networks",
    "norms_table",
    "plot_averaged_hessian",
    "plot_bounds",
    "plot_ggn_histograms",
    "plot_h_term",
    "plot_lemma_term",
    "quantile_summary",
    "scaling_across_seeds",
    "scaling_facts",
    "sweep_axis",
    "theorem1_checks",
]


#: Bump when a change here alters what :func:`curvature_measurements` returns (its cache key).
MEASUREMENTS_VERSION = 3  # 2, 3: per-sample products of the MLP by its tangent recursions (3: deltas from G^T r)


@dataclass(frozen=True)
class CurvatureMeasurements:
    r"""Curvature of one network on ``(x, y)``, as :func:`curvature_measurements` measures it.

    Sample :math:`i`'s G-term is :math:`J_i^\top A_i J_i`, with :math:`J_i` the Jacobian of the logits and
    :math:`A_i = \operatorname{diag}(p_i) - p_i p_i^\top` the softmax Hessian; its H-term is
    :math:`H_i - J_i^\top A_i J_i`.

    Attributes:
        ggn_norms: The ``(N,)`` exact G-term norms :math:`\lVert J_i^\top A_i J_i \rVert_2` of every sample.
        full_index: The ``(m,)`` samples that got Lanczos on the full Hessian: the first ``random_count`` a uniform
            random subset, the rest the samples with the largest G-term norm (where a bound is most at risk).
        random_count: How many of ``full_index`` form the random subset.
        hessian: The full :math:`H_i` of the ``full_index`` samples as :class:`lhlib.engine.spectral.HessianNorms`-style
            ``(m,)`` tensors ``norms`` (:math:`\max |\lambda|`), ``lambda_min``, ``lambda_max`` and ``converged``.
        hterm: The same for the H-term (an empty dict when it was not measured).
        top_hessian: The largest eigenvalues, descending, of :math:`\frac{1}{n_e} \sum_{i \le n_e} H_i` over the
            first :math:`n_e` = ``eigen_count`` samples (empty if none were computed).
        top_ggn: The same for the averaged G-term :math:`\frac{1}{n_e} \sum_{i \le n_e} J_i^\top A_i J_i`.
        eigen_count: The number :math:`n_e` of samples averaged for the top eigenvalues.
        from_cache: Whether the measurements came from the results store.
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
    """:func:`lhlib.engine.spectral.per_sample_hessian_norms` of ``operator`` on ``(x, y)``, as a dict of tensors."""
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


def _checked_settings(n, full_samples, extreme_samples, top_k, eigen_samples, max_iter, tol, eig_tol, hterm, seed):
    """:func:`curvature_measurements`' keyword arguments, checked, in the order of its store key."""
    return {
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
    r"""Everything chapter 03 measures on one network, from the results store when measured before.

    .. math::

        \lVert J_i^\top A_i J_i \rVert_2 \ \text{for every } i, \qquad
        \lVert H_i \rVert_2 = \max\bigl(|\lambda_{\min}(H_i)|, |\lambda_{\max}(H_i)|\bigr) \ \text{and} \
        \lVert H_i - J_i^\top A_i J_i \rVert_2 \ \text{on a subset},

        \lambda_1 \ge \dots \ge \lambda_{k} \ \text{of} \ \frac{1}{n_e} \sum_{i \le n_e} H_i
        \ \text{and of} \ \frac{1}{n_e} \sum_{i \le n_e} J_i^\top A_i J_i.

    The G-term norms are exact, every sample's (:func:`lhlib.engine.per_sample.per_sample_ggn_norms`); the
    full-Hessian and
    H-term norms come from batched Lanczos (``max_iter`` steps, relative residual ``tol``) on ``full_samples`` random
    plus ``extreme_samples`` largest-G samples; the top ``top_k`` eigenvalues from ARPACK (tolerance ``eig_tol``)
    over the first :math:`n_e` = ``eigen_samples`` samples. The store key holds the weights' and data's fingerprints
    and every setting.

    Args:
        model: The network; the measurements run on its parameters' device and in their dtype.
        x: The ``(N, n)`` inputs.
        y: The ``(N,)`` labels.
        full_samples: How many uniformly random samples get Lanczos on the full Hessian (and the H-term).
        extreme_samples: How many further samples, those of largest G-term norm, get it too.
        top_k: How many top eigenvalues of the averaged matrices to compute (none when 0 or not below the number of
            parameters).
        eigen_samples: How many of the first samples the averaged matrices average (``None``: all).
        max_iter: The most Lanczos steps per sample.
        tol: The Lanczos relative residual tolerance.
        eig_tol: ARPACK's tolerance for the top eigenvalues.
        hterm: Whether to measure the H-term norms too.
        seed: Seeds the random subset, the Lanczos starting vectors and ARPACK's.
        use_cache: Whether to read and write the results store.

    Returns:
        The network's :class:`CurvatureMeasurements`.

    Raises:
        ValueError: when ``x`` is not ``(N, n)`` or ``y`` not ``(N,)``, or a count or ``seed`` is out of its range.
    """
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (N, n) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    settings = _checked_settings(
        x.shape[0], full_samples, extreme_samples, top_k, eigen_samples, max_iter, tol, eig_tol, hterm, seed
    )
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
    """The count, minimum, quantiles, maximum and mean of a 1-D array (float64), for summaries.

    Args:
        values: A 1-D array or tensor.
        quantiles: The quantiles to report (linear interpolation, :func:`numpy.quantile`).

    Returns:
        A dict with ``count``, ``min``, ``max``, ``mean`` and ``q<percent>`` per quantile (``q50``, ``q90``, ``q99``
        by default); only ``{"count": 0}`` for an empty array.
    """
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


#: The forms of Theorem 1 that :func:`theorem1_checks` evaluates (all from :mod:`lhlib.engine.bounds`).
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
    r"""Every form of Theorem 1 in :data:`BOUND_FORMS` against measured norms.

    With :math:`g_i = \lVert J_i^\top A_i J_i \rVert_2` the G-term norm, :math:`h_i = \lVert H_i \rVert_2` the full
    Hessian's and :math:`b_i` a form's bound (one number for every sample, or one per sample), each form reports

    .. math::

        \text{held} \iff b_i \ge (1 - \text{slack})\, g_i \ \forall i, \qquad
        \text{tightness} = \min_{i:\, g_i > 0} \frac{b_i}{g_i}, \qquad
        \text{median ratio} = \operatorname{median}_{i:\, g_i > 0} \frac{b_i}{g_i},

    and the first two with :math:`h_i` on the ``full_index`` samples. A ratio below 1 is a violation; for a
    single-number bound the tightness is :math:`b / \max_i g_i`. Ratios leave out zero norms (a sample whose every
    ReLU path is dead has no curvature); the median is torch's, the lower middle value for an even count.
    ``slack`` absorbs float32 rounding of the measured norms.

    Args:
        model: The bias-free MLP whose bounds are evaluated.
        x: The ``(N, n)`` inputs the norms were measured on.
        ggn_norms: The ``(N,)`` G-term norms :math:`g_i`.
        full_index: The ``(m,)`` indices of the samples whose full Hessian norms were measured.
        hessian_norms: The ``(m,)`` full Hessian norms :math:`h_i` of those samples, in ``full_index`` order.
        slack: The relative tolerance of the held test and of the violation counts.

    Returns:
        Per form name, a dict with ``description``, ``value`` (the bound, or :func:`quantile_summary` of the
        per-sample bounds), ``held_ggn``, ``violations_ggn`` (count), ``tightness_ggn``, ``median_ratio_ggn``,
        ``held_hessian``, ``violations_hessian`` and ``tightness_hessian`` (NaN where every norm is zero).
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


FORM_LABELS = {
    "paper": "Theorem 1 (paper)",
    "paper_per_sample": "paper, per sample (max)",
    "corrected": "corrected",
    "corrected_per_sample": "corrected, per sample (max)",
    "activation_per_sample": "activation form (max)",
}
"""Short names of the forms of :data:`BOUND_FORMS`, for legends."""


@dataclass
class MeasuredNetwork:
    r"""One configuration of a dataset: its network of one seed measured trained and at initialisation.

    Attributes:
        net: The trained network of the chosen seed (with its losses and accuracy).
        model: Its model, on the measuring device.
        init: The same architecture at the initialisation training started from (rebuilt from the seed).
        trained: :func:`curvature_measurements` of ``model``.
        initial: :func:`curvature_measurements` of ``init`` (without top eigenvalues).
        checks: :func:`theorem1_checks` of ``model``.
        checks_init: :func:`theorem1_checks` of ``init``.
        layer_norms: The ``(L,)`` spectral norms :math:`\lVert W^{(p)} \rVert_2` of ``model``.
        M_x: :math:`M_{\mathbf x} = \max_i \lVert x_i \rVert_2` over the dataset.
        ggn_max_per_seed: :math:`\max_i \lVert J_i^\top A_i J_i \rVert_2` of every seed's trained network, in seed
            order.
        collapsed_per_seed: Whether every seed's trained network collapsed
            (:func:`lhlib.engine.seed_stats.is_collapsed`,
            with the sweep's ``collapse_share``), in seed order.
    """

    net: TrainedNetwork
    model: nn.Module
    init: nn.Module
    trained: CurvatureMeasurements
    initial: CurvatureMeasurements
    checks: dict
    checks_init: dict
    layer_norms: torch.Tensor
    M_x: float
    ggn_max_per_seed: list[float]
    collapsed_per_seed: list[bool]


def measure_networks(
    data: dict[str, Dataset],
    settings: SweepSettings,
    *,
    full_samples: int,
    extreme_samples: int,
    top_k: int,
    tol: float,
    seed: int,
    device: torch.device,
) -> dict[str, dict[tuple[int, int], MeasuredNetwork]]:
    r"""Train (or load) every configuration of the sweep from every seed and measure its curvature.

    Every seed's trained network gets its G-term norms (their maximum is kept); the network of ``seed`` and its
    initialisation get everything :func:`curvature_measurements` measures (the top eigenvalues for the trained one
    only) and :func:`theorem1_checks`, which tests

    .. math::

        \lVert J_i^\top A_i J_i \rVert_2 \le b_i \ \text{for every } i, \qquad
        \lVert H_i \rVert_2 \le b_i \ \text{on the Lanczos samples},

    for each form :math:`b_i` of Theorem 1, built from the layer norms :math:`\lVert W^{(p)} \rVert_2` (their maximum
    :math:`M_{\mathbf W}`) and :math:`M_{\mathbf x} = \max_i \lVert x_i \rVert_2`.

    Args:
        data: The datasets, by name.
        settings: The sweep (configurations, training recipe, seeds).
        full_samples: As for :func:`curvature_measurements`.
        extreme_samples: As for :func:`curvature_measurements`.
        top_k: How many top eigenvalues of the trained network's averaged matrices to compute (none at
            initialisation).
        tol: The Lanczos relative tolerance.
        seed: The seed whose network is measured in full; it also seeds the Lanczos subset and starting vectors.
        device: Where the measurements run.

    Returns:
        Per dataset name, per ``(h, num_layers)``, its :class:`MeasuredNetwork`.

    Raises:
        ValueError: when ``seed`` is not one of ``settings.seeds``.
    """
    if seed not in settings.seeds:
        raise ValueError(f"seed must be one of the sweep's seeds {list(settings.seeds)}, got {seed!r}")
    jobs = [(name, key) for name in data for key in sweep_configurations(settings)]
    results = {name: {} for name in data}
    for name, (h, depth) in progress_bar(jobs, desc="networks"):
        d = data[name]
        x, y = d.x.to(device), d.y.to(device)
        ensemble = settings_networks(d.x, d.y, d.info.num_classes, h, depth, settings)
        net = next(m for m in ensemble if m.seed == seed)
        init = build_mlp(d.info.input_dim, h, depth, d.info.num_classes, seed).to(device)
        model = net.model.to(device)
        common = dict(full_samples=full_samples, extreme_samples=extreme_samples, tol=tol, seed=seed)
        trained = curvature_measurements(model, x, y, top_k=top_k, **common)
        initial = curvature_measurements(init, x, y, top_k=0, **common)
        results[name][(h, depth)] = MeasuredNetwork(
            net=net,
            model=model,
            init=init,
            trained=trained,
            initial=initial,
            checks=theorem1_checks(model, x, trained.ggn_norms, trained.full_index, trained.hessian["norms"]),
            checks_init=theorem1_checks(init, x, initial.ggn_norms, initial.full_index, initial.hessian["norms"]),
            layer_norms=bounds.layer_spectral_norms(model).cpu(),
            M_x=float(x.double().norm(dim=1).max()),
            ggn_max_per_seed=[float(per_sample_ggn_norms(m.model.to(device), x).max()) for m in ensemble],
            collapsed_per_seed=[
                is_collapsed(m.losses, m.train_accuracy, d.y, d.info.num_classes, settings.collapse_share)
                for m in ensemble
            ],
        )
    return results


def _every(results) -> list[MeasuredNetwork]:
    return [r for networks in results.values() for r in networks.values()]


def lanczos_converged_fraction(results) -> float:
    r"""The share of per-sample Lanczos runs (full Hessian and H-term, trained and initial) that converged.

    .. math::

        \frac{1}{4R} \sum_{r=1}^{R} \sum_{w, o} \frac{1}{m} \sum_{i=1}^{m} \mathbb{1}\bigl[\text{run } (r, w, o, i)
        \text{ converged}\bigr],

    over the :math:`R` networks, :math:`w` trained or initial, :math:`o` the full Hessian or the H-term and the
    :math:`m` Lanczos samples: the mean of each network's four fractions.

    Args:
        results: :func:`measure_networks`' results.

    Returns:
        The fraction, between 0 and 1.
    """
    return float(
        np.mean(
            [
                float(getattr(getattr(r, which), operator)["converged"].float().mean())
                for r in _every(results)
                for which in ("trained", "initial")
                for operator in ("hessian", "hterm")
            ]
        )
    )


def norms_table(networks: dict[tuple[int, int], MeasuredNetwork]) -> tuple[list[str], list[list[str]]]:
    r"""Per configuration of one dataset: accuracy and the quantiles of the G-term and full-Hessian norms.

    The columns: ``h``, ``num_layers``, :math:`L` = ``num_layers + 2``, the training accuracy, the median, 90 % and
    99 % quantiles and the maximum of :math:`\lVert J_i^\top A_i J_i \rVert_2`, the median of
    :math:`\lVert H_i \rVert_2` over the random subset and its maximum over every Lanczos sample (random and extreme).

    Args:
        networks: One dataset's :func:`measure_networks` results.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
    """
    rows = []
    for (h, depth), r in networks.items():
        g = quantile_summary(r.trained.ggn_norms)
        full = quantile_summary(r.trained.hessian["norms"][: r.trained.random_count])
        rows.append(
            [
                h,
                depth,
                depth + 2,
                f"{r.net.train_accuracy:.3f}",
                *(f"{g[q]:.3g}" for q in ("q50", "q90", "q99", "max")),
                f"{full['q50']:.3g}",
                f"{float(r.trained.hessian['norms'].max()):.3g}",
            ]
        )
    header = ["h", "num_layers", "L", "train accuracy", "median $\\|G_i\\|$", "90 %", "99 %", "max $\\|G_i\\|$"]
    return header + ["median $\\|H_i\\|$ (subset)", "max $\\|H_i\\|$ (random + extreme)"], rows


def _gather(results, form: str, key: str, which: str) -> np.ndarray:
    return np.array([getattr(r, which)[form][key] for r in _every(results)], dtype=float)


def bound_verdict(results, form: str, which: str = "checks") -> str:
    """Whether ``form`` held on every sample of every network, as a phrase with the violation counts.

    Args:
        results: :func:`measure_networks`' results.
        form: A key of :data:`BOUND_FORMS`.
        which: ``"checks"`` (the trained networks) or ``"checks_init"`` (at initialisation).

    Returns:
        ``"held on every sample of every network"``, or how many networks it failed on with the numbers of G-term
        and full-Hessian violations.
    """
    every = _every(results)
    violations_g = int(_gather(results, form, "violations_ggn", which).sum())
    violations_h = int(_gather(results, form, "violations_hessian", which).sum())
    failed = sum(not (getattr(r, which)[form]["held_ggn"] and getattr(r, which)[form]["held_hessian"]) for r in every)
    if violations_g == 0 and violations_h == 0:
        return "held on every sample of every network"
    return (
        f"failed on {failed} of {len(every)} networks ({violations_g} G-term violations among all samples, "
        f"{violations_h} full-Hessian violations among the Lanczos samples)"
    )


def bound_facts(results) -> dict[str, Any]:
    r"""Per form of :data:`BOUND_FORMS`: the verdicts, the tightness range and the median ratio range.

    Also the layer norms and input norms that explain the numbers:

    .. math::

        \min_{i:\, g_i > 0} \frac{b_i}{g_i}, \qquad \operatorname{median}_{i:\, g_i > 0} \frac{b_i}{g_i}, \qquad
        M_{\mathbf W} = \max_p \lVert W^{(p)} \rVert_2, \qquad M_{\mathbf x} = \max_i \lVert x_i \rVert_2,

    with :math:`g_i` the G-term norm and :math:`b_i` the form's bound (:func:`theorem1_checks`); the ratios are
    ranged over the trained networks, :math:`M_{\mathbf W}` over the trained networks and at initialisation.

    Args:
        results: :func:`measure_networks`' results.

    Returns:
        Per form ``verdict_<form>``, ``verdict_init_<form>``, ``tight_<form>_min``/``max``, ``tight_h_<form>_min``
        (the full Hessian's) and ``median_ratio_<form>_min``/``max``; then ``M_W_min``/``max``,
        ``M_W_init_min``/``max`` and ``M_x_max``.
    """
    facts = {}
    for form in BOUND_FORMS:
        facts[f"verdict_{form}"] = bound_verdict(results, form)
        facts[f"verdict_init_{form}"] = bound_verdict(results, form, "checks_init")
        tightness = _gather(results, form, "tightness_ggn", "checks")
        ratios = _gather(results, form, "median_ratio_ggn", "checks")
        facts[f"tight_{form}_min"] = float(np.nanmin(tightness))
        facts[f"tight_{form}_max"] = float(np.nanmax(tightness))
        facts[f"tight_h_{form}_min"] = float(np.nanmin(_gather(results, form, "tightness_hessian", "checks")))
        facts[f"median_ratio_{form}_min"] = float(np.nanmin(ratios))
        facts[f"median_ratio_{form}_max"] = float(np.nanmax(ratios))
    every = _every(results)
    trained = [float(r.layer_norms.max()) for r in every]
    initial = [float(bounds.layer_spectral_norms(r.init).max()) for r in every]
    facts.update(M_W_min=min(trained), M_W_max=max(trained), M_W_init_min=min(initial), M_W_init_max=max(initial))
    facts["M_x_max"] = max(r.M_x for r in every)
    return facts


def sweep_axis(settings: SweepSettings, varying: str) -> tuple[list[tuple[int, int]], np.ndarray, str]:
    """The configurations of one sweep panel, its x values (``h``, or Theorem 1's ``L``) and their axis label.

    Args:
        settings: The sweep's settings.
        varying: ``"hidden_size"`` for the width panel (x is ``h``), ``"num_layers"`` for the depth panel (x is
            :math:`L` = ``num_layers + 2``).

    Returns:
        ``(keys, xs, label)``, the panel's ``(h, num_layers)`` keys, a float array of x values and the axis label.

    Raises:
        ValueError: when ``varying`` is neither ``"hidden_size"`` nor ``"num_layers"``.
    """
    check_choice("varying", varying, PANELS)
    if varying == "hidden_size":
        keys = [(h, settings.fixed_num_layers) for h in settings.hidden_sizes]
        label = f"hidden size h (num_layers = {settings.fixed_num_layers})"
        return keys, np.array(settings.hidden_sizes, float), label
    keys = [(settings.fixed_hidden_size, n) for n in settings.num_layers]
    label = f"Theorem 1's L = num_layers + 2 (h = {settings.fixed_hidden_size})"
    return keys, np.array(settings.num_layers, float) + 2, label


def _fit_slope(xs, ys) -> float:
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def scaling_across_seeds(results, settings: SweepSettings) -> tuple[dict[str, dict[str, Any]], int]:
    r"""How the largest G-term norm grows with :math:`h` (slope of log-log) and per layer (factor), per seed.

    With :math:`g^{\max} = \max_i \lVert J_i^\top A_i J_i \rVert_2` of one seed's network, least squares fit

    .. math::

        \log g^{\max}(h) = a + b \log h \quad \text{(width panel)}, \qquad
        \log g^{\max}(L) = a' + L \log \rho \quad \text{(depth panel)},

    with :math:`L` = ``num_layers + 2``; the slope is :math:`b`, the factor per layer :math:`\rho`. Collapsed networks
    (``collapsed_per_seed`` of :class:`MeasuredNetwork`: their curvature is that of their dead units) and networks
    with every ReLU path dead (:math:`g^{\max} = 0` for every sample) are left out of the fits. The factor is
    positive, so its interval is taken on the log scale (:func:`lhlib.engine.seed_stats.positive_interval_across_seeds`,
    around the geometric mean); a seed with fewer than two points left in a panel has no fit there.

    Args:
        results: :func:`measure_networks`' results.
        settings: The sweep's settings (its panels and seeds).

    Returns:
        The pair ``(scaling, left_out)``. ``scaling`` holds per dataset ``h_slope`` (mean across seeds) and
        ``depth_factor`` (geometric mean), their 95 % intervals ``h_slope_ci95`` and ``depth_factor_ci95``, and the
        per-seed ``h_slopes`` and ``depth_factors``; ``left_out`` counts the (configuration, seed) points left out.
    """
    (h_keys, h_xs, _), (depth_keys, depth_xs, _) = (sweep_axis(settings, v) for v in ("hidden_size", "num_layers"))
    scaling, dead = {}, 0
    for name, networks in results.items():

        def kept(key, s, networks=networks) -> bool:
            return networks[key].ggn_max_per_seed[s] > 0 and not networks[key].collapsed_per_seed[s]

        def points(keys, xs, s, networks=networks):
            chosen = [(x, networks[k].ggn_max_per_seed[s]) for k, x in zip(keys, xs) if kept(k, s)]
            return np.array([x for x, _ in chosen], dtype=float), np.array([g for _, g in chosen])

        slopes, factors = [], []
        for s in range(len(settings.seeds)):
            h_x, h_g = points(h_keys, h_xs, s)
            if h_x.size >= 2:
                slopes.append(_fit_slope(h_x, h_g))
            depth_x, depth_g = points(depth_keys, depth_xs, s)
            if depth_x.size >= 2:
                factors.append(float(np.exp(np.polyfit(depth_x, np.log(depth_g), 1)[0])))
        keys = set(h_keys) | set(depth_keys)
        dead += sum(not kept(k, s) for k in keys for s in range(len(settings.seeds)))
        nan_interval = (math.nan, (math.nan, math.nan))
        h_mean, h_ci = interval_across_seeds(slopes) if len(slopes) >= 2 else nan_interval
        depth_mean, depth_ci = positive_interval_across_seeds(factors) if len(factors) >= 2 else nan_interval
        scaling[name] = {
            "h_slope": h_mean,
            "h_slope_ci95": h_ci,
            "h_slopes": slopes,
            "depth_factor": depth_mean,
            "depth_factor_ci95": depth_ci,
            "depth_factors": factors,
        }
    return scaling, dead


def scaling_facts(scaling: dict[str, dict[str, Any]], settings: SweepSettings) -> dict[str, Any]:
    r"""The ranges of the fitted slopes and factors beside what :math:`L\,h^{2L}` predicts.

    .. math::

        \frac{\partial \log (L\,h^{2L})}{\partial \log h} = 2L, \qquad
        \frac{(L + 1)\,h^{2(L+1)}}{L\,h^{2L}} \approx h^2,

    at the width panel's :math:`L` = ``fixed_num_layers + 2`` and the depth panel's :math:`h` = ``fixed_hidden_size``.

    Args:
        scaling: The per-dataset results of :func:`scaling_across_seeds`.
        settings: The sweep's settings.

    Returns:
        ``h_slope_min``/``max`` and ``depth_factor_min``/``max`` over the datasets, the extremes of their intervals
        (``h_slope_ci_low``/``high``, ``depth_factor_ci_low``/``high``), the laws ``h_slope_law`` (:math:`2L`) and
        ``depth_factor_law`` (:math:`h^2`), and ``fixed_L``.
    """
    h_slopes = [s["h_slope"] for s in scaling.values()]
    factors = [s["depth_factor"] for s in scaling.values()]
    return {
        "h_slope_min": min(h_slopes),
        "h_slope_max": max(h_slopes),
        "h_slope_ci_low": min(s["h_slope_ci95"][0] for s in scaling.values()),
        "h_slope_ci_high": max(s["h_slope_ci95"][1] for s in scaling.values()),
        "depth_factor_min": min(factors),
        "depth_factor_max": max(factors),
        "depth_factor_ci_low": min(s["depth_factor_ci95"][0] for s in scaling.values()),
        "depth_factor_ci_high": max(s["depth_factor_ci95"][1] for s in scaling.values()),
        "h_slope_law": 2 * (settings.fixed_num_layers + 2),
        "depth_factor_law": settings.fixed_hidden_size**2,
        "fixed_L": settings.fixed_num_layers + 2,
    }


def live_median(numerator: torch.Tensor, denominator: torch.Tensor) -> float:
    r"""Median of ``numerator / denominator`` over the samples with nonzero curvature (NaN if none).

    .. math::

        \operatorname{median}_{i:\, d_i > 0} \frac{n_i}{d_i},

    in float64; torch's median, the lower middle value for an even count.

    Args:
        numerator: The numerators :math:`n_i`.
        denominator: The denominators :math:`d_i`, aligned with ``numerator``.

    Returns:
        The median, NaN when no :math:`d_i` is positive.
    """
    live = denominator.double() > 0
    if not bool(live.any()):
        return math.nan
    return float((numerator.double()[live] / denominator.double()[live]).median())


def hterm_shares(results) -> dict[tuple[str, str], list[float]]:
    r"""Per dataset and ``trained``/``initial``: the median H-term share of each configuration.

    .. math::

        \operatorname{median}_{i:\, H_i \ne 0} \frac{\lVert H_i - J_i^\top A_i J_i \rVert_2}{\lVert H_i \rVert_2},

    over the random Lanczos subset (:func:`live_median`).

    Args:
        results: :func:`measure_networks`' results.

    Returns:
        Per ``(dataset, "trained")`` and ``(dataset, "initial")``, one median per configuration, in the results'
        order.
    """
    shares = {}
    for name, networks in results.items():
        for which in ("trained", "initial"):
            measured = [getattr(r, which) for r in networks.values()]
            shares[(name, which)] = [
                live_median(m.hterm["norms"][: m.random_count], m.hessian["norms"][: m.random_count]) for m in measured
            ]
    return shares


def hterm_facts(results, shares: dict[tuple[str, str], list[float]], names: dict[str, str]) -> dict[str, Any]:
    r"""How large the H-term is beside the full Hessian, trained and at initialisation, and where it is largest.

    .. math::

        \operatorname{median}_i \frac{\lVert H_i - J_i^\top A_i J_i \rVert_2}{\lVert H_i \rVert_2}, \qquad
        \operatorname{median}_i \frac{\lVert H_i \rVert_2}{\lVert J_i^\top A_i J_i \rVert_2}, \qquad
        \frac{100}{m} \, \#\{i : \lambda_{\min}(H_i) < 0\},

    the first two per network over the random Lanczos subset (nonzero denominators), the last over all :math:`m`
    Lanczos samples of each trained network, averaged over the networks.

    Args:
        results: :func:`measure_networks`' results.
        shares: :func:`hterm_shares` of ``results``.
        names: The datasets' display names, by name.

    Returns:
        ``hterm_share_trained_min``/``median``/``max``, ``hterm_share_trained_worst`` (the trained network with the
        largest share, in words), ``hterm_share_init_min``/``median``/``max``, ``h_over_g_trained_min``/``max``,
        ``h_over_g_init_min``/``max`` and ``indefinite_percent``.
    """
    trained = np.array([v for (_, w), values in shares.items() if w == "trained" for v in values])
    initial = np.array([v for (_, w), values in shares.items() if w == "initial" for v in values])

    def ratios(which: str) -> np.ndarray:
        measured = [getattr(r, which) for r in _every(results)]
        return np.array(
            [
                live_median(m.hessian["norms"][: m.random_count], m.ggn_norms[m.full_index[: m.random_count]])
                for m in measured
            ]
        )

    worst = max(
        (
            (name, key, share)
            for name, networks in results.items()
            for key, share in zip(networks, shares[(name, "trained")])
        ),
        key=lambda item: np.nan_to_num(item[2], nan=-1),
    )
    name, (h, depth), _ = worst
    accuracy = results[name][(h, depth)].net.train_accuracy
    where = f"{names[name]} with h = {h}, num_layers = {depth} (train accuracy {accuracy:.2f})"
    facts = {
        "hterm_share_trained_min": float(np.nanmin(trained)),
        "hterm_share_trained_median": float(np.nanmedian(trained)),
        "hterm_share_trained_max": float(np.nanmax(trained)),
        "hterm_share_trained_worst": where,
        "hterm_share_init_min": float(np.nanmin(initial)),
        "hterm_share_init_median": float(np.nanmedian(initial)),
        "hterm_share_init_max": float(np.nanmax(initial)),
    }
    for which, short in (("trained", "trained"), ("initial", "init")):
        values = ratios(which)
        facts[f"h_over_g_{short}_min"] = float(np.nanmin(values))
        facts[f"h_over_g_{short}_max"] = float(np.nanmax(values))
    negative = [float((r.trained.hessian["lambda_min"] < 0).float().mean()) for r in _every(results)]
    facts["indefinite_percent"] = 100 * float(np.mean(negative))
    return facts


def averaged_facts(results) -> dict[str, float]:
    r"""How the top of the averaged spectra compares with the per-sample norms (ranges over networks).

    .. math::

        \frac{\lambda_{\max}(\bar H)}{\lambda_{\max}(\bar G)}, \qquad
        \frac{\max_i \lVert J_i^\top A_i J_i \rVert_2}{\lambda_{\max}(\bar H)}, \qquad
        \bar H = \frac{1}{n_e} \sum_{i \le n_e} H_i, \quad \bar G = \frac{1}{n_e} \sum_{i \le n_e} J_i^\top A_i J_i,

    over the trained networks, with :math:`n_e` = ``eigen_count``.

    Args:
        results: :func:`measure_networks`' results (the trained networks need their top eigenvalues).

    Returns:
        ``top_ratio_min``/``max`` (the first ratio) and ``per_sample_over_mean_min``/``max`` (the second).
    """
    every = [r.trained for r in _every(results)]
    top_ratio = [m.top_hessian[0] / m.top_ggn[0] for m in every]
    spread = [float(m.ggn_norms.max()) / m.top_hessian[0] for m in every]
    return {
        "top_ratio_min": float(min(top_ratio)),
        "top_ratio_max": float(max(top_ratio)),
        "per_sample_over_mean_min": float(min(spread)),
        "per_sample_over_mean_max": float(max(spread)),
    }


def lemma_study(
    results, data: dict[str, Dataset], reference: tuple[int, int], *, points: int, tol: float, seed: int, device
) -> dict[str, dict[str, Any]]:
    r"""The lemma's term :math:`\lVert H_{k+1} - \bar H_k \rVert_2` of each dataset's reference network in one order.

    .. math::

        \Bigl\lVert H_{k+1} - \frac{1}{k} \sum_{i=1}^{k} H_i \Bigr\rVert_2
        = \max\bigl(|\lambda_{\min}|, |\lambda_{\max}|\bigr), \qquad \lVert H_{k+1} \rVert_2,

    :math:`H_i` the full per-sample Hessians at the trained point, the samples in the random order drawn from ``seed``.
    The lemma's term comes from Lanczos with full reorthogonalisation at relative tolerance :math:`10^{-3}` whatever
    ``tol`` is; ``tol`` is the batched Lanczos tolerance of the new samples' norms.

    Args:
        results: :func:`measure_networks`' results (the reference network of their seed).
        data: The datasets, by name.
        reference: The ``(h, num_layers)`` of the network studied.
        points: How many log-spaced :math:`k` in :math:`[1, N - 1]` to draw (fewer after rounding to distinct
            integers).
        tol: The relative tolerance of the new samples' norms :math:`\lVert H_{k+1} \rVert_2`.
        seed: Seeds the random order and the Lanczos starting vectors.
        device: Where the Hessian-vector products run.

    Returns:
        Per dataset, ``k`` (the values used), ``term`` (the lemma's term at each) and ``new_sample_norm``
        (:math:`\lVert H_{k+1} \rVert_2`).
    """
    lemma = {}
    for name in progress_bar(list(results), desc="lemma term"):
        n = len(data[name].y)
        ks = np.unique(np.round(np.geomspace(1, n - 1, points)).astype(int)).tolist()
        model = results[name][reference].model
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        x, y = data[name].x[order].to(device), data[name].y[order].to(device)
        term = lemma_difference_norms(model, x, y, ks, tol=1e-3, seed=seed)
        new = per_sample_hessian_norms(model, x[ks], y[ks], tol=tol, seed=seed).norms.numpy()
        lemma[name] = {"k": ks, "term": term, "new_sample_norm": new}
    return lemma


def lemma_facts(lemma: dict[str, dict[str, Any]], results, reference: tuple[int, int]) -> dict[str, float]:
    r"""How the lemma's term behaves: its level over the larger half of :math:`k`, its slope, its correlation.

    With :math:`T_k` the term of :func:`lemma_study` and :math:`\tilde T` its median over the larger half of the
    :math:`k`, per dataset,

    .. math::

        \frac{\tilde T}{2 \max_i \lVert J_i^\top A_i J_i \rVert_2}, \qquad \frac{\tilde T}{\lambda_{\max}(\bar H)},
        \qquad \log T_k \approx a + b \log k, \qquad
        \operatorname{corr}\bigl(\log T_k, \log \lVert H_{k+1} \rVert_2\bigr):

    the level against the proof's bound :math:`2 M_{\mathbf H}` (:math:`M_{\mathbf H}` the largest G-term norm) and
    against the top eigenvalue of the averaged Hessian (the floor); the slope :math:`b` (least squares) and the
    Pearson correlation with the newly added sample's norm are over every :math:`k`.

    Args:
        lemma: :func:`lemma_study`'s results.
        results: :func:`measure_networks`' results.
        reference: The ``(h, num_layers)`` of the network studied.

    Returns:
        The ranges over the datasets (``_min``, ``_max``) of ``lemma_tail`` (:math:`\tilde T`), ``lemma_slope``,
        ``lemma_corr``, ``lemma_tail_over_bound`` and ``lemma_floor``.
    """
    tail = {name: float(np.median(v["term"][len(v["k"]) // 2 :])) for name, v in lemma.items()}
    over = [tail[name] / (2 * float(results[name][reference].trained.ggn_norms.max())) for name in lemma]
    floor = [tail[name] / float(results[name][reference].trained.top_hessian[0]) for name in lemma]
    slopes = [_fit_slope(np.array(v["k"], float), v["term"]) for v in lemma.values()]
    corr = [float(np.corrcoef(np.log(v["term"]), np.log(v["new_sample_norm"]))[0, 1]) for v in lemma.values()]
    return {
        "lemma_tail_min": min(tail.values()),
        "lemma_tail_max": max(tail.values()),
        "lemma_slope_min": min(slopes),
        "lemma_slope_max": max(slopes),
        "lemma_corr_min": min(corr),
        "lemma_corr_max": max(corr),
        "lemma_tail_over_bound_min": min(over),
        "lemma_tail_over_bound_max": max(over),
        "lemma_floor_min": min(floor),
        "lemma_floor_max": max(floor),
    }


def configuration_record(r: MeasuredNetwork, key: tuple[int, int]) -> dict[str, Any]:
    r"""One configuration for ``summary.json``.

    The quantiles of every measured norm, trained and at initialisation, every bound check and the top
    eigenvalues.

    Args:
        r: The configuration's :class:`MeasuredNetwork`.
        key: Its ``(h, num_layers)``.

    Returns:
        A JSON-ready dict with the sizes, training loss and accuracy, :math:`M_{\mathbf W}`, :math:`M_{\mathbf x}`, the
        layer norms and, under ``trained`` and ``initialisation``, the norms' summaries, the Lanczos diagnostics and
        the bound checks.
    """
    h, depth = key
    out = {
        "hidden_size": h,
        "num_layers": depth,
        "weight_matrices": depth + 2,
        "train_loss": r.net.train_loss,
        "train_accuracy": r.net.train_accuracy,
        "M_W": float(r.layer_norms.max()),
        "M_x": r.M_x,
        "layer_norms": r.layer_norms.tolist(),
    }
    for m, label, checks in ((r.trained, "trained", r.checks), (r.initial, "initialisation", r.checks_init)):
        subset = slice(0, m.random_count)
        out[label] = {
            "ggn_norm": quantile_summary(m.ggn_norms),
            "hessian_norm_random_subset": quantile_summary(m.hessian["norms"][subset]),
            "hessian_norm_max_incl_extreme": float(m.hessian["norms"].max()),
            "hterm_norm_random_subset": quantile_summary(m.hterm["norms"][subset]),
            "hessian_lambda_min_random_subset": quantile_summary(m.hessian["lambda_min"][subset]),
            "lanczos_converged_fraction": float(m.hessian["converged"].float().mean()),
            "lanczos_not_converged": int((~m.hessian["converged"]).sum()) + int((~m.hterm["converged"]).sum()),
            "bounds": checks,
            "held": {form: bool(checks[form]["held_ggn"] and checks[form]["held_hessian"]) for form in BOUND_FORMS},
            "held_ggn": {form: checks[form]["held_ggn"] for form in BOUND_FORMS},
            "held_hessian": {form: checks[form]["held_hessian"] for form in BOUND_FORMS},
        }
    out["trained"]["top_eigenvalues_mean_hessian"] = r.trained.top_hessian.tolist()
    out["trained"]["top_eigenvalues_mean_ggn"] = r.trained.top_ggn.tolist()
    return out


Measured = dict[str, dict[tuple[int, int], MeasuredNetwork]]


FORM_COLORS = dict(zip(FORM_LABELS, ("C3", "C1", "C2", "C4", "C0")))


FORM_MARKERS = dict(zip(FORM_LABELS, ("o", "D", "v", "^", "s")))


SWEEPS = ("hidden_size", "num_layers")


def plot_ggn_histograms(results: Measured, settings: SweepSettings, names: dict[str, str]) -> plt.Figure:
    r"""Histograms of the per-sample G-term norm :math:`\|\mathbf G_i\|_2` of every training sample.

    Args:
        results: :func:`lhlib.chapters.ch03_hessian_in_practice.measure_networks`'s measurements.
        settings: The sweep's settings (the panels' configurations).
        names: Per dataset, the name shown.

    Returns:
        One row per dataset, the hidden-size sweep left and the depth sweep right, log-log. A sample
        whose ReLU paths are all off has no curvature; a log axis cannot show it, so the legend
        counts such samples.
    """
    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.2 * len(results)), squeeze=False)
    for row, (name, networks) in zip(axes, results.items()):
        for ax, varying in zip(row, SWEEPS):
            keys = sweep_axis(settings, varying)[0]
            norms = [networks[k].trained.ggn_norms.double() for k in keys]
            positive = [v[v > 0] for v in norms]
            shown = torch.cat(positive)
            if shown.numel() == 0:  # every network of the panel is dead: nothing to draw
                ax.set_axis_off()
                continue
            bins = np.geomspace(float(shown.min()), float(shown.max()), 60)
            for (h, n), values, live, color in zip(keys, norms, positive, sweep_colors(len(keys))):
                label = f"h = {h}" if varying == "hidden_size" else f"num_layers = {n} (L = {n + 2})"
                if values.numel() > live.numel():
                    label += f", {values.numel() - live.numel()} at 0"
                ax.hist(live.numpy(), bins=bins, histtype="step", color=color, label=label)
            sweep = (
                f"hidden size, num_layers = {settings.fixed_num_layers}"
                if varying == "hidden_size"
                else f"depth, h = {settings.fixed_hidden_size}"
            )
            ax.set(
                xscale="log",
                yscale="log",
                xlabel=r"per-sample G-term norm $\|\mathbf{G}_i\|_2$ (loss units per parameter$^2$)",
                ylabel="number of samples",
                title=f"{names[name]}: {sweep}",
            )
            ax.legend()
    fig.tight_layout()
    return fig


def _bound_value(check: dict) -> float:
    value = check["value"]
    return value["max"] if isinstance(value, dict) else value


def plot_bounds(results: Measured, settings: SweepSettings, names: dict[str, str]) -> plt.Figure:
    r"""Every form of Theorem 1 against the measured norms, and each form's tightness, per dataset.

    Args:
        results: :func:`lhlib.chapters.ch03_hessian_in_practice.measure_networks`'s measurements.
        settings: The sweep's settings (the panels' configurations).
        names: Per dataset, the name shown.

    Returns:
        Two rows per dataset. Upper — the bounds, the largest G-term norm over all samples and the
        largest full-Hessian norm on the Lanczos subset against the hidden size and the depth, with the
        paper's scaling :math:`L\,h^{2L}` dotted (anchored at the first point). Lower: the smallest
        bound / norm over samples (solid: G-term, dotted: full Hessian), with the line at 1.
    """
    fig, axes = plt.subplots(2 * len(results), 2, figsize=(10, 6.4 * len(results) + 0.8), squeeze=False)
    for block, (name, networks) in enumerate(results.items()):
        for col, varying in enumerate(SWEEPS):
            keys, xs, xlabel = sweep_axis(settings, varying)
            rs = [networks[k] for k in keys]
            top, bottom = axes[2 * block, col], axes[2 * block + 1, col]
            g_max = np.array([float(r.trained.ggn_norms.max()) for r in rs])
            h_max = np.array([float(r.trained.hessian["norms"].max()) for r in rs])
            for form, label in FORM_LABELS.items():
                # A marker per form keeps forms apart where their lines coincide (corrected and its per-sample form).
                style = {"color": FORM_COLORS[form], "marker": FORM_MARKERS[form], "mfc": "none"}
                top.plot(xs, [_bound_value(r.checks[form]) for r in rs], "-", label=label, ms=5, **style)
                bottom.plot(xs, [r.checks[form]["tightness_ggn"] for r in rs], "-", ms=5, **style)
                bottom.plot(xs, [r.checks[form]["tightness_hessian"] for r in rs], ":", ms=3, **style)
            top.plot(xs, g_max, "ks-", label=r"measured max $\|G_i\|_2$ (all samples)")
            top.plot(xs, h_max, "k^--", label=r"measured max $\|H_i\|_2$ (Lanczos samples)", mfc="none")
            law = np.array([(n + 2) * float(h) ** (2 * (n + 2)) for h, n in keys])
            top.plot(xs, g_max[0] * law / law[0], ":", color="0.5", label=r"$\propto L\,h^{2L}$ (paper's scaling)")
            top.set_ylim(max(1e-3, 0.3 * min(g_max.min(), h_max.min())), None)
            bottom.axhline(1.0, color="k", lw=0.8)
            top.set(ylabel="spectral norm (loss units)", title=f"{names[name]}: bounds and measured norms")
            bottom.set(
                ylabel="tightness: min over samples of bound / norm",
                title=f"{names[name]}: tightness of each bound",
            )
            for ax in (top, bottom):
                ax.set(yscale="log", xlabel=xlabel)
                if varying == "hidden_size":
                    ax.set_xscale("log", base=2)
    # One legend for all panels: every panel draws the same lines, and eight small legends hid the data.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles += [Line2D([], [], color="0.3", ls=ls) for ls in ("-", ":")]
    labels += [r"tightness: bound / $\|G_i\|_2$", r"tightness: bound / $\|H_i\|_2$"]
    fig.legend(handles, labels, loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / fig.get_figheight()))
    return fig


HTERM_STATES = {"trained": ("C0", "-", "trained"), "initial": ("C3", "--", "initialisation")}


DATASET_MARKERS = ["o", "s", "^", "D"]


def _draw_h_against_g(ax, results: Measured, reference: tuple[int, int], names: dict[str, str]) -> None:
    for name, marker in zip(results, DATASET_MARKERS):
        for which, (color, _, label) in HTERM_STATES.items():
            m = getattr(results[name][reference], which)
            index = m.full_index[: m.random_count]
            live = m.ggn_norms[index] > 0  # a log axis cannot show a sample with no G-term
            full = m.hessian["norms"][: m.random_count][live]
            ax.scatter(m.ggn_norms[index][live].double(), full, s=8, marker=marker, color=color, alpha=0.5,
                       label=f"{names[name]}, {label}")  # fmt: skip
    lims = np.array(ax.get_xlim() + ax.get_ylim())
    ax.plot([lims.min(), lims.max()], [lims.min(), lims.max()], "k-", lw=0.8, label=r"$\|H_i\| = \|G_i\|$")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=r"G-term norm $\|\mathbf{G}_i\|_2$ (loss units)",
        ylabel=r"full Hessian norm $\|\mathbf{H}_i\|_2$ (loss units)",
        title=f"per sample, h = {reference[0]}, num_layers = {reference[1]}",
    )
    ax.legend(fontsize=6)


def _draw_h_term_shares(ax, results: Measured, shares: dict, names: dict[str, str]) -> None:
    configurations = list(next(iter(results.values())))
    for name, marker in zip(results, DATASET_MARKERS):
        for which, (color, style, label) in HTERM_STATES.items():
            ax.plot(range(len(configurations)), shares[(name, which)], marker=marker, color=color, ls=style,
                    label=f"{names[name]}, {label}", ms=4)  # fmt: skip
    ax.set_xticks(range(len(configurations)), [f"{h}/{n}" for h, n in configurations], rotation=60, fontsize=7)
    ax.set(
        xlabel="configuration h / num_layers",
        ylabel=r"median $\|H_i - G_i\|_2 / \|H_i\|_2$",
        yscale="log",
        title="relative size of the H-term",
    )
    ax.legend(fontsize=6)


def plot_h_term(
    results: Measured, shares: dict[tuple[str, str], list[float]], reference: tuple[int, int], names: dict[str, str]
) -> plt.Figure:
    r"""The H-term the paper drops.

    Args:
        results: :func:`lhlib.chapters.ch03_hessian_in_practice.measure_networks`'s measurements.
        shares: :func:`lhlib.chapters.ch03_hessian_in_practice.hterm_shares`'s medians.
        reference: The configuration of the left panel.
        names: Per dataset, the name shown.

    Returns:
        Left — per sample of the reference configuration's Lanczos subset, the full Hessian norm
        against the G-term norm (trained and at initialisation) with the diagonal. Right: per
        configuration, the median :math:`\|H_i-G_i\|_2/\|H_i\|_2` (trained solid, initial dashed).
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    _draw_h_against_g(left, results, reference, names)
    _draw_h_term_shares(right, results, shares, names)
    fig.tight_layout()
    return fig


def plot_averaged_hessian(results: Measured, settings: SweepSettings, names: dict[str, str]) -> plt.Figure:
    r"""The top eigenvalue of the averaged Hessian and G-term beside the largest per-sample G-term norm.

    Args:
        results: :func:`lhlib.chapters.ch03_hessian_in_practice.measure_networks`'s measurements.
        settings: The sweep's settings (the panels' configurations).
        names: Per dataset, the name shown.

    Returns:
        Two log panels, against the hidden size and the depth, one colour per dataset — solid the
        averaged Hessian's :math:`\lambda_1`, dashed the averaged G-term's, dotted :math:`\max_i\|G_i\|`.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    markers = DATASET_MARKERS
    for ax, varying in zip(axes, SWEEPS):
        keys, xs, xlabel = sweep_axis(settings, varying)
        for name, marker, color in zip(results, markers, sweep_colors(len(results), "tab10")):
            rs = [results[name][k].trained for k in keys]
            label = names[name]
            ax.plot(xs, [m.top_hessian[0] for m in rs], marker=marker, color=color,
                    label=rf"{label}: $\lambda_1$ of mean $H$")  # fmt: skip
            ax.plot(xs, [m.top_ggn[0] for m in rs], marker=marker, color=color, ls="--", mfc="none",
                    label=rf"{label}: $\lambda_1$ of mean $G$")  # fmt: skip
            ax.plot(xs, [float(m.ggn_norms.max()) for m in rs], marker=marker, color=color, ls=":", alpha=0.6,
                    label=rf"{label}: max$_i\,\|G_i\|$")  # fmt: skip
        ax.set(yscale="log", xlabel=xlabel, ylabel="eigenvalue / norm (loss units)")
        if varying == "hidden_size":
            ax.set_xscale("log", base=2)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_lemma_term(
    lemma: dict[str, dict], results: Measured, reference: tuple[int, int], names: dict[str, str]
) -> plt.Figure:
    r"""The lemma's Hessian term :math:`\|H_{k+1}-\bar H_k\|_2` against ``k``, per dataset.

    Args:
        lemma: :func:`lhlib.chapters.ch03_hessian_in_practice.lemma_study`'s result.
        results: :func:`lhlib.chapters.ch03_hessian_in_practice.measure_networks`'s measurements.
        reference: ``(h, num_layers)`` of the network measured.
        names: Per dataset, the name shown.

    Returns:
        Log-log — the term (circles), the newly added sample's :math:`\|H_{k+1}\|_2` (crosses), the
        full average's :math:`\lambda_1` (dashed) and the proof's bound :math:`2\max_i\|G_i\|_2`
        (dash-dotted).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, color in zip(lemma, sweep_colors(len(lemma), "tab10")):
        m, v, label = results[name][reference].trained, lemma[name], names[name]
        ax.plot(v["k"], v["term"], "o-", color=color, label=rf"{label}: $\|H_{{k+1}} - \bar H_k\|_2$")
        ax.plot(v["k"], v["new_sample_norm"], "x:", color=color, label=rf"{label}: $\|H_{{k+1}}\|_2$")
        ax.axhline(m.top_hessian[0], color=color, lw=0.8, ls="--", label=rf"{label}: $\lambda_1(\bar H_N)$")
        bound = 2 * float(m.ggn_norms.max())
        ax.axhline(bound, color=color, lw=0.8, ls="-.", label=rf"{label}: $2\max_i\|G_i\|_2$")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="number of samples k already in the average",
        ylabel="spectral norm (loss units)",
        title=f"the lemma's Hessian term, h = {reference[0]}, num_layers = {reference[1]}",
    )
    ax.legend(fontsize=6)
    return fig
