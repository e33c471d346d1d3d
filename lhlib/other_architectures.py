"""Chapter 08's experiment: the paper's measurements for the MLP, a CNN and a ViT, across seeds.

A *size* of a family is a ``(width, depth)`` pair (:mod:`lhlib.architectures`). The first size of a
family is its reference; the others change its width or its depth, so each family has a width
panel (the sizes at the reference depth) and a depth panel (the sizes at the reference width).

:func:`run_families` trains every size of every family as a seed ensemble (through
:func:`lhlib.experiment.trained_networks`) and measures each member's loss-difference curves as
chapter 04 does (:func:`lhlib.sweep.measure_member`). :func:`network_curvature` measures one
network's per-sample curvature: the exact G-term norms (:mod:`lhlib.hessian`, generic
``torch.func`` engine or the structured path of a bias-free Linear/ReLU stack), the
product-of-layer-norms bound where one exists (:mod:`lhlib.architecture_bounds`), the scaling
exponent of ``J J^T``, and the full per-sample Hessian norm on a subsample (batched Lanczos).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lhlib.architecture_bounds import jjt_scaling_exponents, layer_norm_bound_per_sample
from lhlib.architectures import VisionTransformer, weight_layers
from lhlib.bounds import ggn_norms_from_jjt
from lhlib.cache import cached, tensor_fingerprint
from lhlib.experiment import TrainedNetwork, settings_networks
from lhlib.hessian import per_sample_hessian_norms, per_sample_jjt
from lhlib.progress import progress_bar
from lhlib.seed_stats import interval_across_seeds, trend_test
from lhlib.settings import SweepSettings
from lhlib.sweep import ConfigurationResult, combine_members, measure_member
from lhlib.validation import check_float, check_int

__all__ = [
    "FAMILY_NAMES",
    "FamilyConfiguration",
    "NetworkCurvature",
    "TREND_CLAIMS",
    "conclusions_table",
    "curvature_citations",
    "curvature_facts",
    "curvature_table",
    "family_curvature",
    "family_trend_tests",
    "family_summary_rows",
    "family_table",
    "landscape_citations",
    "landscape_facts",
    "network_curvature",
    "panel_sizes",
    "pooled_median",
    "run_families",
    "size_trend_tests",
    "trend_citations",
    "trend_table",
    "trend_verdicts",
]

FAMILY_NAMES = {"mlp": "MLP (the paper's)", "cnn": "CNN", "vit": "ViT"}
"""How tables and figures name each family."""

# Bumped when network_curvature changes what it stores.
CURVATURE_VERSION = 2


def panel_sizes(pairs: tuple[tuple[int, int], ...], varying: str) -> list[tuple[int, int]]:
    """The sizes of a family's ``"width"`` panel (at the first size's depth) or ``"depth"`` panel
    (at the first size's width), sorted by the varied quantity.
    """
    width, depth = pairs[0]
    if varying == "width":
        return sorted(p for p in pairs if p[1] == depth)
    if varying == "depth":
        return sorted((p for p in pairs if p[0] == width), key=lambda p: p[1])
    raise ValueError(f"varying must be 'width' or 'depth', got {varying!r}")


@dataclass(frozen=True)
class FamilyConfiguration:
    """One size of one family across seeds: its trained networks and their curves."""

    family: str
    width: int
    depth: int
    parameters: int
    networks: tuple[TrainedNetwork, ...]
    curves: ConfigurationResult

    @property
    def label(self) -> str:
        """The legend label of this size, with its family, width and depth."""
        return f"{FAMILY_NAMES[self.family]} width {self.width}, depth {self.depth}"


def run_families(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    image_shape: tuple[int, int, int],
    sizes: dict[str, tuple[tuple[int, int], ...]],
    settings: SweepSettings,
    label: str = "",
) -> dict[tuple[str, int, int], FamilyConfiguration]:
    """Train (or load) every size of every family for every seed and measure each member's curves."""
    results = {}
    configurations = [(family, *pair) for family, pairs in sizes.items() for pair in pairs]
    for family, width, depth in progress_bar(configurations, desc=f"{label} networks".strip()):
        networks = settings_networks(x, y, num_classes, width, depth, settings, family=family, image_shape=image_shape)
        members = [measure_member(network, settings, num_classes) for network in networks]
        model = networks[0].model
        curves = combine_members(width, depth, weight_layers(model), members, settings)
        results[(family, width, depth)] = FamilyConfiguration(
            family, width, depth, sum(p.numel() for p in model.parameters()), tuple(networks), curves
        )
    return results


@dataclass(frozen=True)
class NetworkCurvature:
    """Per-sample curvature of one trained network on the first ``samples`` training samples.

    ``ggn_norms`` ``(samples,)``: exact ``||J_i^T A_i J_i||_2``; ``jjt_norms``: ``||J_i J_i^T||_2``
    (so ``ggn_norms / (jjt_norms / 2)`` is how far ``A_i`` falls short of its bound ``1/2``).
    ``bound`` ``(samples,)``: the product-of-layer-norms bound (``None`` for the ViT, for which none
    is derived). ``scaling_exponents``, ``hessian_norms`` and ``hterm_norms`` (with
    ``hessian_converged``, both Lanczos runs converged) cover the first ``hessian_samples`` samples:
    the exponent of ``||J_i J_i^T||`` under scaling every parameter by ``factor``, and the spectral
    norms ``max |lambda|`` of the full per-sample Hessian and of its H-term (Lanczos, relative
    tolerance 1e-4).
    """

    seed: int
    ggn_norms: torch.Tensor
    jjt_norms: torch.Tensor
    bound: torch.Tensor | None
    scaling_exponents: torch.Tensor
    hessian_norms: torch.Tensor
    hterm_norms: torch.Tensor
    hessian_converged: torch.Tensor
    from_cache: bool

    @property
    def softmax_slack(self) -> torch.Tensor:
        """``||J_i^T A_i J_i|| / (||J_i J_i^T|| / 2)`` (at most 1, since ``||A_i|| <= 1/2``) of the samples
        with ``J_i != 0`` (an input that switches off a whole ReLU layer has ``J_i = 0``).
        """
        live = self.jjt_norms > 0
        return self.ggn_norms[live] / (self.jjt_norms[live] / 2)

    @property
    def converged_hessian_ratios(self) -> torch.Tensor:
        """``||H_i|| / ||G-term_i||`` of the samples whose Lanczos runs converged."""
        ggn = self.ggn_norms[: self.hessian_norms.numel()]
        return (self.hessian_norms / ggn)[self.hessian_converged]

    @property
    def converged_hterm_ratios(self) -> torch.Tensor:
        """``||H-term_i|| / ||G-term_i||`` of the samples whose Lanczos runs converged."""
        ggn = self.ggn_norms[: self.hterm_norms.numel()]
        return (self.hterm_norms / ggn)[self.hessian_converged]


def _measure_curvature(model: nn.Module, xs, ys, hessian_samples: int, factor: float, seed: int) -> dict:
    """What :func:`network_curvature` stores, computed."""
    pieces = [per_sample_jjt(model, xs[start : start + 512]) for start in range(0, xs.shape[0], 512)]
    jjt, logits = torch.cat([p[0] for p in pieces]).double(), torch.cat([p[1] for p in pieces]).double()
    out = {"ggn_norms": ggn_norms_from_jjt(jjt, logits), "jjt_norms": torch.linalg.eigvalsh(jjt)[:, -1].clamp_min(0)}
    if not isinstance(model, VisionTransformer):
        out["bound"] = layer_norm_bound_per_sample(model, xs)
    head = slice(0, hessian_samples)
    out["scaling_exponents"] = jjt_scaling_exponents(model, xs[head], factor=factor)
    converged = torch.ones(hessian_samples, dtype=torch.bool)
    for operator in ("hessian", "hterm"):
        norms = per_sample_hessian_norms(
            model, xs[head], ys[head], operator=operator, tol=1e-4, max_iter=120, seed=seed
        )
        out[f"{operator}_norms"], converged = norms.norms, converged & norms.converged
    out["hessian_converged"] = converged
    return out


def network_curvature(
    network: TrainedNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    samples: int,
    hessian_samples: int,
    factor: float = 3.0,
    use_cache: bool = True,
) -> NetworkCurvature:
    """Measure :class:`NetworkCurvature` for ``network`` on ``x[:samples]`` (cached in the results store)."""
    n = x.shape[0]
    check_int("samples", samples, minimum=1, maximum=n)
    check_int("hessian_samples", hessian_samples, minimum=1, maximum=samples)
    check_float("factor", factor, minimum=0.0, strict_minimum=True)
    model = network.model
    xs, ys = x[:samples], y[:samples]
    params = {
        "version": CURVATURE_VERSION,
        "model": tensor_fingerprint(*[p.detach() for p in model.parameters()]),
        "model_class": type(model).__name__,
        "data": tensor_fingerprint(xs, ys),
        "hessian_samples": hessian_samples,
        "factor": factor,
        "torch": torch.__version__.split("+")[0],
    }
    computed = False

    def compute() -> dict:
        nonlocal computed
        computed = True
        return _measure_curvature(model, xs, ys, hessian_samples, factor, network.seed)

    result = cached("network_curvature", params, compute, enabled=use_cache)
    return NetworkCurvature(
        network.seed,
        result["ggn_norms"],
        result["jjt_norms"],
        result.get("bound"),
        result["scaling_exponents"],
        result["hessian_norms"],
        result["hterm_norms"],
        result["hessian_converged"],
        from_cache=not computed,
    )


def _interval(values) -> str:
    mean, (low, high) = np.mean(values), interval_across_seeds(values)[1]
    return f"{mean:.3g} [{low:.3g}, {high:.3g}]"


def family_table(results: dict[tuple[str, int, int], FamilyConfiguration]) -> tuple[list[str], list[list[Any]]]:
    """Per family and size: parameters, accuracy, collapsed seeds, level, level/MAD and exponent.

    Returns:
        ``(header, rows)`` for :func:`lhlib.report.show_table`.
    """
    rows = []
    for r in results.values():
        c = r.curves
        accuracy = 100 * np.array(c.accuracies)
        ratios = [m.level / m.mean_abs_deviation for m in c.members if m.mean_abs_deviation > 0]
        exponent_low, exponent_high = c.rate_exponent_ci95
        rows.append(
            [
                FAMILY_NAMES[r.family],
                r.width,
                r.depth,
                r.parameters,
                f"{accuracy.mean():.1f} ({accuracy.min():.1f}-{accuracy.max():.1f})",
                f"{c.collapsed_seeds} of {len(c.members)}",
                _interval(c.levels),
                f"{min(ratios, default=float('nan')):.3f}-{max(ratios, default=float('nan')):.3f}",
                f"{c.rate_exponent:.3f} [{exponent_low:.3f}, {exponent_high:.3f}]",
            ]
        )
    header = [
        "family",
        "width",
        "depth",
        "parameters",
        "train accuracy % (range)",
        "collapsed seeds",
        "level C [95 % CI]",
        "level / MAD (range)",
        "fitted exponent [95 % CI]",
    ]
    return header, rows


def pooled_median(tensors) -> float:
    """The median of all entries of ``tensors`` together (NaN when there are none)."""
    values = torch.cat([t.reshape(-1).double() for t in tensors])
    return float(values.median()) if values.numel() else float("nan")


def curvature_table(
    results: dict[tuple[str, int, int], FamilyConfiguration],
    curvature: dict[tuple[str, int, int], list[NetworkCurvature]],
) -> tuple[list[str], list[list[Any]]]:
    r"""Per family and size, across seeds: the G-term norm and what bounds and explains it.

    The columns: the G-term norm; the bound's validity and its slack split into
    :math:`\text{G-term}/(\|J_iJ_i^\top\|/2)` (how far :math:`A_i` is from its bound 1/2) and
    :math:`(\|J_iJ_i^\top\|/2)/\text{bound}` (the layer-norm product's slack); the scaling exponent
    of :math:`J_iJ_i^\top`; and the full Hessian's and the H-term's norms relative to the G-term's, on
    the samples whose Lanczos runs converged.

    Returns:
        ``(header, rows)`` for :func:`lhlib.report.show_table`.
    """
    rows = []
    for key, measured in curvature.items():
        r = results[key]
        medians = [float(m.ggn_norms.median()) for m in measured]
        if measured[0].bound is not None:
            held = sum(int((m.ggn_norms <= m.bound * (1 + 1e-9)).sum()) for m in measured)
            total = sum(m.ggn_norms.numel() for m in measured)
            bound = [f"{held} of {total}", f"{pooled_median([m.jjt_norms / 2 / m.bound for m in measured]):.2e}"]
        else:
            bound = ["none derived", "-"]
        exponents = torch.cat([m.scaling_exponents for m in measured])
        exponents = exponents[torch.isfinite(exponents)]
        relu = "" if r.family == "vit" else f"; 2(L-1) = {2 * (r.curves.weight_matrices - 1)}"
        converged = sum(int(m.hessian_converged.sum()) for m in measured)
        lanczos = sum(m.hessian_converged.numel() for m in measured)
        rows.append(
            [
                FAMILY_NAMES[r.family],
                r.width,
                r.depth,
                f"{np.mean(medians):.3g} ({min(medians):.3g}-{max(medians):.3g})",
                f"{pooled_median([m.softmax_slack for m in measured]):.3f}",
                *bound,
                f"{float(exponents.median()):.2f} ({float(exponents.min()):.2f} to {float(exponents.max()):.2f}){relu}",
                f"{converged} of {lanczos}",
                f"{pooled_median([m.converged_hessian_ratios for m in measured]):.2f}",
                f"{pooled_median([m.converged_hterm_ratios for m in measured]):.2f}",
            ]
        )
    header = [
        "family",
        "width",
        "depth",
        "median G-term norm, mean over seeds (range)",
        "median G-term / (JJ^T norm / 2)",
        "samples within the layer-norm bound",
        "median (JJ^T norm / 2) / bound",
        "scaling exponent of JJ^T, median (range)",
        "Lanczos converged",
        "median full Hessian / G-term",
        "median H-term / G-term",
    ]
    return header, rows


def size_trend_tests(
    values: dict[tuple[str, int, int], list[float]],
    sizes: dict[str, tuple[tuple[int, int], ...]],
    directions: dict[str, str],
    *,
    permutations: int = 10000,
) -> list[dict[str, Any]]:
    """One-sided Spearman trend tests of per-seed ``values`` against width (width panel) and depth
    (depth panel) for every family; ``directions`` maps ``"width"``/``"depth"`` to the claimed direction.
    """
    tests = []
    for family, pairs in sizes.items():
        for varying, direction in directions.items():
            panel = panel_sizes(pairs, varying)
            if len(panel) < 2:
                continue
            column = 0 if varying == "width" else 1
            x = [pair[column] for pair in panel for _ in values[(family, *pair)]]
            v = [value for pair in panel for value in values[(family, *pair)]]
            test = trend_test(x, v, direction, permutations=permutations)
            tests.append(
                {
                    "family": family,
                    "varying": varying,
                    "direction": direction,
                    "sizes": [list(p) for p in panel],
                    **test.as_dict(),
                }
            )
    return tests


def family_curvature(
    results: dict[tuple[str, int, int], FamilyConfiguration],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    samples: int,
    hessian_samples: int,
    factor: float = 3.0,
    label: str = "",
) -> dict[tuple[str, int, int], list[NetworkCurvature]]:
    """:func:`network_curvature` of every seed of every size in ``results`` (one list per size, in seed order)."""
    check_int("samples", samples, minimum=1, maximum=x.shape[0])
    check_int("hessian_samples", hessian_samples, minimum=1, maximum=samples)
    return {
        key: [
            network_curvature(network, x, y, samples=samples, hessian_samples=hessian_samples, factor=factor)
            for network in r.networks
        ]
        for key, r in progress_bar(results.items(), desc=f"{label} curvature".strip())
    }


def family_summary_rows(
    results: dict[tuple[str, int, int], FamilyConfiguration],
    curvature: dict[tuple[str, int, int], list[NetworkCurvature]],
) -> list[dict[str, Any]]:
    """Per family and size, the numbers a chapter writes to ``summary.json`` (lists are per seed)."""
    rows = []
    for key, r in results.items():
        c, measured = r.curves, curvature[key]
        row = {
            "family": r.family,
            "width": r.width,
            "depth": r.depth,
            "parameters": r.parameters,
            "linear_layers": c.weight_matrices,
            "seeds": c.seeds,
            "accuracies": c.accuracies,
            "levels": c.levels,
            "level_mean": c.level_mean,
            "level_ci95": list(c.level_ci95),
            "mean_abs_deviations": [m.mean_abs_deviation for m in c.members],
            "rate_exponents": c.rate_exponents,
            "rate_exponent": c.rate_exponent,
            "rate_exponent_ci95": list(c.rate_exponent_ci95),
            "collapsed_seeds": c.collapsed_seeds,
            "ggn_norm_median": [float(m.ggn_norms.median()) for m in measured],
            "ggn_norm_q90": [float(m.ggn_norms.quantile(0.9)) for m in measured],
            "ggn_norm_max": [float(m.ggn_norms.max()) for m in measured],
            "ggn_to_half_jjt_median": [pooled_median([m.softmax_slack]) for m in measured],
            "hessian_converged": [int(m.hessian_converged.sum()) for m in measured],
            "hessian_to_ggn_median": [pooled_median([m.converged_hessian_ratios]) for m in measured],
            "hterm_to_ggn_median": [pooled_median([m.converged_hterm_ratios]) for m in measured],
            "scaling_exponent_range": [
                [float(e.min()), float(e.max())]
                for e in (m.scaling_exponents[torch.isfinite(m.scaling_exponents)] for m in measured)
            ],
        }
        if measured[0].bound is not None:
            row["bound_held"] = [int((m.ggn_norms <= m.bound * (1 + 1e-9)).sum()) for m in measured]
            row["bound_tightness_median"] = [float((m.ggn_norms / m.bound).median()) for m in measured]
            row["bound_median"] = [float(m.bound.median()) for m in measured]
        rows.append(row)
    return rows


def landscape_facts(results: dict[str, dict[tuple[str, int, int], FamilyConfiguration]]) -> dict[str, dict[str, Any]]:
    """Per family, over every dataset, size and seed: the range of fitted exponents, how many of their
    bootstrap intervals contain -1, and the range of level / MAD.
    """
    facts = {}
    for family in dict.fromkeys(key[0] for sweep in results.values() for key in sweep):
        members = [
            m for sweep in results.values() for key, r in sweep.items() if key[0] == family for m in r.curves.members
        ]
        fitted = [m for m in members if m.fit is not None]
        exponents = [m.fit.exponent for m in fitted]
        ratios = [m.level / m.mean_abs_deviation for m in members if m.mean_abs_deviation > 0]
        facts[family] = {
            "networks": len(members),
            "fitted": len(fitted),
            "exponent_range": [min(exponents, default=float("nan")), max(exponents, default=float("nan"))],
            "contains_minus_one": sum(m.fit.ci[0] <= -1.0 <= m.fit.ci[1] for m in fitted),
            "level_to_mad_range": [min(ratios, default=float("nan")), max(ratios, default=float("nan"))],
        }
    return facts


def curvature_facts(
    results: dict[str, dict[tuple[str, int, int], FamilyConfiguration]],
    curvature: dict[str, dict[tuple[str, int, int], list[NetworkCurvature]]],
) -> dict[str, dict[str, Any]]:
    """Per family, over every dataset, size and seed: the bound's validity and its two slack factors
    (medians), the range of scaling exponents and (ReLU families) their largest deviation from
    ``2(L-1)``, Lanczos convergence, and the median full-Hessian and H-term ratios to the G-term.
    """
    facts = {}
    for family in dict.fromkeys(key[0] for c in curvature.values() for key in c):
        entries = [
            (results[name][key], m)
            for name, c in curvature.items()
            for key, ms in c.items()
            if key[0] == family
            for m in ms
        ]
        measured = [m for _, m in entries]
        exponents = torch.cat([m.scaling_exponents for m in measured])
        exponents = exponents[torch.isfinite(exponents)]
        f = {
            "softmax_slack": pooled_median([m.softmax_slack for m in measured]),
            "exponent_range": [float(exponents.min()), float(exponents.max())],
            "lanczos_converged": sum(int(m.hessian_converged.sum()) for m in measured),
            "lanczos_samples": sum(m.hessian_converged.numel() for m in measured),
            "hessian_to_ggn": pooled_median([m.converged_hessian_ratios for m in measured]),
            "hterm_to_ggn": pooled_median([m.converged_hterm_ratios for m in measured]),
        }
        if measured[0].bound is not None:
            f["bound_held"] = sum(int((m.ggn_norms <= m.bound * (1 + 1e-9)).sum()) for m in measured)
            f["bound_samples"] = sum(m.ggn_norms.numel() for m in measured)
            f["tightness"] = pooled_median([m.ggn_norms / m.bound for m in measured])
            f["product_slack"] = pooled_median([m.jjt_norms / 2 / m.bound for m in measured])
        if family != "vit":  # 2(L-1) is the exponent of a bias-free ReLU network, not of the ViT
            f["max_deviation_from_relu"] = max(
                float((m.scaling_exponents - 2.0 * (r.curves.weight_matrices - 1)).abs().nan_to_num().max())
                for r, m in entries
            )
        facts[family] = f
    return facts


def landscape_citations(landscape: dict[str, dict[str, Any]]) -> dict[str, str]:
    """:func:`landscape_facts` as the phrases the chapter cites, ``<family>_exponents`` and the like."""
    cited = {}
    for family, facts in landscape.items():
        cited[f"{family}_exponents"] = "{:.3f} to {:.3f}".format(*facts["exponent_range"])
        cited[f"{family}_contains"] = f"{facts['contains_minus_one']} of {facts['fitted']}"
        cited[f"{family}_mad_ratios"] = "{:.3f} to {:.3f}".format(*facts["level_to_mad_range"])
    return cited


def curvature_citations(curvature_summary: dict[str, dict[str, Any]]) -> dict[str, str]:
    """:func:`curvature_facts` as the phrases the chapter cites, with ``bound_verdict`` over families."""
    cited = {}
    for family, f in curvature_summary.items():
        cited[f"{family}_softmax_slack"] = f"{f['softmax_slack']:.3f}"
        cited[f"{family}_exponent_range"] = "{:.2f} to {:.2f}".format(*f["exponent_range"])
        cited[f"{family}_hessian_ratio"] = f"{f['hessian_to_ggn']:.2f}"
        cited[f"{family}_hterm_ratio"] = f"{f['hterm_to_ggn']:.2f}"
        cited[f"{family}_converged"] = f"{f['lanczos_converged']} of {f['lanczos_samples']}"
        if "max_deviation_from_relu" in f:
            cited[f"{family}_deviation"] = f"{f['max_deviation_from_relu']:.1e}"
        if "bound_held" in f:
            cited[f"{family}_bound_held"] = f"{f['bound_held']} of {f['bound_samples']}"
            cited[f"{family}_tightness"] = f"{f['tightness']:.1e}"
            cited[f"{family}_product_slack"] = f"{f['product_slack']:.1e}"
    exceeding = {
        family: f["bound_samples"] - f["bound_held"] for family, f in curvature_summary.items() if "bound_held" in f
    }
    if not exceeding:
        cited["bound_verdict"] = "no family of this run has a layer-norm bound"
    elif not any(exceeding.values()):
        cited["bound_verdict"] = "every sample lies within the layer-norm bound"
    else:
        cited["bound_verdict"] = "; ".join(
            f"{n} samples of the {FAMILY_NAMES[family]} exceed the layer-norm bound"
            for family, n in exceeding.items()
            if n
        )
    return cited


# What each trend test measures, and the direction the paper's reading claims for it.
TREND_CLAIMS = {
    "ggn": ("median G-term norm", {"width": "increasing", "depth": "increasing"}),
    "bound": ("median layer-norm bound", {"width": "increasing"}),
    "level": ("level", {"width": "decreasing", "depth": "increasing"}),
}


def family_trend_tests(
    results: dict[str, dict[tuple[str, int, int], FamilyConfiguration]],
    curvature: dict[str, dict[tuple[str, int, int], list[NetworkCurvature]]],
    sizes: dict[str, tuple[tuple[int, int], ...]],
    *,
    permutations: int = 10000,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`size_trend_tests` of the three quantities of ``TREND_CLAIMS``, per dataset.

    Each seed contributes its median G-term norm, its median layer-norm bound (families that have
    one) and its level. Returns the tests under ``"ggn"``, ``"bound"`` and ``"level"``, each test
    carrying its ``dataset`` and ``quantity``.
    """
    tests = {kind: [] for kind in TREND_CLAIMS}
    for name, sweep in results.items():
        values = {
            "ggn": {key: [float(m.ggn_norms.median()) for m in ms] for key, ms in curvature[name].items()},
            "bound": {
                key: [float(m.bound.median()) for m in ms]
                for key, ms in curvature[name].items()
                if ms[0].bound is not None
            },
            "level": {key: r.curves.levels for key, r in sweep.items()},
        }
        for kind, (quantity, directions) in TREND_CLAIMS.items():
            tested = {f: pairs for f, pairs in sizes.items() if any(key[0] == f for key in values[kind])}
            found = size_trend_tests(values[kind], tested, directions, permutations=permutations)
            tests[kind] += [{"dataset": name, "quantity": quantity, **t} for t in found]
    return tests


def trend_table(tests: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Trend tests (:func:`family_trend_tests`) as ``(header, rows)`` for :func:`lhlib.report.show_table`."""
    header = [
        "dataset",
        "family",
        "quantity",
        "varied",
        "claimed direction",
        "pairs",
        "Spearman rho",
        "one-sided p",
        "smallest attainable p",
        "verdict",
    ]
    rows = [
        [
            t["dataset"],
            FAMILY_NAMES[t["family"]],
            t["quantity"],
            t["varying"],
            t["direction"],
            t["pairs"],
            f"{t['statistic']:.2f}",
            f"{t['p_value']:.3g}",
            f"{t['smallest_p_value']:.3g}",
            t["verdict"],
        ]
        for t in tests
    ]
    return header, rows


def trend_verdicts(tests: list[dict[str, Any]], family: str, varying: str) -> str:
    """Per dataset, the verdict of ``family``'s test in the ``varying`` panel (``"not tested"`` if none)."""
    chosen = [t for t in tests if t["family"] == family and t["varying"] == varying]
    return "; ".join(f"{t['dataset']}: {t['verdict']}" for t in chosen) or "not tested"


def trend_citations(tests: dict[str, list[dict[str, Any]]], families) -> dict[str, Any]:
    """The verdicts the chapter cites and how many survive a Bonferroni correction over all tests."""
    cited = {}
    for family in families:
        cited[f"{family}_bound_width"] = trend_verdicts(tests["bound"], family, "width")
        for varying in ("width", "depth"):
            cited[f"{family}_ggn_{varying}"] = trend_verdicts(tests["ggn"], family, varying)
            cited[f"{family}_level_{varying}"] = trend_verdicts(tests["level"], family, varying)
    every = [t for kind in tests.values() for t in kind]
    testable = [t for t in every if t["verdict"] != "not testable"]
    bonferroni = 0.05 / max(len(testable), 1)
    survivors = sum(min(t["p_value"], t["p_value_opposite"]) < bonferroni for t in testable)
    cited["n_trend_tests"] = len(every)
    cited["bonferroni_survivors"] = f"{survivors} of {len(testable)} testable verdicts have p < {bonferroni:.2g}"
    return cited


def conclusions_table(
    landscape: dict[str, dict[str, Any]],
    curvature_summary: dict[str, dict[str, Any]],
    tests: dict[str, list[dict[str, Any]]],
) -> tuple[list[str], list[list[str]]]:
    """The chapter's closing table: each conclusion of the paper and what every family says of it."""
    families = list(landscape)

    def bound(f: dict[str, Any]) -> str:
        if "bound_held" not in f:
            return "none derived here; a product of layer norms cannot follow J J^T (next row)"
        return f"holds on {f['bound_held']} of {f['bound_samples']} samples; median G-term/bound {f['tightness']:.1e}"

    def scaling(family: str, f: dict[str, Any]) -> str:
        low, high = f["exponent_range"]
        if family == "vit":
            return f"exponent from {low:.2f} to {high:.2f}: no single power"
        return f"largest deviation from 2(L-1): {f['max_deviation_from_relu']:.1e}"

    def landscape_cell(f: dict[str, Any]) -> str:
        low, high = f["exponent_range"]
        return (
            f"exponents {low:.3f} to {high:.3f}; CI contains -1 for {f['contains_minus_one']} of {f['fitted']} networks"
        )

    c = curvature_summary
    rows = [
        ["the loss difference at theta-hat decays like 1/k", *(landscape_cell(landscape[f]) for f in families)],
        [
            "its level is the MAD of the per-sample losses",
            *("level/MAD {:.3f} to {:.3f}".format(*landscape[f]["level_to_mad_range"]) for f in families),
        ],
        ["wider networks give smaller differences", *(trend_verdicts(tests["level"], f, "width") for f in families)],
        ["deeper networks give larger differences", *(trend_verdicts(tests["level"], f, "depth") for f in families)],
        ["a product of layer norms bounds the per-sample G-term", *(bound(c[f]) for f in families)],
        [
            "J_i J_i^T scales with the weights like the product of layer norms (exponent 2(L-1))",
            *(scaling(f, c[f]) for f in families),
        ],
        [
            "the G-term grows with width, as the bound does",
            *(trend_verdicts(tests["ggn"], f, "width") for f in families),
        ],
        [
            "the G-term grows with depth, as the bound does",
            *(trend_verdicts(tests["ggn"], f, "depth") for f in families),
        ],
        [
            "the G-term carries the per-sample curvature (median H-term / G-term norm)",
            *(f"{c[f]['hterm_to_ggn']:.2f} (full Hessian / G-term {c[f]['hessian_to_ggn']:.2f})" for f in families),
        ],
    ]
    return ["conclusion", *(FAMILY_NAMES[f] for f in families)], rows
