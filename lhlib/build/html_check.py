r"""Checks on the built HTML: every formula renders as written, and no markup is left raw.

The book's math comes from three places: MyST's ``$...$`` in the prose, the LaTeX that SymPy prints
under a code cell, and tables built in code. Each can break silently: a ``$$`` block inside a
paragraph leaves raw dollars in the text, SymPy reads ``_`` and ``^`` inside a symbol's name as a
subscript or superscript of everything after them (``\|\Delta_H\|_2`` printed as
``\|\Delta_{H\| 2}``), and Markdown reads the underscores of ASCII math as emphasis. Two passes:

* :func:`static_problems` reads a page's HTML as built: the TeX of every formula (known-bad patterns:
  a sub- or superscript group with unbalanced brackets or norm bars, or two letters apart in it as
  SymPy's misreading leaves them; unbalanced braces), dollars left in the text, and emphasis that
  starts in the middle of a word;
* :func:`rendered_problems` reads the page after MathJax ran in a headless browser: MathJax's own
  error markers, and TeX delimiters that MathJax left untypeset.

:func:`check_book` runs both on every page of a built book (the browser pass where a browser is
installed); ``python -m lhlib.build.book check-html`` is its command line.
"""

from __future__ import annotations

import functools
import html
import http.server
import os
import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["BROWSERS", "browser", "check_book", "rendered_problems", "static_problems", "tex_problems"]


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
"""The headless browsers the rendered pass looks for, in order."""


# A TeX command, an escaped character, or one character.
_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|\s+|.", re.S)


# Commands that stand for one ordinary symbol (a letter): SymPy's misreading leaves them apart from a
# letter inside a script group, as in \nabla_{z \ell}.
_LETTER_COMMANDS = {
    r"\ell", r"\alpha", r"\beta", r"\gamma", r"\delta", r"\epsilon", r"\theta", r"\lambda", r"\mu",
    r"\sigma", r"\tau", r"\phi", r"\psi", r"\omega", r"\Delta", r"\Theta", r"\Lambda", r"\Sigma",
}  # fmt: skip


def _group(tex: str, start: int) -> tuple[str, int]:
    """The content of the brace group opening at ``tex[start]`` and the index after it."""
    depth = 0
    index = start
    while index < len(tex):
        char = tex[index]
        if char == "\\":
            index += 2
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return tex[start + 1 : index], index + 1
        index += 1
    return tex[start + 1 :], len(tex)


def _unbalanced(content: str) -> str | None:
    r"""Which bracket pair or norm bar is unbalanced in a script group, if one is."""
    tokens = _TOKEN.findall(content)
    if tokens.count(r"\|") % 2:
        return r"\|"
    for opening, closing in (("(", ")"), ("[", "]")):
        if tokens.count(opening) != tokens.count(closing):
            return opening + closing
    return None


def _letters_apart(content: str, base: str) -> bool:
    r"""Two letters separated by a space in a script group (``v^{T A v}``, ``\nabla_{z \ell}``).

    SymPy writes a Kronecker delta's two indices that way, as TeX does: ``\delta_{a j}`` is fine.
    """
    if base == r"\delta":
        return False
    tokens = _TOKEN.findall(content)
    for before, space, after in zip(tokens, tokens[1:], tokens[2:]):
        if space.isspace() and len(before) == 1 and before.isalpha():
            if (len(after) == 1 and after.isalpha()) or after in _LETTER_COMMANDS:
                return True
    return False


def _base(tex: str, end: int) -> str:
    """The token a sub- or superscript at ``tex[end]`` attaches to (a command, a character or a group)."""
    tokens = _TOKEN.findall(tex[:end])
    return tokens[-1] if tokens else ""


def tex_problems(tex: str) -> list[str]:
    r"""Known-bad patterns in one formula's TeX.

    Args:
        tex: The formula, without its delimiters.

    Returns:
        One line per problem found, for unbalanced braces, a sub- or superscript group whose brackets or norm
        bars are unbalanced (``[t^{0]\ \ell(\theta)}``, ``\|\Delta_{H\| 2}``); a group holding two
        letters apart (``v^{T A v}``), which is how SymPy prints a symbol name it split at ``_``/``^``.
    """
    problems = []
    depth = 0
    for token in _TOKEN.findall(tex):
        depth += {"{": 1, "}": -1}.get(token, 0)
        if depth < 0:
            break
    if depth != 0:
        problems.append(f"unbalanced braces in {tex[:80]!r}")
    for match in re.finditer(r"(?<!\\)[_^]\{", tex):
        content, _ = _group(tex, match.end() - 1)
        pair = _unbalanced(content)
        if pair:
            problems.append(f"a {'subscript' if match.group()[0] == '_' else 'superscript'} swallows an unpaired "
                            f"{pair!r}: {match.group()}{content}}} in {tex[:80]!r}")  # fmt: skip
        elif _letters_apart(content, _base(tex, match.start())):
            problems.append(f"a script group holds letters apart (a misread symbol name?): "
                            f"{match.group()}{content}}} in {tex[:80]!r}")  # fmt: skip
    return problems


class _Page(HTMLParser):
    """A page's formulas (TeX, delimiters stripped), visible prose outside code and math, and emphasis."""

    # Code, scripts and what MathJax drew; API signatures (classes ``sig...``) and literals (class ``pre``).
    SKIP = {"script", "style", "code", "pre", "kbd", "samp", "mjx-container", "mjx-assistive-mml", "math"}
    VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "source", "col", "area", "base", "embed", "param"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool, bool]] = []  # (tag, holds math, skipped)
        self.formulas: list[str] = []
        self.text: list[str] = []
        self.emphasis_after: list[str] = []  # the text just before each Markdown <em>, for mid-word emphasis
        self.merrors: list[str] = []
        self.typeset: list[bool] = []  # per formula, whether MathJax drew it (a <mjx-container> inside)
        self.unread: list[str] = []  # what MathJax drew in red: a command it does not know
        self._red = False

    def _math(self) -> bool:
        return any(math for _, math, _ in self.stack)

    def _skipped(self) -> bool:
        return any(skipped for _, _, skipped in self.stack)

    def _in_api(self) -> bool:
        return any(tag == "dl.py" for tag, _, _ in self.stack)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        is_math = "math" in classes and tag in {"span", "div"}
        skipped = tag in self.SKIP or "pre" in classes or any(c.startswith("sig") for c in classes)
        if tag == "mjx-merror":
            self.merrors.append(attributes.get("data-mjx-error", "MathJax error"))
        if tag == "mjx-container" and self._math():
            self.typeset[-1] = True
        if tag == "mtext" and attributes.get("mathcolor") == "red":
            self._red = True
            self.unread.append("")
        # Markdown's emphasis is a bare <em>; Sphinx's own carry a class, or sit in an API entry.
        if tag == "em" and not classes and not self._skipped() and not self._math() and not self._in_api():
            self.emphasis_after.append("".join(self.text)[-1:])
        if tag not in self.VOID:
            # An autodoc entry is a <dl class="py ...">: remembered by name, so that its <em>s are not Markdown's.
            self.stack.append(("dl.py" if tag == "dl" and "py" in classes else tag, is_math, skipped))
        if is_math:
            self.formulas.append("")
            self.typeset.append(False)

    def handle_endtag(self, tag):
        if tag == "mtext":
            self._red = False
        names = {tag, "dl.py"} if tag == "dl" else {tag}
        if any(open_tag in names for open_tag, _, _ in self.stack):
            while self.stack.pop()[0] not in names:
                pass

    def handle_data(self, data):
        if self._red:
            self.unread[-1] += data
        if self._math():
            self.formulas[-1] += data
        elif not self._skipped():
            self.text.append(data)


def _strip_delimiters(formula: str) -> str:
    formula = formula.strip()
    for opening, closing in ((r"\(", r"\)"), (r"\[", r"\]"), ("$$", "$$"), ("$", "$")):
        if formula.startswith(opening) and formula.endswith(closing):
            return formula[len(opening) : -len(closing)]
    return formula


def static_problems(page: str) -> list[str]:
    """Problems in a page's HTML as built, before any script runs.

    Args:
        page: The page's HTML.

    Returns:
        One line per problem found, from :func:`tex_problems` of every formula, for dollar signs left in the visible
        text (a formula MyST did not recognise); emphasis that starts in the middle of a word, where
        Markdown took the underscores or stars of ASCII math for emphasis.
    """
    parser = _Page()
    parser.feed(page)
    problems = [p for formula in parser.formulas for p in tex_problems(_strip_delimiters(formula))]
    text = "".join(parser.text)
    for match in re.finditer(r"\$", text):
        problems.append(f"a raw '$' in the text: {text[max(0, match.start() - 40) : match.end() + 40]!r}")
    for before in parser.emphasis_after:
        if before and (before.isalnum() or before in "|^)]}_"):
            problems.append(f"emphasis starts in the middle of a word (after {before!r}): ASCII math read as Markdown")
    return problems


def rendered_problems(dom: str) -> list[str]:
    r"""Problems in a page after MathJax typeset it (the DOM a headless browser dumps).

    Args:
        dom: The page's DOM after its scripts ran.

    Returns:
        One line per problem found, for each MathJax error marker (``mjx-merror``, with MathJax's message), each
        command MathJax drew in red because it does not know it, each formula MathJax left untypeset (as it
        does with unbalanced braces), TeX delimiters (``\(``, ``\[``, ``$$``) left in the visible text; or
        one line for a page with formulas where MathJax typeset none.
    """
    parser = _Page()
    parser.feed(dom)
    problems = [f"MathJax error: {html.unescape(message)}" for message in parser.merrors]
    problems += [f"MathJax error: it does not know {text!r}" for text in parser.unread]
    if any(parser.typeset):
        problems += [
            f"MathJax left a formula untypeset: {formula.strip()[:80]!r}"
            for formula, typeset in zip(parser.formulas, parser.typeset)
            if not typeset
        ]
    text = "".join(parser.text)
    for delimiter in (r"\(", r"\[", "$$"):
        if delimiter in text:
            at = text.index(delimiter)
            problems.append(f"untypeset TeX ({delimiter!r}) in the text: {text[max(0, at - 40) : at + 60]!r}")
    if parser.formulas and not any(parser.typeset):
        problems.append("the page has formulas but MathJax typeset none")
    return problems


def browser() -> str | None:
    """The first headless-capable browser on ``PATH``.

    Returns:
        The path of the first of :data:`BROWSERS` installed, or ``None``.
    """
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the server's access log is noise here
        pass


def _dump_dom(executable: str, url: str, profile_dir: Path) -> str:
    """The DOM of ``url`` after its scripts ran, from a headless browser with no network beside localhost."""
    command = [
        executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile_dir}",
        "--virtual-time-budget=20000", "--dump-dom", url,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def check_book(html_dir: Path, *, use_browser: bool = True) -> dict[str, list[str]]:
    """Run :func:`static_problems` and, in a headless browser, :func:`rendered_problems` on every page.

    Args:
        html_dir: The built book's ``_build/html`` folder.
        use_browser: Also typeset every page in a headless browser (:func:`browser`); when none is
            installed only the static pass runs.

    Returns:
        Per page (its path relative to ``html_dir``) the problems found; pages without problems are
        left out, so an empty dict means every page passed.

    Raises:
        FileNotFoundError: when ``html_dir`` holds no ``index.html``.
    """
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        raise FileNotFoundError(f"html_dir must be a built book's html folder (with index.html), got {html_dir}")
    pages = sorted(p for p in html_dir.rglob("*.html") if "_static" not in p.parts and "_sources" not in p.parts)
    found = {str(p.relative_to(html_dir)): static_problems(p.read_text(errors="replace")) for p in pages}
    executable = browser() if use_browser else None
    if executable:
        handler = functools.partial(_QuietHandler, directory=str(html_dir))
        with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            port = server.server_address[1]
            profiles = html_dir.parent / ".browser-profiles"

            def render(numbered: tuple[int, str]) -> list[str]:  # one browser profile per page: they run at once
                number, name = numbered
                url = f"http://127.0.0.1:{port}/{name}"
                return rendered_problems(_dump_dom(executable, url, profiles / str(number)))

            try:
                with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                    for name, problems in zip(found, pool.map(render, enumerate(found))):
                        found[name] += problems
            finally:
                server.shutdown()
                shutil.rmtree(profiles, ignore_errors=True)
    return {name: problems for name, problems in found.items() if problems}
