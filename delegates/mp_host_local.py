"""mp-host-local: IPAM from address ranges, allocations kept on disk (see _store.py for the layout).

Config `ipam`: ranges [[{subnet, rangeStart?, rangeEnd?, gateway?}]] (or the legacy flat subnet/...), routes
[{dst, gw?}], dataDir (default /var/lib/cni/networks), dns or resolvConf. Capabilities: `ips` (static requests; also
args.cni.ips and CNI_ARGS IP=), `ipRanges` (replaces ranges). One address per range set per containerID+ifname.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from metaplug_delegates import ADDRESS_UNAVAILABLE, CHECK_FAILED
from metaplug_delegates._allocator import Allocation, allocate
from metaplug_delegates._common import finish, prev_result, require_version, serve
from metaplug_delegates._ipamconf import dns_of, ipam_section, requested_addresses, routes_of
from metaplug_delegates._ranges import IPAddr, RangeSet, parse_range_sets, range_for
from metaplug_delegates._store import Store

from metaplug.cni.env import CniEnv, valid_attachments, validate_network_name
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, NOT_AVAILABLE, CniError
from metaplug.cni.skel import Handler

NAME = "mp-host-local"
DEFAULT_DATA_DIR = "/var/lib/cni/networks"


@dataclass
class HostLocalConf:
    network: str
    range_sets: list[RangeSet]
    routes: list[dict[str, Any]]
    data_dir: str
    ipam: dict[str, Any]

    @classmethod
    def load(cls, conf: dict[str, Any]) -> HostLocalConf:
        store = store_of(conf)
        ipam = ipam_section(conf)
        runtime = conf.get("runtimeConfig")
        ip_ranges = runtime.get("ipRanges") if isinstance(runtime, dict) else None
        return cls(conf["name"], parse_range_sets(ipam, ip_ranges), routes_of(ipam), store.data_dir, ipam)

    def store(self) -> Store:
        return Store(self.data_dir, self.network)


def store_of(conf: dict[str, Any]) -> Store:
    """The store of the config's network; needs only name and ipam.dataDir (so DEL and GC work with broken ranges)."""
    validate_network_name(conf.get("name"))  # cni.md 5; it also becomes a directory name
    data_dir = ipam_section(conf).get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, str):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.dataDir", "must be a directory path")
    return Store(data_dir, conf["name"])


def _requested_ips(conf: dict[str, Any], env: CniEnv) -> list[IPAddr]:
    out: list[IPAddr] = []
    for item in requested_addresses(conf, env):
        try:
            out.append(ipaddress.ip_interface(item).ip)
        except ValueError:
            raise CniError(INVALID_NETWORK_CONFIG, "invalid requested IP", f"{item!r} is not an IP address") from None
    return out


def cmd_add(env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    hc = HostLocalConf.load(conf)
    requested = _requested_ips(conf, env)
    dns = dns_of(hc.ipam)
    got: list[Allocation] = []
    store = hc.store()
    with store.locked():
        try:
            for idx, rs in enumerate(hc.range_sets):
                want = next((ip for ip in requested if range_for(rs, ip) is not None), None)
                if want is not None:
                    requested.remove(want)
                got.append(allocate(store, rs, idx, env.container_id, env.ifname, want))
            if requested:
                raise CniError(ADDRESS_UNAVAILABLE, "failed to allocate all requested IPs",
                               f"{', '.join(map(str, requested))} not in any range set of network {hc.network}")
        except BaseException:
            for alloc in got:
                if alloc.new:
                    store.release(alloc.ip)
            raise
    ips: list[dict[str, Any]] = []
    for alloc in got:
        entry: dict[str, Any] = {"address": alloc.address}
        if alloc.range.gateway is not None:
            entry["gateway"] = str(alloc.range.gateway)
        ips.append(entry)
    result: dict[str, Any] = {"ips": ips}
    if hc.routes:
        result["routes"] = hc.routes
    if dns:
        result["dns"] = dns
    return finish(result, conf)


def cmd_del(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 11: release every address of containerID+ifname; none left (or no store yet) is success."""
    store = store_of(conf)
    if not store.exists():
        return None
    with store.locked():
        store.release_by_id(env.container_id, env.ifname)
    return None


def cmd_check(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 12: the attachment still holds addresses, and every prevResult address of our ranges is one of them."""
    require_version(conf, "0.4.0", "CHECK")
    hc = HostLocalConf.load(conf)
    store = hc.store()
    held: list[IPAddr] = []
    if store.exists():
        with store.locked():
            held = store.get_by_id(env.container_id, env.ifname)
    if not held:
        raise CniError(CHECK_FAILED, f"{NAME}: failed to find address added by container {env.container_id}",
                       f"no allocation for {env.container_id}/{env.ifname} in {store.dir}")
    if isinstance(conf.get("prevResult"), dict):
        for ip in prev_result(conf, "CHECK").get("ips") or []:
            addr = ipaddress.ip_interface(ip["address"]).ip
            ours = any(range_for(rs, addr) is not None for rs in hc.range_sets)
            if ours and addr not in held:
                raise CniError(CHECK_FAILED, f"{NAME}: {addr} is no longer allocated to {env.container_id}",
                               f"{env.container_id}/{env.ifname} holds {', '.join(map(str, held))}")
    return None


def cmd_status(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 13: ready when the config is usable and the store's directory can be written."""
    require_version(conf, "1.1.0", "STATUS")
    hc = HostLocalConf.load(conf)
    path = hc.store().dir
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    if not os.access(path, os.W_OK | os.X_OK):
        raise CniError(NOT_AVAILABLE, f"{NAME}: IPAM store not writable", f"{path} is not writable")
    return None


def cmd_gc(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 14: release every allocation of this network whose containerID/ifname is not a valid attachment."""
    require_version(conf, "1.1.0", "GC")
    keep = valid_attachments(conf)
    store = store_of(conf)
    if keep is None or not store.exists():
        return None
    kept_ids = {cid for cid, _ in keep}
    with store.locked():
        for ip, (cid, ifname) in store.owners().items():
            alive = (cid, ifname) in keep if ifname else cid in kept_ids
            if not alive:
                store.release(ip)
    return None


# the verbs, for the executable (main) and for metaplug daemon, which serves them in-process
HANDLERS: dict[str, Handler] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check,
                                "STATUS": cmd_status, "GC": cmd_gc}


def main() -> None:
    serve(NAME, HANDLERS)


if __name__ == "__main__":
    main()
