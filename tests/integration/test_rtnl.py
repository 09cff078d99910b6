"""metaplug.cni.rtnl (the stdlib rtnetlink client of CHECK, the bundled delegates and R13) against real namespaces:
every request it makes does what iproute2 then shows, and kernel refusals surface as OSError with the right errno."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
from collections.abc import Iterator

import pytest
from metaplug_delegates import _netlink as nl

from metaplug.cni import ns, rtnl
from metaplug.cni.errors import INVALID_ENVIRONMENT, CniError
from metaplug.netns import inspect_interfaces, run_in_netns
from tests.helpers.netns import Netns, NetnsFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def client(pod: Netns) -> Iterator[rtnl.Rtnl]:
    """A client whose socket was made inside `pod` (as the delegates make theirs)."""
    with nl.netns(pod.path) as made:
        yield made


def link_json(netns: Netns, name: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(netns.exec(["ip", "-d", "-j", "link", "show", "dev", name]).stdout)
    return data[0]


def test_rtnl_matches_ip_command(pod: Netns) -> None:
    pod.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    pod.ip("link", "set", "va", "address", "02:aa:bb:cc:dd:01")
    pod.ip("addr", "add", "10.7.7.7/24", "dev", "va")
    pod.ip("addr", "add", "10.7.8.7/16", "dev", "va")
    pod.ip("addr", "add", "fd00:7::7/64", "dev", "va", "nodad")
    pod.ip("addr", "add", "10.9.9.1", "peer", "10.9.9.2", "dev", "vb")  # point-to-point: IFA_LOCAL is ours
    seen = inspect_interfaces(pod.path)
    expected = {link["ifname"]: link for link in pod.ip_json("addr", "show")}
    assert set(seen) == set(expected) == {"lo", "va", "vb"}
    for name, link in expected.items():
        assert seen[name]["mac"] == link["address"]
        assert seen[name]["index"] == link["ifindex"]
        assert seen[name]["addresses"] == {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
    assert "10.9.9.1/32" in seen["vb"]["addresses"]
    assert {"10.7.7.7/24", "10.7.8.7/16", "fd00:7::7/64"} <= seen["va"]["addresses"]


def test_rtnl_lists_many_links_across_several_messages(pod: Netns) -> None:
    """A dump larger than one recv() buffer is read to NLMSG_DONE."""
    for i in range(60):
        pod.ip("link", "add", f"m{i}a", "type", "veth", "peer", "name", f"m{i}b")
    names = run_in_netns(pod.path, lambda: {name for name, _ in rtnl.links().values()})
    assert len(names) == 121


def test_bridge_create_get_set_up_and_delete(pod: Netns, client: rtnl.Rtnl) -> None:
    client.create_bridge("tbr0", mtu=1300)
    link = client.link("tbr0")
    assert link is not None and link.kind == "bridge" and link.mtu == 1300 and not link.up
    shown = link_json(pod, "tbr0")
    assert (link.ifindex, link.mac, link.mtu) == (shown["ifindex"], shown["address"], shown["mtu"])
    assert client.link(index=link.ifindex) == link
    client.set_link(link.ifindex, up=True)
    assert "UP" in link_json(pod, "tbr0")["flags"]  # type: ignore[operator]
    up = client.link("tbr0")
    assert up is not None and up.up
    with pytest.raises(OSError) as exists:
        client.create_bridge("tbr0")
    assert exists.value.errno == errno.EEXIST
    client.set_link(link.ifindex, up=False)
    assert "UP" not in link_json(pod, "tbr0")["flags"]  # type: ignore[operator]
    client.delete_link(link.ifindex)
    assert not pod.has_link("tbr0")
    assert client.link("tbr0") is None and client.link(index=link.ifindex) is None  # ENODEV: None
    with pytest.raises(OSError) as gone:
        client.delete_link(link.ifindex)
    assert gone.value.errno == errno.ENODEV


def test_veth_with_its_peer_born_in_another_namespace(node: Netns, pod: Netns) -> None:
    with nl.netns(node.path) as host, nl.netns_fd(pod.path) as fd:
        host.create_veth("vhost0", "eth9", peer_netns_fd=fd, mtu=1400, peer_mac="02:11:22:33:44:55")
        end = host.link("vhost0")
    assert end is not None and end.kind == "veth" and end.mtu == 1400 and end.peer_netnsid is not None
    peer = link_json(pod, "eth9")
    assert peer["mtu"] == 1400 and peer["address"] == "02:11:22:33:44:55"
    assert peer["ifindex"] == end.peer and not pod.has_link("vhost0") and not node.has_link("eth9")


def test_set_master_and_hairpin_on_a_bridge_port(pod: Netns, client: rtnl.Rtnl) -> None:
    client.create_bridge("tbr1")
    client.create_veth("pa", "pb")
    bridge, port = client.link("tbr1"), client.link("pa")
    assert bridge is not None and port is not None
    client.set_link(port.ifindex, master=bridge.ifindex, up=True)
    client.set_hairpin(port.ifindex)
    shown = link_json(pod, "pa")
    assert shown["master"] == "tbr1"
    assert shown["linkinfo"]["info_slave_data"]["hairpin"] is True  # type: ignore[index]
    attached = client.link("pa")
    assert attached is not None and attached.master == bridge.ifindex and attached.up
    client.set_hairpin(port.ifindex, on=False)
    assert link_json(pod, "pa")["linkinfo"]["info_slave_data"]["hairpin"] is False  # type: ignore[index]
    with pytest.raises(OSError) as no_port:  # not a bridge port: the bridge refuses
        client.set_hairpin(bridge.ifindex)
    assert no_port.value.errno in (errno.EOPNOTSUPP, errno.EINVAL)


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru"])
def test_macvlan_on_a_master_born_in_the_container(node: Netns, pod: Netns, netns_factory: NetnsFactory,
                                                   mode: str) -> None:
    netns_factory.veth_uplink(node, "up0")
    with nl.netns(node.path) as host, nl.netns_fd(pod.path) as fd:
        master = host.link("up0")
        assert master is not None
        host.create_macvlan("mv0", master.ifindex, mode, netns_fd=fd, mtu=1280, mac="02:00:00:00:aa:01")
        with pytest.raises(OSError) as unknown_master:
            host.create_macvlan("mv1", 99999, mode, netns_fd=fd)
        assert unknown_master.value.errno == errno.ENODEV
    shown = link_json(pod, "mv0")
    assert shown["linkinfo"]["info_data"]["mode"] == mode  # type: ignore[index]
    assert shown["mtu"] == 1280
    if mode != "passthru":  # passthru takes the master's MAC
        assert shown["address"] == "02:00:00:00:aa:01"
    with nl.netns(pod.path) as cont:
        link = cont.link("mv0")
    assert link is not None and link.kind == "macvlan" and link.macvlan_mode == mode and link.mtu == 1280


def test_addresses_add_dump_and_eexist(pod: Netns, client: rtnl.Rtnl) -> None:
    client.create_veth("aa", "ab")
    link = client.link("aa")
    assert link is not None
    client.set_link(link.ifindex, up=True)
    v4, v6 = ipaddress.ip_interface("10.31.0.2/24"), ipaddress.ip_interface("fd00:31::2/64")
    client.add_address(link.ifindex, v4)
    client.add_address(link.ifindex, v6)
    with pytest.raises(OSError) as exists:
        client.add_address(link.ifindex, v4)
    assert exists.value.errno == errno.EEXIST
    mine = client.addresses(link.ifindex)
    assert {a.interface for a in mine} >= {v4, v6} and {a.ifindex for a in mine} == {link.ifindex}
    assert set(pod.addresses("aa")) == {"10.31.0.2/24", "fd00:31::2/64"}
    shown = pod.ip_json("addr", "show", "dev", "aa")[0]["addr_info"]
    v6_info = next(a for a in shown if a["local"] == "fd00:31::2")
    assert "tentative" not in v6_info and v6_info.get("nodad") is True  # IFA_F_NODAD: usable at once
    assert [a.interface for a in client.addresses(family=socket.AF_INET) if a.ifindex == link.ifindex] == [v4]
    with pytest.raises(OSError) as no_dev:
        client.add_address(99999, v4)
    assert no_dev.value.errno == errno.ENODEV


def test_routes_add_dump_delete_with_table_metrics_and_priority(pod: Netns, client: rtnl.Rtnl) -> None:
    client.create_veth("ra", "rb")
    link = client.link("ra")
    assert link is not None
    client.set_link(link.ifindex, up=True)
    client.add_address(link.ifindex, ipaddress.ip_interface("10.32.0.2/24"))
    client.add_address(link.ifindex, ipaddress.ip_interface("fd00:32::2/64"))
    net = ipaddress.ip_network
    default = rtnl.RouteSpec(dst=net("0.0.0.0/0"), gateway="10.32.0.1", oif=link.ifindex)
    client.add_route(default)
    client.add_route(rtnl.RouteSpec(dst=net("10.200.0.0/16"), gateway="10.32.0.1", oif=link.ifindex, priority=7,
                                    mtu=1300, advmss=1200))
    client.add_route(rtnl.RouteSpec(dst=net("10.201.0.0/16"), oif=link.ifindex, table=1000, scope=253))  # link
    client.add_route(rtnl.RouteSpec(dst=net("fd00:99::/64"), gateway="fd00:32::1", oif=link.ifindex, table=100))
    with pytest.raises(OSError) as exists:
        client.add_route(default)
    assert exists.value.errno == errno.EEXIST

    shown = {r["dst"]: r for r in pod.routes()}
    assert shown["default"]["gateway"] == "10.32.0.1" and shown["default"]["dev"] == "ra"
    assert shown["10.200.0.0/16"]["metric"] == 7
    assert shown["10.200.0.0/16"]["metrics"] == [{"mtu": 1300, "advmss": 1200}]
    in_1000 = pod.ip_json("route", "show", "table", "1000")
    assert [(r["dst"], r["scope"]) for r in in_1000] == [("10.201.0.0/16", "link")]
    assert [r["dst"] for r in pod.ip_json("-6", "route", "show", "table", "100")] == ["fd00:99::/64"]

    main = client.routes(socket.AF_INET)
    assert {(str(r.dst), r.gateway, r.oif) for r in main} >= {("0.0.0.0/0", "10.32.0.1", link.ifindex),
                                                             ("10.200.0.0/16", "10.32.0.1", link.ifindex)}
    assert all(r.table == rtnl.RT_TABLE_MAIN for r in main)
    assert next(r for r in main if str(r.dst) == "10.200.0.0/16").priority == 7
    assert [(str(r.dst), r.table, r.scope) for r in client.routes(socket.AF_INET, 1000)] == [
        ("10.201.0.0/16", 1000, 253)]
    assert [(str(r.dst), r.gateway) for r in client.routes(socket.AF_INET6, 100)] == [("fd00:99::/64", "fd00:32::1")]
    assert {r.table for r in client.routes(socket.AF_INET, None)} >= {rtnl.RT_TABLE_MAIN, 1000, 255}  # every table

    client.delete_route(default)
    assert "default" not in {r["dst"] for r in pod.routes()}
    pod.ip("route", "add", "10.202.0.0/16", "via", "10.32.0.1", "dev", "ra")  # proto boot: any protocol matches
    (theirs,) = [r for r in client.routes(socket.AF_INET) if str(r.dst) == "10.202.0.0/16"]
    client.delete_route(rtnl.RouteSpec(dst=theirs.dst, gateway=theirs.gateway, oif=theirs.oif))
    assert "10.202.0.0/16" not in {r["dst"] for r in pod.routes()}
    with pytest.raises(OSError) as gone:
        client.delete_route(default)
    assert gone.value.errno == errno.ESRCH


def test_netnsid_of_a_peer_namespace(node: Netns, pod: Netns) -> None:
    """rtnl.netnsid answers what a veth's IFLA_LINK_NETNSID holds."""
    with nl.netns(node.path) as host, nl.netns_fd(pod.path) as fd:
        host.create_veth("vid0", "eth0", peer_netns_fd=fd)
        end = host.link("vid0")
        assert end is not None
        assert host.netnsid(fd) == end.peer_netnsid is not None


def test_one_socket_per_namespace_sees_only_its_namespace(node: Netns, pod: Netns) -> None:
    node.ip("link", "add", "onlynode", "type", "bridge")
    with nl.netns(node.path) as in_node, nl.netns(pod.path) as in_pod:
        assert in_node.link("onlynode") is not None and in_pod.link("onlynode") is None
        assert {link.name for link in in_pod.links()} == {"lo"}


def test_a_path_that_is_no_netns_is_code_4(tmp_path: object) -> None:
    for path in ("/nonexistent/netns", "/dev/null", "/proc/self/ns/uts"):
        with pytest.raises(CniError) as bad, nl.netns(path):
            pass
        assert bad.value.code == INVALID_ENVIRONMENT
    assert not ns.is_netns("/dev/null")
