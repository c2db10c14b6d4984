"""The package's layering, read from the source: imports between subpackages point one way."""

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
    assert not graph["checkpoint"] & {"prune", "export", "train", "measure", "analysis", "report", "cli"}
    assert not graph["analysis"] & {"report", "cli", "experiment"}
    assert graph["report"] <= {"analysis", "atomic", "errors"}, "report only renders"
