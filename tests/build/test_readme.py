"""The README's example on a user's own model runs as written and says what it claims."""

import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _block(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_on_your_own_model_runs_as_written():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_block("## Using lhlib on your own model"), "README.md", "exec"), {})  # noqa: S102
    lines = printed.getvalue().splitlines()
    assert len(lines) == 4, lines
    mean, low, high = map(
        float, re.fullmatch(r"decay exponent (\S+), 95 % interval across seeds \[(\S+), (\S+)\]", lines[0]).groups()
    )
    assert -1.1 < low <= mean <= high < -0.9  # the identity's 1/k, on every seed
    assert lines[1] == "{'per_sample_jjt': 'generic', 'mean_matvec': 'generic', 'per_sample_matvec': 'generic'}"
    assert lines[2].endswith("all converged: True")
    assert re.fullmatch(r"the landscape moves by less than 1e-3 per object after k = \d+", lines[3])


def test_every_function_the_readme_names_exists_with_that_signature():
    import inspect

    import lhlib

    named = re.findall(r"`lhlib\.(\w+)\(([^)]*)\)`", README)
    assert len(named) >= 10
    for name, arguments in named:
        assert name in lhlib.__all__, f"the README names lhlib.{name}, which lhlib does not export"
        function = getattr(lhlib, name)
        parameters = inspect.signature(function).parameters
        for argument in filter(None, (a.strip() for a in arguments.split(","))):
            key, _, default = argument.partition("=")
            assert key in parameters, f"lhlib.{name} has no parameter {key!r}"
            if default:
                assert repr(parameters[key].default) == default, f"lhlib.{name}: {key}={default}"
