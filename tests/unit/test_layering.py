"""The package's layering, read from the source: imports between subpackages point one way, and no two
modules import each other, directly or around a longer cycle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import prunekit

ROOT = Path(prunekit.__file__).parent


def top_package(module: str) -> str:
    """``prunekit.prune.graph`` -> ``prune``; ``prunekit`` itself -> ``(root)``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(root)"


def package_graph() -> dict[str, set[str]]:
    """{subpackage or top-level module: the others it imports (anywhere in its files, lazily too)}."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        me = top_package(module) if module != "prunekit" else "(root)"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    names = [".".join(base + ([node.module] if node.module else []))]
                else:
                    names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("prunekit.") and top_package(name) != me:
                    graph[me].add(top_package(name))
    return graph


def test_no_import_cycle_between_packages():
    graph = package_graph()
    graph.pop("(root)", None)  # the public facade re-exports from everywhere
    graph.pop("__main__", None)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = sorted(p for p in graph if reaches(p, p, {p}))
    assert not cycles, f"packages on an import cycle: {cycles}"


def test_layers_point_one_way():
    graph = package_graph()
    assert not graph["train"] & {"prune", "pipeline", "analysis", "report", "cli", "experiment"}
    assert not graph["masking"] - {"errors"}
    assert not graph["checkpoint"] & {"prune", "export", "train", "measure", "analysis", "report", "cli",
                                      "binarize"}, "formats and sections register themselves"
    assert not graph["analysis"] & {"report", "cli", "experiment", "train"}, "analysis evaluates, never trains"
    assert "train" not in graph["report"]
    assert graph["report"] <= {"analysis", "atomic", "errors"}, "report only renders"


def module_name(path: Path) -> str:
    """``.../prunekit/prune/graph.py`` -> ``prunekit.prune.graph``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(node: ast.AST, package: str, modules: set[str]) -> list[str]:
    """The package modules one import statement loads: ``import a.b`` -> ``a.b``; ``from a import b`` ->
    ``a.b`` when that is a module, else ``a``; relative imports resolved against ``package``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def module_graph() -> dict[str, dict[str, int]]:
    """{module: {package module it imports: line of the first such import}}, from every import statement
    anywhere in its file (lazy ones and ``TYPE_CHECKING`` ones too)."""
    paths = {module_name(path): path for path in ROOT.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        edges = graph.setdefault(module, {})
        for node in ast.walk(ast.parse(path.read_text())):
            for target in imported_modules(node, package, set(paths)):
                if target in paths and target != module:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` that hold more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_strongly_connected_finds_exactly_the_cycles():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {"e": 1}, "e": {"d": 1}, "f": {"a": 1}}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert strongly_connected({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 1}}) == []


def test_import_edges_resolve_modules_and_packages():
    modules = {"prunekit", "prunekit.train", "prunekit.train.loop", "prunekit.train.distributed"}
    edges = [imported_modules(ast.parse(source).body[0], "prunekit.train", modules) for source in (
        "from prunekit.train import distributed, fit", "from . import distributed",
        "import prunekit.train.distributed as d", "from .loop import fit")]
    assert edges == [["prunekit.train.distributed", "prunekit.train"], ["prunekit.train.distributed"],
                     ["prunekit.train.distributed"], ["prunekit.train.loop"]]


def test_no_import_cycle_between_modules():
    graph = module_graph()
    cycles = strongly_connected(graph)
    described = ["; ".join(f"{a} -> {b} (line {line})" for a in cycle for b, line in sorted(graph[a].items())
                           if b in cycle) for cycle in cycles]
    assert not cycles, "modules on an import cycle: " + " | ".join(
        f"{cycle}: {edges}" for cycle, edges in zip(cycles, described))
