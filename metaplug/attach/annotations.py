"""The pod's network selection annotations: parse and validate (attachments.md R4-R16).

Plain Python on purpose (hot path, no pydantic). Every validation failure is a CNI error with code 7 whose message
names the annotation, the element (0-based position and name) and the field, because a silently ignored request
(a static IP, a MAC) is worse than a failed ADD.
"""

from __future__ import annotations

from metaplug.cni import jsonload, lexical
from metaplug.cni.env import ifname_problem
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NETWORK_ANNOTATION = "v1.multus-cni.io/default-network"
NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"

# R1: NAD names and namespaces.
MAX_NAME_LENGTH = 253
MAX_NAMESPACE_LENGTH = 63

PROTOCOLS = ("tcp", "udp", "sctp")
BANDWIDTH_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")


class SelectionElement(NamedTuple):
    """One validated network selection element. `index` is its 0-based position in the annotation.

    NamedTuples, not dataclasses, on the ADD path: importing dataclasses (and inspect) costs ~3 ms per process."""

    name: str
    namespace: str
    interface: str | None = None
    ips: tuple[str, ...] = ()
    mac: str | None = None
    infiniband_guid: str | None = None
    default_route: tuple[str, ...] = ()
    port_mappings: tuple[dict[str, Any], ...] = ()
    bandwidth: dict[str, Any] | None = None
    cni_args: dict[str, Any] | None = None
    device_id: str | None = None
    ipam_claim_reference: str | None = None
    index: int = 0  # type: ignore[assignment]  # shadows tuple.index, which nothing here uses

    def runtime_config(self) -> dict[str, Any]:
        """The runtimeConfig keys this element asks for (R7 ips, R8 mac, R11 portMappings, R12 bandwidth,
        R14 infinibandGUID; deviceID). Fresh copies, safe to mutate."""
        out: dict[str, Any] = {}
        if self.ips:
            out["ips"] = list(self.ips)
        if self.mac is not None:
            out["mac"] = self.mac
        if self.port_mappings:
            out["portMappings"] = [dict(pm) for pm in self.port_mappings]
        if self.bandwidth is not None:
            out["bandwidth"] = dict(self.bandwidth)
        if self.infiniband_guid is not None:
            out["infinibandGUID"] = self.infiniband_guid
        if self.device_id is not None:
            out["deviceID"] = self.device_id
        return out


class _Where:
    """Names an element in error messages: annotation, position, name."""

    def __init__(self, annotation: str, index: int, name: Any = None) -> None:
        self.annotation = annotation
        self.index = index
        self.name = name

    def fail(self, field: str, problem: str) -> NoReturn:
        who = f"element {self.index}"
        if isinstance(self.name, str) and self.name:
            who += f" ({self.name!r})"
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"invalid {self.annotation} annotation",
            f"{who}, field {field!r}: {problem}",
        )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_name(where: _Where, field: str, value: Any, max_len: int) -> str:
    """R1: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, bounded length."""
    if not isinstance(value, str):
        where.fail(field, f"must be a string, got {_type_name(value)}")
    if not value:
        where.fail(field, "must not be empty")
    if len(value) > max_len:
        where.fail(field, f"{value!r} is longer than {max_len} characters")
    if not lexical.dns_label(value):
        where.fail(field, f"{value!r} must match {lexical.DNS_LABEL_PATTERN}")
    return value


def _check_ifname(where: _Where, value: Any) -> str:
    """R9: the rules of CNI_IFNAME (cni.md duty 4)."""
    if not isinstance(value, str):
        where.fail("interface", f"must be a string, got {_type_name(value)}")
    problem = ifname_problem(value)
    if problem:
        where.fail("interface", f"{value!r}: {problem}")
    return value


def _str_list(where: _Where, field: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        where.fail(field, f"must be a list of strings, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            where.fail(f"{field}[{i}]", f"must be a string, got {_type_name(item)}")
    return value


def _check_ips(where: _Where, value: Any) -> tuple[str, ...]:
    """R7: IPs with an optional prefix length."""
    ips = _str_list(where, "ips", value)
    for i, ip in enumerate(ips):
        if lexical.ip_version(ip) is not None:
            continue
        import ipaddress  # what inet_pton does not decide (issue 10.7: ~1 ms of every ADD with ips)

        try:
            ipaddress.ip_interface(ip)
        except ValueError:
            where.fail(f"ips[{i}]", f"{ip!r} is not an IP address (with optional /prefix)")
    return tuple(ips)


def _check_default_route(where: _Where, value: Any) -> tuple[str, ...]:
    """R13: gateway IPs (no prefix), at most one per IP family."""
    gws = _str_list(where, "default-route", value)
    seen: dict[int, str] = {}
    for i, gw in enumerate(gws):
        try:
            family = lexical.ip_version(gw) if "/" not in gw else None
            if family is None:
                import ipaddress

                family = ipaddress.ip_address(gw).version
        except ValueError:
            where.fail(f"default-route[{i}]", f"{gw!r} is not an IP address")
        if family in seen:
            where.fail(
                "default-route",
                f"more than one IPv{family} gateway ({seen[family]!r} and {gw!r}); at most one per IP family",
            )
        seen[family] = gw
    return tuple(gws)


def _check_mac(where: _Where, value: Any) -> str:
    """R8: a 6-byte MAC address in the colon form."""
    if not isinstance(value, str):
        where.fail("mac", f"must be a string, got {_type_name(value)}")
    if not lexical.hex_octets(value, 6):
        where.fail("mac", f"{value!r} is not a MAC address (6 hex bytes separated by ':')")
    return value


def _check_guid(where: _Where, value: Any) -> str:
    """R14: an 8-byte InfiniBand GUID in the colon form."""
    if not isinstance(value, str):
        where.fail("infiniband-guid", f"must be a string, got {_type_name(value)}")
    if not lexical.hex_octets(value, 8):
        where.fail("infiniband-guid", f"{value!r} is not an InfiniBand GUID (8 hex bytes separated by ':')")
    return value


def _check_port(where: _Where, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        where.fail(field, f"must be an integer port number, got {_type_name(value)}")
    if not 1 <= value <= 65535:
        where.fail(field, f"{value} is not a port number (1-65535)")
    return value


def _check_port_mappings(where: _Where, value: Any) -> tuple[dict[str, Any], ...]:
    """R11: [{hostPort, containerPort, protocol?, hostIP?}] normalised to the portmap plugin's spelling
    (protocol lower-case, default tcp). Unknown keys of a mapping are dropped."""
    if not isinstance(value, list):
        where.fail("portMappings", f"must be a list of objects, got {_type_name(value)}")
    out: list[dict[str, Any]] = []
    for i, pm in enumerate(value):
        field = f"portMappings[{i}]"
        if not isinstance(pm, dict):
            where.fail(field, f"must be an object, got {_type_name(pm)}")
        for key in ("hostPort", "containerPort"):
            if pm.get(key) is None:
                where.fail(f"{field}.{key}", "is required")
        mapping: dict[str, Any] = {
            "hostPort": _check_port(where, f"{field}.hostPort", pm["hostPort"]),
            "containerPort": _check_port(where, f"{field}.containerPort", pm["containerPort"]),
        }
        proto = pm.get("protocol")
        if proto is None:
            proto = "tcp"
        if not isinstance(proto, str) or proto.lower() not in PROTOCOLS:
            where.fail(f"{field}.protocol", f"{proto!r} is not one of TCP, UDP, SCTP")
        mapping["protocol"] = proto.lower()
        host_ip = pm.get("hostIP")
        if host_ip not in (None, ""):
            if not isinstance(host_ip, str):
                where.fail(f"{field}.hostIP", f"must be a string, got {_type_name(host_ip)}")
            try:
                if "/" in host_ip or lexical.ip_version(host_ip) is None:
                    import ipaddress

                    ipaddress.ip_address(host_ip)
            except ValueError:
                where.fail(f"{field}.hostIP", f"{host_ip!r} is not an IP address")
            mapping["hostIP"] = host_ip
        out.append(mapping)
    return tuple(out)


def _check_bandwidth(where: _Where, value: Any) -> dict[str, Any]:
    """R12: {ingressRate, ingressBurst, egressRate, egressBurst}, non-negative integers; other keys dropped."""
    if not isinstance(value, dict):
        where.fail("bandwidth", f"must be an object, got {_type_name(value)}")
    out: dict[str, Any] = {}
    for key in BANDWIDTH_KEYS:
        if key not in value or value[key] is None:
            continue
        num = value[key]
        if isinstance(num, bool) or not isinstance(num, int):
            where.fail(f"bandwidth.{key}", f"must be a non-negative integer, got {_type_name(num)}")
        if num < 0:
            where.fail(f"bandwidth.{key}", f"{num} is negative")
        out[key] = num
    return out


def _opt_str(where: _Where, field: str, value: Any) -> str:
    if not isinstance(value, str):
        where.fail(field, f"must be a string, got {_type_name(value)}")
    if not value:
        where.fail(field, "must not be empty")
    return value


def _check_cni_args(where: _Where, value: Any) -> dict[str, Any]:
    """R10: an object, merged later into every plugin's args.cni."""
    if not isinstance(value, dict):
        where.fail("cni-args", f"must be an object, got {_type_name(value)}")
    return dict(value)


def _check_device_id(where: _Where, value: Any) -> str:
    return _opt_str(where, "deviceID", value)


def _check_claim(where: _Where, value: Any) -> str:
    return _opt_str(where, "ipam-claim-reference", value)


# JSON key -> SelectionElement attribute -> validator, checked in this order.
_JSON_FIELDS: tuple[tuple[str, str, Callable[[_Where, Any], Any]], ...] = (
    ("interface", "interface", _check_ifname),
    ("ips", "ips", _check_ips),
    ("mac", "mac", _check_mac),
    ("infiniband-guid", "infiniband_guid", _check_guid),
    ("default-route", "default_route", _check_default_route),
    ("portMappings", "port_mappings", _check_port_mappings),
    ("bandwidth", "bandwidth", _check_bandwidth),
    ("cni-args", "cni_args", _check_cni_args),
    ("deviceID", "device_id", _check_device_id),
    ("ipam-claim-reference", "ipam_claim_reference", _check_claim),
)


def _element_from_json(obj: Any, index: int, default_namespace: str, annotation: str) -> SelectionElement:
    """One JSON selection element. Unknown keys are tolerated; a null value counts as absent."""
    where = _Where(annotation, index)
    if not isinstance(obj, dict):
        where.fail("(element)", f"must be a JSON object, got {_type_name(obj)}")
    where.name = obj.get("name")
    if obj.get("name") is None:
        where.fail("name", "is required")
    name = _check_name(where, "name", obj["name"], MAX_NAME_LENGTH)
    namespace = default_namespace
    if obj.get("namespace") is not None:
        namespace = _check_name(where, "namespace", obj["namespace"], MAX_NAMESPACE_LENGTH)
    fields = {attr: check(where, obj[key]) for key, attr, check in _JSON_FIELDS if obj.get(key) is not None}
    if fields.get("ipam_claim_reference") is not None and fields.get("ips"):
        # R15
        where.fail("ipam-claim-reference", "may not be combined with 'ips'; request the addresses through one of them")
    return SelectionElement(name=name, namespace=namespace, index=index, **fields)


def _element_from_text(item: str, index: int, default_namespace: str, annotation: str) -> SelectionElement:
    """One comma-list item: `name`, `namespace/name`, `name@ifname` or `namespace/name@ifname`."""
    where = _Where(annotation, index, item)
    if not item:
        where.fail("(element)", "empty item in the comma-separated list")
    rest, at, ifname = item.partition("@")
    if at and "@" in ifname:
        where.fail("interface", f"{item!r} has more than one '@'")
    if "/" in rest:
        namespace, _, name = rest.partition("/")
        if "/" in name:
            where.fail("name", f"{item!r} has more than one '/'")
        namespace = _check_name(where, "namespace", namespace, MAX_NAMESPACE_LENGTH)
    else:
        namespace, name = default_namespace, rest
    name = _check_name(where, "name", name, MAX_NAME_LENGTH)
    where.name = name
    interface = _check_ifname(where, ifname) if at else None
    return SelectionElement(name=name, namespace=namespace, interface=interface, index=index)


def _is_json(value: str) -> bool:
    stripped = value.lstrip()
    return stripped[:1] in ("[", "{")


def _parse(value: str, default_namespace: str, annotation: str) -> list[SelectionElement]:
    if not isinstance(value, str):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {annotation} annotation", "the value must be a string")
    if _is_json(value):
        try:
            data = jsonload.loads(value)
        except ValueError as exc:
            raise CniError(
                INVALID_NETWORK_CONFIG, f"invalid {annotation} annotation", f"the value is not valid JSON: {exc}"
            ) from None
        items = data if isinstance(data, list) else [data]
        return [_element_from_json(obj, i, default_namespace, annotation) for i, obj in enumerate(items)]
    if not value.strip():
        return []
    return [
        _element_from_text(item.strip(), i, default_namespace, annotation) for i, item in enumerate(value.split(","))
    ]


def parse_networks_annotation(value: str, default_namespace: str) -> list[SelectionElement]:
    """Parse `k8s.v1.cni.cncf.io/networks` (R4-R16), both the comma list and the JSON form.

    An empty (or all-whitespace) value selects nothing. The same network listed twice gives two elements (R16).
    Also enforces R13 (default-route on one element only). Errors: CniError code 7 naming element and field.
    """
    elements = _parse(value, default_namespace, NETWORKS_ANNOTATION)
    validate_default_route_owner(elements)
    return elements


def validate_default_route_owner(elements: Sequence[SelectionElement]) -> int | None:
    """R13: at most one element may carry default-route. Returns that element's list position, or None."""
    owners = [pos for pos, el in enumerate(elements) if el.default_route]
    if len(owners) > 1:
        named = ", ".join(f"element {elements[p].index} ({elements[p].name!r})" for p in owners)
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"invalid {NETWORKS_ANNOTATION} annotation",
            f"field 'default-route' is set on more than one element ({named}); only one attachment can own the "
            "default route",
        )
    return owners[0] if owners else None


def parse_default_network_annotation(value: str, default_namespace: str) -> SelectionElement:
    """Parse `v1.multus-cni.io/default-network`: exactly one network (`name`, `namespace/name`, a JSON object or a
    one-element JSON list) that replaces the cluster network. It always gets CNI_IFNAME, so `interface` is refused."""
    elements = _parse(value, default_namespace, DEFAULT_NETWORK_ANNOTATION)
    if len(elements) != 1:
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"invalid {DEFAULT_NETWORK_ANNOTATION} annotation",
            f"must name exactly one network, found {len(elements)}",
        )
    element = elements[0]
    if element.interface is not None:
        _Where(DEFAULT_NETWORK_ANNOTATION, 0, element.name).fail(
            "interface", "the default network always uses CNI_IFNAME; remove the interface name"
        )
    return element
