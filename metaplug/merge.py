"""Many delegate results -> one CNI result, and the network-status entries (attachments.md R17-R23, "Results: BEYOND").

Inputs are 1.1.0-shaped result dicts (interfaces / ips / routes / dns), already converted by the caller; outputs are
fresh dicts that never alias the inputs. Conversion to the request's cniVersion is the caller's job.
"""

from __future__ import annotations

from metaplug.cni import jsontext
from metaplug.cni.runtime_typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NotRequired, TypedDict

    from metaplug.cni.documents import JsonObject, Result

    # One entry of the `k8s.v1.cni.cncf.io/network-status` annotation (R17-R23), also kept in the journal's `status`.
    # For the type checker only, like the journal's records. The keys are the annotation's (an on-disk and on-API
    # contract): `name` the attachment's status name, `interface` the sandbox interface, `ips` its addresses without
    # prefix, `mac`/`mtu` when the result gives them, `default` whether it owns the pod's default route, `dns` the
    # attachment's DNS, `gateway` the gateways of its ips, `device-info` what a device plugin reported.
    NetworkStatusEntry = TypedDict("NetworkStatusEntry", {
        "name": str,
        "interface": str,
        "ips": list[str],
        "mac": NotRequired[str],
        "mtu": NotRequired[int],
        "default": bool,
        "dns": NotRequired[JsonObject],
        "gateway": NotRequired[list[str]],
        "device-info": NotRequired[JsonObject],
    })

MERGED_VERSION = "1.1.0"


class AttachmentResult:
    """The result of one attachment of a pod.

    `status_name` is the network-status name (`namespace/nad`, or the cluster conflist's name); `ifname` the CNI_IFNAME
    the attachment ran with; `is_default` marks the attachment that owns the default route (R13); `cluster` the
    cluster network (R24). `device_info` is copied into the status entry of the attachment's interface when set.
    A plain class, not a dataclass: importing dataclasses (and inspect) costs ~3 ms on every ADD.
    """

    __slots__ = ("cluster", "device_info", "ifname", "is_default", "result", "status_name")

    def __init__(self, status_name: str, ifname: str, result: Result, is_default: bool, cluster: bool,
                 device_info: JsonObject | None = None) -> None:
        self.status_name = status_name
        self.ifname = ifname
        self.result = result
        self.is_default = is_default
        self.cluster = cluster
        self.device_info = device_info

    def __repr__(self) -> str:
        return (f"AttachmentResult(status_name={self.status_name!r}, ifname={self.ifname!r}, "
                f"is_default={self.is_default!r}, cluster={self.cluster!r}, result={self.result!r})")


def is_default_route(route: JsonObject) -> bool:
    """True for a route to 0.0.0.0/0 or ::/0 (any spelling with prefix length 0)."""
    dst = route.get("dst")
    if not isinstance(dst, str):
        return False
    if dst in ("0.0.0.0/0", "::/0"):
        return True
    _, _, prefix = dst.partition("/")
    if not prefix or (prefix.isdigit() and prefix.isascii() and int(prefix) != 0):
        return False  # a host address or a prefix length above 0: not a default route, whether valid or not
    import ipaddress  # "0/0", "::ffff:0:0/0", "0.0.0.0/0.0.0.0" and the like: ipaddress decides (~1 ms to import)

    try:
        return ipaddress.ip_network(dst, strict=False).prefixlen == 0
    except ValueError:
        return False


def _interface_index(ip: JsonObject, count: int) -> int | None:
    """The ip's interface index when it is a valid index into a list of `count` interfaces."""
    idx = ip.get("interface")
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < count:
        return None
    return idx


def _has_dns(dns: object) -> bool:
    return isinstance(dns, dict) and any(bool(v) for v in dns.values())


def merge_results(attachments: Sequence[AttachmentResult]) -> Result:
    """One result for the whole pod (BEYOND Multus).

    Interfaces of every attachment concatenated in attachment order; every ips[].interface re-indexed into the merged
    list (an ip without an index, or with an index outside its own result's interfaces, gets none: cni.md duty 27);
    routes of every attachment, but default routes only from the attachment with is_default (R13); dns of the
    cluster attachment.
    """
    interfaces: list[JsonObject] = []
    ips: list[JsonObject] = []
    routes: list[JsonObject] = []
    dns: JsonObject | None = None
    for att in attachments:
        res = att.result
        own_ifaces = res.get("interfaces") or []
        offset = len(interfaces)
        interfaces.extend(jsontext.clone(own_ifaces))
        for ip in res.get("ips") or []:
            new_ip = jsontext.clone(ip)
            idx = _interface_index(ip, len(own_ifaces))
            new_ip.pop("interface", None)
            if idx is not None:
                new_ip["interface"] = offset + idx
            ips.append(new_ip)
        for route in res.get("routes") or []:
            if is_default_route(route) and not att.is_default:
                continue
            routes.append(jsontext.clone(route))
        if att.cluster and dns is None and _has_dns(res.get("dns")):
            dns = jsontext.clone(res["dns"])
    merged: Result = {"cniVersion": MERGED_VERSION}
    if interfaces:
        merged["interfaces"] = interfaces
    if ips:
        merged["ips"] = ips
    if routes:
        merged["routes"] = routes
    if dns is not None:
        merged["dns"] = dns
    return merged


def _address(ip: JsonObject) -> str:
    """`10.1.2.3/24` -> `10.1.2.3` (R19: status lists addresses without prefix)."""
    addr = str(ip.get("address", ""))
    return addr.split("/", 1)[0]


def _entry(
    att: AttachmentResult, ifname: str, ips: list[JsonObject], iface: JsonObject | None, default: bool
) -> NetworkStatusEntry:
    # Built key by key in the annotation's order (the JSON metaplug has always written), hence the cast at the end.
    entry: JsonObject = {"name": att.status_name, "interface": ifname}
    entry["ips"] = [_address(ip) for ip in ips if ip.get("address")]
    if iface is not None and iface.get("mac"):
        entry["mac"] = iface["mac"]
    if iface is not None and iface.get("mtu"):
        entry["mtu"] = iface["mtu"]
    entry["default"] = default
    dns = att.result.get("dns")
    if _has_dns(dns):
        entry["dns"] = jsontext.clone(dns)
    gateways: list[str] = []
    for ip in ips:
        gw = ip.get("gateway")
        if gw and gw not in gateways:
            gateways.append(gw)
    if gateways:
        entry["gateway"] = gateways
    if att.device_info is not None and ifname == att.ifname:
        entry["device-info"] = jsontext.clone(att.device_info)
    return cast("NetworkStatusEntry", entry)


def network_status(attachments: Sequence[AttachmentResult]) -> list[NetworkStatusEntry]:
    """The `k8s.v1.cni.cncf.io/network-status` entries (R17-R23).

    One entry per sandbox interface (non-empty `sandbox`), in attachment order, with the addresses whose
    ips[].interface points at it. An attachment whose result has no sandbox interface (IPAM-only style) still gets
    one entry named after its ifname, carrying all its addresses. Exactly one entry is `default: true` when an
    attachment has is_default (the first such): its interface named ifname, else its first sandbox interface.
    """
    out: list[NetworkStatusEntry] = []
    default_given = False
    for att in attachments:
        res = att.result
        ifaces: list[JsonObject] = list(res.get("interfaces") or [])
        all_ips: list[JsonObject] = list(res.get("ips") or [])
        sandbox = [i for i, iface in enumerate(ifaces) if iface.get("sandbox")]
        wants_default = att.is_default and not default_given
        default_given = default_given or att.is_default
        if not sandbox:
            out.append(_entry(att, att.ifname, all_ips, None, wants_default))
            continue
        named = [i for i in sandbox if ifaces[i].get("name") == att.ifname]
        default_idx = named[0] if named else sandbox[0]
        for i in sandbox:
            own = [ip for ip in all_ips if _interface_index(ip, len(ifaces)) == i]
            out.append(_entry(att, str(ifaces[i].get("name", "")), own, ifaces[i], wants_default and i == default_idx))
    return out


def primary_result(attachments: Sequence[AttachmentResult]) -> Result:
    """The cluster attachment's result alone (`"result": "primary"`, the Multus behaviour). A copy."""
    for att in attachments:
        if att.cluster:
            return jsontext.clone(att.result)
    raise ValueError("no cluster attachment among the results")


def interface_result(result: Result, ifname: str) -> Result | None:
    """The part of a merged result (any version) that belongs to the sandbox interface `ifname`, as a 1.1.0 result:
    DEL's prevResult for an attachment recomputed after its journal was lost. None when the result has no such
    interface or cannot be read."""
    from metaplug.cni.convert import convert_result
    from metaplug.cni.errors import CniError

    try:
        full = convert_result(result, "1.1.0")
    except (CniError, ValueError, TypeError, KeyError):
        return None
    interfaces = full.get("interfaces") or []
    index = next((i for i, iface in enumerate(interfaces)
                  if isinstance(iface, dict) and iface.get("name") == ifname and iface.get("sandbox")), None)
    if index is None:
        return None
    ips = [{**ip, "interface": 0} for ip in full.get("ips") or []
           if isinstance(ip, dict) and _interface_index(ip, len(interfaces)) == index]
    return {"cniVersion": "1.1.0", "interfaces": [interfaces[index]], "ips": ips}
