"""Convert a CNI result between spec versions, on plain dicts (cni.md duties 27-30).

On the hot path (every ADD answers in the request's version), so no pydantic here: results are JSON-shaped dicts and
only what a conversion needs is checked (the family of an address, via `ipaddress`).

Families: 0.1.0/0.2.0 ("ip4"/"ip6"), 0.3.0/0.3.1/0.4.0 ("ips" with "version"), 1.0.0/1.1.0 ("ips" without it).
"""

from __future__ import annotations

from metaplug.cni import jsontext, lexical
from metaplug.cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING
from metaplug.cni.version import SUPPORTED_VERSIONS

if TYPE_CHECKING:
    from typing import Any

_FAMILY: dict[str, str] = {
    "0.1.0": "v02",
    "0.2.0": "v02",
    "0.3.0": "v04",
    "0.3.1": "v04",
    "0.4.0": "v04",
    "1.0.0": "v1",
    "1.1.0": "v1",
}

# Duty 27: fields that exist only from 1.1.0 on.
INTERFACE_EXTRAS_1_1 = ("mtu", "socketPath", "pciID")
ROUTE_EXTRAS_1_1 = ("mtu", "advmss", "priority", "table", "scope")


def result_version(result: dict[str, Any], default: str) -> str:
    """The result's cniVersion, or `default` (the config's version) when it has none (duty 25)."""
    ver = result.get("cniVersion")
    return ver if isinstance(ver, str) and ver else default


def address_family(cidr: Any) -> str:
    """"4" or "6" for an address in CIDR form ("10.1.2.3/24"); anything else is code 6 `invalid address`."""
    if isinstance(cidr, str) and "/" in cidr:
        _, _, prefix = cidr.partition("/")
        if prefix.isdigit() and prefix.isascii():  # no netmask or hostmask notation: CIDR only
            version = lexical.ip_version(cidr)
            if version is not None:
                return str(version)
            import ipaddress  # what inet_pton refuses (a scoped IPv6 address, say): ipaddress decides, as before

            try:
                return str(ipaddress.ip_interface(cidr).version)
            except ValueError:
                pass
    raise CniError(DECODE_FAILURE, "invalid address", f"{cidr!r} is not an address in CIDR notation")


def check_result(value: Any, what: str) -> dict[str, Any]:
    """`value` when it is a CNI result object (of a supported version, its lists lists of objects, its addresses
    CIDRs); otherwise code 7 naming `what` (e.g. `prevResult` of a plugin's configuration, cni.md 10)."""
    def bad(problem: str) -> CniError:
        return CniError(INVALID_NETWORK_CONFIG, f"invalid {what}", f"{what} {problem}")

    if not isinstance(value, dict):
        raise bad(f"must be a result object, not {type(value).__name__}")
    ver = value.get("cniVersion")
    if not isinstance(ver, str) or not ver:
        raise bad("has no cniVersion")
    if ver not in _FAMILY:
        raise bad(f"has an unsupported cniVersion {ver!r}")
    keys = ("ip4", "ip6") if _FAMILY[ver] == "v02" else ("interfaces", "ips", "routes")
    for key in keys:
        item = value.get(key)
        if item is None:
            continue
        if key in ("ip4", "ip6"):
            if not isinstance(item, dict):
                raise bad(f"{key} must be an object")
            continue
        if not isinstance(item, list) or not all(isinstance(i, dict) for i in item):
            raise bad(f"{key} must be a list of objects")
    for ip in value.get("ips") or []:
        try:
            address_family(ip.get("address"))
        except CniError as err:
            raise bad(f"ips: {err.details}") from None
    if value.get("dns") is not None and not isinstance(value["dns"], dict):
        raise bad("dns must be an object")
    return value


def convert_result(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    """Return a new dict holding `result` in `to_version` (duty 30); `result` itself is not modified.

    `result` must carry its cniVersion (see `result_version` for one that may lack it). Unknown versions: code 1.
    Converting to 0.1.0/0.2.0 a result without any IP address: code 1 `cannot convert: no valid IP addresses`.
    """
    src_version = result.get("cniVersion")
    if not isinstance(src_version, str):
        raise CniError(DECODE_FAILURE, "result has no cniVersion", "the result must name its version")
    src = _family_of(src_version, "result")
    dst = _family_of(to_version, "target")

    if src == dst:
        out = jsontext.clone(result)
        if src_version == "1.1.0" and to_version == "1.0.0":
            _drop_1_1_extras(out)
        out["cniVersion"] = to_version
        return out
    if src == "v02":
        return _from_v02(result, to_version, with_ip_version=dst == "v04")
    if dst == "v02":
        return _to_v02(result, to_version)
    out = jsontext.clone(result)
    out["cniVersion"] = to_version
    if dst == "v1":  # 0.3.x/0.4.0 -> 1.x
        for ip in _objects(out, "ips"):
            ip.pop("version", None)
    else:  # 1.x -> 0.3.x/0.4.0
        _drop_1_1_extras(out)
        for ip in _objects(out, "ips"):
            ip["version"] = address_family(ip.get("address"))
    return out


def _family_of(ver: str, what: str) -> str:
    fam = _FAMILY.get(ver) if isinstance(ver, str) else None
    if fam is None:
        raise CniError(
            INCOMPATIBLE_VERSION,
            f"unsupported {what} version for result conversion",
            f"{ver!r} is not one of {list(SUPPORTED_VERSIONS)}",
        )
    return fam


def _objects(res: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`res[key]` as a list of objects (missing or null: empty); any other shape is code 6."""
    items = res.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise CniError(DECODE_FAILURE, "invalid result", f"{key!r} must be a list of objects")
    return items


def _drop_1_1_extras(res: dict[str, Any]) -> None:
    """In place: remove the 1.1-only interface and route fields (duty 27)."""
    for iface in _objects(res, "interfaces"):
        for key in INTERFACE_EXTRAS_1_1:
            iface.pop(key, None)
    for route in _objects(res, "routes"):
        for key in ROUTE_EXTRAS_1_1:
            route.pop(key, None)


def _plain_route(route: dict[str, Any]) -> dict[str, Any]:
    """A route reduced to what 0.2.0 knows: dst and gw."""
    out: dict[str, Any] = {"dst": route.get("dst")}
    if route.get("gw") is not None:
        out["gw"] = route["gw"]
    return out


def _to_v02(result: dict[str, Any], to_version: str) -> dict[str, Any]:
    """0.3+ -> 0.1.0/0.2.0: first v4 and first v6 address, routes by the family of dst, no interfaces (duty 30)."""
    out: dict[str, Any] = {"cniVersion": to_version}
    for ip in _objects(result, "ips"):
        key = "ip" + address_family(ip.get("address"))
        if key in out:
            continue
        conf: dict[str, Any] = {"ip": ip["address"]}
        if ip.get("gateway") is not None:
            conf["gateway"] = ip["gateway"]
        out[key] = conf
        if "ip4" in out and "ip6" in out:
            break
    if "ip4" not in out and "ip6" not in out:
        raise CniError(INCOMPATIBLE_VERSION, "cannot convert: no valid IP addresses", f"to version {to_version}")
    for route in _objects(result, "routes"):
        target = out.get("ip" + address_family(route.get("dst")))
        if target is not None:  # a route of a family without an address has nowhere to go in 0.2.0
            target.setdefault("routes", []).append(_plain_route(route))
    if result.get("dns") is not None:
        out["dns"] = jsontext.clone(result["dns"])
    return out


def _from_v02(result: dict[str, Any], to_version: str, *, with_ip_version: bool) -> dict[str, Any]:
    """0.1.0/0.2.0 -> 0.3+: ip4 then ip6 become ips without interface, their routes become top-level (duty 30)."""
    out: dict[str, Any] = {"cniVersion": to_version}
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for key in ("ip4", "ip6"):
        conf = result.get(key)
        if conf is None:
            continue
        if not isinstance(conf, dict):
            raise CniError(DECODE_FAILURE, "invalid address", f"{key} must be an object")
        fam = address_family(conf.get("ip"))
        ip: dict[str, Any] = {"address": conf["ip"]}
        if conf.get("gateway") is not None:
            ip["gateway"] = conf["gateway"]
        if with_ip_version:
            ip["version"] = fam
        ips.append(ip)
        routes.extend(_plain_route(r) for r in _objects(conf, "routes"))
    if ips:
        out["ips"] = ips
    if routes:
        out["routes"] = routes
    if result.get("dns") is not None:
        out["dns"] = jsontext.clone(result["dns"])
    return out
