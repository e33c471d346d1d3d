"""The introduction's findings, built from the chapters' summaries: a table of verdicts and one figure.

Each chapter writes ``summary.json`` into its output folder (``results/<profile>/<chapter>/``). When the
book is built, :func:`findings_rows` reads the summaries of that build and turns each of the paper's
claims into one row: the claim, the verdict of this copy, the evidence behind it (with its datasets), and
the chapter that establishes it. :func:`slack_figure` draws, on one log axis, how far each of the paper's
bounds sits above what it bounds. :func:`stage_intro` puts both into the staged introduction at its
``% findings`` marker, so the intro states no verdict of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import sympy as sp

from lhlib.build.plotting import save_figure, use_style
from lhlib.engine.architectures import FAMILY_NAMES

__all__ = ["FINDINGS", "Finding", "MARKER", "findings_rows", "findings_table", "slack_figure", "stage_intro"]


MARKER = "% findings"
"""The line of ``book/intro.md`` that the staged intro replaces with the table and the figure."""


Summaries = dict[str, dict[str, Any]]


def _names(datasets) -> str:
    return ", ".join(str(d).replace("_", "-") for d in datasets)


def _findings(summaries: Summaries, chapter: str) -> dict[str, Any]:
    return summaries[chapter]["findings"]


def _datasets(summaries: Summaries, chapter: str) -> str:
    """The datasets a chapter ran on, as the reader reads them (``fashion-mnist``, not ``fashion_mnist``)."""
    summary = summaries[chapter]
    return _names(summary.get("settings", {}).get("datasets") or summary["datasets"])


def _count(phrase: str) -> tuple[int, int]:
    """``"271 of 288"`` (or a phrase that starts so) as ``(271, 288)``."""
    held, _, total = phrase.split()[:3]
    return int(held), int(total)


def _coefficient(s: Summaries) -> tuple[str, str]:
    c = s["01_loss_difference"]["coefficients"]
    derived, paper = sp.sympify(c["hessian_sympy"]), sp.sympify(c["hessian_paper"])
    ratio = sp.simplify(paper / derived)
    verdict = "right" if ratio == 1 else f"off by a factor {sp.latex(ratio)}"
    return verdict, f"SymPy derives ${sp.latex(derived)}$; the paper writes ${sp.latex(paper)}$"


def _assumption(s: Summaries) -> tuple[str, str]:
    f = _findings(s, "01_loss_difference")
    verdict = "not met at the trained point" if f["grad_norm_L_k"] > 0 else "met at the trained point"
    return (
        verdict,
        f"$\\Vert\\nabla\\mathcal L_k\\Vert$ there is {f['grad_norm_L_k']:.3g}; the paper's split without the gradient "
        f"term held on {f['paper_split_held_fraction']:.0%} of (direction, distance) pairs",
    )


def _theorem_general(s: Summaries) -> tuple[str, str]:
    f = _findings(s, "02_hessian_bound")
    held = f["random_paper_theorem_held"]
    verdict = "fails on some networks; corrected in chapter 02" if held < 100 else "held on every network tested"
    return (
        verdict,
        f"held on {held:.0f} % of randomly scaled networks, the corrected bound on all; the softmax factor is at most "
        f"{f['a_worst_spec']:.5f} over random logits (sharp: $1/2$), where the paper uses $\\sqrt2$",
    )


def _theorem_trained(s: Summaries) -> tuple[str, str]:
    f = _findings(s, "03_hessian_in_practice")
    datasets = _datasets(s, "03_hessian_in_practice")
    return (
        f"{f['verdict_paper']}, {f['tight_paper_min']:.2g} times too large at best",
        f"{datasets}: the bound exceeds the largest per-sample G-term {f['tight_paper_min']:.3g} to "
        f"{f['tight_paper_max']:.3g} times",
    )


def _scaling(s: Summaries) -> tuple[str, str]:
    f = _findings(s, "03_hessian_in_practice")
    datasets = _datasets(s, "03_hessian_in_practice")
    inside = f["h_slope_ci_low"] <= f["h_slope_law"] <= f["h_slope_ci_high"]
    verdict = "consistent with the measured slopes" if inside else "outside every interval measured"
    return (
        verdict,
        f"{datasets}: slope in $h$ of {f['h_slope_min']:.2f} to {f['h_slope_max']:.2f} (means over seeds, intervals "
        f"within [{f['h_slope_ci_low']:.2f}, {f['h_slope_ci_high']:.2f}]) where $Lh^{{2L}}$ predicts "
        f"{f['h_slope_law']}",
    )


def _decay(s: Summaries) -> tuple[str, str]:
    direct, features = _findings(s, "04_direct_classification"), _findings(s, "05_feature_extraction")
    families = _findings(s, "08_other_architectures")
    datasets = _datasets(s, "04_direct_classification")
    low = min(direct["exponent_min"], features["feature_exponent_min"])
    high = max(direct["exponent_max"], features["feature_exponent_max"])
    verdict = f"holds: exponents {low:.2f} to {high:.2f}, the $1/k$ of chapter 01's identity"
    return (
        verdict,
        f"{datasets}: fitted exponents {direct['exponent_min']:.3f} to {direct['exponent_max']:.3f} on pixels, "
        f"{features['feature_exponent_min']:.3f} to {features['feature_exponent_max']:.3f} on "
        f"{features['backbone_name']} features; MLP {families['mlp_exponents']}, CNN {families['cnn_exponents']}, "
        f"ViT {families['vit_exponents']}",
    )


def _verdicts(tests: list[dict[str, Any]], label) -> tuple[str, str]:
    """One verdict when the tests agree, else ``"differs by dataset"``; and the evidence, test by test."""
    verdicts = {t["verdict"] for t in tests}
    phrase = verdicts.pop() if len(verdicts) == 1 else "differs by dataset"
    threshold = tests[0]["family_threshold"] if tests else float("nan")
    each = (
        f"{label(t)}: rho {t['statistic']:.2f}" if phrase != "differs by dataset" else
        f"{label(t)}: {t['verdict']} (rho {t['statistic']:.2f})"
        for t in tests
    )  # fmt: skip
    return phrase, f"{'; '.join(each)}; family-wise $p<{threshold:.2g}$"


def _ordering(panel: str) -> Callable[[Summaries], tuple[str, str]]:
    def verdict(s: Summaries) -> tuple[str, str]:
        tests = [
            t
            for t in s["04_direct_classification"]["ordering_tests"]
            if t["panel"] == panel and t["excluding_collapsed"]
        ]
        phrase, evidence = _verdicts(tests, lambda t: _names([t["dataset"]]))
        return phrase, f"{evidence}; collapsed seeds left out"

    return verdict


def _lemma(s: Summaries) -> tuple[str, str]:
    f = _findings(s, "06_convergence_in_a_ball")
    datasets = _datasets(s, "06_convergence_in_a_ball")
    held, total = _count(f["held_every"])
    verdict = "held at every point measured" if held == total else f"failed at {total - held} of {total} points"
    return (
        verdict,
        f"{datasets}: with the constants measured at the trained point the bound held at {f['held_every']} "
        f"points for every order of the objects; {f['failure_description']}",
    )


def _sample_size(s: Summaries) -> tuple[str, str]:
    f = _findings(s, "07_sample_size")
    return (
        f"measurable; the lemma asks for {f['bound_ratio_min']:.2g} to {f['bound_ratio_max']:.2g} times as many",
        f"{f['recipe_dataset']}: the landscape settles after {f['recipe_measured']} objects; Lemma 1 asks for "
        f"{f['recipe_bound']}, and over all networks {f['bound_ratio_min']:.3g} to {f['bound_ratio_max']:.3g} times "
        "the measured $k^*$",
    )


def _architectures(s: Summaries) -> tuple[str, str]:
    f = _findings(s, "08_other_architectures")
    datasets = _datasets(s, "08_other_architectures")
    tests = [t for t in s["08_other_architectures"]["trend_tests"] if t["quantity"] == "median G-term norm"]
    width = [t for t in tests if t["varying"] == "width"]
    phrase, evidence = _verdicts(width, lambda t: f"{FAMILY_NAMES[t['family']]} {_names([t['dataset']])}")
    return (
        f"CNN and MLP: {f['bound_verdict']}; ViT: no such bound",
        f"{datasets}: the G-term grows with width: {phrase} ({evidence})",
    )


@dataclass(frozen=True)
class Finding:
    """One of the paper's claims and how a build's summaries decide it.

    Attributes:
        claim: The paper's claim, as the reader knows it.
        chapters: The chapters that establish the verdict (their file stems).
        decide: From the summaries (per chapter), the pair ``(verdict, evidence)``.
    """

    claim: str
    chapters: tuple[str, ...]
    decide: Callable[[Summaries], tuple[str, str]]


FINDINGS = (
    Finding("The Hessian term carries the coefficient $1/(k+1)$ (§3.2)", ("01_loss_difference",), _coefficient),
    Finding(
        "A common minimum $\\theta^*$ of $\\mathcal L_k$ and $\\mathcal L_{k+1}$ (Assumption 1)",
        ("01_loss_difference",),
        _assumption,
    ),
    Finding("Theorem 1 bounds each per-sample Hessian (§4.1)", ("02_hessian_bound",), _theorem_general),
    Finding("Theorem 1 on trained networks", ("03_hessian_in_practice",), _theorem_trained),
    Finding("The Hessian norm grows like $Lh^{2L}$ (§4.1)", ("03_hessian_in_practice",), _scaling),
    Finding(
        "The loss difference decays like $1/k$ (Figures 2-5)",
        ("04_direct_classification", "05_feature_extraction", "08_other_architectures"),
        _decay,
    ),
    Finding("Wider networks give smaller differences (§5)", ("04_direct_classification",), _ordering("hidden_size")),
    Finding("Deeper networks give larger differences (§5)", ("04_direct_classification",), _ordering("num_layers")),
    Finding("Lemma 1 bounds the difference within distance $R$ (§4.2)", ("06_convergence_in_a_ball",), _lemma),
    Finding("Landscape convergence decides the sample size (§7)", ("07_sample_size",), _sample_size),
    Finding("Other architectures (the paper's future work)", ("08_other_architectures",), _architectures),
)
"""The paper's claims in the order of the book, each decided from the chapters' summaries."""


def findings_rows(summaries: Summaries) -> list[dict[str, str]]:
    """Every claim of :data:`FINDINGS` with this build's verdict and evidence.

    Args:
        summaries: Per chapter (its file stem), its ``summary.json``.

    Returns:
        One dict per claim with ``claim``, ``verdict``, ``evidence`` and ``chapters``.

    Raises:
        KeyError: when a summary the claims need is missing or lacks a field (a chapter not run, or changed).
    """
    rows = []
    for finding in FINDINGS:
        verdict, evidence = finding.decide(summaries)
        rows.append({"claim": finding.claim, "verdict": verdict, "evidence": evidence, "chapters": finding.chapters})
    return rows


def findings_table(rows: list[dict[str, str]], profile: str) -> str:
    """:func:`findings_rows` as a MyST table, each chapter a link to its page.

    Args:
        rows: :func:`findings_rows`' rows.
        profile: The profile the copy was built with, named in the header.

    Returns:
        The Markdown table.
    """

    def cell(text: str) -> str:
        # Markdown's specials are escaped outside the $...$ math, which MyST leaves to MathJax.
        parts = text.split("$")
        plain = [p.replace("|", "\\|").replace("_", "\\_").replace("*", "\\*") for p in parts[::2]]
        parts[::2] = plain
        return "$".join(parts)

    def links(chapters) -> str:
        return ", ".join(f"{{doc}}`{c[:2]} <../notebooks/{c}>`" for c in chapters)

    lines = [
        f"| the paper's claim | verdict (this copy, `{profile}` profile) | evidence | chapter |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {cell(r['claim'])} | {cell(r['verdict'])} | {cell(r['evidence'])} | {links(r['chapters'])} |" for r in rows
    ]
    return "\n".join(lines)


SLACKS = (
    (r"$\sqrt{2}$ / largest $\Vert A\Vert_2$ found", "02_hessian_bound", "a_paper_slack", "a_paper_slack"),
    ("Hessian-term coefficient, paper / SymPy", None, None, None),
    ("Theorem 1 as stated / largest G-term", "03_hessian_in_practice", "tight_paper_min", "tight_paper_max"),
    ("corrected Theorem 1 / largest G-term", "03_hessian_in_practice", "tight_corrected_min", "tight_corrected_max"),
    ("Lemma 1's $k^*$ / measured $k^*$", "07_sample_size", "bound_ratio_min", "bound_ratio_max"),
)
"""The factors that :func:`slack_figure` draws, each a label, the chapter, and the findings holding its range."""


def slack_figure(summaries: Summaries) -> plt.Figure:
    """How far each of the paper's bounds sits above what it bounds, on one log axis.

    Args:
        summaries: Per chapter, its ``summary.json``.

    Returns:
        The figure, with one horizontal bar per bound from the smallest to the largest factor over the networks
        (a dot where there is one value), with the line at 1 where a bound would be tight.
    """
    use_style()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for row, (_label, chapter, low_key, high_key) in enumerate(SLACKS):
        if chapter is None:  # the coefficient: SymPy's 1/(2(k+1)) against the paper's 1/(k+1)
            low = high = 2.0
        else:
            findings = _findings(summaries, chapter)
            low, high = float(findings[low_key]), float(findings[high_key])
        ax.plot([low, high], [row, row], color="tab:blue", lw=6, solid_capstyle="butt")
        ax.plot([low, high], [row, row], "o", color="tab:blue", ms=5)
    ax.axvline(1.0, color="0.3", ls="--", lw=1, label="tight (factor 1)")
    ax.set_xscale("log")
    ax.set_yticks(range(len(SLACKS)), [label for label, *_ in SLACKS])
    ax.set_ylim(len(SLACKS) - 0.5, -0.5)
    ax.set_xlabel("factor by which the paper's bound exceeds what it bounds (log scale)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def _summaries(root: Path, profile: str, chapters: list[str]) -> Summaries:
    return {c: json.loads((root / "results" / profile / c / "summary.json").read_text()) for c in chapters}


def stage_intro(intro: Path, root: Path, profile: str, chapters: list[str]) -> None:
    """Replace the staged intro's :data:`MARKER` line with the findings table and the slack figure.

    Args:
        intro: The staged ``intro.md``; the figure is written beside it.
        root: The repository whose ``results/<profile>/`` holds the chapters' summaries.
        profile: The profile the chapters ran with.
        chapters: The chapters of the book.

    Raises:
        ValueError: when ``intro`` has no line :data:`MARKER`.
        FileNotFoundError: when a chapter's summary is missing.
    """
    text = intro.read_text()
    if f"\n{MARKER}\n" not in text:
        raise ValueError(f"intro must hold a line {MARKER!r} where the findings go, got {intro}")
    summaries = _summaries(root, profile, chapters)
    save_figure(slack_figure(summaries), intro.parent, "findings_slack")
    plt.close("all")
    figure = (
        ":::{figure} findings_slack.png\n:name: fig-intro-slack\n"
        ":alt: Horizontal bars on a logarithmic axis, one per bound of the paper, from the smallest to the largest "
        "factor by which it exceeded what it bounds in this build, with a dashed line at one.\n\n"
        "How far each of the paper's bounds sits above what it bounds, in this build: each bar spans the "
        "networks measured (one value is a dot). Left of the dashed line a bound would be violated; far to the "
        "right it is true but says little.\n:::"
    )
    table = findings_table(findings_rows(summaries), profile)
    intro.write_text(text.replace(f"\n{MARKER}\n", f"\n{table}\n\n{figure}\n"))
