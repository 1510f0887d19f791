"""The package's import graph, read from the source (imports inside functions included): no cycle between
files or between packages, and the ground layers (``config``, ``contract``) import nothing of the layers
built on them. A lazy ``module:attr`` string of :mod:`robustbench_cnn.registry` is how a lower layer
names a higher one; every such string must resolve (tested in ``test_registries.py``)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robustbench_cnn"
ROOT = "robustbench_cnn"

# what each ground layer may import of ours (besides itself), lazy imports included
GROUND = {
    "config": {"errors", "registry", "zoo"},  # the zoo catalog: a checkpoint names its entry
    "contract": {"errors", "atomic", "metrics"},
    "zoo": {"errors", "contract"},
    "registry": {"errors"},
    "errors": set(),
}
# the internal imports inside functions, counted so that the number only goes down, each with a comment
# saying why (the Ray backend, torch for a row's interval, numpy for the validator; docs/architecture.md)
MAX_LAZY_INTERNAL = 3
# the package's facade: ``robustbench_cnn.evaluate`` / ``.run`` load the API on first use (PEP 562)
FACADE = (ROOT, f"{ROOT}.api")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules of ours an import statement loads (``from pkg import name``: pkg.name where that is a
    module, else pkg)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out = []
    for name in names:
        while name not in MODULES and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in MODULES and name != module and name.startswith(ROOT):
            out.append(name)
    return out


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    lazy: list[str] = []  # the source line of each internal import inside a function
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        inner = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
            if isinstance(n, ast.Import | ast.ImportFrom)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found = [t for t in _targets(name, node) if (name, t) != FACADE]
                edges[name].update(found)
                if found and id(node) in inner:
                    lazy.append(path.read_text().splitlines()[node.end_lineno - 1])
    return edges, lazy


EDGES, LAZY = _graph()


def _layer(module: str) -> str:
    """``config`` for robustbench_cnn.config.spec, ``errors`` for robustbench_cnn.errors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_every_module():
    assert len(MODULES) > 100 and EDGES[f"{ROOT}.engine.runner"]  # a parse that found nothing would pass vacuously


def test_no_file_imports_itself_back():
    assert _cycles(EDGES) == []


def test_no_package_imports_itself_back():
    packages: dict[str, set[str]] = defaultdict(set)
    for a, targets in EDGES.items():
        packages[_layer(a)].update(_layer(b) for b in targets if _layer(b) != _layer(a))
    assert _cycles(packages) == []


@pytest.mark.parametrize("layer", sorted(GROUND))
def test_a_ground_layer_imports_nothing_built_on_it(layer):
    used = {_layer(b) for a, targets in EDGES.items() if _layer(a) == layer for b in targets} - {layer}
    assert used <= GROUND[layer], f"{layer} imports {sorted(used - GROUND[layer])}"


def test_internal_imports_inside_functions_only_go_down():
    assert len(LAZY) <= MAX_LAZY_INTERNAL, f"{len(LAZY)} internal imports in functions (at most {MAX_LAZY_INTERNAL})"


def test_each_internal_import_inside_a_function_says_why():
    assert all("#" in line for line in LAZY), [line.strip() for line in LAZY if "#" not in line]


def test_a_planted_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
