"""Errors that name the culprit (issue 10.5, cni.md 32): a missing delegate binary (102) names the attachment and the
NetworkAttachmentDefinition that needed it; a delegate's failure names the plugin type, the attachment and the NAD;
a network configuration list fed where metaplug's plugin configuration belongs says so. Real namespaces, reference
plugins."""

from __future__ import annotations

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns


def _conf(world: MetaplugWorld) -> dict:
    return world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")), "blue")


def test_missing_binary_names_attachment_and_nad(world: MetaplugWorld, pod: Netns) -> None:
    net = world.macvlan_hostlocal_net("blue", "10.80.0.0/24")
    net["plugins"][0]["type"] = "no-such-macvlan"
    world.add_nad("blue", net)
    add = world.call("ADD", _conf(world), pod=pod)
    assert add.code == 1 and add.json["code"] == 102, add.stdout
    msg = add.json["msg"]
    assert "attachment net1" in msg and "NetworkAttachmentDefinition default/blue" in msg, msg
    assert "'no-such-macvlan'" in msg and "/usr/lib/cni" in add.json["details"]
    assert set(pod.links()) == {"lo"} and world.state_files() == []  # checked before any delegate ran


def test_missing_cluster_binary_names_the_cluster_network(world: MetaplugWorld, pod: Netns) -> None:
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")
    cluster["plugins"][0]["ipam"]["type"] = "no-such-ipam"  # an IPAM binary is the plugin's business, not ours
    cluster["plugins"].append({"type": "no-such-tuning"})
    add = world.call("ADD", world.metaplug_conf(cluster), pod=pod)
    assert add.code == 1 and add.json["code"] == 102, add.stdout
    assert "attachment eth0 (cluster network cluster from delegates[0])" in add.json["msg"]
    assert "'no-such-tuning'" in add.json["msg"]


def test_delegate_failure_names_plugin_attachment_and_nad(world: MetaplugWorld, pod: Netns) -> None:
    net = world.macvlan_hostlocal_net("blue", "10.80.0.0/24")
    net["plugins"][0]["master"] = "nosuchdev0"
    world.add_nad("blue", net)
    add = world.call("ADD", _conf(world), pod=pod)
    assert add.code == 1, add.stdout
    msg = add.json["msg"]
    assert msg == "attachment net1 (NetworkAttachmentDefinition default/blue) failed in plugin 'macvlan'", msg
    assert "Link not found" in add.json["details"]  # the delegate's own error, kept
    assert set(pod.links()) == {"lo"} and world.reservations() == [] and world.state_files() == []  # R27


def test_conflist_where_the_plugin_config_belongs(world: MetaplugWorld, pod: Netns) -> None:
    conflist = {"cniVersion": "1.0.0", "name": "mp", "plugins": [_conf(world)]}
    for verb in ("ADD", "DEL", "CHECK"):
        result = world.call(verb, conflist, pod=pod)
        assert result.code == 1 and result.json["code"] == 7, (verb, result.stdout)
        assert "network configuration list" in result.json["msg"] and "plugins" in result.json["details"]
    assert set(pod.links()) == {"lo"}
