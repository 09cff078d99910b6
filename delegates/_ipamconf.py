"""Config pieces both IPAM plugins (mp-host-local, mp-static) read the same way: the `ipam` section, routes, DNS,
and the addresses a runtime asks for (the `ips` capability, `args.cni.ips`, CNI_ARGS IP=).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from metaplug.cni import files
from metaplug.cni.env import CniEnv, parse_cni_args
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError


def ipam_section(conf: dict[str, Any]) -> dict[str, Any]:
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise CniError(INVALID_NETWORK_CONFIG, "missing ipam section", "the network config needs an \"ipam\" object")
    return ipam


def routes_of(ipam: dict[str, Any]) -> list[dict[str, Any]]:
    """`ipam.routes` validated: each has a dst network and an optional gw address (1.1.0 extras pass through)."""
    routes = ipam.get("routes") or []
    if not isinstance(routes, list):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.routes", "must be a list of {dst, gw}")
    out: list[dict[str, Any]] = []
    for route in routes:
        if not isinstance(route, dict) or not isinstance(route.get("dst"), str):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.routes entry", f"{route!r} needs a dst")
        try:
            dst = ipaddress.ip_network(route["dst"], strict=False)
            if route.get("gw") is not None:
                ipaddress.ip_address(route["gw"])
        except (ValueError, TypeError) as exc:
            raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.routes entry", str(exc)) from None
        out.append({**route, "dst": str(dst)})
    return out


def parse_resolv_conf(text: str) -> dict[str, Any]:
    """resolv.conf text -> a CNI dns object (nameservers, domain, search, options)."""
    dns: dict[str, Any] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver":
            dns.setdefault("nameservers", []).append(values[0])
        elif key == "domain":
            dns["domain"] = values[0]
        elif key == "search":
            dns["search"] = values
        elif key == "options":
            dns.setdefault("options", []).extend(values)
    return dns


def dns_of(ipam: dict[str, Any]) -> dict[str, Any] | None:
    """`ipam.dns` as given, else the parsed `ipam.resolvConf` file, else None."""
    if isinstance(ipam.get("dns"), dict):
        return dict(ipam["dns"])
    path = ipam.get("resolvConf")
    if not path:
        return None
    if not isinstance(path, str):  # open(5) would read file descriptor 5
        raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.resolvConf", f"{path!r} is not a file path")
    try:
        return parse_resolv_conf(files.read_file(path).decode("utf-8", errors="replace"))
    except OSError as exc:
        raise CniError(INVALID_NETWORK_CONFIG, "cannot read ipam.resolvConf", f"{path}: {exc.strerror}") from None


def requested_addresses(conf: dict[str, Any], env: CniEnv, known_args: tuple[str, ...] = ("IP",)) -> list[str]:
    """What the runtime asks for, highest priority first: the `ips` capability (runtimeConfig.ips), then
    `args.cni.ips`, then CNI_ARGS IP=a,b (cni.md 6, 34). Strings as given (with or without prefix)."""
    runtime = conf.get("runtimeConfig")
    if isinstance(runtime, dict) and runtime.get("ips"):
        return _strings(runtime["ips"], "runtimeConfig.ips")
    args = conf.get("args")
    cni_args = args.get("cni") if isinstance(args, dict) else None
    if isinstance(cni_args, dict) and cni_args.get("ips"):
        return _strings(cni_args["ips"], "args.cni.ips")
    raw = parse_cni_args(env.args, known=known_args).get("IP", "")
    return [item.strip() for item in raw.split(",") if item.strip()]


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {what}", "must be a list of address strings")
    return list(value)
