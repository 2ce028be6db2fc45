"""The import graph of fiftyone_faseg: class matching is a leaf both the evaluation and
iterate import, and iterate never imports the evaluation (no import circle between them)."""

import ast
import re
from pathlib import Path

import fiftyone_faseg

ROOT = Path(fiftyone_faseg.__file__).parent


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph():
    """``{module: {fiftyone_faseg modules it imports}}``, imports inside functions included."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                deps.add(module)
                deps.update(module + "." + alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = deps
    return {name: {d for d in deps if d in graph and d != name} for name, deps in graph.items()}


def _reach(graph, start):
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_class_matching_is_a_leaf_and_iterate_does_not_import_the_evaluation():
    graph = _graph()
    assert "fiftyone_faseg.matching" in graph and "fiftyone_faseg.evaluation.matching" not in graph
    assert _reach(graph, "fiftyone_faseg.matching") <= {"fiftyone_faseg.constants"}
    assert "fiftyone_faseg.matching" in graph["fiftyone_faseg.analysis.iterate"]
    assert "fiftyone_faseg.matching" in graph["fiftyone_faseg.evaluation.method"]
    assert "fiftyone_faseg.analysis.iterate" in _reach(graph, "fiftyone_faseg.evaluation.summary")
    reached = _reach(graph, "fiftyone_faseg.analysis.iterate")
    assert not {m for m in reached if m.startswith("fiftyone_faseg.evaluation")}, reached


def test_the_sdk_names_no_operator_but_the_stored_metric():
    # the operators' URIs are the plugin's knowledge; the SDK keeps only the key under
    # which it stores the mIoU metric record (see fiftyone_faseg.constants.MIOU_METRIC_URI)
    users = sorted(_module_name(p) for p in ROOT.rglob("*.py")
                   if "operator_uri" in p.read_text(encoding="utf-8") and p.name != "constants.py")
    assert users == []


def test_only_fields_knows_the_side_field_suffixes():
    from fiftyone_faseg.fields import SIDE_SUFFIXES, side_field_names
    from fiftyone_faseg.fields import side_fields

    names = side_field_names("seg")
    assert names == {"candidates": "seg_candidates", "caption": "seg_caption", "error": "seg_error",
                     "scores": "seg_scores", "heatmap": "seg_heatmap"}
    assert list(side_fields("seg")) == ["seg"] + list(names.values())

    # "_error" or "%s_error" in code (not "_errors", an evaluation's overlay)
    pattern = re.compile(r'(%%s|")(%s)\b' % "|".join(SIDE_SUFFIXES.values()))
    sources = list(ROOT.rglob("*.py")) + list((ROOT.parent / "operators").glob("*.py"))
    found = sorted("%s: %s" % (p.relative_to(ROOT.parent), m.group(0)) for p in sources if p.name != "fields.py"
                   for m in pattern.finditer(p.read_text(encoding="utf-8")))
    assert found == [], "side field names built outside fiftyone_faseg/fields.py: %s" % found


# What each part of the package may import (besides itself and the leaf modules): the layout
# shows the architecture, from the leaves up to the entry points.
LEAVES = {"constants", "fields", "masks", "matching", "metrics", "store", "_lazy"}
MAY_IMPORT = {
    "leaf": set(),
    "run": {"limits"},  # the model registry's bounds
    "limits": {"run"},  # App input is checked by the run's own checks
    "analysis": {"run"},
    "evaluation": {"run", "analysis"},
    "distributed": {"run"},
    "protocol": {"run", "analysis", "evaluation"},
    "demo": {"run", "evaluation"},
}


def _part(module):
    name = module.split(".")[1]
    return "leaf" if name in LEAVES else name


def test_each_part_imports_only_the_parts_below_it():
    # the package itself (its public, lazily imported names) is left out: `from .. import store`
    # names it too
    graph = {m: deps - {"fiftyone_faseg"} for m, deps in _graph().items() if m != "fiftyone_faseg"}
    crossing = sorted("%s -> %s" % (m, d) for m, deps in graph.items() for d in deps
                      if _part(d) not in {_part(m), "leaf"} | MAY_IMPORT[_part(m)])
    assert crossing == [], crossing
    # the leaves import only leaves (class matching, masks and metrics serve every part)
    assert not [m for m in graph if _part(m) == "leaf" and {_part(d) for d in graph[m]} - {"leaf"}]
