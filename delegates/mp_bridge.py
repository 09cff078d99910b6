"""mp-bridge: a Linux bridge in the node's namespace and a veth pair into the container.

Config (the reference bridge's names): bridge (default "cni0"), isGateway, isDefaultGateway (implies isGateway), mtu,
hairpinMode (default false), ipam (delegated to `ipam.type`; optional: without it the attachment is layer 2 only).
ipMasq and vlan are not supported: true/non-zero is code 2 naming the field.

Result interfaces: 0 the bridge, 1 the host end of the veth, 2 the container end (CNI_IFNAME); ips point at 2.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import Any

from metaplug_delegates import CHECK_FAILED, IFNAME_EXISTS
from metaplug_delegates import _netlink as nl
from metaplug_delegates._common import finish, flag, positive_int, prev_result, require_version, serve, to_internal
from metaplug_delegates._ipam import exec_ipam, forward_to_ipam, ipam_type, release_and_delete_link, release_quietly

from metaplug.cni.env import CniEnv, validate_ifname
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, UNSUPPORTED_FIELD, CniError
from metaplug.cni.skel import Handler

NAME = "mp-bridge"
DEFAULT_BRIDGE = "cni0"
HOST_VETH_PREFIX = "veth"
CONTAINER, HOST_END, BRIDGE = 2, 1, 0  # indexes in the result's interfaces


class BridgeConf:
    """The validated plugin-specific part of the config."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.bridge = conf.get("bridge") or DEFAULT_BRIDGE
        if not isinstance(self.bridge, str):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid bridge", "bridge must be an interface name")
        validate_ifname(self.bridge, "bridge name")
        self.is_default_gw = flag(conf, "isDefaultGateway")
        self.is_gw = flag(conf, "isGateway") or self.is_default_gw
        self.mtu = positive_int(conf, "mtu")
        self.hairpin = flag(conf, "hairpinMode")
        for unsupported in ("ipMasq", "vlan"):
            if conf.get(unsupported):
                raise CniError(UNSUPPORTED_FIELD, f"{NAME} does not support {unsupported}",
                               f"remove {unsupported!r} or use the reference bridge plugin")


def ensure_bridge(ipr: nl.Rtnl, bc: BridgeConf) -> nl.Link:
    """The bridge, created when missing (a concurrent ADD may create it first), up."""
    link = nl.find_link(ipr, bc.bridge)
    if link is None:
        try:
            ipr.create_bridge(bc.bridge, mtu=bc.mtu)
        except OSError as exc:
            if exc.errno != errno.EEXIST:  # another ADD made it meanwhile
                raise nl.failed(f"create bridge {bc.bridge}", exc) from None
        link = nl.find_link(ipr, bc.bridge)
    if link is None or link.kind != "bridge":
        raise CniError(INVALID_NETWORK_CONFIG, f"{bc.bridge!r} is not a bridge",
                       f"an interface {bc.bridge!r} of kind {(link.kind or None) if link else None!r} exists in the "
                       "node")
    if not link.up:
        nl.set_up(ipr, link.ifindex, link.name)
    return link


def create_veth(ipr: nl.Rtnl, env: CniEnv, bc: BridgeConf, bridge: nl.Link) -> nl.Link:
    """A veth whose container end is created directly in the netns as CNI_IFNAME; returns the host end (up,
    enslaved to the bridge, hairpin as configured)."""
    with nl.netns_fd(env.netns) as fd:
        for _ in range(3):
            host_name = nl.random_name(HOST_VETH_PREFIX)
            try:
                ipr.create_veth(host_name, env.ifname, peer_netns_fd=fd, mtu=bc.mtu)
                break
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise nl.failed(f"create veth {host_name} <-> {env.ifname}", exc) from None
                with nl.netns(env.netns) as cipr:
                    if nl.find_link(cipr, env.ifname) is not None:  # lost a race for CNI_IFNAME: cni.md 10
                        raise CniError(IFNAME_EXISTS, f"interface {env.ifname!r} already exists",
                                       f"{env.ifname!r} is present in {env.netns}") from None
                # else the random host name was taken: try another one
        else:
            raise CniError(INVALID_NETWORK_CONFIG, "could not find a free veth name", "3 random names were taken")
    link = nl.find_link(ipr, host_name)
    if link is None:
        raise CniError(CHECK_FAILED, f"veth {host_name} vanished right after creation")
    try:
        ipr.set_link(link.ifindex, master=bridge.ifindex, up=True)
        if bc.hairpin:
            ipr.set_hairpin(link.ifindex)
    except OSError as exc:
        nl.delete_link(ipr, host_name)
        raise nl.failed(f"attach {host_name} to {bc.bridge}", exc) from None
    return link


def gateway_setup(result: dict[str, Any], bc: BridgeConf) -> list[str]:
    """isGateway: fill in missing gateways (first host of the subnet, like the reference) and return the gateway
    CIDRs to put on the bridge; isDefaultGateway: add a default route per family that has no default route yet."""
    if not bc.is_gw:
        return []
    cidrs: list[str] = []
    dsts = [ipaddress.ip_network(r["dst"], strict=False) for r in result.get("routes") or []]
    families_with_default = {dst.version for dst in dsts if dst.prefixlen == 0}
    for ip in result.get("ips") or []:
        iface = ipaddress.ip_interface(ip["address"])
        if not ip.get("gateway"):
            ip["gateway"] = str(next(iface.network.hosts()))
        cidrs.append(f"{ip['gateway']}/{iface.network.prefixlen}")
        if bc.is_default_gw and iface.version not in families_with_default:
            families_with_default.add(iface.version)
            dst = "0.0.0.0/0" if iface.version == 4 else "::/0"
            result.setdefault("routes", []).append({"dst": dst, "gw": ip["gateway"]})
    return cidrs


def cmd_add(env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    bc = BridgeConf(conf)
    with nl.netns(env.netns) as cipr:
        nl.require_absent(cipr, env.ifname, env.netns)
    has_ipam = ipam_type(conf) is not None
    with nl.host() as ipr:
        bridge = ensure_bridge(ipr, bc)
        host_end = create_veth(ipr, env, bc, bridge)
        try:
            result = _add_after_veth(env, conf, raw, bc, ipr, bridge, host_end)
        except BaseException:
            nl.delete_link(ipr, host_end.name)  # takes the container end with it
            if has_ipam:
                release_quietly(conf, env, raw)
            raise
    return finish(result, conf)


def _add_after_veth(env: CniEnv, conf: dict[str, Any], raw: bytes, bc: BridgeConf, ipr: nl.Rtnl,
                    bridge: nl.Link, host_end: nl.Link) -> dict[str, Any]:
    ipam_result = exec_ipam("ADD", conf, env, raw)
    result: dict[str, Any] = to_internal(ipam_result, conf["cniVersion"]) if ipam_result else {"ips": []}
    for ip in result.get("ips") or []:
        ip["interface"] = CONTAINER
    for cidr in gateway_setup(result, bc):
        nl.add_address(ipr, bridge.ifindex, cidr, bridge.name)
    if bc.is_gw:
        nl.write_sysctl("net/ipv4/ip_forward", "1")
    with nl.netns(env.netns) as cipr:
        cont = nl.find_link(cipr, env.ifname)
        if cont is None:
            raise CniError(CHECK_FAILED, f"{env.ifname} vanished from {env.netns} during ADD")
        nl.configure(cipr, cont, result, CONTAINER)
    bridge = nl.find_link(ipr, bc.bridge) or bridge  # its MAC may change when the first port joins
    result["interfaces"] = [
        {"name": bridge.name, "mac": bridge.mac},
        {"name": host_end.name, "mac": host_end.mac},
        {"name": cont.name, "mac": cont.mac, "sandbox": env.netns, "mtu": cont.mtu},  # mtu: 1.1.0 only
    ]
    if "dns" not in result and isinstance(conf.get("dns"), dict):
        result["dns"] = conf["dns"]
    return result


def cmd_del(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 11: IPAM release, then the container end (the host end goes with it); gone already is success.

    The plugin fields are not validated here: a config that could never ADD must still DEL cleanly.
    """
    release_and_delete_link(env, conf, raw)
    return None


def cmd_check(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 12: IPAM CHECK, then bridge, host veth and container end against prevResult."""
    require_version(conf, "0.4.0", "CHECK")
    bc = BridgeConf(conf)
    prev = prev_result(conf, "CHECK")
    exec_ipam("CHECK", conf, env, raw)
    idx, entry = nl.sandbox_interface(prev, env.ifname, env.netns)
    with nl.netns(env.netns) as cipr:
        cont = nl.check_link(nl.find_link(cipr, env.ifname), env.ifname, kind="veth", mac=entry.get("mac"),
                             mtu=entry.get("mtu"))
        nl.verify(cipr, cont, prev, idx)
    with nl.host() as ipr:
        bridge = nl.check_link(nl.find_link(ipr, bc.bridge), bc.bridge, kind="bridge")
        host_names = [i.get("name") for i in prev.get("interfaces") or [] if not i.get("sandbox")
                      and i.get("name") != bc.bridge]
        for name in host_names:
            host_end = nl.check_link(nl.find_link(ipr, name), name, kind="veth")
            if host_end.master != bridge.ifindex:
                raise CniError(CHECK_FAILED, f"{name} is not a port of {bc.bridge}")
    return None


def cmd_status(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 13: ready when the IPAM plugin is (forwarded to it)."""
    require_version(conf, "1.1.0", "STATUS")
    BridgeConf(conf)
    exec_ipam("STATUS", conf, env, raw)
    return None


# the verbs, for the executable (main) and for metaplug daemon, which serves them in-process
HANDLERS: dict[str, Handler] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check,
                                "STATUS": cmd_status, "GC": forward_to_ipam("GC")}


def main() -> None:
    serve(NAME, HANDLERS)


if __name__ == "__main__":
    main()
