"""mp-host-local's address ranges: parsing with the reference plugin's defaults, and the allocation order.

Pure logic (no disk, no netlink). A range set is a list of ranges of one family; each range set of a config yields
one address per attachment. Order: round robin, starting after the range set's last reserved address, wrapping
around once, never yielding a gateway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError

IPAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Range:
    """One range: addresses start..end (inclusive) of subnet, with an optional gateway."""

    subnet: IPNet
    start: IPAddr
    end: IPAddr
    gateway: IPAddr | None

    def contains(self, ip: IPAddr) -> bool:
        return ip.version == self.start.version and self.start <= ip <= self.end  # type: ignore[operator]

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


RangeSet = list[Range]


def _bad(msg: str, details: str) -> CniError:
    return CniError(INVALID_NETWORK_CONFIG, msg, details)


def _address(value: Any, what: str) -> IPAddr:
    try:
        return ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise _bad(f"invalid {what}", f"{value!r} is not an IP address") from None


def parse_range(obj: Any) -> Range:
    """One range object {subnet, rangeStart?, rangeEnd?, gateway?} with the reference defaults:
    start = first address after the network address, end = last address (IPv4: before the broadcast),
    gateway = first address after the network address."""
    if not isinstance(obj, dict) or not isinstance(obj.get("subnet"), str):
        raise _bad("invalid range", f"{obj!r} needs a subnet")
    try:
        subnet = ipaddress.ip_network(obj["subnet"], strict=True)
    except ValueError as exc:
        raise _bad("invalid range subnet", f"{obj['subnet']!r}: {exc}") from None
    if subnet.max_prefixlen - subnet.prefixlen < 2:
        raise _bad("network too small to allocate from", f"{subnet}")
    last = subnet.broadcast_address - 1 if subnet.version == 4 else subnet.broadcast_address
    start = _address(obj["rangeStart"], "rangeStart") if obj.get("rangeStart") else subnet.network_address + 1
    end = _address(obj["rangeEnd"], "rangeEnd") if obj.get("rangeEnd") else last
    gateway = _address(obj["gateway"], "gateway") if obj.get("gateway") else subnet.network_address + 1
    for what, ip in (("rangeStart", start), ("rangeEnd", end), ("gateway", gateway)):
        if ip not in subnet:
            raise _bad(f"{what} not in subnet", f"{ip} is outside {subnet}")
    if start > end:  # type: ignore[operator]
        raise _bad("rangeStart after rangeEnd", f"{start} > {end}")
    return Range(subnet, start, end, gateway)


def parse_range_set(items: Any) -> RangeSet:
    """A non-empty list of ranges, all of one family."""
    if not isinstance(items, list) or not items:
        raise _bad("invalid range set", "each element of ranges must be a non-empty list of range objects")
    rs = [parse_range(item) for item in items]
    if len({r.subnet.version for r in rs}) != 1:
        raise _bad("mixed address families in a range set", ", ".join(str(r.subnet) for r in rs))
    return rs


def parse_range_sets(ipam: dict[str, Any], runtime_ranges: Any = None) -> list[RangeSet]:
    """`ipam.ranges` (or the `ipRanges` capability, which replaces it; or the legacy flat subnet/rangeStart/...),
    validated: ranges never overlap, within a set or across sets."""
    source = runtime_ranges if runtime_ranges else ipam.get("ranges")
    if source:
        if not isinstance(source, list):
            raise _bad("invalid ranges", "ranges must be a list of range sets")
        sets = [parse_range_set(item) for item in source]
    elif ipam.get("subnet"):
        sets = [[parse_range(ipam)]]
    else:
        raise _bad("no IP ranges", "ipam needs \"ranges\" (or a legacy \"subnet\")")
    flat = [r for rs in sets for r in rs]
    for i, a in enumerate(flat):
        for b in flat[i + 1:]:
            if a.start.version == b.start.version and a.start <= b.end and b.start <= a.end:  # type: ignore[operator]
                raise _bad("overlapping ranges", f"{a} overlaps {b}")
    return sets


def range_for(rs: RangeSet, ip: IPAddr) -> Range | None:
    """The range of the set holding `ip` (start..end), or None."""
    for r in rs:
        if r.contains(ip):
            return r
    return None


def describe(rs: RangeSet) -> str:
    return ",".join(str(r) for r in rs)


def candidates(rs: RangeSet, last_reserved: IPAddr | None = None) -> Iterator[IPAddr]:
    """Every address of the set exactly once, gateways excluded, starting right after `last_reserved` when it lies
    in the set (round robin, like the reference), else at the first range's start; wraps around."""
    n = len(rs)
    idx, first = 0, rs[0].start
    if last_reserved is not None:
        for i, r in enumerate(rs):
            if r.contains(last_reserved):
                if last_reserved == r.end:
                    idx = (i + 1) % n
                    first = rs[idx].start
                else:
                    idx, first = i, last_reserved + 1
                break
    segments: list[tuple[IPAddr, IPAddr]] = [(first, rs[idx].end)]
    segments += [(rs[(idx + k) % n].start, rs[(idx + k) % n].end) for k in range(1, n)]
    if first > rs[idx].start:  # type: ignore[operator]
        segments.append((rs[idx].start, first - 1))
    gateways = {r.gateway for r in rs if r.gateway is not None}
    for lo, hi in segments:
        ip = lo
        while True:
            if ip not in gateways:
                yield ip
            if ip >= hi:  # type: ignore[operator]
                break
            ip += 1
