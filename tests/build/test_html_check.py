"""The rendering checks catch the defects a reader saw, and pass what renders as written."""

import pytest
import sympy as sp

from lhlib.build import html_check
from lhlib.engine.symbolic import TexSymbol, equation

# Each as SymPy printed it or the page showed it, before the fixes.
MISREAD = [
    r"[t^{0]\ \ell(\theta * + t\delta)} = c_{0}",  # Symbol(r"[t^0]\ \ell(\theta^* + t\delta)")
    r"\frac{\|\Delta_{H\| 2} \|\delta\|_{2}^{2}}{k + 1}",  # Symbol(r"\|\Delta_H\|_2")
    r"v^{T A v} = p_{1} v_{1}^{2}",  # Symbol("v^T A v")
    r"\nabla_{z \ell} = p - y",  # Symbol(r"\nabla_z \ell")
    r"\frac{1}{2",  # a brace left open
]
FINE = [
    r"\sum_{k\neq l}p_k^2p_l^2",
    r"\sum_{l\neq 1}|A_{1l}|",
    r"\max_{q\in[0,1]} 2q(1-q)",
    r"\theta^{*}_{1} + \left|{\frac{\Delta_{a}}{k + 1}}\right|",
    r"\prod_{s\ne p}\Vert W^{(s)}\Vert_2^2 \le x^{(p)\top}",
    r"\lim_{h\to\infty} \mathrm{bound}/h^{2}\,(L=1)",
    r"\sum_{i=1}^{k + 1} {\ell}_{i}",
]


@pytest.mark.parametrize("tex", MISREAD)
def test_misread_formulas_are_caught(tex):
    assert html_check.tex_problems(tex)


@pytest.mark.parametrize("tex", FINE)
def test_formulas_as_written_pass(tex):
    assert html_check.tex_problems(tex) == []


def test_tex_symbols_and_string_labels_print_as_written():
    norm, distance = TexSymbol(r"\|\Delta_H\|_2", positive=True), TexSymbol(r"\|\delta\|_2", positive=True)
    printed = sp.latex(norm * distance**2 / (sp.Symbol("k") + 1))
    assert r"{\|\Delta_H\|_2}" in printed and html_check.tex_problems(printed) == []
    assert norm.is_positive
    # The same name as a plain Symbol is what the check catches.
    assert html_check.tex_problems(sp.latex(sp.Symbol(r"\|\Delta_H\|_2") * 2))
    assert equation(r"\nabla_z \ell", sp.Symbol("p")) == r"\nabla_z \ell = p"
    assert html_check.tex_problems(equation(sp.Symbol(r"\nabla_z \ell"), sp.Symbol("p")))


def test_static_pass_finds_raw_dollars_and_mid_word_emphasis_and_skips_code():
    page = (
        '<p>which for L=1 is M_x^2/2$ independent</p>'
        '<td>||G^(p)||<em>2^2 = sum</em>p</td>'
        '<span class="math notranslate nohighlight">\\(v^{T A v}\\)</span>'
        "<pre>$ make book</pre><code>$HOME</code><p>a <em>word</em> in italics</p>"
    )  # fmt: skip
    problems = html_check.static_problems(page)
    assert len(problems) == 3, problems
    assert "raw '$'" in problems[1] and "emphasis" in problems[2] and "letters apart" in problems[0]
    assert html_check.static_problems('<p>a <em>word</em>, fine: <span class="math">\\(x_{i}\\)</span></p>') == []


def test_rendered_pass_reads_mathjax_errors_and_untypeset_tex():
    dom = (
        '<p>left \\( x \\) alone</p>'
        '<mjx-container><mjx-merror data-mjx-error="Missing close brace">x</mjx-merror></mjx-container>'
    )  # fmt: skip
    assert html_check.rendered_problems(dom) == [
        "MathJax error: Missing close brace",
        "untypeset TeX ('\\\\(') in the text: 'left \\\\( x \\\\) alone'",
    ]
    assert html_check.rendered_problems('<span class="math">\\(x\\)</span>') == [
        "the page has formulas but MathJax typeset none"
    ]
    assert html_check.rendered_problems('<span class="math"><mjx-container>x</mjx-container></span>') == []


def test_check_book_refuses_a_folder_that_is_not_a_built_book(tmp_path):
    with pytest.raises(FileNotFoundError, match="html_dir must be a built book's html folder"):
        html_check.check_book(tmp_path)


def test_check_html_without_a_built_book_is_one_line(tmp_path, monkeypatch, capsys):
    from lhlib.build import book

    monkeypatch.setattr(book, "repository_root", lambda: tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        book.main(["check-html", "--profile", "smoke"])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith("error: no book built with --profile smoke: run 'python -m lhlib.build.book build' first")
    )


def test_rendered_pass_reads_undefined_commands_and_formulas_left_untypeset():
    """What MathJax 3 leaves behind as the book loads it: an unknown command drawn as red text, and a formula with
    an unbalanced brace not typeset at all, beside one typeset fine."""
    dom = (
        '<span class="math">\\(\\frac{1}{2\\)</span>'
        '<span class="math"><mjx-container><math><mtext mathcolor="red">\\foo</mtext></math></mjx-container></span>'
    )  # fmt: skip
    assert html_check.rendered_problems(dom) == [
        "MathJax error: it does not know '\\\\foo'",
        "MathJax left a formula untypeset: '\\\\(\\\\frac{1}{2\\\\)'",
    ]
