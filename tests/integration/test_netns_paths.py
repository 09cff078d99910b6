"""Issue 9, defect 5 (and 4): whatever CNI_NETNS names, a CNI call answers within its deadline.

A FIFO used to block ADD in a blocking open(2) forever; a regular file, /dev/null or /proc/self/fd/0 used to fail in
setns(2) with a bare EINVAL (code 199). Now every path is opened non-blocking and must be a network namespace (nsfs,
NS_GET_NSTYPE == CLONE_NEWNET): code 4 on ADD and CHECK (cni.md 2, 32), success on DEL (cni.md 11: nothing of ours can
be in something that is not a namespace). Real FIFOs, files, devices and namespaces; metaplug and the bundled delegates
as the runtime runs them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metaplug.cni import ns
from metaplug.cni.errors import INVALID_ENVIRONMENT
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns, metaplug_env

DEADLINE = 20.0  # seconds; the blocking open never returned


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "netns-fifo"
    os.mkfifo(path)
    yield str(path)


@pytest.fixture
def regular(tmp_path: Path) -> str:
    path = tmp_path / "netns-file"
    path.write_bytes(b"")  # what an unmounted namespace bind mount leaves behind
    return str(path)


BAD = ["fifo", "regular", "/dev/null", "/etc/passwd", "/proc/self/fd/0", "/proc/self/ns/mnt", "/tmp", "missing"]


def _bad_path(kind: str, request: pytest.FixtureRequest) -> str:
    if kind in ("fifo", "regular"):
        return str(request.getfixturevalue(kind))
    if kind == "missing":
        return "/var/run/netns/mpt-no-such-namespace"
    return kind


@pytest.mark.parametrize("kind", BAD)
def test_open_netns_refuses_what_is_not_a_network_namespace_without_blocking(kind: str,
                                                                             request: pytest.FixtureRequest) -> None:
    path = _bad_path(kind, request)
    started = time.monotonic()
    with pytest.raises(ns.NotNetns) as exc:
        ns.open_netns(path)
    assert time.monotonic() - started < 1.0
    assert exc.value.code == INVALID_ENVIRONMENT and "CNI_NETNS" in exc.value.details
    assert not ns.is_netns(path)
    if kind == "/proc/self/ns/mnt":
        assert "mount namespace" in exc.value.details


def test_open_netns_accepts_a_real_namespace_and_enters_it(pod: Netns) -> None:
    import socket

    pod.ip("link", "add", "mpt-probe0", "type", "veth", "peer", "name", "mpt-probe1")
    with ns.opened(pod.path) as fd:
        names = ns.run_in(fd, lambda: {name for _, name in socket.if_nameindex()})
    assert {"lo", "mpt-probe0", "mpt-probe1"} <= names
    assert ns.is_netns(pod.path) and ns.is_netns("/proc/self/ns/net")


@pytest.mark.parametrize("kind", ["fifo", "regular", "/dev/null", "/proc/self/fd/0"])
@pytest.mark.parametrize("delegates", ["reference", "bundled"])
def test_metaplug_add_and_check_answer_code_4_in_time(world: MetaplugWorld, kind: str, delegates: str,
                                                      request: pytest.FixtureRequest) -> None:
    """ADD used to hang forever on a FIFO; it now fails fast, makes nothing and leaves nothing in stateDir."""
    if delegates == "bundled":
        world.plugins = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local",
                         "static": "mp-static"}
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    path = _bad_path(kind, request)
    for verb in ("ADD", "CHECK"):
        started = time.monotonic()
        reply = world.call(verb, conf, netns_path=path, timeout=DEADLINE)
        assert time.monotonic() - started < DEADLINE
        assert reply.code == 1 and "Traceback" not in reply.stderr, reply.stdout + reply.stderr
        assert reply.json["code"] == INVALID_ENVIRONMENT and "CNI_NETNS" in reply.json["details"]
    assert world.state_files() == []
    assert world.reservations() == []
    assert "mpcl0" not in world.node.links()


def test_metaplug_del_with_a_fifo_netns_still_releases_everything(world: MetaplugWorld, pod: Netns,
                                                                  fifo: str) -> None:
    """cni.md 11: DEL after the namespace path became something else (here a FIFO) succeeds in time, removes the
    journal and releases the IP; the delegates are not handed a path they could block on."""
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout + add.stderr
    assert world.reservations() != []
    delete = world.call("DEL", conf, netns_path=fifo, timeout=DEADLINE)
    assert delete.code == 0 and delete.stdout == "", delete.stdout + delete.stderr
    assert world.state_files() == []
    assert world.reservations() == []


@pytest.mark.parametrize("plugin", ["mp-bridge", "mp-macvlan", "mp-loopback"])
@pytest.mark.parametrize("kind", ["fifo", "regular", "/dev/null"])
def test_bundled_delegates_answer_in_time(world: MetaplugWorld, plugin: str, kind: str,
                                          request: pytest.FixtureRequest) -> None:
    """Each mp-* delegate on its own: ADD and CHECK are code 4, DEL succeeds (nothing of ours is in it)."""
    if not (VENV_BIN / plugin).exists():
        pytest.skip("bundled delegates not installed")
    conf = {"cniVersion": "1.1.0", "name": "n", "type": plugin, "master": world.uplink, "bridge": "mpt0",
            "prevResult": {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": "x"}], "ips": []}}
    path = _bad_path(kind, request)
    for verb in ("ADD", "CHECK", "DEL"):
        env = metaplug_env({"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": path, "CNI_IFNAME": "eth0",
                            "CNI_PATH": str(VENV_BIN)})
        started = time.monotonic()
        proc = world.node.exec([str(VENV_BIN / plugin)], input=json.dumps(conf).encode(), env=env, check=False,
                               timeout=DEADLINE)
        assert time.monotonic() - started < DEADLINE
        assert b"Traceback" not in proc.stderr, proc.stderr.decode()
        if verb == "DEL":
            assert (proc.returncode, proc.stdout) == (0, b""), proc.stdout
        else:
            assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == INVALID_ENVIRONMENT, proc.stdout
