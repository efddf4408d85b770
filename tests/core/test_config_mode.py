"""The mode is a property of the cluster, fixed at creation and kept by every config after.

docs/api.md, "Peers and operators": ``--min-insync`` > N/2 selects quorum mode when
the cluster is created, membership changes keep it, and in quorum mode the commit
and election quorum is a majority of the current members.
"""

from __future__ import annotations

import json

import pytest

from coord.core.config import ClusterConfig
from coord.core.errors import LocalProtocolError, RemoteProtocolError


def members(n: int) -> dict[int, str]:
    return {i: f"n{i}:7000" for i in range(1, n + 1)}


def test_min_insync_above_half_selects_quorum_mode_at_creation() -> None:
    assert ClusterConfig.create(members(3), min_insync=2).quorum_mode
    assert not ClusterConfig.create(members(3), min_insync=1).quorum_mode
    assert not ClusterConfig.create(members(4), min_insync=2).quorum_mode
    assert ClusterConfig.create(members(5), min_insync=3).mode == "quorum"


def test_adding_a_member_keeps_quorum_mode_and_a_majority_quorum() -> None:
    config = ClusterConfig.create(members(3), min_insync=2)
    grown = config.with_member(4, "n4:7000")
    assert grown.quorum_mode, "2 of 4 is no longer more than half, but the mode stays"
    assert grown.min_insync == 3 == grown.majority
    assert grown.with_member(5, "n5:7000").min_insync == 3


def test_removing_members_keeps_either_mode() -> None:
    quorum = ClusterConfig.create(members(5), min_insync=3)
    shrunk = quorum.without_member(5)
    assert shrunk.quorum_mode and shrunk.min_insync == 3 == shrunk.majority
    failstop = ClusterConfig.create(members(4), min_insync=2)
    three = failstop.without_member(4)
    assert not three.quorum_mode, "2 of 3 is more than half, but the mode stays fail-stop"
    assert three.min_insync == 2


def test_a_removal_that_leaves_too_few_for_the_quorum_is_refused() -> None:
    config = ClusterConfig.create(members(3), min_insync=2).with_isr({1, 2})
    with pytest.raises(LocalProtocolError, match="fewer than min_insync"):
        config.without_member(2)


def test_the_mode_survives_encoding_and_old_entries_keep_the_mode_they_had() -> None:
    grown = ClusterConfig.create(members(3), min_insync=2).with_member(4, "n4:7000")
    assert ClusterConfig.decode(grown.encode()) == grown
    old = {"members": {"1": "a:1", "2": "b:2", "3": "c:3"}, "isr": [1, 2, 3], "min_insync": 2}
    assert ClusterConfig.decode(json.dumps(old).encode()).quorum_mode
    with pytest.raises(RemoteProtocolError, match="unknown mode"):
        ClusterConfig.decode(json.dumps(old | {"mode": "chaos"}).encode())


def test_a_config_that_changes_the_mode_does_not_follow() -> None:
    quorum = ClusterConfig.create(members(3), min_insync=2)
    flipped = ClusterConfig.create(members(3), min_insync=2, quorum=False)
    assert quorum.with_member(4, "n4:7000").follows(quorum)
    assert not flipped.follows(quorum)
