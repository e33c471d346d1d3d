"""The README's example on a user's own model runs as written and says what it claims."""

import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _block(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_on_your_own_model_runs_as_written():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(_block("## Using lhlib on your own model"), "README.md", "exec"), {})  # noqa: S102
    lines = printed.getvalue().splitlines()
    assert len(lines) == 4, lines
    exponent = float(re.match(r"decay exponent (\S+) ", lines[0]).group(1))
    assert -1.1 < exponent < -0.9
    assert lines[1] == "{'per_sample_jjt': 'generic', 'mean_matvec': 'generic', 'per_sample_matvec': 'generic'}"
    assert lines[2].endswith("all converged: True")
    assert re.fullmatch(r"the landscape moves by less than 1e-3 per object after k = \d+", lines[3])


def test_every_function_the_readme_names_exists_with_that_signature():
    import importlib
    import inspect

    for module, name, arguments in re.findall(r"`lhlib\.(\w+)\.(\w+)\(([^)]*)\)`", README):
        function = getattr(importlib.import_module(f"lhlib.{module}"), name)
        parameters = inspect.signature(function).parameters
        for argument in filter(None, (a.strip() for a in arguments.split(","))):
            key, _, default = argument.partition("=")
            assert key in parameters, f"lhlib.{module}.{name} has no parameter {key!r}"
            if default:
                assert repr(parameters[key].default) == default, f"lhlib.{module}.{name}: {key}={default}"
