r"""Chapter 02's experiments: Theorem 1 and its proof's steps measured on many networks.

:func:`softmax_hessian_study` measures :math:`\|\mathrm{diag}(p)-pp^\top\|` over random logits;
:func:`dense_hessian_study` compares the full per-sample Hessian with the G-term and the bounds on
tiny networks; :func:`full_hessian_families` puts the corrected constant against the full Hessian;
:func:`a2_families` runs every step of the proof in appendix A.2 on the paper's grid at
initialisation, on randomly scaled networks and on trained ones (:func:`a2_held`,
:func:`tightness`); :func:`random_weight_exponents` fits how the corrected bound grows with :math:`h` on
Gaussian weights; :func:`lemma_on_trained` evaluates the lemma's bounds on the trained networks.
Their tables are the ``*_table`` functions, their figures :func:`plot_softmax_hessian`,
:func:`plot_full_hessian` and :func:`plot_tightness`.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from lhlib.engine import bounds as B
from lhlib.engine.bounds import SOFTMAX_HESSIAN_NORM_PAPER, FullHessianCheck
from lhlib.engine.data import Dataset
from lhlib.engine.experiment import TrainedNetwork, split_collapsed, trained_network
from lhlib.engine.models import build_mlp
from lhlib.engine.parameters import weight_list
from lhlib.engine.per_sample import per_sample_ggn_norms, softmax_hessian
from lhlib.engine.progress import progress_bar

__all__ = [
    "FAMILY_SHAPE",
    "TIGHTNESS_FORMS",
    "a2_families",
    "a2_held",
    "a2_table",
    "dense_hessian_study",
    "full_hessian_families",
    "full_hessian_summary",
    "full_hessian_table",
    "lemma_on_trained",
    "plot_full_hessian",
    "plot_softmax_hessian",
    "plot_tightness",
    "random_weight_exponents",
    "softmax_hessian_study",
    "softmax_hessian_table",
    "tightness",
]


FAMILY_SHAPE = {"width_range": (2, 6), "matrices_range": (1, 5), "classes_range": (2, 5)}
"""The shapes of :func:`full_hessian_families`' random networks."""


TIGHTNESS_FORMS = {
    "paper_theorem": "Theorem 1 as stated",
    "paper_per_sample": "A.2 per-sample form",
    "corrected_constant": r"corrected, $\frac{1}{2} L M_x^2 M_W^{2(L-1)}$",
    "corrected_per_sample": "corrected, per sample",
}
"""The forms of the bound :func:`tightness` compares with the G-term, and their names."""


def softmax_hessian_study(
    classes: list[int], num_logits: int, logit_scale_max: float, generator: torch.Generator
) -> list[dict[str, Any]]:
    r"""Norms of the softmax Hessian :math:`\mathbf A` over random logits, per number of classes :math:`K`.

    For each :math:`K`, ``num_logits`` random logit vectors :math:`\mathbf z \sim \mathcal N(0, s^2 I_K)`,
    each with its own :math:`s` log-uniform in ``[0.1, logit_scale_max]``, drawn from ``generator``, and

    .. math::

        \mathbf A = \operatorname{diag}(\mathbf p) - \mathbf p \mathbf p^\top, \quad
        \mathbf p = \operatorname{softmax}(\mathbf z), \qquad
        \lVert \mathbf A \rVert_2 = \lambda_{\max}(\mathbf A), \qquad
        \lVert \mathbf A \rVert_F = \Bigl(\sum_{jl} A_{jl}^2\Bigr)^{1/2}

    (:math:`\mathbf A` is positive semi-definite, so its spectral norm is its largest eigenvalue).

    Args:
        classes: The numbers of classes :math:`K` to try.
        num_logits: Logit vectors per :math:`K`.
        logit_scale_max: The largest logit scale :math:`s`.
        generator: Draws the scales and the logits.

    Returns:
        One dict per :math:`K`, with ``K`` and the ``(num_logits,)`` tensors ``spec`` and ``frob`` (the
        norms of each :math:`\mathbf A`) and ``pmax`` (its largest probability).
    """
    rows = []
    for K in classes:
        log_scale = torch.empty(num_logits, 1, dtype=torch.float64).uniform_(
            math.log(0.1), math.log(logit_scale_max), generator=generator
        )
        z = torch.randn(num_logits, K, generator=generator, dtype=torch.float64) * log_scale.exp()
        A = softmax_hessian(z)
        rows.append(
            {
                "K": K,
                "spec": torch.linalg.eigvalsh(A)[:, -1],  # A is symmetric positive semi-definite
                "frob": torch.linalg.matrix_norm(A),
                "pmax": torch.softmax(z, 1).max(1).values,
            }
        )
    return rows


def softmax_hessian_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    r"""The largest norms found per :math:`K` beside the paper's :math:`\sqrt2` and the sharp bound :math:`1/2`.

    Args:
        rows: :func:`softmax_hessian_study`'s rows.

    Returns:
        The table as ``(header, rows)``.
    """
    header = ["K", "max ‖A‖₂ found", "max ‖A‖_F found", "paper's bound √2", "sharp bound 1/2"]
    return header, [
        [r["K"], f"{float(r['spec'].max()):.6f}", f"{float(r['frob'].max()):.6f}", f"{math.sqrt(2):.4f}", "0.5"]
        for r in rows
    ]


def dense_hessian_study(
    num_networks: int, rng: np.random.Generator, generator: torch.Generator
) -> list[dict[str, float]]:
    r"""Tiny random networks whose full per-sample Hessians are formed densely, beside the G-term and the bounds.

    Each has 8 inputs, 2 to 6 hidden units, 0 to 2 hidden-to-hidden layers and 3 classes, and four
    samples with inputs :math:`3\,\mathcal N(0, I)` and uniform labels. Per sample (float64):

    .. math::

        g_i = \lVert \mathbf J_i^\top \mathbf A_i \mathbf J_i \rVert_2, \qquad
        \text{full}_i = \bigl\lVert \mathbf J_i^\top \mathbf A_i \mathbf J_i
        + \textstyle\sum_c (\mathbf p_i - \mathbf y_i)_c \nabla^2_\theta z_{ic} \bigr\rVert_2,

        \text{paper}_i = \sqrt2 \sum_{p=1}^{L} \Bigl(\lVert\mathbf x_i\rVert^2
        \prod_{s<p} \lVert\mathbf W^{(s)}\rVert_2^2 + 1\Bigr) \prod_{s \ge p} \lVert\mathbf W^{(s)}\rVert_2^2, \qquad
        \text{corrected}_i = \frac12 \lVert\mathbf x_i\rVert^2 \sum_{p=1}^{L} \prod_{s \ne p}
        \lVert\mathbf W^{(s)}\rVert_2^2.

    Args:
        num_networks: The number of networks.
        rng: Draws each network's depth, width and initialisation seed.
        generator: Draws the inputs and labels.

    Returns:
        One dict per sample with ``L``, ``g``, ``full``, ``paper`` and ``corrected``.
    """
    rows = []
    for _ in progress_bar(range(num_networks), desc="dense Hessians"):
        depth = int(rng.integers(0, 3))
        model = build_mlp(8, int(rng.integers(2, 7)), depth, 3, seed=int(rng.integers(2**31)))
        weights = weight_list(model)
        xs = torch.randn(4, 8, generator=generator, dtype=torch.float64) * 3
        ys = torch.randint(0, 3, (4,), generator=generator)
        full = B.full_hessian_norm_dense(weights, xs, ys)
        g = per_sample_ggn_norms(weights, xs, dtype=torch.float64)
        paper, corrected = B.theorem1_bound_per_sample(weights, xs), B.corrected_bound_per_sample(weights, xs)
        rows += [
            {
                "L": len(weights),
                "g": float(g[i]),
                "full": float(full[i]),
                "paper": float(paper[i]),
                "corrected": float(corrected[i]),
            }
            for i in range(len(xs))
        ]
    return rows


def full_hessian_families(
    rng: np.random.Generator, families: dict[str, dict[str, Any]]
) -> dict[str, list[B.FullHessianCheck]]:
    r"""Random networks (:data:`FAMILY_SHAPE`) whose full Hessian meets the corrected constant.

    Per network (:func:`lhlib.engine.bounds.random_network`, :func:`lhlib.engine.bounds.full_hessian_check`), the
    per-sample norms of the full Hessian and of the G-term against

    .. math::

        \lVert \mathbf H_i \rVert_2 \quad\text{and}\quad \lVert \mathbf J_i^\top \mathbf A_i \mathbf J_i \rVert_2
        \quad\text{vs.}\quad \tfrac12 L M_{\mathbf x}^2 M_{\mathbf W}^{2(L-1)}.

    Args:
        rng: Draws every network.
        families: Per family, ``count`` networks with ``scale_range`` and ``input_norm_range``.

    Returns:
        Per family, one :class:`lhlib.engine.bounds.FullHessianCheck` per network.
    """
    return {
        name: [
            B.full_hessian_check(
                *B.random_network(
                    rng, scale_range=spec["scale_range"], input_norm_range=spec["input_norm_range"], **FAMILY_SHAPE
                )
            )
            for _ in progress_bar(range(spec["count"]), desc=f"{name} networks")
        ]
        for name, spec in families.items()
    }


def full_hessian_summary(families: dict[str, list[B.FullHessianCheck]]) -> dict[str, dict[str, Any]]:
    r"""Per family, how often the full Hessian and the G-term exceed the constant, and the weights' range.

    The worst ratios are, over the family's networks,

    .. math::

        \max_{\text{networks}}\ \max_i
        \frac{\lVert \mathbf H_i \rVert_2}{\tfrac12 L M_{\mathbf x}^2 M_{\mathbf W}^{2(L-1)}}
        \quad\text{(and the same for the G-term)}.

    Args:
        families: :func:`full_hessian_families`' checks.

    Returns:
        Per family, a dict with the number of networks, the counts of networks whose full Hessian or
        G-term exceeds the constant, the worst ratios, the range of :math:`M_{\mathbf W}`, the largest
        :math:`M_{\mathbf x}` and the depths :math:`L` of the exceeding networks.
    """
    return {
        name: {
            "networks": len(checks),
            "full_exceeds": sum(c.exceeds("full") for c in checks),
            "gterm_exceeds": sum(c.exceeds("gterm") for c in checks),
            "worst_full_ratio": max(c.worst_ratio("full") for c in checks),
            "worst_gterm_ratio": max(c.worst_ratio("gterm") for c in checks),
            "M_W_min": min(c.M_W for c in checks),
            "M_W_max": max(c.M_W for c in checks),
            "M_x_max": max(c.M_x for c in checks),
            "L_of_exceeding": sorted({c.L for c in checks if c.exceeds("full")}),
        }
        for name, checks in families.items()
    }


def full_hessian_table(summary: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """:func:`full_hessian_summary` as a table.

    Args:
        summary: :func:`full_hessian_summary`'s result.

    Returns:
        The table as ``(header, rows)``.
    """
    header = [
        "family",
        "networks",
        "full Hessian above the constant",
        "G-term above it",
        "largest full / constant",
        "M_W range",
    ]
    rows = [
        [
            name,
            s["networks"],
            s["full_exceeds"],
            s["gterm_exceeds"],
            f"{s['worst_full_ratio']:.3g}",
            f"{s['M_W_min']:.2f} to {s['M_W_max']:.2f}",
        ]
        for name, s in summary.items()
    ]
    return header, rows


def a2_families(
    data: Dataset,
    *,
    hidden_sizes: list[int],
    num_layers: list[int],
    num_inputs: int,
    num_random_networks: int,
    scale_range: tuple[float, float],
    trained: dict[str, Any],
    seeds: list[int],
    study_seed: int,
) -> tuple[dict[str, list[B.A2Chain]], dict[int, TrainedNetwork], list[int]]:
    r"""Every step of the proof in appendix A.2 (:func:`lhlib.engine.bounds.a2_chain`) on three families of networks.

    The paper's grid of hidden sizes and depths at initialisation (seed ``study_seed``) on the first
    ``num_inputs`` images; ``num_random_networks`` randomly scaled small networks (numpy seed
    ``study_seed + 1``); and the network ``trained`` describes trained from each of ``seeds``, on every
    image. On each sample the chain evaluates both sides of

    .. math::

        \lVert \mathbf J_i^\top \mathbf A_i \mathbf J_i \rVert_2
        \le \lVert \mathbf A_i \rVert_2 \lVert \mathbf J_i \rVert_2^2
        \le \lVert \mathbf A_i \rVert_2 \sum_{p} \lVert \mathbf G_i^{(p)} \rVert_2^2 \lVert \mathbf x_i^{(p)}\rVert_2^2,
        \qquad \lVert \mathbf A_i \rVert_2 \le \lVert \mathbf A_i \rVert_F \le \sqrt2,

    the layer-wise steps for :math:`\mathbf G^{(p)}` and :math:`\mathbf x^{(p)}`, and the final bounds
    (:data:`lhlib.engine.bounds.A2_STEPS`).

    Args:
        data: The dataset (images and labels).
        hidden_sizes: The grid's hidden sizes.
        num_layers: The grid's numbers of hidden-to-hidden layers.
        num_inputs: The images the grid networks are evaluated on.
        num_random_networks: The number of randomly scaled networks.
        scale_range: The range of their per-layer weight scales.
        trained: The trained network's settings (``hidden_size``, ``num_layers``, ``epochs``, ``batch_size``,
            ``lr``, ``device``).
        seeds: The trained network's seeds.
        study_seed: Seeds the grid's initialisation and the random networks.

    The trained networks that collapsed (:func:`lhlib.engine.experiment.split_collapsed`) are left out of the
    ``"trained"`` family and of the runs: their chains would describe dead units.

    Returns:
        The triple ``(families, runs, collapsed_seeds)`` of the chains per family, the trained networks that did
        not collapse per seed, and the seeds of those that did.
    """
    families = {"paper grid, initialisation": [], "random scales": [], "trained": []}
    x_images = data.x[:num_inputs].double()
    grid = [(h, depth) for depth in num_layers for h in hidden_sizes]
    for h, depth in progress_bar(grid, desc="grid networks"):
        model = build_mlp(data.info.input_dim, h, depth, data.info.num_classes, seed=study_seed)
        families["paper grid, initialisation"].append(B.a2_chain(model, x_images))
    rng = np.random.default_rng(study_seed + 1)
    for _ in progress_bar(range(num_random_networks), desc="random networks"):
        weights, xs, _ = B.random_network(
            rng, width_range=(2, 8), classes_range=(2, 10), scale_range=scale_range, input_norm_range=(1.0, 100.0)
        )
        families["random scales"].append(B.a2_chain(weights, xs))
    ensemble = [
        trained_network(data.x, data.y, num_classes=data.info.num_classes, seed=seed, **trained)
        for seed in progress_bar(seeds, desc="trained networks")
    ]
    kept, collapsed = split_collapsed(ensemble, data.y, data.info.num_classes)
    families["trained"] = [B.a2_chain(run.model, data.x.double()) for run in kept]
    return families, {run.seed: run for run in kept}, collapsed


def a2_held(families: dict[str, list[B.A2Chain]]) -> dict[str, dict[str, dict[str, float]]]:
    r"""Per family and step of :data:`lhlib.engine.bounds.A2_STEPS`, how often the inequality held.

    With :math:`h_{ni}` whether it held on sample :math:`i` of network :math:`n` (up to a relative
    tolerance of :math:`10^{-9}`, :meth:`lhlib.engine.bounds.A2Chain.held`),

    .. math::

        \text{networks} = \frac{1}{|F|} \sum_{n \in F} \Bigl[\textstyle\bigwedge_i h_{ni}\Bigr], \qquad
        \text{samples} = \frac{\sum_{n} \sum_i h_{ni}}{\sum_n N_n}.

    Args:
        families: :func:`a2_families`' chains per family.

    Returns:
        Per family and step, the share of networks on which it held for every sample (``networks``) and
        the share of all samples (``samples``).
    """
    return {
        family: {
            name: {
                "networks": float(np.mean([bool(c.held(name).all()) for c in chains])),
                "samples": float(torch.cat([c.held(name) for c in chains]).double().mean()),
            }
            for name in B.A2_STEPS
        }
        for family, chains in families.items()
    }


def a2_table(held: dict[str, dict[str, dict[str, float]]]) -> tuple[list[str], list[list[str]]]:
    """:func:`a2_held` as a table: per step, networks held % (samples held %) per family.

    Args:
        held: :func:`a2_held`'s result.

    Returns:
        The table as ``(header, rows)``.
    """
    rows = [
        [
            B.A2_STEPS[name],
            *(f"{100 * held[f][name]['networks']:.0f}% ({100 * held[f][name]['samples']:.1f}%)" for f in held),
        ]
        for name in B.A2_STEPS
    ]
    return ["step", *held], rows


def tightness(families: dict[str, list[B.A2Chain]]) -> dict[str, dict[str, Any]]:
    r"""Per family and form of :data:`TIGHTNESS_FORMS`, the ratios of the bound to the G-term.

    .. math::

        \rho_i = \frac{\text{bound}_i}{\lVert \mathbf J_i^\top \mathbf A_i \mathbf J_i \rVert_2}.

    Samples whose G-term is zero (e.g. every ReLU of the last hidden layer off) cannot violate anything;
    they are left out.

    Args:
        families: :func:`a2_families`' chains per family.

    Returns:
        Per family and form, the ``ratios`` (a tensor over samples) with their ``min_ratio`` and
        ``median_ratio`` (torch's median, the lower middle value).
    """
    result = {}
    for family, chains in families.items():
        result[family] = {}
        for name in TIGHTNESS_FORMS:
            ratios = torch.cat([c.rhs[name][c.lhs[name] > 0] / c.lhs[name][c.lhs[name] > 0] for c in chains])
            result[family][name] = {
                "ratios": ratios,
                "min_ratio": float(ratios.min()),
                "median_ratio": float(ratios.median()),
            }
    return result


def random_weight_exponents(
    n: int, num_classes: int, hidden_sizes: list[int], depths: list[int], *, draws: int = 20, seed: int = 0
) -> dict[int, float]:
    r"""The exponent of :math:`h` in the corrected bound for Gaussian weights of the true shapes.

    For each depth :math:`L` and width :math:`h`, ``draws`` networks with :math:`W^{(1)} \in \mathbb R^{h\times n}`,
    :math:`W^{(p)} \in \mathbb R^{h\times h}` and :math:`W^{(L)} \in \mathbb R^{K\times h}`, entries
    :math:`\mathcal N(0, 1)`, give the corrected bound at a unit input,

    .. math::

        B_L(h) = \tfrac12 \sum_{p=1}^{L} \prod_{s \ne p} \lVert W^{(s)} \rVert_2^2,

    whose geometric mean over the draws is fitted as :math:`\log B_L = a + e_L \log h`. The spectral
    norms grow like :math:`\sqrt{\text{fan-in}} + \sqrt{\text{fan-out}}`, so :math:`e_L \to L - 1` only once
    :math:`h \gg n, K`; while :math:`h \ll n` the first layer's norm barely moves with :math:`h`.

    Args:
        n: Inputs of the first layer.
        num_classes: Outputs of the last layer, :math:`K`.
        hidden_sizes: The widths :math:`h` fitted over (at least two).
        depths: The numbers of weight matrices :math:`L` (at least 2 each).
        draws: Networks drawn per :math:`(L, h)`.
        seed: Seeds the draws.

    Returns:
        The fitted exponent :math:`e_L` for each depth.
    """
    generator = torch.Generator().manual_seed(seed)
    unit_input = torch.ones(1, n, dtype=torch.float64) / math.sqrt(n)
    exponents = {}
    for depth in depths:
        means = []
        for h in hidden_sizes:
            dims = [n] + [h] * (depth - 1) + [num_classes]
            bounds = [
                float(B.corrected_bound_per_sample(
                    [torch.randn(rows, cols, generator=generator, dtype=torch.float64)
                     for cols, rows in zip(dims[:-1], dims[1:])], unit_input)[0])
                for _ in range(draws)
            ]  # fmt: skip
            means.append(np.exp(np.mean(np.log(bounds))))
        exponents[depth] = float(np.polyfit(np.log(hidden_sizes), np.log(means), 1)[0])
    return exponents


def lemma_on_trained(runs: dict[int, TrainedNetwork], data: Dataset, k: int) -> list[dict[str, float]]:
    r"""The lemma's bounds at ``k`` with :math:`R=1` on each trained network, beside what they bound.

    With :math:`M_\ell = \max_i \ell_i(\hat\theta)`, :math:`M_{\mathbf W} = \max_p \lVert\mathbf W^{(p)}\rVert_2`,
    :math:`M_{\mathbf x} = \max_i \lVert\mathbf x_i\rVert_2`, :math:`M^{\text{paper}}_{\mathbf H}` Theorem 1's
    constant as stated and
    :math:`M^{\text{corr}}_{\mathbf H} = \frac12 M_{\mathbf x}^2 \sum_p \prod_{s\ne p} \lVert\mathbf W^{(s)}\rVert_2^2`:

    .. math::

        \text{proved} = \frac{2}{k+1}\bigl(M_\ell + M^{\text{paper}}_{\mathbf H} R^2\bigr), \qquad
        \text{corrected} = \frac{1}{k+1}\bigl(M_\ell + \tfrac12 M^{\text{corr}}_{\mathbf H} R^2\bigr), \qquad
        \text{measured} = \frac{|\ell_{k+1} - \mathcal{L}_k|}{k+1},

    and the lemma as stated (:func:`lhlib.engine.bounds.lemma_bound_as_stated`); the measured value term uses the
    losses in dataset order.

    Args:
        runs: The trained networks per seed.
        data: Their training data.
        k: The sample size :math:`k` (at most :math:`N - 1`).

    Returns:
        One dict per seed with :math:`M_\ell`, :math:`M_{\mathbf W}`, Theorem 1's and the corrected
        :math:`M_{\mathbf H}`, the measured largest G-term, the three bounds and the measured value term.
    """
    m_x = float(data.x.double().norm(dim=1).max())
    rows = []
    for seed, run in runs.items():
        m_l, m_w = float(run.losses.max()), float(B.layer_spectral_norms(run.model).max())
        row = {
            "seed": seed,
            "M_l": m_l,
            "M_W": m_w,
            "M_H_paper": B.theorem1_bound_paper(run.model, data.x),
            "M_H_corrected": B.corrected_bound(run.model, data.x),
            "measured_max_gterm": float(per_sample_ggn_norms(run.model, data.x, dtype=torch.float64).max()),
        }
        row["paper_proved"] = B.lemma_bound(k, m_l, row["M_H_paper"], 1.0)
        row["paper_stated"] = B.lemma_bound_as_stated(k, m_l, m_x, m_w, run.model.weight_matrices, 1.0)
        row["corrected"] = B.lemma_bound_corrected(k, m_l, row["M_H_corrected"], 1.0)
        losses = run.losses.double()
        row["measured_value_term"] = float(abs(losses[k] - losses[:k].mean()) / (k + 1))
        rows.append(row)
    return rows


def plot_softmax_hessian(rows: list[dict], num_logits: int) -> plt.Figure:
    r"""The worst :math:`\|\mathrm{diag}(p)-pp^\top\|_2` found in each bin of the largest probability :math:`q`.

    Args:
        rows: :func:`lhlib.chapters.ch02_hessian_bound.softmax_hessian_study`'s result, one line per :math:`K`.
        num_logits: Logit vectors per :math:`K`, for the title.

    Returns:
        The figure with the Gershgorin envelope dashed (:math:`2q(1-q)` for :math:`q \geq 1/2`,
        :math:`1/2` below) and the paper's :math:`\sqrt2` dotted.
    """
    bins = np.linspace(0, 1, 41)
    fig, ax = plt.subplots()
    # The curves of every K coincide where they overlap (the worst case depends on q alone): the larger K
    # are drawn first with larger open markers, so each stays visible around the ones drawn over it.
    for index, r in reversed(list(enumerate(rows))):
        which = np.digitize(r["pmax"].numpy(), bins) - 1
        spec, q = r["spec"].numpy(), r["pmax"].numpy()
        # In each bin, the worst logit vector found, drawn at its own q.
        picks = [
            np.flatnonzero(which == b)[spec[which == b].argmax()] for b in range(len(bins) - 1) if (which == b).any()
        ]
        ax.plot(q[picks], spec[picks], "-", marker="os^Dv"[index % 5], ms=3 + 2 * index, mfc="none", lw=0.8,
                color=f"C{index}", label=f"largest found, K = {r['K']}")  # fmt: skip
    q = np.linspace(0, 1, 401)
    ax.plot(q, np.where(q >= 0.5, 2 * q * (1 - q), 0.5), "k--", lw=1, label=r"Gershgorin: $2q(1-q)$ for $q \geq 1/2$")
    ax.axhline(SOFTMAX_HESSIAN_NORM_PAPER, color="0.4", ls=":", label=r"paper: $\sqrt{2}$")
    ax.set_ylim(0, 1.5)
    ax.set(
        xlabel=r"largest probability $q = \max_k p_k$ (dimensionless)",
        ylabel=r"$\|\mathrm{diag}(p) - pp^\top\|_2$ (dimensionless)",
        title=f"Worst case over {num_logits} random logit vectors per K (one per bin of q)",
    )
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(rows)))[::-1] + list(range(len(rows), len(labels)))  # K ascending, then the rest
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7, ncol=2)
    return fig


def plot_full_hessian(families: dict[str, list[FullHessianCheck]]) -> plt.Figure:
    r"""The largest per-sample full-Hessian and G-term norms of each network against the corrected constant.

    Args:
        families: Per family, :func:`lhlib.chapters.ch02_hessian_bound.full_hessian_families`'s checks. Only the first
            two families are drawn (colours C0 and C1).

    Returns:
        A log-log scatter against :math:`\tfrac12 L M_x^2 M_W^{2(L-1)}`, one point per network and kind,
        with the diagonal dashed. Networks whose ReLU paths are all off have no G-term to draw on a log
        axis; the legend counts them.
    """
    fig, ax = plt.subplots()
    for (name, checks), color in zip(families.items(), ("C0", "C1")):
        constant = np.array([c.constant for c in checks])
        ax.loglog(
            constant, [float(c.full.max()) for c in checks], "o", ms=3, color=color, label=f"{name}: full Hessian"
        )
        gterm = np.array([float(c.gterm.max()) for c in checks])
        live = gterm > 0
        hidden = f" ({int((~live).sum())} at 0 not shown)" if not live.all() else ""
        ax.loglog(constant[live], gterm[live], "x", ms=3, color=color, alpha=0.5, label=f"{name}: G-term{hidden}")
    span = np.array(ax.get_xlim())
    ax.loglog(span, span, "k--", lw=1, label="= corrected constant")
    ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-8))
    ax.set(
        xlabel=r"corrected constant $\frac{1}{2} L M_x^2 M_W^{2(L-1)}$ (loss units)",
        ylabel=r"largest per-sample norm (loss units)",
        title="Random bias-free networks: one point per network",
    )
    ax.legend(fontsize=7)
    return fig


def plot_tightness(tight: dict[str, dict]) -> plt.Figure:
    r"""Box plots of bound / :math:`\|J_i^\top A_iJ_i\|_2` per sample, one panel per family of networks.

    Args:
        tight: :func:`lhlib.chapters.ch02_hessian_bound.tightness`'s result.

    Returns:
        The figure — one box per form of :data:`lhlib.chapters.ch02_hessian_bound.TIGHTNESS_FORMS` (numbered, named
        below the panels), whiskers over the full range, the line at 1 dashed (below it: violated).
    """
    fig, axes = plt.subplots(1, len(tight), figsize=(11, 3.8), sharey=True, squeeze=False)
    for ax, (family, forms) in zip(axes[0], tight.items()):
        ax.boxplot([forms[name]["ratios"].numpy() for name in TIGHTNESS_FORMS], whis=(0, 100), showfliers=False)
        ax.set_xticks(range(1, len(TIGHTNESS_FORMS) + 1), [f"({j + 1})" for j in range(len(TIGHTNESS_FORMS))])
        ax.axhline(1, color="C3", ls="--", lw=1)
        ax.set(yscale="log", title=family, xlabel="form of the bound")
    axes[0, 0].set_ylabel(r"bound / $\|J_i^\top A_i J_i\|_2$  (below 1: violated)")
    names = "   ".join(f"({j + 1}) {label}" for j, label in enumerate(TIGHTNESS_FORMS.values()))
    fig.text(0.5, -0.06, names, ha="center", fontsize=8)
    return fig
