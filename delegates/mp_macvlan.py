"""mp-macvlan: a macvlan on `master` (in the node's namespace), created directly inside the container as CNI_IFNAME.

Config (the reference macvlan's names): master (default: the interface of the node's IPv4 default route), mode
(bridge | private | vepa | passthru, default bridge), mtu (<= the master's), ipam (delegated; optional).
The MAC comes from the `mac` capability (runtimeConfig.mac) or CNI_ARGS `MAC=` (IgnoreUnknown rules, cni.md 6).
linkInContainer is not supported (code 2). Result: one interface (index 0), ips point at it.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from metaplug_delegates import CHECK_FAILED, IFNAME_EXISTS
from metaplug_delegates import _netlink as nl
from metaplug_delegates._common import finish, positive_int, prev_result, require_version, serve, to_internal
from metaplug_delegates._ipam import exec_ipam, forward_to_ipam, ipam_type, release_and_delete_link, release_quietly

from metaplug.cni.env import CniEnv, parse_cni_args, validate_ifname
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, UNSUPPORTED_FIELD, CniError
from metaplug.cni.skel import Handler

NAME = "mp-macvlan"
MODES = ("bridge", "private", "vepa", "passthru")


class MacvlanConf:
    """The validated plugin-specific part of the config (master is resolved lazily: it needs netlink)."""

    def __init__(self, conf: dict[str, Any], env: CniEnv) -> None:
        self.master: str | None = conf.get("master") or None
        if self.master is not None:
            if not isinstance(self.master, str):
                raise CniError(INVALID_NETWORK_CONFIG, "invalid master", "master must be an interface name")
            validate_ifname(self.master, "master")
        self.mode = conf.get("mode") or "bridge"
        if self.mode not in MODES:
            raise CniError(INVALID_NETWORK_CONFIG, "invalid macvlan mode", f"{self.mode!r} is not one of {MODES}")
        self.mtu = positive_int(conf, "mtu")
        if conf.get("linkInContainer"):
            raise CniError(UNSUPPORTED_FIELD, f"{NAME} does not support linkInContainer",
                           "the master must be in the namespace the plugin runs in")
        self.mac = _requested_mac(conf, env)


def _requested_mac(conf: dict[str, Any], env: CniEnv) -> str | None:
    """The `mac` capability wins over CNI_ARGS MAC= (cni.md 34)."""
    runtime = conf.get("runtimeConfig")
    mac = runtime.get("mac") if isinstance(runtime, dict) else None
    if not mac:
        mac = parse_cni_args(env.args, known=("MAC",)).get("MAC") or None
    if mac is not None and not isinstance(mac, str):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid mac", f"{mac!r} is not a MAC address")
    return mac


def default_route_interface(ipr: nl.Rtnl) -> str:
    """The interface of the node's IPv4 default route (the reference macvlan's default master)."""
    try:
        routes = ipr.routes(socket.AF_INET, nl.RT_TABLE_MAIN)
    except OSError as exc:
        raise nl.failed("list the node's IPv4 routes", exc) from None
    for route in routes:
        if route.dst.prefixlen == 0 and route.oif:
            link = nl.link_by_index(ipr, route.oif)
            if link is not None:
                return link.name
    raise CniError(INVALID_NETWORK_CONFIG, "no master given and no default route",
                   "set \"master\" to the interface the macvlan should sit on")


def resolve_master(ipr: nl.Rtnl, mc: MacvlanConf) -> nl.Link:
    name = mc.master or default_route_interface(ipr)
    link = nl.find_link(ipr, name)
    if link is None:
        raise CniError(INVALID_NETWORK_CONFIG, f"master interface {name!r} not found",
                       "master must exist in the node's namespace")
    if mc.mtu and mc.mtu > link.mtu:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid mtu {mc.mtu}", f"must be at most the master's MTU {link.mtu}")
    return link


def create_macvlan(ipr: nl.Rtnl, env: CniEnv, mc: MacvlanConf, master: nl.Link) -> None:
    """The macvlan is created on master with IFLA_NET_NS_FD: it is born in the container as CNI_IFNAME."""
    with nl.netns_fd(env.netns) as fd:
        try:
            ipr.create_macvlan(env.ifname, master.ifindex, mc.mode, netns_fd=fd, mtu=mc.mtu, mac=mc.mac)
        except (OSError, ValueError) as exc:  # ValueError: a `mac` that is no MAC address
            if isinstance(exc, OSError) and exc.errno == errno.EEXIST:  # lost a race for CNI_IFNAME (cni.md 10)
                raise CniError(IFNAME_EXISTS, f"interface {env.ifname!r} already exists",
                               f"{env.ifname!r} is present in {env.netns}") from None
            raise nl.failed(f"create macvlan {env.ifname} on {master.name} (mode {mc.mode})", exc) from None


def cmd_add(env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    mc = MacvlanConf(conf, env)
    with nl.netns(env.netns) as cipr:
        nl.require_absent(cipr, env.ifname, env.netns)
    with nl.host() as ipr:
        master = resolve_master(ipr, mc)
        create_macvlan(ipr, env, mc, master)
    try:
        result = _add_after_link(env, conf, raw)
    except BaseException:
        with nl.netns(env.netns) as cipr:
            nl.delete_link(cipr, env.ifname)
        if ipam_type(conf) is not None:
            release_quietly(conf, env, raw)
        raise
    return finish(result, conf)


def _add_after_link(env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    ipam_result = exec_ipam("ADD", conf, env, raw)
    result: dict[str, Any] = to_internal(ipam_result, conf["cniVersion"]) if ipam_result else {"ips": []}
    for ip in result.get("ips") or []:
        ip["interface"] = 0
    with nl.netns(env.netns) as cipr:
        link = nl.find_link(cipr, env.ifname)
        if link is None:
            raise CniError(CHECK_FAILED, f"{env.ifname} vanished from {env.netns} during ADD")
        nl.configure(cipr, link, result, 0)
    result["interfaces"] = [{"name": link.name, "mac": link.mac, "sandbox": env.netns, "mtu": link.mtu}]
    if "dns" not in result and isinstance(conf.get("dns"), dict):
        result["dns"] = conf["dns"]
    return result


def cmd_del(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 11: IPAM release, then the macvlan; a missing namespace or interface is success."""
    release_and_delete_link(env, conf, raw)
    return None


def cmd_check(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 12: IPAM CHECK, then the macvlan (kind, mode, MAC, MTU, addresses, routes) against prevResult."""
    require_version(conf, "0.4.0", "CHECK")
    mc = MacvlanConf(conf, env)
    prev = prev_result(conf, "CHECK")
    exec_ipam("CHECK", conf, env, raw)
    idx, entry = nl.sandbox_interface(prev, env.ifname, env.netns)
    with nl.netns(env.netns) as cipr:
        link = nl.check_link(nl.find_link(cipr, env.ifname), env.ifname, kind="macvlan", mac=entry.get("mac"),
                             mtu=entry.get("mtu"))
        if link.macvlan_mode != mc.mode:
            raise CniError(CHECK_FAILED, f"{env.ifname} is in macvlan mode {link.macvlan_mode}",
                           f"the config says {mc.mode}")
        nl.verify(cipr, link, prev, idx)
    return None


# the verbs, for the executable (main) and for metaplug daemon, which serves them in-process
HANDLERS: dict[str, Handler] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check,
                                "STATUS": forward_to_ipam("STATUS"), "GC": forward_to_ipam("GC")}


def main() -> None:
    serve(NAME, HANDLERS)


if __name__ == "__main__":
    main()
