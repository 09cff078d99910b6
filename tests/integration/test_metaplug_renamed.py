"""The configuration's `name` changed between ADD and DEL (an operator's edit, an upgrade): DEL finds what ADD
recorded for that container and ifname under the old name, deletes it and logs the mismatch at warning; CHECK reports
it naming the recorded name; GC never frees what the old name still holds (issue 10.3). Real namespaces, real
delegates."""

from __future__ import annotations

import json

import pytest

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory


def _conf(world: MetaplugWorld, name: str) -> dict:
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")), "blue")
    conf["name"] = name
    return conf


def _warnings(world: MetaplugWorld) -> list[dict]:
    lines = (world.tmp / "metaplug.log").read_text().splitlines()
    return [doc for doc in map(json.loads, lines) if doc["level"] == "warning"]


def test_del_under_a_new_name_deletes_what_the_old_name_recorded(world: MetaplugWorld, pod: Netns) -> None:
    world.add_nad("blue", world.macvlan_hostlocal_net("blue", "10.80.0.0/24"))
    add = world.call("ADD", _conf(world, "net-a"), pod=pod)
    assert add.code == 0, add.stdout + add.stderr
    assert pod.has_link("eth0") and pod.has_link("net1")

    check = world.call("CHECK", _conf(world, "net-b"), pod=pod)
    assert check.code == 1 and check.json["code"] == 3, check.stdout
    assert "'net-a'" in check.json["details"] and "net-b" in check.json["details"]

    delete = world.call("DEL", _conf(world, "net-b"), pod=pod)
    assert delete.code == 0, delete.stdout + delete.stderr
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == [] and world.state_files() == []
    renamed = [w for w in _warnings(world) if w.get("recorded_meta_network") == "net-a"]
    assert len(renamed) == 1 and renamed[0]["meta_network"] == "net-b" and renamed[0]["verb"] == "DEL"
    assert world.call("DEL", _conf(world, "net-b"), pod=pod).code == 0  # repeated DEL: nothing left, success


def test_del_under_a_new_name_leaves_another_ifname_alone(world: MetaplugWorld, pod: Netns) -> None:
    """Only the same container AND ifname: a second metaplug network of the container (another ifname) stays."""
    world.add_nad("blue", world.macvlan_hostlocal_net("blue", "10.80.0.0/24"))
    other = world.metaplug_conf(world.bridge_net("side", "10.55.0.0/24", "mpsd0"))
    other["name"] = "net-other"
    assert world.call("ADD", _conf(world, "net-a"), pod=pod).code == 0
    assert world.call("ADD", other, pod=pod, ifname="eth9").code == 0
    assert world.call("DEL", _conf(world, "net-b"), pod=pod).code == 0
    assert set(pod.links()) == {"lo", "eth9"}
    assert world.reservations() == ["side/10.55.0.2"]
    assert world.call("DEL", other, pod=pod, ifname="eth9").code == 0
    assert world.state_files() == []


def test_gc_under_a_new_name_keeps_the_old_names_addresses(world: MetaplugWorld,
                                                          netns_factory: NetnsFactory) -> None:
    """GC of the new name never collects the old name's journal, warns about a valid attachment recorded there, and
    forwards GC to the shared IPAM with that attachment counted as valid (else its address would be freed)."""
    if not (VENV_BIN / "mp-host-local").exists():
        pytest.skip("bundled delegates not installed")
    world.plugins = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local",
                     "static": "mp-static"}

    def conf(name: str) -> dict:
        out = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", version="1.1.0"))
        out["name"] = name
        return out

    old_pod, new_pod = netns_factory.new("pod"), netns_factory.new("pod")
    assert world.call("ADD", conf("net-a"), pod=old_pod, container_id="old").code == 0
    assert world.call("ADD", conf("net-b"), pod=new_pod, container_id="new").code == 0
    gc = dict(conf("net-b"), **{"cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"},
                                                              {"containerID": "old", "ifname": "eth0"}]})
    result = world.call("GC", gc)
    assert result.code == 0, result.stdout + result.stderr
    assert world.reservations() == ["cluster/10.88.0.2", "cluster/10.88.0.3"]
    assert old_pod.has_link("eth0") and new_pod.has_link("eth0")
    assert any(w.get("recorded_meta_network") == "net-a" and w["verb"] == "GC" for w in _warnings(world))
    for cid, p in (("old", old_pod), ("new", new_pod)):
        assert world.call("DEL", conf("net-b"), pod=p, container_id=cid).code == 0
    assert world.reservations() == [] and world.state_files() == []
