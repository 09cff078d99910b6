"""`metaplug set-firewall` (issue 12.4): the reference firewall plugin of a running attachment runs again with another
`ingressPolicy`, by the set-bandwidth mechanism (inplace.py); the rules change in the node namespace's tables (never
the machine's), the interface and its address stay, CHECK passes and the pod's DEL removes the pod's rules. Thin
and daemon."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns
from tests.integration.test_hotplug import Cli, journal_body

pytestmark = pytest.mark.skipif(shutil.which("iptables") is None, reason="the firewall plugin needs iptables")
ISOLATION = "-A CNI-ISOLATION-STAGE-2 -o mpwall0"  # same-bridge: what leaves another bridge for it is dropped


def walled_pod(world: MetaplugWorld) -> dict[str, Any]:
    walled = world.bridge_net("walled", "10.92.0.0/24", "mpwall0")
    walled["plugins"].append({"type": "firewall", "backend": "iptables"})
    world.add_nad("walled", walled)
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    return world.annotated(world.metaplug_conf(cluster), [{"name": "walled", "interface": "fw0"}])


def rules(node: Netns) -> str:
    return node.exec(["iptables", "-S"]).stdout.decode()


def test_ingress_policy_changes_in_place(world: MetaplugWorld, pod: Netns, node: Netns, mode: str) -> None:
    conf = walled_pod(world)
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout + add.stderr
    before = rules(node)
    assert "10.92.0.2/32" in before and ISOLATION not in before, before
    link = pod.links()["fw0"]
    cli = Cli(world, conf)

    code, out = cli("set-firewall", "c1", "fw0", "--ingress-policy", "same-bridge")
    assert code == 0, out
    now = rules(node)
    assert ISOLATION in now and "10.92.0.2/32" in now, now
    (attachment,) = [a for a in journal_body(world)["attachments"] if a["ifname"] == "fw0"]
    assert '"ingressPolicy":"same-bridge"' in attachment["conflist"]
    assert (pod.links()["fw0"]["ifindex"], pod.addresses("fw0")) == (link["ifindex"], ["10.92.0.2/24"])
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr

    # back to open cannot be done by the plugin (its DEL keeps the bridge's isolation): refused, nothing changes
    journaled = journal_body(world)
    code, out = cli("set-firewall", "c1", "fw0", "--ingress-policy", "open")
    assert code == 1 and out["code"] == 7 and "same-bridge" in out["msg"], out
    assert journal_body(world) == journaled and rules(node) == now

    # the same policy again re-applies the attachment's rules (here after a flush of the pod's chain)
    node.exec(["iptables", "-F", "CNI-FORWARD"])
    assert "10.92.0.2/32" not in rules(node)
    code, out = cli("set-firewall", "c1", "fw0", "--ingress-policy", "same-bridge")
    assert code == 0, out
    assert "-A CNI-FORWARD -s 10.92.0.2/32 -j ACCEPT" in rules(node)
    assert pod.links()["fw0"]["ifindex"] == link["ifindex"]

    code, out = cli("set-firewall", "c1", "eth0", "--ingress-policy", "open")
    assert code == 1 and out["code"] == 7 and "firewall" in out["msg"], out  # no firewall plugin there

    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0, delete.stdout
    assert "10.92.0.2" not in rules(node)
    assert world.state_files() == [] and world.reservations() == []
