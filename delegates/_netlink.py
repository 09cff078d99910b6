"""rtnetlink helpers shared by the delegates: namespaces, links, addresses, routes (metaplug.cni.rtnl, stdlib only).

A namespace path is opened and checked by metaplug.cni.ns (non-blocking, must be a network namespace); its netlink
socket is made in a thread inside it (one socket per namespace and call). Kernel refusals arrive as OSError(errno).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any

from metaplug_delegates import CHECK_FAILED, IFNAME_EXISTS, NETLINK_FAILED

from metaplug.cni import ns
from metaplug.cni.errors import CniError
from metaplug.cni.rtnl import RT_TABLE_MAIN, Link, RouteSpec, Rtnl

__all__ = ["RT_TABLE_MAIN", "Link", "Rtnl"]


def netns_exists(path: str) -> bool:
    """True when `path` is a network namespace (DEL: anything else holds nothing of ours, cni.md 11)."""
    return ns.is_netns(path)


@contextlib.contextmanager
def host() -> Iterator[Rtnl]:
    """A netlink client in the namespace this process runs in (the node's)."""
    try:
        rtnl = Rtnl()
    except OSError as exc:
        raise failed("open a netlink socket", exc) from None
    with rtnl:
        yield rtnl


@contextlib.contextmanager
def netns(path: str) -> Iterator[Rtnl]:
    """A netlink client inside the network namespace at `path`; anything else (gone, a FIFO, a file) is code 4.

    The socket is made in a thread that entered the namespace (metaplug.cni.ns): no blocking open, no fork, and the
    namespace is never created."""
    try:
        with ns.opened(path) as fd:
            rtnl = ns.run_in(fd, Rtnl)
    except OSError as exc:
        raise failed(f"open a netlink socket in {path}", exc) from None
    with rtnl:
        yield rtnl


@contextlib.contextmanager
def netns_fd(path: str) -> Iterator[int]:
    """An open fd of the network namespace at `path`, to move or create links into it (IFLA_NET_NS_FD)."""
    with ns.opened(path) as fd:
        yield fd


def failed(op: str, exc: Exception) -> CniError:
    """A netlink failure as a CniError naming the operation and the kernel's reason."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return CniError(NETLINK_FAILED, f"netlink: {op} failed", reason)


def random_name(prefix: str) -> str:
    """`prefix` + 8 hex digits (veth host ends, temporary names); <= 15 bytes for prefixes up to 7."""
    return f"{prefix}{os.urandom(4).hex()}"  # what secrets.token_hex does, without importing hashlib


def find_link(ipr: Rtnl, name: str) -> Link | None:
    """The interface called `name`, or None."""
    try:
        return ipr.link(name)
    except OSError as exc:
        raise failed(f"look up {name}", exc) from None


def link_by_index(ipr: Rtnl, index: int) -> Link | None:
    try:
        return ipr.link(index=index)
    except OSError as exc:
        raise failed(f"look up ifindex {index}", exc) from None


def require_absent(ipr: Rtnl, ifname: str, netns_path: str) -> None:
    """cni.md 10: ADD fails when CNI_IFNAME already exists in the namespace (IFNAME_EXISTS, 130)."""
    if find_link(ipr, ifname) is not None:
        raise CniError(IFNAME_EXISTS, f"interface {ifname!r} already exists",
                       f"{ifname!r} is present in {netns_path}; DEL the previous attachment or use another ifname")


def delete_link(ipr: Rtnl, name: str) -> bool:
    """Delete the interface `name` if present; True when something was deleted. Gone already: False, no error."""
    link = find_link(ipr, name)
    if link is None:
        return False
    try:
        ipr.delete_link(link.ifindex)
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENOENT):  # gone meanwhile
            return False
        raise failed(f"delete {name}", exc) from None
    return True


def set_up(ipr: Rtnl, index: int, name: str) -> None:
    try:
        ipr.set_link(index, up=True)
    except OSError as exc:
        raise failed(f"set {name} up", exc) from None


def global_addresses(ipr: Rtnl, index: int) -> set[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Addresses of the interface except IPv6 link-local ones."""
    try:
        found = ipr.addresses(index)
    except OSError as exc:
        raise failed(f"list the addresses of ifindex {index}", exc) from None
    return {a.interface for a in found if not (a.interface.version == 6 and a.interface.ip.is_link_local)}


def add_address(ipr: Rtnl, index: int, cidr: str, name: str) -> None:
    """Add `cidr` (address with prefix) to the interface; already there is fine. IPv6 ones with IFA_F_NODAD:
    usable at once (no duplicate address detection wait), as the reference does."""
    try:
        ipr.add_address(index, ipaddress.ip_interface(cidr))
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return
        raise failed(f"add address {cidr} to {name}", exc) from None


# --- results applied to and checked against an interface --------------------------------------------------------------


def _gateways(result: dict[str, Any], if_index: int | None) -> dict[int, str]:
    """The first gateway per address family among the result's ips (of interface `if_index` when given)."""
    gws: dict[int, str] = {}
    for ip in result.get("ips") or []:
        if if_index is not None and ip.get("interface") not in (if_index, None):
            continue
        gw = ip.get("gateway")
        if gw:
            gws.setdefault(ipaddress.ip_address(gw).version, gw)
    return gws


def _route_target(route: dict[str, Any], gws: dict[int, str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                                       str | None]:
    """(dst network, gateway) of a result route; a route without gw goes via the family's gateway (reference)."""
    dst = ipaddress.ip_network(route["dst"], strict=False)
    gw = route.get("gw") or gws.get(dst.version)
    return dst, gw


def configure(ipr: Rtnl, link: Link, result: dict[str, Any], if_index: int) -> None:
    """Put the result's addresses (those of interface `if_index`) and routes on `link`, and bring it up."""
    for ip in result.get("ips") or []:
        if ip.get("interface") in (if_index, None):
            add_address(ipr, link.ifindex, ip["address"], link.name)
    set_up(ipr, link.ifindex, link.name)
    gws = _gateways(result, if_index)
    for route in result.get("routes") or []:
        dst, gw = _route_target(route, gws)
        # 1.1.0 route fields: priority, table, scope, and the route metrics mtu and advmss
        spec = RouteSpec(dst=dst, gateway=gw, oif=link.ifindex, priority=_int_or_none(route.get("priority")),
                         table=_int_or_none(route.get("table")), scope=_int_or_none(route.get("scope")),
                         mtu=_int_or_none(route.get("mtu")), advmss=_int_or_none(route.get("advmss")))
        try:
            ipr.add_route(spec)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise failed(f"add route {dst} via {gw or 'link'} on {link.name}", exc) from None


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _routes_of(ipr: Rtnl, version: int, table: int) -> set[tuple[str, str | None, int | None]]:
    """(dst network, gateway, oif) of the routes of one family in one table."""
    try:
        found = ipr.routes(socket.AF_INET if version == 4 else socket.AF_INET6, table)
    except OSError as exc:
        raise failed(f"list the routes of table {table}", exc) from None
    return {(str(r.dst), r.gateway, r.oif) for r in found}


def verify(ipr: Rtnl, link: Link, result: dict[str, Any], if_index: int) -> None:
    """CHECK (cni.md 12): every address of interface `if_index` and every route of `result` is present on `link`."""
    have = global_addresses(ipr, link.ifindex)
    for ip in result.get("ips") or []:
        if ip.get("interface") not in (if_index, None):
            continue
        want = ipaddress.ip_interface(ip["address"])
        if want not in have:
            raise CniError(CHECK_FAILED, f"address {ip['address']} missing on {link.name}",
                           f"{link.name} has {sorted(map(str, have)) or 'no addresses'}")
    gws = _gateways(result, if_index)
    tables: dict[tuple[int, int], set[tuple[str, str | None, int | None]]] = {}
    for route in result.get("routes") or []:
        dst, gw = _route_target(route, gws)
        table = int(route.get("table") or RT_TABLE_MAIN)
        key = (dst.version, table)
        if key not in tables:
            tables[key] = _routes_of(ipr, dst.version, table)
        # Any device: ADD tolerates a route that another interface of the namespace already provides.
        if not any(r_dst == str(dst) and r_gw == gw for r_dst, r_gw, _ in tables[key]):
            raise CniError(CHECK_FAILED, f"route {dst} via {gw or 'link'} missing",
                           f"no such route on {link.name} in table {table}")


def check_link(link: Link | None, name: str, *, kind: str, mac: str | None = None, mtu: int | None = None) -> Link:
    """CHECK of one interface: present, of the right kind, with prevResult's MAC and (1.1.0) MTU when given.

    prevResult, not the config, is the reference: a chained plugin (tuning) may have changed MAC or MTU."""
    if link is None:
        raise CniError(CHECK_FAILED, f"interface {name!r} not found", f"the {kind} created at ADD is gone")
    if link.kind != kind:
        raise CniError(CHECK_FAILED, f"interface {name!r} is not a {kind}", f"it is of kind {link.kind or None!r}")
    if mac and link.mac.lower() != mac.lower():
        raise CniError(CHECK_FAILED, f"interface {name!r} has another MAC address",
                       f"prevResult says {mac}, the interface has {link.mac}")
    if mtu and link.mtu != mtu:
        raise CniError(CHECK_FAILED, f"interface {name!r} has MTU {link.mtu}", f"prevResult says {mtu}")
    return link


def sandbox_interface(prev: dict[str, Any], ifname: str, netns_path: str) -> tuple[int, dict[str, Any]]:
    """(index, entry) of the prevResult interface that is CNI_IFNAME in the container; CHECK_FAILED when absent."""
    for idx, iface in enumerate(prev.get("interfaces") or []):
        if iface.get("name") == ifname and iface.get("sandbox"):
            return idx, iface
    raise CniError(CHECK_FAILED, f"prevResult has no interface {ifname!r} in a sandbox",
                   f"the cached result does not describe {ifname!r} in {netns_path}")


def write_sysctl(key: str, value: str) -> None:
    """Best effort write of a sysctl of the current namespace (e.g. net/ipv4/ip_forward)."""
    with contextlib.suppress(OSError), open(f"/proc/sys/{key}", "w") as fh:
        fh.write(value)
