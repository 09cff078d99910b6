"""mp-static: IPAM that hands out fixed addresses.

Config `ipam`: addresses [{address (CIDR), gateway?}], routes [{dst, gw?}], dns. The `ips` capability
(runtimeConfig.ips), args.cni.ips or CNI_ARGS IP=a,b (CIDRs) replace the configured addresses; CNI_ARGS GATEWAY=
sets the gateway of the addresses whose subnet holds it (the reference static's rules). Nothing is kept on disk, so
DEL and GC have nothing to do; CHECK compares the configured addresses with prevResult.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from metaplug_delegates import CHECK_FAILED
from metaplug_delegates._common import finish, prev_result, require_version, serve, version_only
from metaplug_delegates._ipamconf import dns_of, ipam_section, requested_addresses, routes_of

from metaplug.cni.env import CniEnv, parse_cni_args
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.skel import Handler

NAME = "mp-static"
CNI_ARGS_KEYS = ("IP", "GATEWAY")


def _interface(value: Any, what: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if not isinstance(value, str) or "/" not in value:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {what}", f"{value!r} must be an address in CIDR form")
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {what}", str(exc)) from None


def addresses(conf: dict[str, Any], env: CniEnv) -> list[dict[str, Any]]:
    """The ips of the result: [{address, gateway?}] from the request or the config, validated."""
    ipam = ipam_section(conf)
    requested = requested_addresses(conf, env, CNI_ARGS_KEYS)
    out: list[dict[str, Any]] = []
    if requested:
        out = [{"address": str(_interface(item, "requested address"))} for item in requested]
    else:
        items = ipam.get("addresses") or []
        if not isinstance(items, list):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.addresses", "must be a list of {address, gateway}")
        for item in items:
            if not isinstance(item, dict):
                raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.addresses entry", f"{item!r} is not an object")
            entry: dict[str, Any] = {"address": str(_interface(item.get("address"), "ipam.addresses address"))}
            if item.get("gateway"):
                entry["gateway"] = item["gateway"]
            out.append(entry)
    gateways = [g.strip() for g in parse_cni_args(env.args, known=CNI_ARGS_KEYS).get("GATEWAY", "").split(",")
                if g.strip()]
    for gw in gateways:
        try:
            gw_ip = ipaddress.ip_address(gw)
        except ValueError:
            raise CniError(INVALID_NETWORK_CONFIG, "invalid CNI_ARGS GATEWAY", f"{gw!r}") from None
        for entry in out:
            if gw_ip in ipaddress.ip_interface(entry["address"]).network:
                entry["gateway"] = gw
    for entry in out:
        if "gateway" in entry:
            try:
                gw_ip = ipaddress.ip_address(entry["gateway"])
            except ValueError:
                raise CniError(INVALID_NETWORK_CONFIG, "invalid gateway", f"{entry['gateway']!r}") from None
            if gw_ip.version != ipaddress.ip_interface(entry["address"]).version:
                raise CniError(INVALID_NETWORK_CONFIG, "gateway of another address family",
                               f"{entry['gateway']} for {entry['address']}")
    if not out:
        raise CniError(INVALID_NETWORK_CONFIG, "no addresses",
                       "set ipam.addresses or pass the ips capability / args.cni.ips / CNI_ARGS IP=")
    return out


def cmd_add(env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    ipam = ipam_section(conf)
    result: dict[str, Any] = {"ips": addresses(conf, env)}
    routes = routes_of(ipam)
    if routes:
        result["routes"] = routes
    dns = dns_of(ipam)
    if dns:
        result["dns"] = dns
    return finish(result, conf)


def cmd_del(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 11: nothing was stored, nothing to release."""
    return None


def cmd_check(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 12: every configured address (with its gateway) is in prevResult."""
    require_version(conf, "0.4.0", "CHECK")
    prev = prev_result(conf, "CHECK")
    have = {ipaddress.ip_interface(ip["address"]): ip.get("gateway") for ip in prev.get("ips") or []}
    for entry in addresses(conf, env):
        addr = ipaddress.ip_interface(entry["address"])
        if addr not in have:
            raise CniError(CHECK_FAILED, f"{NAME}: address {addr} not in prevResult",
                           f"prevResult has {', '.join(map(str, have)) or 'no addresses'}")
        gw = have[addr]
        if entry.get("gateway") and (gw is None or ipaddress.ip_address(entry["gateway"]) != ipaddress.ip_address(gw)):
            raise CniError(CHECK_FAILED, f"{NAME}: gateway of {addr} differs",
                           f"config says {entry['gateway']}, prevResult {have[addr]}")
    return None


# the verbs, for the executable (main) and for metaplug daemon, which serves them in-process
HANDLERS: dict[str, Handler] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check,
                                "STATUS": version_only("STATUS"), "GC": version_only("GC")}


def main() -> None:
    serve(NAME, HANDLERS)


if __name__ == "__main__":
    main()
