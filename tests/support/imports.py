"""The project's import graph, read from the source with ``ast``: every ``import`` and
``from ... import``, at module level or inside a function (an import tucked into a function
to dodge a cycle is still a dependency)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("proto", "coord", "chatnode", "client", "bench")

Graph = dict[str, set[str]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_generated(path: Path) -> bool:
    return path.name.endswith(("_pb2.py", "_pb2_grpc.py"))


def sources(packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every first-party module of the product, by dotted name."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((REPO / package).rglob("*.py")):
            if not _is_generated(path):
                found[module_name(path)] = path
    return found


def _imported(tree: ast.AST, here: str, is_package: bool, modules: Mapping[str, Path]) -> set[str]:
    """``from a import b`` depends on the module a.b when there is one (a package's
    submodule), else on a."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.split(".")[: len(here.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                names.add(name if name in modules else base)
    return names


def graph(modules: Mapping[str, Path] | None = None) -> Graph:
    """Module -> the first-party modules it imports."""
    modules = sources() if modules is None else modules
    edges: Graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        wanted = _imported(tree, name, path.name == "__init__.py", modules)
        edges[name] = {m for m in wanted if m in modules and m != name}
    return edges


def cycles(edges: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def packages_graph(edges: Graph, depth: int = 2) -> Graph:
    """The graph folded to packages named by their first ``depth`` parts."""

    def fold(name: str) -> str:
        return ".".join(name.split(".")[:depth])

    folded: Graph = {}
    for source, targets in edges.items():
        folded.setdefault(fold(source), set()).update(
            fold(t) for t in targets if fold(t) != fold(source)
        )
    return folded


def third_party(path: Path) -> set[str]:
    """The top-level names path imports that are neither the standard library nor ours."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return {r for r in roots if r not in sys.stdlib_module_names and r not in PACKAGES}
