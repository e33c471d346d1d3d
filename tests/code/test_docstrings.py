"""lhlib's public API is documented the way the API reference page needs it.

Every public function and method has a Google-style ``Args:`` section naming each of its parameters
and a ``Returns:`` (or ``Yields:``) section when it returns something; every public class says what
its fields are in ``Attributes:``. Functions that compute a mathematical quantity state it in a
``.. math::`` block: every public function of the modules in :data:`FORMULA_MODULES` has one, unless
it is listed in :data:`NO_FORMULA` with the reason it has none.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lhlib"
# Every module of lhlib by its dotted name under the package ("engine.per_sample"), with its path.
MODULES = {
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts): p
    for p in sorted(PACKAGE.rglob("*.py"))
    if p.name != "__init__.py"
}

# The engine's modules that compute nothing of the paper (data, storage, settings, checks, progress).
# The build layer has no formulas either; the engine's other modules and the chapters do.
ENGINE_INFRASTRUCTURE = {
    "engine.data",
    "engine.declarations",
    "engine.progress",
    "engine.settings",
    "engine.store",
    "engine.validation",
}
FORMULA_MODULES = sorted(m for m in MODULES if m.startswith("chapters.") or m.startswith("engine."))
FORMULA_MODULES = [m for m in FORMULA_MODULES if m not in ENGINE_INFRASTRUCTURE]
# A chapter's tables, facts, citations, records, summaries and figures present numbers computed (and stated)
# elsewhere; they are recognised by their names, so a new chapter needs no exemption list.
CHAPTER_PRESENTATION = re.compile(r"^(plot_\w+|\w+_(table|facts|citations|records?|rows|verdicts?|phrase|summary))$")

# Public functions of FORMULA_MODULES that compute no formula, and why.
NO_FORMULA: dict[str, str] = {
    "chapters.ch03_hessian_in_practice.sweep_axis": "lists a panel's configurations, x values and axis label",
    "chapters.ch04_direct_classification.paper_values": "reads an entry of paper_values.json",
    "chapters.ch08_other_architectures.panel_sizes": "selects a family's panel sizes",
    "engine.architecture_bounds.linear_maps": "lists a model's linear layers and their input shapes",
    "engine.architectures.build_network": "builds a model object",
    "engine.memory.check_fits_in_memory": "compares an estimate with the memory and words the refusal",
    "engine.memory.physical_memory_bytes": "reads the machine's memory from sysconf",
    "engine.architectures.weight_layers": "counts modules",
    "engine.bounds.random_network": "draws a random network and data; their distribution is stated in prose",
    "engine.ensemble.stacked_weights": "stacks and transposes the members' weight matrices",
    "engine.features.Backbone.embed": "abstract; the subclasses' embed state their maps",
    "engine.features.Backbone.identity": "abstract; returns the settings that key the cache",
    "engine.features.Backbone.prepare": "loads or trains weights",
    "engine.features.ModelBackbone.identity": "returns the settings that key the cache",
    "engine.features.OfflineCNNBackbone.identity": "returns the settings that key the cache",
    "engine.features.dataset_features": "loads images and hands them to extract_features",
    "engine.features.make_backbone": "builds a backbone object",
    "engine.features.to_rgb": "converts an image format (channel replication)",
    "engine.landscape.random_orders": "draws random permutations",
    "engine.models.MLP.weights": "returns the weight tensors",
    "engine.models.build_mlp": "builds a model object",
    "engine.parameters.computation_paths": "reports which implementation a model gets, computes nothing",
    "engine.parameters.flat_parameters": "concatenates the parameters into one vector",
    "engine.parameters.linear_relu_weights": "recognises a model's structure and returns its weight tensors",
    "engine.parameters.unflatten": "splits a flat vector into named parameter tensors",
    "engine.parameters.weight_list": "collects and checks a network's weight matrices",
    "engine.seed_stats.TrendTest.as_dict": "serialises the fields to a dict",
    "engine.sweep.ordering_table": "formats a table; the quantities are ordering_tests'",
    "engine.sweep.ordering_verdicts": "formats phrases from ordering_tests' results",
    "engine.sweep.panel_configurations": "selects one panel's results",
    "engine.sweep.summary_rows": "collects ConfigurationResult's numbers for summary.json",
    "engine.sweep.sweep_table": "formats a table; the quantities are ConfigurationResult's",
    "engine.symbolic.equation": "formats LaTeX",
    "engine.symbolic.show_equation": "displays LaTeX",
    "engine.tangents.network_inputs": "reshapes, casts and validates inputs",
    "engine.train.check_training_data": "validates training data",
    "engine.train.cpu_threads": "sets the CPU thread count for a block",
    "engine.train.resolve_device": "selects and validates a device",
}


@dataclasses.dataclass
class Documented:
    """One public function, method or class of lhlib and its docstring."""

    module: str
    qualname: str
    node: ast.AST
    docstring: str
    is_method: bool = False


def _is_property(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id in {"property", "cached_property"} for d in node.decorator_list)


def _public_objects() -> list[Documented]:
    objects = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                objects.append(Documented(module, node.name, node, ast.get_docstring(node) or ""))
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                for member in node.body:
                    if isinstance(member, ast.FunctionDef) and not member.name.startswith("_"):
                        name = f"{node.name}.{member.name}"
                        docstring = ast.get_docstring(member) or ""
                        objects.append(Documented(module, name, member, docstring, is_method=True))
    return objects


OBJECTS = _public_objects()
FUNCTIONS = [o for o in OBJECTS if isinstance(o.node, ast.FunctionDef) and not _is_property(o.node)]
CLASSES = [o for o in OBJECTS if isinstance(o.node, ast.ClassDef)]


def _ids(objects: list[Documented]) -> list[str]:
    return [f"{o.module}.{o.qualname}" for o in objects]


def _section(docstring: str, title: str) -> str | None:
    """The indented body of a Google-style section, or ``None`` when the docstring has none."""
    lines = docstring.splitlines()
    for start, line in enumerate(lines):
        if line.strip() == f"{title}:":
            indent = len(line) - len(line.lstrip())
            body = []
            for following in lines[start + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                body.append(following)
            return "\n".join(body)
    return None


def _entries(section: str) -> set[str]:
    """The names a section documents: its least indented lines of the form ``name:`` or ``name (type):``."""
    lines = [line for line in section.splitlines() if line.strip()]
    if not lines:
        return set()
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    pattern = re.compile(r"^\s*(\*{0,2}\w+)(?: \([^)]*\))?:(\s|$)")
    return {
        m.group(1).lstrip("*")
        for line in lines
        if len(line) - len(line.lstrip()) == indent
        if (m := pattern.match(line))
    }


def _parameters(node: ast.FunctionDef, is_method: bool) -> list[str]:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
    if is_method and not static and names:
        names = names[1:]
    return names


def _returns_something(node: ast.FunctionDef) -> bool:
    if node.returns is not None:
        return not (isinstance(node.returns, ast.Constant) and node.returns.value is None)
    own = [n for n in ast.walk(node) if isinstance(n, ast.Return | ast.Yield | ast.YieldFrom)]
    return any(not isinstance(n, ast.Return) or n.value is not None for n in own)


def _reads_as_type(line: str) -> bool:
    """Whether napoleon reads ``line`` as ``type: description``: it then looks the "type" up, and the
    unknown reference fails the ``-W`` build. Colons inside roles and literals do not count.
    """
    return ":" in re.sub(r":\w+:`[^`]*`|``[^`]*``|`[^`]*`", "", line)


def _fields(node: ast.ClassDef) -> list[str]:
    """The annotated fields of a dataclass or NamedTuple (``ClassVar``s excepted)."""
    fields = []
    for member in node.body:
        if isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name):
            if "ClassVar" not in ast.unparse(member.annotation) and not member.target.id.startswith("_"):
                fields.append(member.target.id)
    return fields


@pytest.mark.parametrize("item", FUNCTIONS, ids=_ids(FUNCTIONS))
def test_every_public_function_documents_its_parameters(item):
    parameters = _parameters(item.node, item.is_method)
    if not parameters:
        return
    section = _section(item.docstring, "Args")
    assert section is not None, f"{item.module}.{item.qualname} has parameters {parameters} and no Args: section"
    missing = [p for p in parameters if p not in _entries(section)]
    assert not missing, f"{item.module}.{item.qualname}'s Args: section does not document {missing}"
    stale = _entries(section) - set(parameters)
    assert not stale, f"{item.module}.{item.qualname}'s Args: section documents {sorted(stale)}, not parameters"


@pytest.mark.parametrize("item", FUNCTIONS, ids=_ids(FUNCTIONS))
def test_every_public_function_that_returns_says_what(item):
    if not _returns_something(item.node):
        return
    generator = any(isinstance(n, ast.Yield | ast.YieldFrom) for n in ast.walk(item.node))
    title = "Yields" if generator else "Returns"
    section = _section(item.docstring, title)
    assert section and section.strip(), f"{item.module}.{item.qualname} returns a value and has no {title}: section"
    first = section.strip().splitlines()[0]
    assert not _reads_as_type(first), f"{item.module}.{item.qualname}'s {title}: section opens with a type: {first!r}"


PROPERTIES = [o for o in OBJECTS if isinstance(o.node, ast.FunctionDef) and _is_property(o.node)]


def _constant_docstrings() -> list[tuple[str, str]]:
    """``(module.NAME, docstring)`` of every module-level name documented by the string after it."""
    found = []
    for module, path in MODULES.items():
        body = ast.parse(path.read_text()).body
        for node, following in zip(body, body[1:]):
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            documented = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
            if isinstance(target, ast.Name) and documented and isinstance(following.value.value, str):
                found.append((f"{module}.{target.id}", following.value.value))
    return found


CONSTANTS = _constant_docstrings()


@pytest.mark.parametrize(("name", "docstring"), CONSTANTS, ids=[name for name, _ in CONSTANTS])
def test_every_documented_constant_opens_without_a_type(name, docstring):
    first = docstring.strip().splitlines()[0]
    assert not _reads_as_type(first), f"{name}'s docstring opens with what napoleon reads as a type: {first!r}"


@pytest.mark.parametrize("item", PROPERTIES, ids=_ids(PROPERTIES))
def test_every_property_says_what_it_is(item):
    assert item.docstring, f"{item.module}.{item.qualname} has no docstring"
    first = item.docstring.splitlines()[0]
    assert not _reads_as_type(first), f"{item.module}.{item.qualname}'s docstring opens with a type: {first!r}"


@pytest.mark.parametrize("item", CLASSES, ids=_ids(CLASSES))
def test_every_public_class_names_its_fields(item):
    assert item.docstring, f"{item.module}.{item.qualname} has no docstring"
    fields = _fields(item.node)
    if not fields:
        return
    section = _section(item.docstring, "Attributes")
    assert section is not None, f"{item.module}.{item.qualname} has fields {fields} and no Attributes: section"
    missing = [f for f in fields if f not in _entries(section)]
    assert not missing, f"{item.module}.{item.qualname}'s Attributes: section does not document {missing}"


FORMULA_FUNCTIONS = [
    o
    for o in FUNCTIONS
    if o.module in FORMULA_MODULES
    and not (o.module.startswith("chapters.") and CHAPTER_PRESENTATION.match(o.qualname.split(".")[0]))
]


@pytest.mark.parametrize("item", FORMULA_FUNCTIONS, ids=_ids(FORMULA_FUNCTIONS))
def test_every_function_that_computes_states_its_formula(item):
    name = f"{item.module}.{item.qualname}"
    if name in NO_FORMULA:
        assert ".. math::" not in item.docstring, f"{name} states a formula; take it out of NO_FORMULA"
        return
    assert ".. math::" in item.docstring, f"{name} has no .. math:: block (or add it to NO_FORMULA with the reason)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_public_name_is_on_the_api_page(module):
    """automodule lists ``__all__`` only: a public function left out of it is missing from the API page."""
    tree = ast.parse(MODULES[module].read_text())
    exported = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets)
    )
    public = [o.qualname for o in OBJECTS if o.module == module and "." not in o.qualname and o.qualname != "main"]
    assert sorted(set(public) - set(exported)) == []


def test_the_exemptions_name_existing_functions():
    assert set(NO_FORMULA) <= set(_ids(FORMULA_FUNCTIONS))
    assert all(reason.strip() for reason in NO_FORMULA.values())
