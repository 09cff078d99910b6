"""pyroute2 helpers shared by the delegates: namespaces, links, addresses, routes.

pyroute2 is imported inside the functions only, so VERSION and the IPAM plugins never pay for it.
A namespace path is opened and checked by metaplug.cni.ns (non-blocking, must be a network namespace).
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from metaplug_delegates import CHECK_FAILED, IFNAME_EXISTS, NETLINK_FAILED

from metaplug.cni import ns
from metaplug.cni.errors import CniError

IFF_UP = 0x1
IFA_F_NODAD = 0x02  # IPv6 addresses are usable at once (no duplicate address detection wait), as the reference does
RT_TABLE_MAIN = 254
NETLINK_ROUTE = 0
ROUTE_METRICS = {"mtu": "RTAX_MTU", "advmss": "RTAX_ADVMSS"}  # 1.1.0 route fields that are route metrics


@dataclass(frozen=True)
class Link:
    """What the delegates need to know about one interface."""

    index: int
    name: str
    kind: str | None
    mac: str
    mtu: int
    master: int | None
    up: bool
    macvlan_mode: str | None = None


def netns_exists(path: str) -> bool:
    """True when `path` is a network namespace (DEL: anything else holds nothing of ours, cni.md 11)."""
    return ns.is_netns(path)


@contextlib.contextmanager
def host() -> Iterator[Any]:
    """An IPRoute in the namespace this process runs in (the node's)."""
    from pyroute2 import IPRoute

    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


@contextlib.contextmanager
def netns(path: str) -> Iterator[Any]:
    """An IPRoute inside the network namespace at `path`; anything else (gone, a FIFO, a file) is code 4.

    The netlink socket is made in a thread that entered the namespace (metaplug.cni.ns): no blocking open, no fork
    (pyroute2's NetNS forks a helper per socket), and the namespace is never created."""
    from pyroute2 import IPRoute

    try:
        with ns.opened(path) as fd:
            sock = ns.run_in(fd, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
        ipr = IPRoute(fileno=sock.detach())
    except OSError as exc:
        raise failed(f"open a netlink socket in {path}", exc) from None
    try:
        yield ipr
    finally:
        ipr.close()


@contextlib.contextmanager
def netns_fd(path: str) -> Iterator[int]:
    """An open fd of the network namespace at `path`, to move or create links into it (IFLA_NET_NS_FD)."""
    with ns.opened(path) as fd:
        yield fd


def failed(op: str, exc: Exception) -> CniError:
    """A netlink failure as a CniError naming the operation."""
    reason = getattr(exc, "args", None)
    return CniError(NETLINK_FAILED, f"netlink: {op} failed", str(reason[-1] if reason else exc))


def errno_of(exc: Exception) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def random_name(prefix: str) -> str:
    """`prefix` + 8 hex digits (veth host ends, temporary names); <= 15 bytes for prefixes up to 7."""
    return f"{prefix}{secrets.token_hex(4)}"


def _as_link(msg: Any) -> Link:
    info = msg.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info is not None else None
    mode = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_MACVLAN_MODE") if kind == "macvlan" else None
    return Link(
        index=msg["index"],
        name=msg.get("IFLA_IFNAME"),
        kind=kind,
        mac=str(msg.get("IFLA_ADDRESS") or ""),
        mtu=int(msg.get("IFLA_MTU") or 0),
        master=msg.get("IFLA_MASTER"),
        up=bool(msg["flags"] & IFF_UP),
        macvlan_mode=mode,
    )


def find_link(ipr: Any, name: str) -> Link | None:
    """The interface called `name`, or None."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return None
    try:
        return _as_link(ipr.get_links(found[0])[0])
    except Exception as exc:
        if errno_of(exc) == 19:  # ENODEV: deleted between lookup and get
            return None
        raise


def link_by_index(ipr: Any, index: int) -> Link | None:
    try:
        return _as_link(ipr.get_links(index)[0])
    except Exception as exc:
        if errno_of(exc) == 19:
            return None
        raise


def require_absent(ipr: Any, ifname: str, netns_path: str) -> None:
    """cni.md 10: ADD fails when CNI_IFNAME already exists in the namespace (IFNAME_EXISTS, 130)."""
    if find_link(ipr, ifname) is not None:
        raise CniError(IFNAME_EXISTS, f"interface {ifname!r} already exists",
                       f"{ifname!r} is present in {netns_path}; DEL the previous attachment or use another ifname")


def delete_link(ipr: Any, name: str) -> bool:
    """Delete the interface `name` if present; True when something was deleted. Gone already: False, no error."""
    link = find_link(ipr, name)
    if link is None:
        return False
    try:
        ipr.link("del", index=link.index)
    except Exception as exc:
        if errno_of(exc) in (19, 2):  # gone meanwhile
            return False
        raise failed(f"delete {name}", exc) from None
    return True


def set_up(ipr: Any, index: int, name: str) -> None:
    try:
        ipr.link("set", index=index, state="up")
    except Exception as exc:
        raise failed(f"set {name} up", exc) from None


def global_addresses(ipr: Any, index: int) -> set[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    """Addresses of the interface except IPv6 link-local ones."""
    out: set[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = set()
    for msg in ipr.get_addr(index=index):
        addr = msg.get("IFA_ADDRESS")
        if addr is None:
            continue
        iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
        if iface.version == 6 and iface.ip.is_link_local:
            continue
        out.add(iface)
    return out


def add_address(ipr: Any, index: int, cidr: str, name: str) -> None:
    """Add `cidr` (address with prefix) to the interface; already there is fine."""
    iface = ipaddress.ip_interface(cidr)
    kw: dict[str, Any] = {"index": index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    if iface.version == 6:
        kw["flags"] = IFA_F_NODAD
    try:
        ipr.addr("add", **kw)
    except Exception as exc:
        if errno_of(exc) == 17:  # EEXIST
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


def configure(ipr: Any, link: Link, result: dict[str, Any], if_index: int) -> None:
    """Put the result's addresses (those of interface `if_index`) and routes on `link`, and bring it up."""
    for ip in result.get("ips") or []:
        if ip.get("interface") in (if_index, None):
            add_address(ipr, link.index, ip["address"], link.name)
    set_up(ipr, link.index, link.name)
    gws = _gateways(result, if_index)
    for route in result.get("routes") or []:
        dst, gw = _route_target(route, gws)
        kw: dict[str, Any] = {"dst": str(dst), "oif": link.index}
        if gw:
            kw["gateway"] = gw
        if route.get("priority") is not None:
            kw["priority"] = route["priority"]
        if route.get("table") is not None:
            kw["table"] = route["table"]
        if route.get("scope") is not None:
            kw["scope"] = route["scope"]
        metrics = {ROUTE_METRICS[k]: route[k] for k in ROUTE_METRICS if route.get(k) is not None}
        if metrics:
            kw["metrics"] = {"attrs": list(metrics.items())}
        try:
            ipr.route("add", **kw)
        except Exception as exc:
            if errno_of(exc) == 17:
                continue
            raise failed(f"add route {dst} via {gw or 'link'} on {link.name}", exc) from None


def _routes_of(ipr: Any, version: int, table: int) -> set[tuple[str, str | None, int | None]]:
    """(dst network, gateway, oif) of the routes of one family in one table."""
    from socket import AF_INET, AF_INET6

    out: set[tuple[str, str | None, int | None]] = set()
    for msg in ipr.get_routes(family=AF_INET if version == 4 else AF_INET6, table=table):
        if (msg.get("RTA_TABLE") or msg["table"]) != table:
            continue
        dst = msg.get("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
        net = ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False)
        out.add((str(net), msg.get("RTA_GATEWAY"), msg.get("RTA_OIF")))
    return out


def verify(ipr: Any, link: Link, result: dict[str, Any], if_index: int) -> None:
    """CHECK (cni.md 12): every address of interface `if_index` and every route of `result` is present on `link`."""
    have = global_addresses(ipr, link.index)
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
        raise CniError(CHECK_FAILED, f"interface {name!r} is not a {kind}", f"it is of kind {link.kind!r}")
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
