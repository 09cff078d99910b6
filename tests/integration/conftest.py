from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.metaplug_env import MetaplugWorld, mode
from tests.helpers.netns import Netns, NetnsFactory

__all__ = ["mode"]  # the fixture, for every integration test


@pytest.fixture
def world(netns_factory: NetnsFactory, node: Netns, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[MetaplugWorld]:
    """The test's world; a test that takes `mode` runs thin and daemon (the daemon ends before the namespaces go)."""
    if not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs the reference CNI plugins (containernetworking-plugins)")
    world = MetaplugWorld(netns_factory, node, tmp_path).setup()
    try:
        if "mode" in request.fixturenames and request.getfixturevalue("mode") == "daemon":
            world.start_daemon()
        yield world
    finally:
        world.stop_daemon()
