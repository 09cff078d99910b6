"""Conformance of the bundled `mp-*` delegates, run side by side with their Debian reference counterparts.

Every test that is parametrised over `flavor` runs the same steps against mp-X and against the reference X
(/usr/lib/cni, containernetworking-plugins 1.1.1, which speaks CNI up to 1.0.0), in real namespaces: the plugins run
inside the test's node namespace (`node.exec`), the container is the `pod` namespace. So a passing suite shows that
both behave alike. Tests marked "mp only" cover what the reference version lacks (1.1.0 verbs STATUS and GC, the
idempotent repeated ADD of host-local) or where mp is deliberately stricter; each says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from metaplug_delegates import CHECK_FAILED, IFNAME_EXISTS, RANGE_EXHAUSTED, SUPPORTED_VERSIONS

from metaplug.cni.errors import INCOMPATIBLE_VERSION, INVALID_ENVIRONMENT, NOT_AVAILABLE
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory, metaplug_env, run

pytestmark = pytest.mark.integration

REF_DIR = "/usr/lib/cni"
SUBNET = "10.66.0.0/24"
GATEWAY = "10.66.0.1"
STATIC_ADDRESS = "10.66.0.5/24"
EXTRA_ROUTE = "10.200.0.0/16"
BRIDGE = "mpbr0"
UPLINK = "up0"
MP_PLUGINS = ["bridge", "macvlan", "loopback", "host-local", "static"]  # tuning has no mp- counterpart


@dataclass(frozen=True)
class Flavor:
    """Which family of plugins a test runs: the bundled `mp-*` ones or the reference ones."""

    name: str

    @property
    def is_mp(self) -> bool:
        return self.name == "mp"

    def type(self, base: str) -> str:
        """The plugin `type` for a reference plugin name (bridge -> mp-bridge)."""
        return f"mp-{base}" if self.is_mp and base in MP_PLUGINS else base

    @property
    def cni_path(self) -> str:
        """mp-bridge must find mp-host-local in CNI_PATH; both need /usr/lib/cni for tuning."""
        return f"{VENV_BIN}:{REF_DIR}" if self.is_mp else REF_DIR

    def binary(self, base: str) -> str:
        kind = self.type(base)
        return str(VENV_BIN / kind) if kind.startswith("mp-") else os.path.join(REF_DIR, kind)

    @property
    def versions(self) -> tuple[str, ...]:
        return SUPPORTED_VERSIONS if self.is_mp else ("0.3.0", "0.3.1", "0.4.0", "1.0.0")


MP, REF = Flavor("mp"), Flavor("ref")


@dataclass
class Reply:
    rc: int
    out: dict[str, Any] | None
    stderr: str

    def ok(self) -> dict[str, Any] | None:
        assert self.rc == 0, f"expected success, got rc={self.rc} out={self.out} stderr={self.stderr}"
        return self.out

    def result(self) -> dict[str, Any]:
        out = self.ok()
        assert out is not None, "expected a result on stdout"
        return out

    def error(self) -> dict[str, Any]:
        assert self.rc != 0, f"expected a failure, got success: {self.out}"
        assert self.out is not None and isinstance(self.out.get("code"), int), f"no JSON error: {self.stderr}"
        return self.out


def cni(node: Netns, flavor: Flavor, base: str, command: str, conf: dict[str, Any], *, netns: str,
        cid: str = "c1", ifname: str = "eth0", args: str = "", extra_env: dict[str, str] | None = None) -> Reply:
    """Run one plugin call inside the node namespace with exactly the CNI env a runtime would give."""
    env = metaplug_env({"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
                        "CNI_ARGS": args, "CNI_PATH": flavor.cni_path, **(extra_env or {})})
    proc = node.exec([flavor.binary(base)], input=json.dumps(conf).encode(), env=env, check=False)
    text = proc.stdout.decode().strip()
    return Reply(proc.returncode, json.loads(text) if text else None, proc.stderr.decode())


def with_prev(conf: dict[str, Any], prev: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(conf)
    if prev is not None:
        out["prevResult"] = prev
    return out


@pytest.fixture(params=[MP, REF], ids=lambda f: f.name)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    fl: Flavor = request.param
    for base in ("bridge", "host-local"):
        if not os.access(fl.binary(base), os.X_OK):
            pytest.skip(f"{fl.binary(base)} not installed")
    return fl


# --- configs ----------------------------------------------------------------------------------------------------------


def ipam_conf(flavor: Flavor, kind: str, data_dir: Path, subnet: str = SUBNET) -> dict[str, Any]:
    if kind == "host-local":
        # The route names its gw: the reference bridge's CHECK cannot verify a route without one (it adds it via
        # the gateway, then looks for it without).
        return {"type": flavor.type("host-local"), "dataDir": str(data_dir),
                "ranges": [[{"subnet": subnet, "gateway": GATEWAY}]], "routes": [{"dst": EXTRA_ROUTE, "gw": GATEWAY}]}
    return {"type": flavor.type("static"), "addresses": [{"address": STATIC_ADDRESS, "gateway": GATEWAY}],
            "routes": [{"dst": EXTRA_ROUTE, "gw": GATEWAY}], "dns": {"nameservers": ["10.66.0.53"]}}


def main_conf(flavor: Flavor, plugin: str, ipam: dict[str, Any], version: str = "1.0.0") -> dict[str, Any]:
    conf: dict[str, Any] = {"cniVersion": version, "name": "mpnet", "type": flavor.type(plugin), "ipam": ipam}
    if plugin == "bridge":
        conf.update({"bridge": BRIDGE, "isDefaultGateway": True, "mtu": 1400})
    else:
        conf.update({"master": UPLINK, "mode": "bridge"})
    return conf


def expected_address(ipam_kind: str) -> str:
    return "10.66.0.2/24" if ipam_kind == "host-local" else STATIC_ADDRESS  # first free address after the gateway


def allocations(data_dir: Path, network: str = "mpnet") -> dict[str, bytes]:
    net = data_dir / network
    if not net.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in net.iterdir() if p.name[0].isdigit() or ":" in p.name}


def sandbox_index(result: dict[str, Any], ifname: str = "eth0") -> int:
    for idx, iface in enumerate(result["interfaces"]):
        if iface["name"] == ifname and iface.get("sandbox"):
            return idx
    raise AssertionError(f"no sandbox interface {ifname} in {result}")


def link_detail(ns: Netns, ifname: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(ns.exec(["ip", "-d", "-j", "link", "show", "dev", ifname]).stdout)
    return data[0]


def host_veths(node: Netns) -> list[str]:
    return [name for name, link in node.links().items() if link.get("master") == BRIDGE]


def has_route(ns: Netns, dst: str, gw: str) -> bool:
    return any(r.get("dst") == dst and r.get("gateway") == gw for r in ns.routes())


ATTACHMENTS = [("bridge", "host-local"), ("bridge", "static"), ("macvlan", "host-local"), ("macvlan", "static")]


@dataclass
class Attach:
    """One main plugin + IPAM setup in a fresh node/pod pair."""

    flavor: Flavor
    plugin: str
    ipam_kind: str
    node: Netns
    pod: Netns
    data_dir: Path
    conf: dict[str, Any]

    def call(self, command: str, conf: dict[str, Any] | None = None, netns: str | None = None,
             ifname: str = "eth0") -> Reply:
        return cni(self.node, self.flavor, self.plugin, command, conf if conf is not None else self.conf,
                   netns=self.pod.path if netns is None else netns, ifname=ifname)


@pytest.fixture(params=ATTACHMENTS, ids=lambda a: f"{a[0]}+{a[1]}")
def attach(request: pytest.FixtureRequest, flavor: Flavor, node: Netns, pod: Netns,
           netns_factory: NetnsFactory, tmp_path: Path) -> Iterator[Attach]:
    plugin, ipam_kind = request.param
    if plugin == "macvlan":
        netns_factory.veth_uplink(node, UPLINK)
    data_dir = tmp_path / "ipam"
    conf = main_conf(flavor, plugin, ipam_conf(flavor, ipam_kind, data_dir))
    yield Attach(flavor, plugin, ipam_kind, node, pod, data_dir, conf)


# --- main plugins: bridge and macvlan, each with host-local and with static -------------------------------------------


def test_add_creates_interface_with_address_and_routes(attach: Attach) -> None:
    """cni.md 10, 27, 36: ADD makes CNI_IFNAME in the pod with the IPAM address and routes; the result names the
    sandbox interface with its real MAC and points ips[].interface at it."""
    result = attach.call("ADD").result()
    pod, want = attach.pod, expected_address(attach.ipam_kind)
    assert result["cniVersion"] == "1.0.0"
    assert pod.addresses("eth0") == [want]
    assert has_route(pod, EXTRA_ROUTE, GATEWAY)
    idx = sandbox_index(result)
    iface = result["interfaces"][idx]
    assert iface["sandbox"] == pod.path
    assert iface["mac"] == pod.links()["eth0"]["address"]
    assert [(ip["address"], ip["gateway"], ip["interface"]) for ip in result["ips"]] == [(want, GATEWAY, idx)]
    assert any(r["dst"] == EXTRA_ROUTE for r in result["routes"])
    detail = link_detail(pod, "eth0")
    if attach.plugin == "bridge":
        assert detail["linkinfo"]["info_kind"] == "veth"
        assert detail["mtu"] == 1400
        assert has_route(pod, "default", GATEWAY)  # isDefaultGateway
        assert f"{GATEWAY}/24" in attach.node.addresses(BRIDGE)  # isGateway (implied)
        (veth,) = host_veths(attach.node)
        port = json.loads(attach.node.exec(["bridge", "-d", "-j", "link", "show", "dev", veth]).stdout)[0]
        assert port["hairpin"] is False  # hairpinMode defaults to off
        assert [i["name"] for i in result["interfaces"][:2]] == [BRIDGE, veth]
    else:
        assert detail["linkinfo"]["info_kind"] == "macvlan"
        assert detail["linkinfo"]["info_data"]["mode"] == "bridge"
        assert len(result["interfaces"]) == 1


def test_check_passes_then_fails_after_address_deleted(attach: Attach) -> None:
    """cni.md 12: CHECK verifies what ADD made against prevResult; deleting the address makes it fail."""
    prev = attach.call("ADD").result()
    attach.call("CHECK", with_prev(attach.conf, prev)).ok()
    attach.pod.ip("addr", "del", expected_address(attach.ipam_kind), "dev", "eth0")
    err = attach.call("CHECK", with_prev(attach.conf, prev)).error()
    if attach.flavor.is_mp:
        assert err["code"] == CHECK_FAILED and "missing" in err["msg"]


def test_del_twice_succeeds_and_cleans_up(attach: Attach) -> None:
    """cni.md 11: DEL removes the interface and releases the address; a second DEL and a DEL whose namespace is
    gone succeed too."""
    prev = attach.call("ADD").result()
    conf = with_prev(attach.conf, prev)
    attach.call("DEL", conf).ok()
    assert not attach.pod.has_link("eth0")
    assert allocations(attach.data_dir) == {}
    if attach.plugin == "bridge":
        assert host_veths(attach.node) == []
    attach.call("DEL", conf).ok()
    attach.call("DEL", conf, netns="/var/run/netns/mpt-gone-for-good").ok()


def test_add_fails_when_ifname_exists_and_leaves_it_alone(attach: Attach) -> None:
    """cni.md 10: ADD fails when CNI_IFNAME exists in the pod (mp: code 130); nothing is allocated or changed."""
    attach.pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
    err = attach.call("ADD").error()
    if attach.flavor.is_mp:
        assert err["code"] == IFNAME_EXISTS
    assert link_detail(attach.pod, "eth0")["linkinfo"]["info_kind"] == "veth"
    assert allocations(attach.data_dir) == {}


def test_bridge_dual_stack(flavor: Flavor, node: Netns, pod: Netns, tmp_path: Path) -> None:
    """Two range sets (IPv4 + IPv6) give one address each on the same interface, a default route per family
    (isDefaultGateway), and CHECK passes."""
    ipam = ipam_conf(flavor, "host-local", tmp_path)
    ipam["ranges"] = [[{"subnet": SUBNET}], [{"subnet": "fd66::/64"}]]
    conf = main_conf(flavor, "bridge", ipam)
    result = cni(node, flavor, "bridge", "ADD", conf, netns=pod.path).result()
    assert [ip["address"] for ip in result["ips"]] == ["10.66.0.2/24", "fd66::2/64"]
    assert sorted(pod.addresses("eth0")) == ["10.66.0.2/24", "fd66::2/64"]
    assert any(r.get("dst") == "default" and r.get("gateway") == "fd66::1" for r in pod.routes("-6"))
    cni(node, flavor, "bridge", "CHECK", with_prev(conf, result), netns=pod.path).ok()


# --- failure paths of the main plugins --------------------------------------------------------------------------------


@pytest.mark.parametrize("plugin", ["bridge", "macvlan"])
def test_add_with_missing_netns_is_a_clear_error(flavor: Flavor, plugin: str, node: Netns,
                                                 netns_factory: NetnsFactory, tmp_path: Path) -> None:
    """A CNI_NETNS that does not exist fails ADD (mp: code 4 naming CNI_NETNS) and allocates nothing."""
    netns_factory.veth_uplink(node, UPLINK)
    conf = main_conf(flavor, plugin, ipam_conf(flavor, "host-local", tmp_path))
    err = cni(node, flavor, plugin, "ADD", conf, netns="/var/run/netns/mpt-no-such-ns").error()
    if flavor.is_mp:
        assert err["code"] == INVALID_ENVIRONMENT and "CNI_NETNS" in err["details"]
    assert allocations(tmp_path) == {}


def test_add_failure_after_ipam_releases_the_address_and_removes_links(flavor: Flavor, node: Netns, pod: Netns,
                                                                       tmp_path: Path) -> None:
    """A failure after IPAM allocated (a route via an unreachable gateway) releases the address (IPAM DEL) and
    leaves no interface behind."""
    ipam = ipam_conf(flavor, "host-local", tmp_path)
    ipam["routes"] = [{"dst": EXTRA_ROUTE, "gw": "192.0.2.1"}]
    cni(node, flavor, "bridge", "ADD", main_conf(flavor, "bridge", ipam), netns=pod.path).error()
    assert allocations(tmp_path) == {}
    if flavor.is_mp:  # the reference 1.1.1 bridge leaves the veth pair behind here
        assert not pod.has_link("eth0")
        assert host_veths(node) == []


def test_bridge_hairpin_mode_on_request(flavor: Flavor, node: Netns, pod: Netns, tmp_path: Path) -> None:
    """hairpinMode: true turns hairpin on for the host end of the veth (it is off by default, see above)."""
    conf = main_conf(flavor, "bridge", ipam_conf(flavor, "host-local", tmp_path))
    conf["hairpinMode"] = True
    cni(node, flavor, "bridge", "ADD", conf, netns=pod.path).ok()
    (veth,) = host_veths(node)
    assert json.loads(node.exec(["bridge", "-d", "-j", "link", "show", "dev", veth]).stdout)[0]["hairpin"] is True


def test_macvlan_mac_capability(flavor: Flavor, node: Netns, pod: Netns, netns_factory: NetnsFactory,
                                tmp_path: Path) -> None:
    """cni.md 34: the `mac` capability (runtimeConfig.mac) sets the macvlan's MAC, and the result says so."""
    netns_factory.veth_uplink(node, UPLINK)
    conf = main_conf(flavor, "macvlan", ipam_conf(flavor, "static", tmp_path))
    conf["runtimeConfig"] = {"mac": "02:00:00:66:00:05"}
    result = cni(node, flavor, "macvlan", "ADD", conf, netns=pod.path).result()
    assert pod.links()["eth0"]["address"] == "02:00:00:66:00:05"
    assert result["interfaces"][0]["mac"] == "02:00:00:66:00:05"


def test_chain_bridge_then_tuning(flavor: Flavor, node: Netns, pod: Netns, tmp_path: Path) -> None:
    """cni.md 19-21: the list [bridge, tuning] works: tuning gets the bridge's result as prevResult and changes the
    MAC and MTU; CHECK of both with the final result passes; DEL in reverse order, twice, succeeds."""
    bridge_conf = main_conf(flavor, "bridge", ipam_conf(flavor, "host-local", tmp_path))
    tuning_conf = {"cniVersion": "1.0.0", "name": "mpnet", "type": "tuning", "mac": "02:00:00:66:00:99", "mtu": 1300,
                   "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"},
                   "dataDir": str(tmp_path / "tuning")}  # else tuning keeps its backups in the host's /run/cni
    first = cni(node, flavor, "bridge", "ADD", bridge_conf, netns=pod.path).result()
    final = cni(node, flavor, "tuning", "ADD", with_prev(tuning_conf, first), netns=pod.path).result()
    link = pod.links()["eth0"]
    assert (link["address"], link["mtu"]) == ("02:00:00:66:00:99", 1300)
    assert final["interfaces"][sandbox_index(final)]["mac"] == "02:00:00:66:00:99"
    assert final["ips"] == first["ips"]
    cni(node, flavor, "bridge", "CHECK", with_prev(bridge_conf, final), netns=pod.path).ok()
    cni(node, flavor, "tuning", "CHECK", with_prev(tuning_conf, final), netns=pod.path).ok()
    for _ in range(2):
        cni(node, flavor, "tuning", "DEL", with_prev(tuning_conf, final), netns=pod.path).ok()
        cni(node, flavor, "bridge", "DEL", with_prev(bridge_conf, final), netns=pod.path).ok()
    assert not pod.has_link("eth0") and allocations(tmp_path) == {}


# --- loopback ---------------------------------------------------------------------------------------------------------


def test_loopback_up_check_down(flavor: Flavor, node: Netns, pod: Netns) -> None:
    """loopback: ADD brings lo up and reports it; CHECK passes, and fails once lo is down; DEL twice and DEL of a
    gone namespace succeed (cni.md 10-12)."""
    conf = {"cniVersion": "1.0.0", "name": "lo", "type": flavor.type("loopback")}
    pod.ip("link", "set", "lo", "down")
    result = cni(node, flavor, "loopback", "ADD", conf, netns=pod.path, ifname="lo").result()
    assert "UP" in pod.links()["lo"]["flags"]
    assert result["interfaces"][0]["name"] == "lo" and result["interfaces"][0]["sandbox"] == pod.path
    assert {"address": "127.0.0.1/8", "interface": 0} in result["ips"]
    cni(node, flavor, "loopback", "CHECK", with_prev(conf, result), netns=pod.path, ifname="lo").ok()
    if flavor.is_mp:  # mp only: CHECK also verifies prevResult's addresses; the reference checks just the flag
        pod.ip("addr", "del", "127.0.0.1/8", "dev", "lo")
        err = cni(node, flavor, "loopback", "CHECK", with_prev(conf, result), netns=pod.path, ifname="lo").error()
        assert err["code"] == CHECK_FAILED
        pod.ip("addr", "add", "127.0.0.1/8", "dev", "lo")
    pod.ip("link", "set", "lo", "down")
    cni(node, flavor, "loopback", "CHECK", with_prev(conf, result), netns=pod.path, ifname="lo").error()
    pod.ip("link", "set", "lo", "up")
    for _ in range(2):
        cni(node, flavor, "loopback", "DEL", conf, netns=pod.path, ifname="lo").ok()
        assert "UP" not in pod.links()["lo"]["flags"]
    cni(node, flavor, "loopback", "DEL", conf, netns="/var/run/netns/mpt-gone-for-good", ifname="lo").ok()


# --- host-local on its own --------------------------------------------------------------------------------------------


def hl_conf(flavor: Flavor, data_dir: Path, subnet: str = SUBNET, version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": "mpnet", "type": flavor.type("host-local"),
            "ipam": ipam_conf(flavor, "host-local", data_dir, subnet)}


def test_host_local_add_check_del(flavor: Flavor, node: Netns, pod: Netns, tmp_path: Path) -> None:
    """host-local: ADD allocates the first free address with the range's gateway and routes, stored in the
    reference layout; CHECK passes, and fails once the allocation is gone; DEL twice succeeds."""
    conf = hl_conf(flavor, tmp_path)
    result = cni(node, flavor, "host-local", "ADD", conf, netns=pod.path).result()
    assert result["ips"] == [{"address": "10.66.0.2/24", "gateway": GATEWAY}]
    assert result["routes"] == [{"dst": EXTRA_ROUTE, "gw": GATEWAY}]
    assert allocations(tmp_path) == {"10.66.0.2": b"c1\r\neth0"}
    assert (tmp_path / "mpnet" / "last_reserved_ip.0").read_text() == "10.66.0.2"
    cni(node, flavor, "host-local", "CHECK", with_prev(conf, result), netns=pod.path).ok()
    (tmp_path / "mpnet" / "10.66.0.2").unlink()
    cni(node, flavor, "host-local", "CHECK", with_prev(conf, result), netns=pod.path).error()
    (tmp_path / "mpnet" / "10.66.0.2").write_bytes(b"c1\r\neth0")
    for _ in range(2):
        cni(node, flavor, "host-local", "DEL", conf, netns=pod.path).ok()
        assert allocations(tmp_path) == {}


def test_host_local_30_concurrent_allocations_never_collide(flavor: Flavor, node: Netns, pod: Netns,
                                                            tmp_path: Path) -> None:
    """cni.md 23: the store is locked; 30 ADDs at once in one range get 30 different addresses."""
    conf = hl_conf(flavor, tmp_path)
    with ThreadPoolExecutor(max_workers=30) as pool:
        replies = list(pool.map(lambda n: cni(node, flavor, "host-local", "ADD", conf, netns=pod.path, cid=f"c{n}"),
                                range(30)))
    addresses = [reply.result()["ips"][0]["address"] for reply in replies]
    assert len(set(addresses)) == 30
    stored = allocations(tmp_path)
    assert len(stored) == 30
    assert {v.split(b"\r\n")[0] for v in stored.values()} == {f"c{n}".encode() for n in range(30)}


def test_host_local_exhaustion_is_a_clear_error(flavor: Flavor, node: Netns, pod: Netns, tmp_path: Path) -> None:
    """A /29 has 5 usable addresses after the gateway; the 6th ADD fails naming the range set (mp: code 132)."""
    conf = hl_conf(flavor, tmp_path, subnet="10.66.0.0/29")
    for n in range(5):
        cni(node, flavor, "host-local", "ADD", conf, netns=pod.path, cid=f"c{n}").ok()
    err = cni(node, flavor, "host-local", "ADD", conf, netns=pod.path, cid="c99").error()
    assert "no IP addresses available in range set: 10.66.0.1-10.66.0.6" in err["msg"]
    if flavor.is_mp:
        assert err["code"] == RANGE_EXHAUSTED
    assert len(allocations(tmp_path)) == 5


def test_host_local_ips_capability(flavor: Flavor, node: Netns, pod: Netns, tmp_path: Path) -> None:
    """cni.md 34: the `ips` capability asks for a given address; it is granted and stored."""
    conf = hl_conf(flavor, tmp_path)
    conf["runtimeConfig"] = {"ips": ["10.66.0.42/24"]}
    result = cni(node, flavor, "host-local", "ADD", conf, netns=pod.path).result()
    assert result["ips"][0]["address"] == "10.66.0.42/24"
    assert list(allocations(tmp_path)) == ["10.66.0.42"]
    err = cni(node, flavor, "host-local", "ADD", conf, netns=pod.path, cid="c2").error()  # taken by c1
    assert "10.66.0.42" in err["msg"] + err.get("details", "")


def test_host_local_repeated_add_returns_the_same_address(flavor: Flavor, node: Netns, pod: Netns,
                                                          tmp_path: Path) -> None:
    """cni.md 36 (mp only): a repeated ADD for the same containerID+ifname returns the address it already has.
    The reference 1.1.1 refuses it ("duplicate allocation is not allowed"); this test records the difference."""
    conf = hl_conf(flavor, tmp_path)
    first = cni(node, flavor, "host-local", "ADD", conf, netns=pod.path).result()
    again = cni(node, flavor, "host-local", "ADD", conf, netns=pod.path)
    if flavor.is_mp:
        assert again.result()["ips"] == first["ips"]
    else:
        assert "duplicate allocation is not allowed" in again.error()["msg"]
    assert len(allocations(tmp_path)) == 1


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_results_in_the_request_version(flavor: Flavor, version: str, node: Netns, pod: Netns,
                                        tmp_path: Path) -> None:
    """cni.md 27, 28, 30: the result comes in the config's cniVersion (0.x: ips[].version; 1.x: none)."""
    if version not in flavor.versions:
        pytest.skip(f"{flavor.name} does not speak {version}")
    conf = hl_conf(flavor, tmp_path, version=version)
    result = cni(node, flavor, "host-local", "ADD", conf, netns=pod.path).result()
    assert result["cniVersion"] == version
    assert ("version" in result["ips"][0]) == version.startswith("0.")
    lo = cni(node, flavor, "loopback", "ADD", {"cniVersion": version, "name": "lo", "type": flavor.type("loopback")},
             netns=pod.path, ifname="lo").result()
    assert lo["cniVersion"] == version and lo["interfaces"][0]["name"] == "lo"


# --- static on its own ------------------------------------------------------------------------------------------------


def test_static_add_check_del(flavor: Flavor, node: Netns, pod: Netns, tmp_path: Path) -> None:
    """static: ADD returns the configured address, routes and DNS; the `ips` capability replaces the address;
    CHECK passes with the matching prevResult and fails with another gateway; DEL twice succeeds."""
    conf = {"cniVersion": "1.0.0", "name": "mpnet", "type": flavor.type("static"),
            "ipam": ipam_conf(flavor, "static", tmp_path)}
    result = cni(node, flavor, "static", "ADD", conf, netns=pod.path).result()
    assert result["ips"] == [{"address": STATIC_ADDRESS, "gateway": GATEWAY}]
    assert result["routes"] == [{"dst": EXTRA_ROUTE, "gw": GATEWAY}]
    assert result["dns"]["nameservers"] == ["10.66.0.53"]
    cni(node, flavor, "static", "CHECK", with_prev(conf, result), netns=pod.path).ok()
    other_gw = dict(result, ips=[{"address": STATIC_ADDRESS, "gateway": "10.66.0.254"}])
    cni(node, flavor, "static", "CHECK", with_prev(conf, other_gw), netns=pod.path).error()
    other_ip = dict(result, ips=[{"address": "10.66.0.77/24", "gateway": GATEWAY}])
    if flavor.is_mp:  # mp only: the reference 1.1.1 static passes a prevResult that lacks the address altogether
        assert cni(node, flavor, "static", "CHECK", with_prev(conf, other_ip), netns=pod.path).error()["code"] == \
            CHECK_FAILED
    requested = dict(conf, runtimeConfig={"ips": ["10.66.0.9/24"]})
    assert cni(node, flavor, "static", "ADD", requested, netns=pod.path).result()["ips"][0]["address"] == \
        "10.66.0.9/24"
    for _ in range(2):
        cni(node, flavor, "static", "DEL", conf, netns=pod.path).ok()


# --- mp only: VERSION, version gates, 1.1.0 verbs ---------------------------------------------------------------------

@pytest.mark.parametrize("base", MP_PLUGINS)
def test_mp_version_and_unsupported_version(base: str) -> None:
    """cni.md 8, 15 (mp only): VERSION lists 0.3.0..1.1.0; a 0.2.0 config is code 1 naming the versions."""
    env = metaplug_env({"CNI_COMMAND": "VERSION"})
    reply = json.loads(run([MP.binary(base)], input=b'{"cniVersion":"1.1.0"}', env=env).stdout)
    assert reply == {"cniVersion": "1.1.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    env = metaplug_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0",
                        "CNI_PATH": MP.cni_path})
    proc = run([MP.binary(base)], input=b'{"cniVersion":"0.2.0","name":"n","type":"x"}', env=env, check=False)
    err = json.loads(proc.stdout)
    assert proc.returncode != 0 and err["code"] == INCOMPATIBLE_VERSION and "0.2.0" in err["details"]


def test_mp_status_and_gc_forward_to_ipam(node: Netns, pod: Netns, tmp_path: Path) -> None:
    """cni.md 13, 14 (mp only, 1.1.0): STATUS of mp-bridge is ready with its IPAM and code 50 without it; GC of
    mp-bridge reaches mp-host-local, which releases every allocation not in cni.dev/valid-attachments."""
    conf = main_conf(MP, "bridge", ipam_conf(MP, "host-local", tmp_path), version="1.1.0")
    for n in range(3):
        cni(node, MP, "bridge", "ADD", conf, netns=pod.path, cid=f"c{n}", ifname=f"eth{n}").ok()
    assert len(allocations(tmp_path)) == 3
    cni(node, MP, "bridge", "STATUS", conf, netns="").ok()
    broken = dict(conf, ipam=dict(conf["ipam"], type="mp-no-such-ipam"))
    assert cni(node, MP, "bridge", "STATUS", broken, netns="").error()["code"] == NOT_AVAILABLE
    old = dict(conf, cniVersion="1.0.0")
    assert cni(node, MP, "bridge", "GC", old, netns="").error()["code"] == INCOMPATIBLE_VERSION
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth1"}]})
    cni(node, MP, "bridge", "GC", gc, netns="", cid="", ifname="").ok()
    assert list(allocations(tmp_path).values()) == [b"c1\r\neth1"]


@pytest.mark.parametrize("mode", ["bridge", "private", "vepa", "passthru"])
def test_macvlan_modes(flavor: Flavor, mode: str, node: Netns, pod: Netns, netns_factory: NetnsFactory,
                       tmp_path: Path) -> None:
    """mp-macvlan `mode` (bridge/private/vepa/passthru) gives the same kernel macvlan mode as the reference plugin;
    DEL removes the interface."""
    netns_factory.veth_uplink(node, UPLINK)
    conf = main_conf(flavor, "macvlan", ipam_conf(flavor, "static", tmp_path))
    conf["mode"] = mode
    result = cni(node, flavor, "macvlan", "ADD", conf, netns=pod.path).result()
    assert pod.addresses("eth0") == [STATIC_ADDRESS]
    details = pod.ip_json("-d", "link", "show", "dev", "eth0")[0]
    assert details["linkinfo"]["info_kind"] == "macvlan"
    assert details["linkinfo"]["info_data"]["mode"] == mode
    cni(node, flavor, "macvlan", "DEL", with_prev(conf, result), netns=pod.path).ok()
    assert not pod.has_link("eth0")


# --- mp only: netlink through the standard library (metaplug.cni.rtnl), never pyroute2 --------------------------------


def _imported(stderr: str) -> set[str]:
    """Module names from `-X importtime` lines (PYTHONPROFILEIMPORTTIME) on stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("plugin", ["bridge", "macvlan", "loopback"])
def test_mp_executables_never_import_pyroute2(plugin: str, node: Netns, pod: Netns, netns_factory: NetnsFactory,
                                              tmp_path: Path) -> None:
    """Thin mode pays ~140 ms importing pyroute2 per process; the mp-* delegates talk rtnetlink with the standard
    library instead (issue 11): ADD, CHECK and DEL of the executables (and the mp-host-local they run) import
    no pyroute2 module."""
    if plugin == "macvlan":
        netns_factory.veth_uplink(node, UPLINK)
    conf = (main_conf(MP, plugin, ipam_conf(MP, "host-local", tmp_path)) if plugin != "loopback"
            else {"cniVersion": "1.0.0", "name": "lo", "type": "mp-loopback"})
    profile = {"PYTHONPROFILEIMPORTTIME": "1"}
    result = cni(node, MP, plugin, "ADD", conf, netns=pod.path, extra_env=profile)
    prev = result.result()
    seen = {"ADD": _imported(result.stderr)}
    for verb in ("CHECK", "DEL"):
        reply = cni(node, MP, plugin, verb, with_prev(conf, prev), netns=pod.path, extra_env=profile)
        reply.ok()
        seen[verb] = _imported(reply.stderr)
    for verb, modules in seen.items():
        assert "metaplug.cni.rtnl" in modules, verb  # the profile was taken, and netlink was used
        assert not {m for m in modules if m.split(".")[0] == "pyroute2"}, verb
    if plugin != "loopback":
        assert not pod.has_link("eth0")


IN_PROCESS_PROBE = """
import json, sys
from metaplug_delegates._common import answer
from metaplug_delegates import mp_bridge, mp_macvlan
calls = json.load(sys.stdin)
statuses = []
for name, env, conf in calls:
    module = {"mp-bridge": mp_bridge, "mp-macvlan": mp_macvlan}[name]
    status, out, err = answer(name, module.HANDLERS, dict(env, CNI_COMMAND="ADD"), json.dumps(conf).encode())
    statuses.append((name, "ADD", status, err))
    conf = dict(conf, prevResult=json.loads(out))
    for verb in ("CHECK", "DEL"):
        status, out, err = answer(name, module.HANDLERS, dict(env, CNI_COMMAND=verb), json.dumps(conf).encode())
        statuses.append((name, verb, status, err))
print(json.dumps({"statuses": statuses, "pyroute2": sorted(m for m in sys.modules if m.split(".")[0] == "pyroute2"),
                  "rtnl": "metaplug.cni.rtnl" in sys.modules}))
"""


def test_in_process_bridge_and_macvlan_never_import_pyroute2(node: Netns, pod: Netns, netns_factory: NetnsFactory,
                                                             tmp_path: Path) -> None:
    """What metaplug daemon does (metaplug.daemon.inprocess: the handlers called through `answer`): ADD, CHECK and
    DEL of mp-bridge and mp-macvlan in one process leave no pyroute2 module in sys.modules."""
    netns_factory.veth_uplink(node, UPLINK)
    calls = []
    for n, plugin in enumerate(("bridge", "macvlan")):
        env = metaplug_env({"CNI_CONTAINERID": f"c{n}", "CNI_NETNS": pod.path, "CNI_IFNAME": f"eth{n}",
                            "CNI_ARGS": "", "CNI_PATH": MP.cni_path})
        calls.append((f"mp-{plugin}", env, main_conf(MP, plugin, ipam_conf(MP, "host-local", tmp_path / plugin))))
    proc = node.exec([str(VENV_BIN / "python"), "-c", IN_PROCESS_PROBE], input=json.dumps(calls).encode())
    report = json.loads(proc.stdout)
    assert [(name, verb, status) for name, verb, status, _ in report["statuses"]] == [
        (name, verb, 0) for name in ("mp-bridge", "mp-macvlan") for verb in ("ADD", "CHECK", "DEL")], report
    assert report["rtnl"] and report["pyroute2"] == []
    assert set(pod.links()) == {"lo"}
