"""The layering the design promises, checked on the source's import graph.

Every module belongs to one layer of ``LAYERS`` and imports only its own layer and those
below it; ``coord.core`` (the sans-IO protocol) imports nothing but itself and the
standard library; the simulator and harness (``coord.testing``) are imported only by
tests and by ``python -m coord.sim``; chatnode sees the coordinator only through
``coord.boundary`` (which needs no grpc), but for the wiring in ``chatnode.server``; and
no module cycle exists, counting imports made inside functions.
"""

from __future__ import annotations

from tests.support.imports import Graph, cycles, graph, sources, third_party

EDGES = graph()
CLIENT_LIBRARY = ("library", "session_link", "connect", "admin", "sync")
CLIENT_PROGRAMS = (
    *("chatctl", "app", "app_controller", "cli", "backup"),
    *("outage", "outbox", "history_file", "conversations", "feed", "pane"),
)


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


# Lowest first. The client's programs sit above the benchmarks (``chatctl bench``), which
# sit above the client library they measure.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("proto", ("proto",)),
    ("coord.core", ("coord.core",)),
    ("coord boundary", ("coord", "coord.boundary")),
    ("coord.shell", ("coord.shell",)),
    ("coord.testing", ("coord.testing", "coord.sim")),
    ("chatnode", ("chatnode",)),
    ("client library", ("client", *(f"client.{m}" for m in CLIENT_LIBRARY))),
    ("bench", ("bench",)),
    ("client programs", tuple(f"client.{m}" for m in CLIENT_PROGRAMS)),
]


def layer_of(name: str, layers: list[tuple[str, tuple[str, ...]]] = LAYERS) -> int:
    """The index of the layer holding name: the one naming its longest prefix."""
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(layers):
        for prefix in prefixes:
            if within(name, prefix) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def upward_imports(
    edges: Graph, layers: list[tuple[str, tuple[str, ...]]] = LAYERS
) -> list[tuple[str, str]]:
    return sorted(
        (source, target)
        for source, targets in edges.items()
        for target in targets
        if layer_of(target, layers) > layer_of(source, layers)
    )


def test_every_module_has_a_layer() -> None:
    assert [name for name in EDGES if layer_of(name) < 0] == []


def test_no_module_imports_a_higher_layer() -> None:
    assert upward_imports(EDGES) == []


def test_the_layer_check_can_fail() -> None:
    layers = [("low", ("a",)), ("high", ("b",))]
    assert upward_imports({"a.x": {"b.y"}, "b.y": {"a.x"}}, layers) == [("a.x", "b.y")]


def test_only_the_simulator_entry_point_imports_the_test_tools() -> None:
    users = set(importers_of("coord.testing")) - {"coord.sim"}
    assert all(within(u, "coord.testing") for u in users), users


WIRING = "chatnode.server"  # builds the node: the one chatnode module that names coord's shell


def past_the_boundary(edges: Graph) -> list[tuple[str, str]]:
    """chatnode's imports of coord other than ``coord.boundary``, the wiring's aside."""
    return sorted(
        (source, target)
        for source, targets in edges.items()
        if within(source, "chatnode") and source != WIRING
        for target in targets
        if within(target, "coord") and target not in ("coord", "coord.boundary")
    )


def test_chatnode_sees_the_coordinator_only_through_the_boundary() -> None:
    assert past_the_boundary(EDGES) == []


def test_the_boundary_check_can_fail() -> None:
    edges = {
        "chatnode.applier": {"coord.boundary", "coord.shell.disk"},
        "chatnode.server": {"coord.shell.driver"},
        "coord.shell.driver": {"coord.core.node"},
    }
    assert past_the_boundary(edges) == [("chatnode.applier", "coord.shell.disk")]


def test_the_boundary_needs_nothing_but_the_core_and_the_standard_library() -> None:
    assert third_party(sources(["coord"])["coord.boundary"]) == set()
    assert all(within(t, "coord.core") for t in EDGES["coord.boundary"]), EDGES["coord.boundary"]
