"""The alert rules and the Grafana dashboard in deploy/monitoring/.

promtool (from Debian's prometheus package; .ci/run installs it) loads the rules, runs
their unit tests (alerts_test.yml) and parses every dashboard query; Prometheus itself
evaluates the rules against a live three-node cluster. Every metric the
rules and the dashboard read must be one the node exposes: ``EXPOSED`` lists them, as
the node's metrics modules name them, so a misspelt or renamed metric fails here rather
than as an alert that silently never fires; and every chat metric the node registers
must be on that list, so the list cannot drift from the node.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import chatnode.server  # noqa: F401  (registers the node's metrics)
from chatnode.local_cluster import Cluster, free_port, local_cluster
from tests.support.waits import wait_until

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "dashboard.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (apt-get install prometheus, or see .ci/run)",
)
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is not installed (apt-get install prometheus, or see .ci/run)",
)

# Counters carry their exposed ``_total``; a histogram is named once and its
# ``_bucket``/``_sum``/``_count`` series are accepted. ``up`` is Prometheus's own.
EXPOSED_GAUGES_AND_COUNTERS = frozenset(
    {
        "up",
        "chat_node_id",
        "chat_is_leader",
        "chat_term",
        "chat_leader_id",
        "chat_commit_index",
        "chat_applied_index",
        "chat_members",
        "chat_min_insync",
        "chat_isr_size",
        "chat_follower_lag_entries",
        "chat_follower_lag_seconds",
        "chat_peer_clock_offset_seconds",
        "chat_proposals_in_flight",
        "chat_open_streams",
        "chat_password_hash_queue",
        "chat_disk_faults_total",
        "chat_disk_fault",
        "chat_session_calls_total",
        "chat_log_fsyncs_total",
        "chat_log_entries_total",
        "chat_peer_refused_total",
        "chat_peer_send_dropped_total",
        "chat_peer_entry_writes_total",
        "chat_peer_entries_sent_total",
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
    }
)
EXPOSED_HISTOGRAMS = frozenset(
    {
        "chat_log_fsync_seconds",
        "chat_apply_seconds",
        "chat_follower_heartbeat_gap_seconds",
        "chat_apply_on_loop_seconds",
        "grpc_server_handling_seconds",
        "chat_session_call_seconds",
    }
)
ALERT_NAMES = {
    "ChatNodeDown",
    "ChatNoLeader",
    "ChatTwoLeaders",
    "ChatIsrBelowFloor",
    "ChatCommitStalled",
    "ChatIsrNotFull",
    "ChatFollowerLagging",
    "ChatDiskFault",
    "ChatFsyncSlow",
    "ChatClockOffset",
    "ChatNodeRestarting",
}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool"}
PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan"}


def exposed(name: str) -> bool:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in EXPOSED_GAUGES_AND_COUNTERS or base in EXPOSED_HISTOGRAMS


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not a function
    call, a keyword, a label (in braces or in a by/on clause) or a duration."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+\w+", " ", expr)
    names = set(re.findall(r"(?<![\w.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def alert_rules(text: str) -> list[dict[str, str]]:
    """Each rule of alerts.yml as {key: value}, folded ``>-`` values joined by spaces.

    The suite's venv has no YAML parser; this reads the one layout alerts.yml uses (one
    key per line, folded blocks indented deeper than their key)."""
    rules: list[dict[str, str]] = []
    key_indent, key = -1, ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if key and indent > key_indent:
            rules[-1][key] = (rules[-1][key] + " " + line.strip()).strip()
            continue
        key = ""
        found = re.match(r"\s*(- )?(\w+):\s*(.*)$", line)
        if not found or (found.group(2) != "alert" and not rules):
            continue
        name, value = found.group(2), found.group(3)
        if name == "alert":
            rules.append({})
        rules[-1][name] = "" if value == ">-" else value.strip('"')
        if value == ">-":
            key_indent, key = indent, name
    return rules


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p["targets"]]


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_loads_the_rules() -> None:
    done = promtool("check", "rules", ALERTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in done.stdout


@needs_promtool
def test_the_rule_unit_tests_pass() -> None:
    done = promtool("test", "rules", ALERT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(dashboard_exprs()):
        concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        lines += [f"      - record: dashboard:query{number}"]
        lines += [f"        expr: {json.dumps(concrete)}"]
    rules = tmp_path / "dashboard_rules.yml"
    rules.write_text("\n".join(lines) + "\n")
    done = promtool("check", "rules", rules)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_duration_a_severity_and_what_to_do() -> None:
    rules = alert_rules(ALERTS.read_text())
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), rule
        assert rule.get("severity") in ("critical", "warning"), rule
        assert rule.get("summary") and len(rule.get("description", "")) > 60, rule


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = ALERT_TESTS.read_text()
    for name in ALERT_NAMES:
        assert re.search(rf"alertname: {name}\n\s+exp_alerts:", tests), name
        assert tests.count(f"alertname: {name}\n") >= 2, f"{name}: no case where it is quiet"


def test_the_rules_read_only_metrics_the_node_exposes() -> None:
    read = set().union(*(metric_names(r["expr"]) for r in alert_rules(ALERTS.read_text())))
    assert {"chat_is_leader", "chat_log_fsync_seconds_bucket", "up"} <= read
    assert sorted(n for n in read if not exposed(n)) == []


def test_the_dashboard_reads_only_metrics_the_node_exposes() -> None:
    read = set().union(*map(metric_names, dashboard_exprs()))
    assert {"chat_isr_size", "grpc_server_handled_total", "chat_open_streams"} <= read
    assert sorted(n for n in read if not exposed(n)) == []


def test_every_chat_metric_the_node_registers_is_on_the_list() -> None:
    registered = {
        m.name + ("_total" if m.type == "counter" else "")
        for m in REGISTRY.collect()
        if m.name.startswith("chat_")
    }
    assert {"chat_disk_faults_total", "chat_apply_on_loop_seconds"} <= registered
    assert sorted(n for n in registered if not exposed(n)) == []


def test_the_metric_reader_finds_names_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(a_bucket{job="x", le!="1"}'
        '[5m]))) > 0.25 and on (instance) b == 1 or c offset 10m unless absent(d{e="f"})'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}
    assert not exposed("chat_fsync_seconds_bucket") and exposed("chat_apply_seconds_count")
    assert not exposed("chat_disk_faults") and exposed("chat_disk_faults_total")


def test_the_dashboard_has_its_variables_and_every_panel_uses_them() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["datasource"]["uid"] == "${datasource}"
    panels = dashboard_panels()
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target)


def test_the_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        box = panel["gridPos"]
        cells = {(box["x"] + dx, box["y"] + dy) for dx in range(box["w"]) for dy in range(box["h"])}
        assert not cells & taken, panel["title"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        taken |= cells


@contextmanager
def prometheus(root: Path, cluster: Cluster) -> Iterator[str]:
    """Prometheus scraping every node as job chatnode with alerts.yml loaded, every
    second; yields its API's base URL and stops it afterwards."""
    assert PROMETHEUS is not None
    address = f"127.0.0.1:{free_port()}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "chatnode",
                "static_configs": [
                    {"targets": [n.metrics_address for n in cluster.nodes.values()]}
                ],
            }
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))
    with (root / "prometheus.log").open("wb") as log:
        server = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address={address}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://{address}/api/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def api(base: str, path: str) -> Any:
    """The data of one Prometheus API answer, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"{base}/{path}", timeout=5) as page:
            return json.load(page)["data"]
    except OSError:
        return None


def targets_up(base: str) -> int:
    result = (api(base, "query?query=sum(up)") or {}).get("result", [])
    return int(result[0]["value"][1]) if result else 0


def rule_health(base: str) -> dict[str, str]:
    """Each rule's health after its latest evaluation: unknown before the first, err
    when it failed."""
    groups = (api(base, "rules") or {}).get("groups", [])
    return {r["name"]: r["health"] for g in groups for r in g["rules"]}


def active_alerts(base: str) -> set[tuple[str, str]]:
    """(alertname, instance) of every pending or firing alert."""
    alerts = (api(base, "alerts") or {}).get("alerts", [])
    return {(a["labels"]["alertname"], a["labels"].get("instance", "")) for a in alerts}


@needs_prometheus
def test_prometheus_evaluates_the_rules_on_a_live_cluster(tmp_path: Path) -> None:
    """Every rule evaluates without error on real series, a healthy cluster raises no
    alert, and a killed node is ChatNodeDown at once (its leader may also say the ISR is
    short and the follower lags: both true)."""
    with (
        local_cluster(tmp_path, size=3, metrics=True) as cluster,
        prometheus(tmp_path, cluster) as base,
    ):
        wait_until(lambda: targets_up(base) == 3, "Prometheus scrapes the three nodes")
        healthy = dict.fromkeys(ALERT_NAMES, "ok")
        wait_until(lambda: rule_health(base) == healthy, "every rule evaluates without error")
        wait_until(lambda: active_alerts(base) == set(), "no alert active")
        leader = cluster.wait_for_leader()
        follower = next(i for i in cluster.nodes if i != leader)
        cluster.nodes[follower].kill()
        down = ("ChatNodeDown", cluster.nodes[follower].metrics_address)
        wait_until(lambda: down in active_alerts(base), f"{down} pending")
        at_leader = cluster.nodes[leader].metrics_address
        allowed = {down, ("ChatIsrNotFull", at_leader), ("ChatFollowerLagging", at_leader)}
        assert active_alerts(base) <= allowed
