"""Look into and adjust a container's network namespace (CHECK, R9 name collisions, R13 default route).

A network namespace is per thread on Linux, so each operation runs in a short-lived thread that `setns()`s into the
target namespace (metaplug.cni.ns, which also makes sure the path is a network namespace and never blocks on opening
it): the process itself never leaves its own namespace, and nothing has to fork. Listing interface names (the ADD
hot path) asks rtnetlink from outside (cni.linknames), else reads the thread's /proc/thread-self/net/dev; reading
links and addresses (CHECK) and changing default routes (R13) use the small stdlib rtnetlink client,
metaplug.cni.rtnl (imported only then).
"""

from __future__ import annotations

from metaplug.cni import ns
from metaplug.cni.errors import INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from metaplug.cni import rtnl

T = TypeVar("T")


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread inside the network namespace at `path` (checked first: not one is code 4)."""
    return ns.run_in_path(path, fn)


def interface_names(path: str) -> set[str]:
    """Names of every interface in the namespace at `path` (not one is code 4): listed from here over rtnetlink
    (cni.linknames: no setns, so neither ctypes nor a thread on the ADD path), else the thread's
    /proc/thread-self/net/dev read from inside it (a device name never holds a colon)."""
    from metaplug.cni import linknames

    def names() -> set[str]:
        with open("/proc/thread-self/net/dev", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()[2:]  # two header lines
        return {line.split(":", 1)[0].strip() for line in lines if ":" in line}

    with ns.opened(path) as fd:
        found = linknames.names(fd)
        return found if found is not None else ns.run_in(fd, names)


def inspect_interfaces(path: str) -> dict[str, dict[str, Any]]:
    """{ifname: {"mac": str, "addresses": set of "ip/prefix", "index": int}} of every interface in the namespace."""
    from metaplug.cni import rtnl

    def collect() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        by_index = rtnl.links()
        for index, (name, mac) in by_index.items():
            out[name] = {"mac": mac, "addresses": set(), "index": index}
        for index, address in rtnl.addresses():
            if index in by_index:
                out[by_index[index][0]]["addresses"].add(address)
        return out

    return run_in_netns(path, collect)


def check_result(path: str, result: dict[str, Any]) -> list[str]:
    """What in the namespace does not match `result` (1.x shape): missing interfaces, other MACs, missing addresses."""
    import ipaddress

    actual = inspect_interfaces(path)
    problems: list[str] = []
    interfaces = result.get("interfaces") or []
    for iface in interfaces:
        if not iface.get("sandbox"):
            continue
        name = iface.get("name", "")
        found = actual.get(name)
        if found is None:
            problems.append(f"interface {name} is missing")
            continue
        mac = (iface.get("mac") or "").lower()
        if mac and found["mac"] != mac:
            problems.append(f"interface {name} has MAC {found['mac']}, expected {mac}")
    for ip in result.get("ips") or []:
        idx = ip.get("interface")
        if idx is None or not 0 <= idx < len(interfaces) or not interfaces[idx].get("sandbox"):
            continue
        name = interfaces[idx].get("name", "")
        if name not in actual:
            continue
        wanted = str(ipaddress.ip_interface(ip["address"]))
        have = {str(ipaddress.ip_interface(a)) for a in actual[name]["addresses"]}
        if wanted not in have:
            problems.append(f"interface {name} lacks address {ip['address']}")
    return problems


def _default_routes(client: rtnl.Rtnl, family: int) -> list[rtnl.Route]:
    """The default routes of one family in the main table."""
    return [r for r in client.routes(family) if r.dst.prefixlen == 0]


def _delete(client: rtnl.Rtnl, route: rtnl.Route) -> None:
    from metaplug.cni import rtnl

    client.delete_route(rtnl.RouteSpec(dst=route.dst, gateway=route.gateway, oif=route.oif, table=route.table))


def move_default_route(path: str, old_ifname: str | None, new_ifname: str, gateways: Iterable[str]) -> None:
    """R13: remove the default route(s) of `old_ifname` and route the default through `gateways` on `new_ifname`."""
    import ipaddress

    from metaplug.cni import rtnl

    gws = [ipaddress.ip_address(g) for g in gateways]

    def apply() -> None:
        with rtnl.Rtnl() as client:
            new = client.link(new_ifname)
            if new is None:
                raise CniError(INVALID_ENVIRONMENT, "default-route interface is missing", new_ifname)
            old = client.link(old_ifname) if old_ifname is not None else None
            for gw in gws:
                family = rtnl.AF_INET6 if gw.version == 6 else rtnl.AF_INET
                for route in _default_routes(client, family):
                    if old_ifname is None or route.oif in (new.ifindex, old.ifindex if old else None):
                        _delete(client, route)
                dst = ipaddress.ip_network("::/0" if gw.version == 6 else "0.0.0.0/0")
                try:
                    client.add_route(rtnl.RouteSpec(dst=dst, gateway=str(gw), oif=new.ifindex))
                except OSError as exc:  # a gateway the interface cannot reach: the element's mistake
                    raise CniError(INVALID_NETWORK_CONFIG, "cannot move the default route (R13)",
                                   f"default via {gw} dev {new_ifname}: {exc.strerror or exc}") from None

    run_in_netns(path, apply)


def restore_default_routes(path: str, ifname: str, routes: Iterable[dict[str, Any]]) -> list[str]:
    """Put default routes back on `ifname` (1.x result routes: dst, gw?, priority?): what R13 took from the cluster
    network when another attachment owned the default route. One already there counts as restored. Returns the
    problems (a missing interface, a route the kernel refuses), never raises for them."""
    import errno
    import ipaddress

    from metaplug.cni import rtnl

    wanted = list(routes)

    def apply() -> list[str]:
        problems: list[str] = []
        with rtnl.Rtnl() as client:
            link = client.link(ifname)
            if link is None:
                return [f"interface {ifname} is missing"]
            for route in wanted:
                dst = str(route["dst"])
                spec = rtnl.RouteSpec(dst=ipaddress.ip_network(dst, strict=False), oif=link.ifindex,
                                      gateway=str(route["gw"]) if route.get("gw") else None,
                                      priority=int(route["priority"]) if route.get("priority") is not None else None)
                try:
                    client.add_route(spec)
                except OSError as exc:
                    if exc.errno != errno.EEXIST:  # it is there
                        problems.append(f"default route {dst} via {route.get('gw') or ifname}: {exc.strerror or exc}")
        return problems

    return run_in_netns(path, apply)


def remove_default_routes(path: str, ifname: str, ipv6: Iterable[bool]) -> None:
    """Delete the default routes through `ifname` of these families (True: IPv6); absent ones are fine."""
    from metaplug.cni import rtnl

    families = [rtnl.AF_INET6 if v6 else rtnl.AF_INET for v6 in set(ipv6)]

    def apply() -> None:
        with rtnl.Rtnl() as client:
            link = client.link(ifname)
            if link is None:
                return
            for family in families:
                for route in _default_routes(client, family):
                    if route.oif == link.ifindex:
                        _delete(client, route)

    run_in_netns(path, apply)
