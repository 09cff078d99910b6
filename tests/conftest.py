"""Shared fixtures: per-test namespaces and temp dirs (see tests/helpers/netns.py for the safety rules)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.helpers.netns import NetnsFactory, is_root

REFERENCE_PLUGINS = "/usr/lib/cni"


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    if not is_root() or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    factory = NetnsFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def node(netns_factory: NetnsFactory):  # type: ignore[no-untyped-def]
    """A fresh "node" namespace: metaplug and the delegates run inside it."""
    return netns_factory.new("node")


@pytest.fixture
def pod(netns_factory: NetnsFactory):  # type: ignore[no-untyped-def]
    """A fresh "pod" namespace (the container's network namespace, CNI_NETNS)."""
    return netns_factory.new("pod")
