"""reconcile.diff: a pod's requested elements against its journal (issue 12.1), pure."""

from __future__ import annotations

import json
from typing import Any

from metaplug.attach.annotations import parse_networks_annotation
from metaplug.reconcile import Reroute, Reshape, diff, fixed_count


def record(ifname: str, network: str, caps: dict[str, Any] | None = None, cluster: bool = False) -> dict[str, Any]:
    return {"ifname": ifname, "network": network, "cluster": cluster, "defaultRoute": [], "conflist": "{}",
            "capabilityArgs": caps or {}, "state": "added", "result": {}}


def elements(value: Any) -> list[Any]:
    return parse_networks_annotation(value if isinstance(value, str) else json.dumps(value), "default")


CLUSTER = record("eth0", "cluster", cluster=True)


def test_unchanged_request_changes_nothing() -> None:
    journal = [CLUSTER, record("blue0", "default/blue", {"ips": ["10.1.0.5/24"]}), record("net2", "default/red")]
    changes = diff(elements([{"name": "blue", "interface": "blue0", "ips": ["10.1.0.5/24"]}, {"name": "red"}]),
                   journal, 1)
    assert not changes and changes.detach == [] and changes.attach == []


def test_new_and_removed_elements() -> None:
    journal = [CLUSTER, record("net1", "default/red"), record("net2", "default/green")]
    changes = diff(elements("red,other/blue@b0,default/green"), journal, 1)
    assert changes.detach == [] and [(e.namespace, e.name, e.interface) for e in changes.attach] == [
        ("other", "blue", "b0")]
    changes = diff(elements("green"), journal, 1)  # red is no longer requested, whether hot-plugged or not
    assert changes.detach == ["net1"] and changes.attach == []
    changes = diff([], journal, 1)
    assert changes.detach == ["net2", "net1"]  # reverse journal order


def test_the_cluster_network_and_fixed_attachments_are_never_detached() -> None:
    journal = [CLUSTER, record("net1", "kube-system/defaultnet"), record("net2", "default/red"),
               record("net3", "aux-chain")]
    assert diff([], journal, fixed_count(default_networks=1, static_delegates=0, system_pod=False)).detach == ["net2"]
    assert fixed_count(1, 3, system_pod=True) == 3


def test_changed_ips_mac_or_interface_is_detach_then_attach() -> None:
    journal = [CLUSTER, record("blue0", "default/blue", {"ips": ["10.1.0.5/24"]})]
    changes = diff(elements([{"name": "blue", "interface": "blue0", "ips": ["10.1.0.6/24"]}]), journal, 1)
    assert changes.detach == ["blue0"] and [e.ips for e in changes.attach] == [("10.1.0.6/24",)]
    changes = diff(elements([{"name": "blue", "interface": "blue1", "ips": ["10.1.0.5/24"]}]), journal, 1)
    assert changes.detach == ["blue0"] and [e.interface for e in changes.attach] == ["blue1"]


def test_changed_bandwidth_is_in_place() -> None:
    old = {"bandwidth": {"ingressRate": 1000, "ingressBurst": 100}}
    journal = [CLUSTER, record("net1", "default/shaped", old)]
    new = {"ingressRate": 5000, "ingressBurst": 100}
    changes = diff(elements([{"name": "shaped", "bandwidth": new}]), journal, 1)
    assert changes.detach == [] and changes.attach == [] and changes.reshape == [Reshape("net1", new)]


def test_same_nad_twice_matches_in_order_and_explicit_names_first() -> None:
    journal = [CLUSTER, record("net1", "default/red"), record("r2", "default/red")]
    assert not diff(elements("red,red@r2"), journal, 1)
    changes = diff(elements("red@r2"), journal, 1)
    assert changes.detach == ["net1"] and changes.attach == []
    changes = diff(elements("red,red,red"), journal, 1)
    assert changes.detach == [] and len(changes.attach) == 1


def test_changed_cni_args_is_detach_then_attach() -> None:
    conflist = json.dumps({"name": "blue", "plugins": [{"type": "macvlan", "args": {"cni": {"vlan": "7", "own": 1}}}]})
    made = {**record("blue0", "default/blue"), "conflist": conflist, "requestedCniArgs": {"vlan": "7"}}
    journal = [CLUSTER, made]
    same = [{"name": "blue", "interface": "blue0", "cni-args": {"vlan": "7"}}]
    assert not diff(elements(same), journal, 1)
    for changed in ({"vlan": "8"}, {"vlan": "7", "extra": True}, None):
        element = {"name": "blue", "interface": "blue0", **({"cni-args": changed} if changed else {})}
        changes = diff(elements([element]), journal, 1)
        assert changes.detach == ["blue0"] and [e.cni_args for e in changes.attach] == [changed], changed
    # a journal older than requestedCniArgs: inferred from the merged conflist (the NAD's own key `own` included)
    old = [CLUSTER, {**record("blue0", "default/blue"), "conflist": conflist}]
    assert not diff(elements(same), old, 1)
    assert not diff(elements([{"name": "blue", "interface": "blue0", "cni-args": {"own": 1}}]), old, 1)
    assert diff(elements([{"name": "blue", "interface": "blue0", "cni-args": {"vlan": "9"}}]), old, 1).detach == [
        "blue0"]


def test_changed_default_route_moves_it_in_place_given_back_first() -> None:
    owner = [CLUSTER, {**record("net1", "default/red"), "defaultRoute": ["10.99.0.1"]}, record("net2", "default/green")]
    assert not diff(elements([{"name": "red", "default-route": ["10.99.0.1"]}, {"name": "green"}]), owner, 1)
    for route in (["10.99.0.254"], []):
        changes = diff(elements([{"name": "red", "default-route": route}, {"name": "green"}]), owner, 1)
        assert changes.reroute == [Reroute("net1", route)] and not changes.detach and not changes.attach
    changes = diff(elements([{"name": "red"}, {"name": "green", "default-route": ["10.98.0.1"]}]), owner, 1)
    assert changes.reroute == [Reroute("net1", []), Reroute("net2", ["10.98.0.1"])]  # R13: one owner at a time
    changes = diff(elements([{"name": "red", "ips": ["10.99.0.9/24"], "default-route": ["10.99.0.1"]}]), owner, 1)
    assert changes.reroute == [] and changes.detach == ["net2", "net1"] and len(changes.attach) == 1  # made anew


def test_ipam_claim_reference_alone_changes_nothing() -> None:
    """R15: validated only, passed to no delegate at ADD; so a change of it is no change of the attachment."""
    journal = [CLUSTER, record("net1", "default/red")]
    assert not diff(elements([{"name": "red", "ipam-claim-reference": "claim-2"}]), journal, 1)
