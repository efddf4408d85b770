"""``deploy/cluster.sh up --metrics HOST:PORT`` on a network-namespace machine: the node's
env names the endpoint, and Prometheus on another machine can scrape it.

One machine is enough: the flag reaches every machine the same way (install.sh).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns.deploy import WHEELHOUSE, cluster_sh, skip_unless_possible
from tests.netns.hosts import REPO, Lab

skip_unless_possible()
pytestmark = pytest.mark.timeout(600)

METRICS = "0.0.0.0:9101"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab"), 1) as made:
        yield made


@pytest.fixture(scope="module")
def hosts_file(lab: Lab) -> Iterator[Path]:
    path = lab.hosts_file(range(1, 2))
    cluster_sh(lab, "up", str(path), "--metrics", METRICS, "--wheels", str(WHEELHOUSE))
    yield path
    cluster_sh(lab, "down", str(path), check=False)


def test_a_bad_metrics_address_is_refused_before_anything_is_installed(lab: Lab) -> None:
    path = lab.hosts_file(range(1, 2), name="bad-hosts")
    done = cluster_sh(lab, "up", str(path), "--metrics", "9101", check=False)
    assert done.returncode == 1
    assert "bad --metrics '9101' (HOST:PORT)" in done.stderr
    assert not Path(f"{path}.d/settings").exists()


def test_up_with_metrics_serves_them_to_another_machine(lab: Lab, hosts_file: Path) -> None:
    host = lab.host(1)
    env = host.file("/etc/chat/chatnode.env").read_text()
    assert f"CHAT_METRICS_LISTEN={METRICS}\n" in env
    assert f"metrics={METRICS}\n" in Path(f"{hosts_file}.d/settings").read_text()
    assert lab.client is not None
    url = f"http://{host.address}:9101/metrics"
    page = lab.client.run(
        f"{REPO}/.venv/bin/python -c 'import urllib.request, sys; "
        f'sys.stdout.write(urllib.request.urlopen("{url}", timeout=10).read().decode())\''
    ).stdout
    assert "\nchat_is_leader 1.0\n" in page
    assert "\nchat_node_id 1.0\n" in page
    assert "\nprocess_resident_memory_bytes " in page
