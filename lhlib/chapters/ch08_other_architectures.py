r"""Chapter 08's experiment: the paper's measurements for the MLP, a CNN and a ViT, across seeds.

A *size* of a family is a ``(width, depth)`` pair (:mod:`lhlib.engine.architectures`). The first size of a
family is its reference; the others change its width or its depth, so each family has a width
panel (the sizes at the reference depth) and a depth panel (the sizes at the reference width).

:func:`run_families` trains every size of every family as a seed ensemble (through
:func:`lhlib.engine.experiment.trained_networks`) and measures each member's loss-difference curves as
chapter 04 does (:func:`lhlib.engine.sweep.measure_member`). :func:`network_curvature` measures one
network's per-sample curvature: the exact G-term norms :math:`\lVert J_i^\top A_i J_i \rVert_2`
(:mod:`lhlib.engine.per_sample`, generic ``torch.func`` engine or the structured path of a bias-free Linear/ReLU
stack), the product-of-layer-norms bound where one exists (:mod:`lhlib.engine.architecture_bounds`), the
scaling exponent of :math:`J_i J_i^\top`, and the full per-sample Hessian norm on a subsample (batched
Lanczos). The ``*_table``, ``*_facts`` and ``*_citations`` functions are the chapter's tables and prose,
:func:`plot_family_curves` and :func:`plot_curvature` its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import NullFormatter
from torch import nn

from lhlib.build.plotting import sweep_colors
from lhlib.engine.architecture_bounds import jjt_scaling_exponents, layer_norm_bound_per_sample
from lhlib.engine.architectures import FAMILY_NAMES, VisionTransformer, weight_layers
from lhlib.engine.bounds import ggn_norms_from_jjt
from lhlib.engine.experiment import TrainedNetwork, settings_networks
from lhlib.engine.landscape import log_binned
from lhlib.engine.per_sample import per_sample_jjt
from lhlib.engine.progress import progress_bar
from lhlib.engine.seed_stats import family_verdicts, p_value_text, positive_interval_across_seeds, trend_test
from lhlib.engine.settings import SweepSettings
from lhlib.engine.spectral import per_sample_hessian_norms
from lhlib.engine.store import cached, tensor_fingerprint
from lhlib.engine.sweep import ConfigurationResult, combine_members, measure_member
from lhlib.engine.validation import check_float, check_int

__all__ = [
    "FamilyConfiguration",
    "NetworkCurvature",
    "TREND_CLAIMS",
    "conclusions_table",
    "curvature_citations",
    "curvature_facts",
    "curvature_table",
    "family_curvature",
    "family_summary_rows",
    "family_table",
    "family_trend_tests",
    "landscape_citations",
    "landscape_facts",
    "network_curvature",
    "panel_sizes",
    "plot_curvature",
    "plot_family_curves",
    "pooled_median",
    "run_families",
    "size_trend_tests",
    "trend_citations",
    "trend_table",
    "trend_verdicts",
]


# Bumped when network_curvature changes what it stores.
CURVATURE_VERSION = 4  # 3: per-sample MLP products by its tangent recursions; 4: generic H-term computed directly


def panel_sizes(pairs: tuple[tuple[int, int], ...], varying: str) -> list[tuple[int, int]]:
    """The sizes of a family's ``"width"`` panel (at the first size's depth) or ``"depth"`` panel (at its width).

    Args:
        pairs: The family's ``(width, depth)`` sizes, the reference first.
        varying: ``"width"`` or ``"depth"``.

    Returns:
        The panel's sizes, the reference among them, sorted by the varied quantity.

    Raises:
        ValueError: when ``varying`` is neither ``"width"`` nor ``"depth"``.
    """
    width, depth = pairs[0]
    if varying == "width":
        return sorted(p for p in pairs if p[1] == depth)
    if varying == "depth":
        return sorted((p for p in pairs if p[0] == width), key=lambda p: p[1])
    raise ValueError(f"varying must be 'width' or 'depth', got {varying!r}")


@dataclass(frozen=True)
class FamilyConfiguration:
    """One size of one family across seeds: its trained networks and their curves.

    Attributes:
        family: The family's key in :data:`~lhlib.engine.architectures.FAMILY_NAMES` (``"mlp"``, ``"cnn"`` or
            ``"vit"``).
        width: The width (the MLP's hidden size, the CNN's channels, the ViT's embedding dimension).
        depth: The depth (hidden-to-hidden layers, convolution or attention blocks).
        parameters: The number of parameters of the network.
        networks: The trained networks, one per seed, in seed order.
        curves: Their loss-difference curves across seeds (:func:`lhlib.engine.sweep.combine_members`).
    """

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
    r"""Train (or load) every size of every family for every seed and measure each member's curves.

    As chapter 04 does (:func:`lhlib.engine.sweep.measure_member`), the network of each seed :math:`s` gives

    .. math::

        d^{(s)}_k = \mathbb{E}_\pi \bigl|\mathcal{L}_{k+1}(\hat\theta_s) - \mathcal{L}_k(\hat\theta_s)\bigr|,
        \qquad k = 1, \dots, N - 1,

    over ``settings.permutations`` random orders, with its power-law fit, the MAD of its losses and its collapse.

    Args:
        x: The ``(N, n)`` training inputs, images flattened.
        y: The ``(N,)`` labels.
        num_classes: The number of classes :math:`K`.
        image_shape: ``(channels, height, width)`` of one image.
        sizes: Per family, its ``(width, depth)`` sizes, the reference first.
        settings: The sweep's training recipe, seeds and measurement settings.
        label: A prefix of the progress bar's description.

    Returns:
        Per ``(family, width, depth)``, its :class:`FamilyConfiguration`.
    """
    results = {}
    configurations = [(family, *pair) for family, pairs in sizes.items() for pair in pairs]
    for family, width, depth in progress_bar(configurations, desc=f"{label} networks".strip()):
        networks = settings_networks(x, y, num_classes, width, depth, settings, family=family, image_shape=image_shape)
        members = [measure_member(network, settings, y, num_classes) for network in networks]
        model = networks[0].model
        curves = combine_members(width, depth, weight_layers(model), members, settings)
        results[(family, width, depth)] = FamilyConfiguration(
            family, width, depth, sum(p.numel() for p in model.parameters()), tuple(networks), curves
        )
    return results


@dataclass(frozen=True)
class NetworkCurvature:
    r"""Per-sample curvature of one trained network on the first ``samples`` training samples.

    Attributes:
        seed: The network's training seed.
        ggn_norms: The ``(samples,)`` exact G-term norms :math:`\lVert J_i^\top A_i J_i \rVert_2`.
        jjt_norms: The ``(samples,)`` norms :math:`\lVert J_i J_i^\top \rVert_2`; since
            :math:`\lVert A_i \rVert_2 \le 1/2`, ``ggn_norms / (jjt_norms / 2)`` is at most 1 and says how far
            :math:`A_i` falls short of that bound.
        bound: The ``(samples,)`` product-of-layer-norms bound
            (:func:`lhlib.engine.architecture_bounds.layer_norm_bound_per_sample`), or ``None`` for the ViT, for
            which none
            is derived.
        scaling_exponents: The ``(hessian_samples,)`` exponents of :math:`\lVert J_i J_i^\top \rVert_2` under scaling
            every parameter by ``factor`` (:func:`lhlib.engine.architecture_bounds.jjt_scaling_exponents`).
        hessian_norms: The ``(hessian_samples,)`` spectral norms :math:`\max |\lambda|` of the full per-sample Hessians
            (Lanczos, relative tolerance :math:`10^{-4}`, at most 120 steps).
        hterm_norms: The same for the H-terms :math:`H_i - J_i^\top A_i J_i`.
        hessian_converged: The ``(hessian_samples,)`` flags, true where both Lanczos runs of the sample converged.
        from_cache: Whether the measurements came from the results store.
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
        r"""The ratios :math:`\lVert J_i^\top A_i J_i \rVert_2 / (\lVert J_i J_i^\top \rVert_2 / 2)`,
        at most 1 since :math:`\lVert A_i \rVert_2 \le 1/2`, of the samples with :math:`J_i \ne 0` (an input that
        switches off a whole ReLU layer has :math:`J_i = 0`).
        """
        live = self.jjt_norms > 0
        return self.ggn_norms[live] / (self.jjt_norms[live] / 2)

    @property
    def converged_hessian_ratios(self) -> torch.Tensor:
        r"""The ratios :math:`\lVert H_i \rVert_2 / \lVert J_i^\top A_i J_i \rVert_2` of the samples whose Lanczos
        runs converged.
        """
        ggn = self.ggn_norms[: self.hessian_norms.numel()]
        return (self.hessian_norms / ggn)[self.hessian_converged]

    @property
    def converged_hterm_ratios(self) -> torch.Tensor:
        r"""The ratios :math:`\lVert H_i - J_i^\top A_i J_i \rVert_2 / \lVert J_i^\top A_i J_i \rVert_2` of the
        samples whose Lanczos runs converged.
        """
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
    r"""Measure :class:`NetworkCurvature` for ``network`` on ``x[:samples]`` (cached in the results store).

    With :math:`A_i = B_i B_i^\top` and :math:`\gamma` = ``factor``,

    .. math::

        \lVert J_i^\top A_i J_i \rVert_2 = \lambda_{\max}\bigl(B_i^\top J_i J_i^\top B_i\bigr), \qquad
        \lVert J_i J_i^\top \rVert_2, \qquad
        \frac{1}{\log\gamma}
        \log\frac{\lVert J_i J_i^\top \rVert_2(\gamma\theta)}{\lVert J_i J_i^\top \rVert_2(\theta)},

        b_i = \tfrac{1}{2} \lVert x_i \rVert^2 \sum_p c_p \prod_{q \ne p} \lVert C^{(q)} \rVert_{\mathrm{op}}^2,

    the last (:func:`lhlib.engine.architecture_bounds.layer_norm_bound_per_sample`) except for the ViT; the exponent,
    :math:`\lVert H_i \rVert_2` and :math:`\lVert H_i - J_i^\top A_i J_i \rVert_2` on the first ``hessian_samples``
    samples only.

    Args:
        network: The trained network; its seed seeds the Lanczos starting vectors.
        x: The training inputs, of which the first ``samples`` are measured.
        y: The labels.
        samples: How many samples get the G-term norms and the bound.
        hessian_samples: How many of those get the scaling exponent and Lanczos.
        factor: The scale :math:`\gamma` of the exponent (positive, not 1).
        use_cache: Whether to read and write the results store.

    Returns:
        The network's :class:`NetworkCurvature`.

    Raises:
        ValueError: when ``samples`` is not in :math:`[1, N]`, ``hessian_samples`` not in ``[1, samples]`` or
            ``factor`` not positive (or, once computed, equal to 1).
    """
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


def _positive_interval(values) -> str:
    if len(values) < 2:
        return f"{values[0]:.3g}" if values else "none kept"
    centre, (low, high) = positive_interval_across_seeds(values)
    return f"{centre:.3g} [{low:.3g}, {high:.3g}]"


def family_table(results: dict[tuple[str, int, int], FamilyConfiguration]) -> tuple[list[str], list[list[Any]]]:
    """Per family and size: parameters, accuracy, collapsed seeds, and over the others level, level/MAD and exponent.

    The level is given by its geometric mean over the kept seeds with a 95 % interval on the log scale (a level is
    positive); collapsed seeds are counted and left out (:attr:`lhlib.engine.sweep.ConfigurationResult.kept`).

    Args:
        results: :func:`run_families`' results.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
    """
    rows = []
    for r in results.values():
        c = r.curves
        accuracy = 100 * np.array(c.accuracies)
        ratios = [m.level / m.mean_abs_deviation for m in c.kept if m.mean_abs_deviation > 0]
        exponent_low, exponent_high = c.rate_exponent_ci95
        rows.append(
            [
                FAMILY_NAMES[r.family],
                r.width,
                r.depth,
                r.parameters,
                f"{accuracy.mean():.1f} ({accuracy.min():.1f}-{accuracy.max():.1f})",
                f"{c.collapsed_seeds} of {len(c.members)}",
                _positive_interval([m.level for m in c.kept]),
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
        "collapsed seeds (left out)",
        "level C, geometric mean [95 % CI, log scale]",
        "level / MAD (range)",
        "fitted exponent [95 % CI]",
    ]
    return header, rows


def pooled_median(tensors) -> float:
    r"""The median of all entries of ``tensors`` together (NaN when they hold none).

    .. math::

        \operatorname{median}\bigl(\{t_{j,i}\}_{j,i}\bigr),

    in float64; torch's median, the lower middle value for an even count.

    Args:
        tensors: A non-empty sequence of tensors of any shapes.

    Returns:
        The median, NaN when every tensor is empty.
    """
    values = torch.cat([t.reshape(-1).double() for t in tensors])
    return float(values.median()) if values.numel() else float("nan")


def curvature_table(
    results: dict[tuple[str, int, int], FamilyConfiguration],
    curvature: dict[tuple[str, int, int], list[NetworkCurvature]],
) -> tuple[list[str], list[list[Any]]]:
    r"""Per family and size, across seeds: the G-term norm and what bounds and explains it.

    The columns: the G-term norm :math:`\lVert J_i^\top A_i J_i \rVert_2`; the samples within the bound and its
    slack split into :math:`\lVert J_i^\top A_i J_i \rVert_2 / (\lVert J_i J_i^\top \rVert_2 / 2)` (how far
    :math:`A_i` is from its bound 1/2) and :math:`(\lVert J_i J_i^\top \rVert_2 / 2) / b_i` (the layer-norm product's
    slack); the scaling exponent of :math:`J_i J_i^\top`; and the full Hessian's and the H-term's norms relative to
    the G-term's, on the samples whose Lanczos runs converged.

    Args:
        results: :func:`run_families`' results.
        curvature: :func:`family_curvature` of ``results``.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
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
    r"""One-sided Spearman trend tests of per-seed ``values`` against width (width panel) and depth (depth panel).

    For every family and every panel of at least two sizes, over its (size, seed) pairs :math:`(x_j, v_j)` with
    :math:`x_j` the width or the depth (:func:`lhlib.engine.seed_stats.trend_test`, ties ranked by their average rank),

    .. math::

        \rho = \operatorname{corr}\bigl(\operatorname{rank}(x), \operatorname{rank}(v)\bigr), \qquad
        p = \frac{1 + \#\{b \le B : \rho_b \ge \rho\}}{1 + B}

    for a claimed increase (:math:`\rho_b \le \rho` for a decrease), :math:`\rho_b` the correlation after the
    :math:`b`-th of :math:`B` random permutations of the values.

    Args:
        values: Per ``(family, width, depth)``, one value per seed.
        sizes: Per family, its ``(width, depth)`` sizes, the reference first.
        directions: ``"width"`` and/or ``"depth"``, each mapped to the claimed direction, ``"increasing"`` or
            ``"decreasing"``.
        permutations: :math:`B`, the random permutations behind each p-value.

    Returns:
        One dict per test, with ``family``, ``varying``, ``direction``, ``sizes`` and the fields of
        :class:`lhlib.engine.seed_stats.TrendTest`.

    Raises:
        ValueError: when a key of ``directions`` is neither ``"width"`` nor ``"depth"``.
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
    r""":func:`network_curvature` of every seed of every size in ``results`` (one list per size, in seed order).

    Per sample :math:`i` of the first ``samples`` (the last two of the first :math:`m` = ``hessian_samples`` only):

    .. math::

        \lVert J_i^\top A_i J_i \rVert_2, \qquad \lVert J_i J_i^\top \rVert_2, \qquad \lVert H_i \rVert_2, \qquad
        \lVert H_i - J_i^\top A_i J_i \rVert_2.

    Args:
        results: :func:`run_families`' results.
        x: The training inputs.
        y: The labels.
        samples: As for :func:`network_curvature`.
        hessian_samples: As for :func:`network_curvature`.
        factor: As for :func:`network_curvature`.
        label: A prefix of the progress bar's description.

    Returns:
        Per ``(family, width, depth)``, one :class:`NetworkCurvature` per seed.

    Raises:
        ValueError: when ``samples`` or ``hessian_samples`` is out of its range.
    """
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
    """Per family and size, the numbers a chapter writes to ``summary.json`` (lists are per seed).

    Args:
        results: :func:`run_families`' results.
        curvature: :func:`family_curvature` of ``results``.

    Returns:
        One JSON-ready dict per size with its landscape numbers (levels, MADs, exponents) and its curvature numbers
        (G-term quantiles, ratios, Lanczos counts, scaling exponents and, where derived, the bound's).
    """
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
            "kept_seeds": [m.seed for m in c.kept],
            "level_mean": c.level_mean,
            "level_geometric_mean": c.level_geometric_mean,
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
    r"""Per family, over every dataset, size and seed: the fitted exponents, their intervals and level / MAD.

    .. math::

        \alpha \ \text{of} \ d_k \approx C k^{\alpha}, \qquad
        \#\{\text{networks} : -1 \in [\alpha_{\mathrm{low}}, \alpha_{\mathrm{high}}]\}, \qquad
        \frac{C}{\operatorname{MAD}},

    with :math:`[\alpha_{\mathrm{low}}, \alpha_{\mathrm{high}}]` each fitted exponent's bootstrap interval; the last
    over the networks with a positive MAD. Collapsed networks are left out (and counted).

    Args:
        results: Per dataset name, its :func:`run_families` results.

    Returns:
        Per family, ``networks``, ``collapsed``, ``fitted`` (the kept networks), ``exponent_range``,
        ``contains_minus_one`` and ``level_to_mad_range``.
    """
    facts = {}
    for family in dict.fromkeys(key[0] for sweep in results.values() for key in sweep):
        members = [
            m for sweep in results.values() for key, r in sweep.items() if key[0] == family for m in r.curves.members
        ]
        fitted = [m for m in members if m.fit is not None and not m.collapsed]
        exponents = [m.fit.exponent for m in fitted]
        ratios = [m.level / m.mean_abs_deviation for m in fitted if m.mean_abs_deviation > 0]
        facts[family] = {
            "networks": len(members),
            "collapsed": sum(m.collapsed for m in members),
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
    r"""Per family, over every dataset, size and seed: the bound, its slack, the exponents, the Lanczos ratios.

    With :math:`g_i = \lVert J_i^\top A_i J_i \rVert_2`, :math:`b_i` the layer-norm bound (families that have one),
    :math:`e_i` the scaling exponent and :math:`L` the number of linear maps,

    .. math::

        \operatorname{median}_i \frac{g_i}{\lVert J_i J_i^\top \rVert_2 / 2}, \qquad
        \operatorname{median}_i \frac{g_i}{b_i}, \qquad
        \operatorname{median}_i \frac{\lVert J_i J_i^\top \rVert_2 / 2}{b_i}, \qquad
        \max_i \bigl|e_i - 2(L - 1)\bigr|,

        \operatorname{median}_i \frac{\lVert H_i \rVert_2}{g_i}, \qquad
        \operatorname{median}_i \frac{\lVert H_i - J_i^\top A_i J_i \rVert_2}{g_i},

    each median pooling every network's samples (:func:`pooled_median`; the first over :math:`J_i \ne 0`, the last
    two over the converged Lanczos samples). The deviation from :math:`2(L - 1)` is for the ReLU families (not the
    ViT), a NaN exponent counting as no deviation.

    Args:
        results: Per dataset name, its :func:`run_families` results.
        curvature: Per dataset name, its :func:`family_curvature` results.

    Returns:
        Per family, ``softmax_slack``, ``exponent_range`` and ``exponent_quartiles`` (finite exponents; the range is
        set by the most extreme sample, the quartiles are not), ``lanczos_converged``,
        ``lanczos_samples``, ``hessian_to_ggn`` and ``hterm_to_ggn``; with a bound ``bound_held`` (samples with
        :math:`g_i \le b_i (1 + 10^{-9})`), ``bound_samples``, ``tightness`` and ``product_slack``; for the ReLU
        families ``max_deviation_from_relu``.
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
            "exponent_quartiles": [
                float(q)
                for q in torch.quantile(exponents.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
            ],
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
    """:func:`landscape_facts` as the phrases the chapter cites, ``<family>_exponents`` and the like.

    Args:
        landscape: :func:`landscape_facts`' results.

    Returns:
        Per family ``<family>_exponents``, ``<family>_contains`` and ``<family>_mad_ratios``, formatted.
    """
    cited = {}
    for family, facts in landscape.items():
        cited[f"{family}_exponents"] = "{:.3f} to {:.3f}".format(*facts["exponent_range"])
        cited[f"{family}_contains"] = f"{facts['contains_minus_one']} of {facts['fitted']}"
        cited[f"{family}_mad_ratios"] = "{:.3f} to {:.3f}".format(*facts["level_to_mad_range"])
    return cited


def curvature_citations(curvature_summary: dict[str, dict[str, Any]]) -> dict[str, str]:
    """:func:`curvature_facts` as the phrases the chapter cites, with ``bound_verdict`` over families.

    Args:
        curvature_summary: :func:`curvature_facts`' results.

    Returns:
        Per family its formatted slack, exponent range, ratios and convergence (and its deviation, bound counts,
        tightness and product slack where it has them), and ``bound_verdict``.
    """
    cited = {}
    for family, f in curvature_summary.items():
        cited[f"{family}_softmax_slack"] = f"{f['softmax_slack']:.3f}"
        cited[f"{family}_exponent_range"] = "{:.2f} to {:.2f} (median {:.2f}, middle half {:.2f} to {:.2f})".format(
            *f["exponent_range"], f["exponent_quartiles"][1], f["exponent_quartiles"][0], f["exponent_quartiles"][2]
        )
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
    r""":func:`size_trend_tests` of the three quantities of ``TREND_CLAIMS``, per dataset.

    Each seed contributes

    .. math::

        \operatorname{median}_i \lVert J_i^\top A_i J_i \rVert_2, \qquad \operatorname{median}_i b_i, \qquad C,

    its median G-term norm, its median layer-norm bound (families that have one) and its level, each tested for the
    direction ``TREND_CLAIMS`` claims by Spearman's :math:`\rho` with a one-sided permutation p-value (the medians
    are torch's, the lower middle value for an even count).

    Args:
        results: Per dataset name, its :func:`run_families` results.
        curvature: Per dataset name, its :func:`family_curvature` results.
        sizes: Per family, its ``(width, depth)`` sizes, the reference first.
        permutations: The random permutations behind each p-value.

    Every test of every kind and dataset forms one family, whose verdicts are corrected for multiplicity
    (:func:`lhlib.engine.seed_stats.family_verdicts`).

    Returns:
        The tests under ``"ggn"``, ``"bound"`` and ``"level"``, each test carrying its ``dataset`` and ``quantity``
        and the family-wise verdict.
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
            tests[kind] += [{"dataset": name, "quantity": quantity, "kind": kind, **t} for t in found]
    corrected = family_verdicts([t for kind in tests.values() for t in kind])
    return {kind: [t for t in corrected if t["kind"] == kind] for kind in tests}


def trend_table(tests: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Trend tests (:func:`family_trend_tests`) as ``(header, rows)`` for :func:`lhlib.build.report.show_table`.

    Args:
        tests: Trend tests, any datasets, families and quantities.

    Returns:
        ``(header, rows)`` for :func:`lhlib.build.report.show_table`.
    """
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
        "uncorrected verdict",
        f"verdict (family-wise, p < {tests[0]['family_threshold']:.2g})" if tests else "verdict",
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
            p_value_text(t["p_value"], t["p_floor"]),
            f"{t['attainable_p']:.3g}",
            t["verdict_uncorrected"],
            t["verdict"],
        ]
        for t in tests
    ]
    return header, rows


def trend_verdicts(tests: list[dict[str, Any]], family: str, varying: str) -> str:
    """Per dataset, the verdict of ``family``'s test in the ``varying`` panel (``"not tested"`` if none).

    Args:
        tests: Trend tests of one quantity, any datasets.
        family: The family's key.
        varying: ``"width"`` or ``"depth"``.

    Returns:
        The phrases ``<dataset>: <verdict>`` joined by ``"; "``, or ``"not tested"``.
    """
    chosen = [t for t in tests if t["family"] == family and t["varying"] == varying]
    return "; ".join(f"{t['dataset']}: {t['verdict']}" for t in chosen) or "not tested"


def trend_citations(tests: dict[str, list[dict[str, Any]]], families) -> dict[str, Any]:
    r"""The family-wise verdicts the chapter cites, and how the family's correction came out.

    The threshold is :func:`lhlib.engine.seed_stats.family_verdicts`' :math:`\alpha / M`; a test reaches a verdict when

    .. math::

        \min(p, p') < \frac{\alpha}{M},

    :math:`p` its one-sided p-value and :math:`p'` the opposite direction's.

    Args:
        tests: :func:`family_trend_tests`' results.
        families: The families to cite.

    Returns:
        ``<family>_bound_width``, ``<family>_ggn_<varying>`` and ``<family>_level_<varying>`` (:func:`trend_verdicts`),
        ``n_trend_tests`` (every test), ``family_threshold``, ``family_decided`` (the tests that reach a verdict,
        supported or contradicted, at that threshold), ``family_untestable`` (those whose attainable p cannot reach
        it) and ``smallest_attainable_p``.
    """
    cited = {}
    for family in families:
        cited[f"{family}_bound_width"] = trend_verdicts(tests["bound"], family, "width")
        for varying in ("width", "depth"):
            cited[f"{family}_ggn_{varying}"] = trend_verdicts(tests["ggn"], family, varying)
            cited[f"{family}_level_{varying}"] = trend_verdicts(tests["level"], family, varying)
    every = [t for kind in tests.values() for t in kind]
    cited["n_trend_tests"] = len(every)
    cited["family_threshold"] = every[0]["family_threshold"] if every else float("nan")
    cited["family_decided"] = sum(t["verdict"] in ("supported", "contradicted") for t in every)
    cited["family_untestable"] = sum(t["verdict"].startswith("not testable") for t in every)
    cited["smallest_attainable_p"] = min((t["attainable_p"] for t in every), default=float("nan"))
    return cited


def conclusions_table(
    landscape: dict[str, dict[str, Any]],
    curvature_summary: dict[str, dict[str, Any]],
    tests: dict[str, list[dict[str, Any]]],
) -> tuple[list[str], list[list[str]]]:
    """The chapter's closing table: each conclusion of the paper and what every family says of it.

    Args:
        landscape: :func:`landscape_facts`' results.
        curvature_summary: :func:`curvature_facts`' results.
        tests: :func:`family_trend_tests`' results.

    Returns:
        ``(header, rows)``, one column per family of ``landscape``.
    """
    families = list(landscape)

    def bound(f: dict[str, Any]) -> str:
        if "bound_held" not in f:
            return "none derived here; a product of layer norms cannot follow J J^T (next row)"
        return f"holds on {f['bound_held']} of {f['bound_samples']} samples; median G-term/bound {f['tightness']:.1e}"

    def scaling(family: str, f: dict[str, Any]) -> str:
        low, high = f["exponent_range"]
        if family == "vit":
            q1, median, q3 = f["exponent_quartiles"]
            spread = f"middle half {q1:.2f} to {q3:.2f}, range {low:.2f} to {high:.2f}"
            return f"exponent median {median:.2f}, {spread}: no single power"
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


def plot_family_curves(results: dict[str, dict[tuple[str, int, int], FamilyConfiguration]]) -> plt.Figure:
    r"""The loss-difference curves of every family, one row per dataset and one panel per family.

    Args:
        results: Per dataset, :func:`lhlib.chapters.ch08_other_architectures.run_families`'s results.

    Returns:
        The figure — per size, the unsmoothed mean :math:`|\mathcal{L}_{k+1}-\mathcal{L}_k|` over orders
        and seeds on log-log axes (log bins of ``k``), shaded from the lowest to the highest seed, with
        :math:`C/(k+1)` at the level of the family's first size dashed.
    """
    families = list(dict.fromkeys(key[0] for sweep in results.values() for key in sweep))
    fig, axes = plt.subplots(
        len(results), len(families), figsize=(4.3 * len(families), 3.9 * len(results)), sharey="row", squeeze=False
    )
    for row, (dataset, sweep) in zip(axes, results.items()):
        for ax, family in zip(row, families):
            members = [r for r in sweep.values() if r.family == family]
            for r, color in zip(members, sweep_colors(len(members))):
                c = r.curves
                centres, binned = log_binned(c.live_mean)
                low, high = log_binned(c.seed_low)[1], log_binned(c.seed_high)[1]
                ax.plot(
                    centres,
                    binned,
                    color=color,
                    label=f"width {r.width}, depth {r.depth}: exponent {c.rate_exponent:.2f}",
                )
                ax.fill_between(centres, low, high, color=color, alpha=0.2, lw=0)
            reference = members[0].curves
            k = np.arange(1, reference.mean.size + 1)
            ax.plot(k, reference.level_mean / (k + 1), color="0.3", ls="--", lw=1, label="C/(k+1), first size")
            ax.set(xscale="log", yscale="log", xlabel="sample size k", title=f"{dataset}: {FAMILY_NAMES[family]}")
            ax.legend(loc="lower left")
        row[0].set_ylabel(r"mean $|\mathcal{L}_{k+1}-\mathcal{L}_k|$ (nats)")
    fig.tight_layout()
    return fig


FAMILY_MARKERS = {"mlp": "o", "cnn": "s", "vit": "^"}


FAMILY_COLORS = {"mlp": "C0", "cnn": "C1", "vit": "C2"}  # categorical: the families are not an ordered sweep


def _draw_ggn_medians(ax, sweep, measured_by_key: dict, dataset: str) -> None:
    for family in dict.fromkeys(key[0] for key in measured_by_key):
        keys = [key for key in measured_by_key if key[0] == family]
        for i, key in enumerate(keys):
            medians = [float(m.ggn_norms.median()) for m in measured_by_key[key]]
            ax.scatter(
                [sweep[key].parameters] * len(medians),
                medians,
                marker=FAMILY_MARKERS[family],
                color=FAMILY_COLORS[family],
                label=FAMILY_NAMES[family] if i == 0 else None,
                alpha=0.8,
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters P",
        ylabel=r"median $\|J_i^\top A_i J_i\|_2$ (nats per parameter$^2$)",
        title=f"{dataset}: G-term norm, one point per seed",
    )
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw_bound_ratios(ax, sweep, measured_by_key: dict, dataset: str) -> None:
    for family in dict.fromkeys(key[0] for key in measured_by_key):
        keys = [key for key in measured_by_key if key[0] == family and measured_by_key[key][0].bound is not None]
        for i, key in enumerate(keys):
            measured = measured_by_key[key]
            ratios = np.sort(np.concatenate([(m.ggn_norms / m.bound).numpy() for m in measured]))
            ratios = ratios[ratios > 0]
            ax.step(
                ratios,
                np.arange(1, ratios.size + 1) / ratios.size,
                where="post",
                color=FAMILY_COLORS[family],
                ls=["-", "--", ":"][i % 3],
                label=f"{family} w{sweep[key].width} d{sweep[key].depth}",
            )
    ax.axvline(1, color="0.3", ls="--", lw=1, label="bound reached")
    ax.set(
        xscale="log",
        xlabel="G-term norm / layer-norm bound",
        ylabel="fraction of samples (all seeds)",
        title=f"{dataset}: how tight the bound is",
    )


def _draw_scaling_exponents(ax, sweep, measured_by_key: dict, dataset: str) -> None:
    labels, relu_labelled = [], False
    families = dict.fromkeys(key[0] for key in measured_by_key)
    for key in [key for family in families for key in measured_by_key if key[0] == family]:
        measured, family, r = measured_by_key[key], key[0], sweep[key]
        exponents = np.concatenate([m.scaling_exponents.numpy() for m in measured])
        exponents = exponents[np.isfinite(exponents)]
        position = len(labels)
        labels.append(f"{family} w{r.width} d{r.depth}")
        jitter = np.linspace(-0.25, 0.25, exponents.size) if exponents.size > 1 else np.zeros(1)
        ax.scatter(
            position + jitter[: exponents.size],
            exponents,
            marker=FAMILY_MARKERS[family],
            color=FAMILY_COLORS[family],
            s=8,
            alpha=0.5,
        )
        if family != "vit":
            label = "2(L-1), bias-free ReLU" if not relu_labelled else None
            ax.hlines(2.0 * (r.curves.weight_matrices - 1), position - 0.4, position + 0.4, color="0.2", lw=1.5,
                      label=label)  # fmt: skip
            relu_labelled = True
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45, ha="right")
    ax.set(
        xlabel="family, width w, depth d",
        ylabel=r"exponent of $\|J_iJ_i^\top\|$ under $\theta\to c\,\theta$",
        title=f"{dataset}: homogeneity, one point per sample",
    )


def plot_curvature(
    results: dict[str, dict[tuple[str, int, int], FamilyConfiguration]],
    curvature: dict[str, dict[tuple[str, int, int], list[NetworkCurvature]]],
) -> plt.Figure:
    r"""The per-sample curvature of every family, one row per dataset.

    Args:
        results: Per dataset, :func:`lhlib.chapters.ch08_other_architectures.run_families`'s results.
        curvature: Per dataset, :func:`lhlib.chapters.ch08_other_architectures.family_curvature`'s measurements.

    Returns:
        The figure — left, the median per-sample G-term norm :math:`\|J_i^\top A_i J_i\|_2` against the
        parameter count, one point per seed. Middle: the empirical distribution function of G-term /
        layer-norm bound (MLP and CNN). Right: the scaling exponent of :math:`\|J_i J_i^\top\|` under
        :math:`\theta \to c\,\theta` of every sample, per size, with :math:`2(L-1)` (the value of every
        bias-free ReLU network) marked for the MLP and the CNN.
    """
    fig, axes = plt.subplots(len(results), 3, figsize=(14, 4.2 * len(results)), squeeze=False)
    for row, (dataset, sweep) in zip(axes, results.items()):
        for ax, draw in zip(row, (_draw_ggn_medians, _draw_bound_ratios, _draw_scaling_exponents)):
            draw(ax, sweep, curvature[dataset], dataset)
            ax.legend()
    fig.tight_layout()
    return fig
