from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns, NetnsFactory


@pytest.fixture
def world(netns_factory: NetnsFactory, node: Netns, tmp_path: Path) -> MetaplugWorld:
    if not Path("/usr/lib/cni/bridge").exists():
        pytest.skip("needs the reference CNI plugins (containernetworking-plugins)")
    return MetaplugWorld(netns_factory, node, tmp_path).setup()
