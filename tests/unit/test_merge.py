"""Unit tests for metaplug.merge: the merged result (attachments.md "Results: BEYOND") and network-status (R17-R23)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplug.merge import AttachmentResult, is_default_route, merge_results, network_status, primary_result

SANDBOX = "/var/run/netns/pod"


def iface(name: str, mac: str = "", sandbox: str = SANDBOX, mtu: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if mac:
        out["mac"] = mac
    if sandbox:
        out["sandbox"] = sandbox
    if mtu is not None:
        out["mtu"] = mtu
    return out


def cluster() -> AttachmentResult:
    """A bridge-like result: host veth (no sandbox) first, pod eth0 second, as the bridge plugin returns it."""
    return AttachmentResult(
        status_name="cluster-net",
        ifname="eth0",
        is_default=True,
        cluster=True,
        result={
            "cniVersion": "1.1.0",
            "interfaces": [iface("cni0", "aa:00:00:00:00:01", ""), iface("eth0", "02:00:00:00:00:01", mtu=1450)],
            "ips": [
                {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 1},
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1},
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "::/0"}, {"dst": "10.96.0.0/12"}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
        },
    )


def secondary(name: str = "pods/macvlan", ifname: str = "net1", default: bool = False) -> AttachmentResult:
    return AttachmentResult(
        status_name=name,
        ifname=ifname,
        is_default=default,
        cluster=False,
        result={
            "cniVersion": "1.1.0",
            "interfaces": [iface(ifname, "02:00:00:00:01:01")],
            "ips": [{"address": "192.168.1.7/24", "gateway": "192.168.1.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.1.1"}, {"dst": "192.168.0.0/16", "gw": "192.168.1.1"}],
            "dns": {"nameservers": ["192.168.1.53"]},
        },
    )


# ---------------------------------------------------------------- merge_results


def test_merge_concatenates_interfaces_and_reindexes_ips() -> None:
    merged = merge_results([cluster(), secondary()])
    assert merged["cniVersion"] == "1.1.0"
    assert [i["name"] for i in merged["interfaces"]] == ["cni0", "eth0", "net1"]
    assert [(ip["address"], ip["interface"]) for ip in merged["ips"]] == [
        ("10.0.0.5/24", 1),
        ("fd00::5/64", 1),
        ("192.168.1.7/24", 2),
    ]


def test_merge_default_routes_only_from_default_owner_r13() -> None:
    merged = merge_results([cluster(), secondary()])
    assert merged["routes"] == [
        {"dst": "0.0.0.0/0", "gw": "10.0.0.1"},
        {"dst": "::/0"},
        {"dst": "10.96.0.0/12"},
        {"dst": "192.168.0.0/16", "gw": "192.168.1.1"},
    ]


def test_merge_default_routes_moved_to_secondary_r13() -> None:
    c = cluster()
    c.is_default = False
    merged = merge_results([c, secondary(default=True)])
    assert merged["routes"] == [
        {"dst": "10.96.0.0/12"},
        {"dst": "0.0.0.0/0", "gw": "192.168.1.1"},
        {"dst": "192.168.0.0/16", "gw": "192.168.1.1"},
    ]


def test_merge_dns_from_cluster_only() -> None:
    assert merge_results([cluster(), secondary()])["dns"] == {
        "nameservers": ["10.96.0.10"],
        "search": ["svc.cluster.local"],
    }
    c = cluster()
    c.result["dns"] = {}
    assert "dns" not in merge_results([c, secondary()])


def test_merge_ip_without_interface_keeps_none_and_bad_index_is_dropped() -> None:
    s = secondary()
    s.result["ips"] = [
        {"address": "192.168.1.7/24"},
        {"address": "192.168.1.8/24", "interface": 5},
        {"address": "192.168.1.9/24", "interface": 0},
    ]
    merged = merge_results([cluster(), s])
    tail = merged["ips"][2:]
    assert "interface" not in tail[0]
    assert "interface" not in tail[1]
    assert tail[2]["interface"] == 2


def test_merge_does_not_alias_or_mutate_inputs() -> None:
    atts = [cluster(), secondary()]
    before = copy.deepcopy([a.result for a in atts])
    merged = merge_results(atts)
    merged["interfaces"][0]["name"] = "changed"
    merged["ips"][2]["address"] = "changed"
    assert [a.result for a in atts] == before


def test_merge_empty_results() -> None:
    ipam_only = AttachmentResult("pods/x", "net1", {"cniVersion": "1.1.0"}, False, False)
    assert merge_results([ipam_only]) == {"cniVersion": "1.1.0"}


@pytest.mark.parametrize(
    ("dst", "expected"),
    [("0.0.0.0/0", True), ("::/0", True), ("0::0/0", True), ("10.0.0.0/8", False), ("::/1", False), ("junk", False)],
)
def test_is_default_route(dst: str, expected: bool) -> None:
    assert is_default_route({"dst": dst}) is expected


# Hypothesis: every merged ips[].interface points at the interface (same name) the original pointed to.
names = st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=6)


@st.composite
def attachment_lists(draw: Any) -> list[AttachmentResult]:
    out: list[AttachmentResult] = []
    used: set[str] = set()
    for n in range(draw(st.integers(0, 5))):
        ifnames = draw(st.lists(names.filter(lambda s: s not in used), max_size=4, unique=True))
        used.update(ifnames)
        ips: list[dict[str, Any]] = []
        for k in range(draw(st.integers(0, 5))):
            ip: dict[str, Any] = {"address": f"10.{n}.{k}.1/24"}
            if ifnames and draw(st.booleans()):
                ip["interface"] = draw(st.integers(0, len(ifnames) - 1))
            ips.append(ip)
        result: dict[str, Any] = {"cniVersion": "1.1.0", "interfaces": [iface(x) for x in ifnames], "ips": ips}
        out.append(AttachmentResult(f"ns/n{n}", f"net{n}", result, n == 0, n == 0))
    return out


@settings(max_examples=200, deadline=None)
@given(attachment_lists())
def test_merge_reindexing_property(atts: list[AttachmentResult]) -> None:
    merged = merge_results(atts)
    expected_ifaces = [i for a in atts for i in a.result["interfaces"]]
    assert merged.get("interfaces", []) == expected_ifaces
    expected: list[tuple[str, str | None]] = []
    for a in atts:
        for ip in a.result["ips"]:
            idx = ip.get("interface")
            expected.append((ip["address"], None if idx is None else a.result["interfaces"][idx]["name"]))
    got = [
        (ip["address"], merged["interfaces"][ip["interface"]]["name"] if "interface" in ip else None)
        for ip in merged.get("ips", [])
    ]
    assert got == expected


# ---------------------------------------------------------------- network_status (R17-R23)


def test_r17_r19_status_one_entry_per_sandbox_interface() -> None:
    status = network_status([cluster(), secondary()])
    assert status == [
        {
            "name": "cluster-net",
            "interface": "eth0",
            "ips": ["10.0.0.5", "fd00::5"],
            "mac": "02:00:00:00:00:01",
            "mtu": 1450,
            "default": True,
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
            "gateway": ["10.0.0.1", "fd00::1"],
        },
        {
            "name": "pods/macvlan",
            "interface": "net1",
            "ips": ["192.168.1.7"],
            "mac": "02:00:00:00:01:01",
            "default": False,
            "dns": {"nameservers": ["192.168.1.53"]},
            "gateway": ["192.168.1.1"],
        },
    ]


def test_r16_same_nad_twice_two_status_entries() -> None:
    status = network_status([cluster(), secondary(ifname="net1"), secondary(ifname="net2")])
    assert [(e["name"], e["interface"]) for e in status] == [
        ("cluster-net", "eth0"),
        ("pods/macvlan", "net1"),
        ("pods/macvlan", "net2"),
    ]


def test_r20_exactly_one_default_follows_default_route_owner() -> None:
    c = cluster()
    c.is_default = False
    status = network_status([c, secondary(ifname="net1"), secondary(name="pods/gw", ifname="net2", default=True)])
    assert [e["default"] for e in status] == [False, False, True]
    assert status[2]["name"] == "pods/gw"


def test_r20_only_one_default_even_if_several_claim_it() -> None:
    status = network_status([cluster(), secondary(default=True)])
    assert [e["default"] for e in status] == [True, False]


def test_r20_default_on_interface_named_ifname_when_several_sandbox_interfaces() -> None:
    att = AttachmentResult(
        status_name="pods/multi",
        ifname="net1",
        is_default=True,
        cluster=True,
        result={
            "interfaces": [iface("net1-peer"), iface("net1", "02:00:00:00:00:09")],
            "ips": [{"address": "10.9.0.2/24", "interface": 1}, {"address": "10.8.0.2/24", "interface": 0}],
        },
    )
    status = network_status([att])
    assert [(e["interface"], e["default"], e["ips"]) for e in status] == [
        ("net1-peer", False, ["10.8.0.2"]),
        ("net1", True, ["10.9.0.2"]),
    ]
    # without an interface named ifname, the first sandbox interface is the default one
    att.ifname = "other"
    assert [e["default"] for e in network_status([att])] == [True, False]


def test_r19_ips_without_matching_index_not_listed_on_sandbox_interface() -> None:
    s = secondary()
    s.result["ips"] = [{"address": "192.168.1.7/24"}, {"address": "192.168.1.8/24", "interface": 0}]
    (entry,) = network_status([s])
    assert entry["ips"] == ["192.168.1.8"]
    assert "gateway" not in entry


def test_r17_result_without_sandbox_interface_gets_one_entry() -> None:
    ipam_only = AttachmentResult(
        status_name="pods/ipam",
        ifname="net3",
        is_default=False,
        cluster=False,
        result={
            "interfaces": [iface("host-side", "aa:bb:cc:dd:ee:ff", sandbox="")],
            "ips": [{"address": "10.5.0.3/16", "gateway": "10.5.0.1"}, {"address": "fd05::3/64", "interface": 0}],
            "dns": {},
        },
    )
    (entry,) = network_status([ipam_only])
    assert entry == {
        "name": "pods/ipam",
        "interface": "net3",
        "ips": ["10.5.0.3", "fd05::3"],
        "default": False,
        "gateway": ["10.5.0.1"],
    }


def test_r17_status_device_info_on_attachment_interface() -> None:
    s = secondary()
    s.device_info = {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.1"}}
    (entry,) = network_status([s])
    assert entry["device-info"] == s.device_info
    assert entry["device-info"] is not s.device_info


def test_status_empty() -> None:
    assert network_status([]) == []


# ---------------------------------------------------------------- primary_result


def test_primary_result_is_cluster_result_copy() -> None:
    c = cluster()
    got = primary_result([secondary(), c])
    assert got == c.result
    got["interfaces"].clear()
    assert c.result["interfaces"]


def test_primary_result_without_cluster_attachment() -> None:
    with pytest.raises(ValueError):
        primary_result([secondary()])


def test_interface_result_is_one_attachments_part_of_a_merged_result() -> None:
    """DEL's prevResult for an attachment recomputed after its journal was lost (issue 9, defect 7)."""
    from metaplug.merge import interface_result

    merged = {"cniVersion": "1.0.0", "interfaces": [
        {"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/p"},
        {"name": "net1", "sandbox": "/run/netns/p", "mac": "02:00:00:00:00:01"}],
        "ips": [{"address": "10.88.0.2/24", "interface": 2}, {"address": "10.99.0.2/24", "interface": 3},
                {"address": "fd00::2/64", "interface": 3}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}]}
    part = interface_result(merged, "net1")
    assert part == {"cniVersion": "1.1.0", "interfaces": [merged["interfaces"][3]],
                    "ips": [{"address": "10.99.0.2/24", "interface": 0}, {"address": "fd00::2/64", "interface": 0}]}
    assert interface_result(merged, "net9") is None
    assert interface_result({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.2/24"}}, "eth0") is None
    assert interface_result({"cniVersion": "bogus"}, "eth0") is None
