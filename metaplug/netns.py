"""Look into and adjust a container's network namespace (CHECK, R9 name collisions, R13 default route).

A network namespace is per thread on Linux, so each operation runs in a short-lived thread that `setns()`s into the
target namespace (metaplug.cni.ns, which also makes sure the path is a network namespace and never blocks on opening
it): the process itself never leaves its own namespace, and nothing has to fork. Listing interface names (the ADD
hot path) asks rtnetlink from outside (cni.linknames), else reads the thread's /proc/thread-self/net/dev; reading
links and addresses (CHECK) uses the small stdlib rtnetlink reader in rtnl.py; changing routes (R13) uses pyroute2,
imported only then.
"""

from __future__ import annotations

from metaplug.cni import ns
from metaplug.cni.errors import INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

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


def _ipr() -> Any:
    from pyroute2 import IPRoute

    return IPRoute()


def inspect_interfaces(path: str) -> dict[str, dict[str, Any]]:
    """{ifname: {"mac": str, "addresses": set of "ip/prefix", "index": int}} of every interface in the namespace."""
    from metaplug import rtnl

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


def move_default_route(path: str, old_ifname: str | None, new_ifname: str, gateways: Iterable[str]) -> None:
    """R13: remove the default route(s) of `old_ifname` and route the default through `gateways` on `new_ifname`."""
    import ipaddress

    gws = [ipaddress.ip_address(g) for g in gateways]

    def apply() -> None:
        from pyroute2.netlink.exceptions import NetlinkError

        with _ipr() as ipr:
            new_index = ipr.link_lookup(ifname=new_ifname)
            if not new_index:
                raise CniError(INVALID_ENVIRONMENT, "default-route interface is missing", new_ifname)
            for gw in gws:
                family = 10 if gw.version == 6 else 2
                dst = "::/0" if gw.version == 6 else "0.0.0.0/0"
                for route in ipr.get_default_routes(family=family):
                    oif = route.get_attr("RTA_OIF")
                    if old_ifname is None or oif in ipr.link_lookup(ifname=old_ifname) or oif == new_index[0]:
                        ipr.route("del", dst=dst, oif=oif, family=family, gateway=route.get_attr("RTA_GATEWAY"))
                try:
                    ipr.route("add", dst=dst, gateway=str(gw), oif=new_index[0], family=family)
                except NetlinkError as exc:  # a gateway the interface cannot reach: the element's mistake
                    raise CniError(INVALID_NETWORK_CONFIG, "cannot move the default route (R13)",
                                   f"default via {gw} dev {new_ifname}: {exc.args[-1] if exc.args else exc}"
                                   ) from None

    run_in_netns(path, apply)


def restore_default_routes(path: str, ifname: str, routes: Iterable[dict[str, Any]]) -> list[str]:
    """Put default routes back on `ifname` (1.x result routes: dst, gw?, priority?): what R13 took from the cluster
    network when another attachment owned the default route. One already there counts as restored. Returns the
    problems (a missing interface, a route the kernel refuses), never raises for them."""
    wanted = list(routes)

    def apply() -> list[str]:
        from pyroute2.netlink.exceptions import NetlinkError

        problems: list[str] = []
        with _ipr() as ipr:
            index = ipr.link_lookup(ifname=ifname)
            if not index:
                return [f"interface {ifname} is missing"]
            for route in wanted:
                dst = str(route["dst"])
                spec: dict[str, Any] = {"dst": dst, "oif": index[0], "family": 10 if ":" in dst else 2}
                if route.get("gw"):
                    spec["gateway"] = str(route["gw"])
                if route.get("priority") is not None:
                    spec["priority"] = int(route["priority"])
                try:
                    ipr.route("add", **spec)
                except NetlinkError as exc:
                    if exc.code != 17:  # EEXIST: it is there
                        problems.append(f"default route {dst} via {route.get('gw') or ifname}: {exc}")
        return problems

    return run_in_netns(path, apply)


def remove_default_routes(path: str, ifname: str, ipv6: Iterable[bool]) -> None:
    """Delete the default routes through `ifname` of these families (True: IPv6); absent ones are fine."""
    families = [10 if v6 else 2 for v6 in set(ipv6)]

    def apply() -> None:
        with _ipr() as ipr:
            index = ipr.link_lookup(ifname=ifname)
            if not index:
                return
            for family in families:
                for route in ipr.get_default_routes(family=family):
                    if route.get_attr("RTA_OIF") == index[0]:
                        ipr.route("del", dst="::/0" if family == 10 else "0.0.0.0/0", oif=index[0], family=family,
                                  gateway=route.get_attr("RTA_GATEWAY"))

    run_in_netns(path, apply)
