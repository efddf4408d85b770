"""The layering the design promises, checked on the source's import graph.

Lower layers never import higher ones: ``coord.core`` (the sans-IO protocol) imports only
itself and the standard library; ``coord`` never imports the chat layer or the client;
``chatnode`` never imports the client; the simulator and harness (``coord.testing``) are
imported only by tests and by ``python -m coord.sim``; and no module cycle exists, counting
imports made inside functions.
"""

from __future__ import annotations

import pytest

from tests.support.imports import Graph, cycles, graph, sources, third_party

EDGES = graph()


def importers_of(prefix: str, edges: Graph = EDGES) -> dict[str, set[str]]:
    return {
        source: {t for t in targets if t == prefix or t.startswith(prefix + ".")}
        for source, targets in edges.items()
        if any(t == prefix or t.startswith(prefix + ".") for t in targets)
    }


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_graph_sees_the_product() -> None:
    """The reader finds the modules and their imports (a blind reader would pass the rest)."""
    assert "coord.core.node" in EDGES and "chatnode.server" in EDGES
    assert "coord.core.election" in EDGES["coord.core.node"]
    assert any(within(t, "coord") for t in EDGES["chatnode.server"])


def test_no_import_cycles() -> None:
    assert cycles(EDGES) == []


def test_the_cycle_check_can_fail() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_imports_only_itself_and_the_standard_library() -> None:
    for name, path in sources(["coord"]).items():
        if not within(name, "coord.core"):
            continue
        assert all(within(t, "coord.core") for t in EDGES[name]), (name, EDGES[name])
        outside = third_party(path)
        assert not outside, f"{name} imports {outside}"


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("coord", "chatnode"),
        ("coord", "client"),
        ("coord", "bench"),
        ("chatnode", "client"),
        ("chatnode", "bench"),
        ("proto", "coord"),
        ("proto", "chatnode"),
        ("proto", "client"),
    ],
)
def test_lower_layers_do_not_import_higher_ones(lower: str, higher: str) -> None:
    offenders = {s: t for s, t in importers_of(higher).items() if within(s, lower)}
    assert not offenders, f"{lower} imports {higher}: {offenders}"


def test_only_the_simulator_entry_point_imports_the_test_tools() -> None:
    users = set(importers_of("coord.testing")) - {"coord.sim"}
    assert all(within(u, "coord.testing") for u in users), users
