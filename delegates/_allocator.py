"""mp-host-local's allocation: one address per range set for a containerID+ifname, on top of the Store.

Call inside `with store.locked():`. A repeated ADD for the same containerID+ifname gets the address it already has
(cni.md 36: runtimes such as Nomad retry ADD without DEL), unlike the reference, which refuses a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaplug_delegates import ADDRESS_UNAVAILABLE, RANGE_EXHAUSTED
from metaplug_delegates._ranges import IPAddr, Range, RangeSet, candidates, describe, range_for
from metaplug_delegates._store import Store

from metaplug.cni.errors import CniError


@dataclass(frozen=True)
class Allocation:
    ip: IPAddr
    range: Range
    new: bool  # False: the attachment already had it (repeated ADD)

    @property
    def address(self) -> str:
        """The CIDR form the result carries: the address with its subnet's prefix."""
        return f"{self.ip}/{self.range.subnet.prefixlen}"


def allocate(store: Store, rs: RangeSet, range_id: int, container_id: str, ifname: str,
             requested: IPAddr | None = None) -> Allocation:
    """One address of range set `rs` (index `range_id`) for container_id/ifname: its existing one, else `requested`,
    else the next free one in round-robin order. Errors: RANGE_EXHAUSTED, ADDRESS_UNAVAILABLE."""
    for ip in store.get_by_id(container_id, ifname):
        r = range_for(rs, ip)
        if r is None:
            continue
        if requested is not None and requested != ip:
            raise CniError(ADDRESS_UNAVAILABLE, f"requested IP address {requested} not allocated",
                           f"{container_id}/{ifname} already holds {ip} in range set {describe(rs)}; DEL it first")
        return Allocation(ip, r, new=False)
    if requested is not None:
        return _reserve_requested(store, rs, range_id, container_id, ifname, requested)
    taken = set(store.owners())
    for ip in candidates(rs, store.last_reserved(range_id)):
        if ip in taken:
            continue
        if store.reserve(ip, container_id, ifname, range_id):
            r = range_for(rs, ip)
            assert r is not None  # candidates() only yields addresses of the set
            return Allocation(ip, r, new=True)
    raise CniError(RANGE_EXHAUSTED, f"no IP addresses available in range set: {describe(rs)}",
                   "every usable address is allocated; release some (DEL, GC) or add a range")


def _reserve_requested(store: Store, rs: RangeSet, range_id: int, container_id: str, ifname: str,
                       requested: IPAddr) -> Allocation:
    r = range_for(rs, requested)
    if r is None:
        raise CniError(ADDRESS_UNAVAILABLE, f"requested IP address {requested} is outside the range set",
                       f"range set {describe(rs)}")
    if requested == r.gateway:
        raise CniError(ADDRESS_UNAVAILABLE, f"requested IP address {requested} is the subnet's gateway",
                       f"range {r}")
    if not store.reserve(requested, container_id, ifname, range_id):
        owner = store.owner_of(requested)
        who = f"{owner[0]}/{owner[1]}" if owner else "another attachment"
        raise CniError(ADDRESS_UNAVAILABLE, f"requested IP address {requested} is not available",
                       f"it is allocated to {who} in range set {describe(rs)}")
    return Allocation(requested, r, new=True)
