"""mp-loopback: brings `lo` up in the container's namespace.

Like the reference loopback it always works on `lo` whatever CNI_IFNAME says, answers with `lo` and its addresses,
carries a prevResult forward unchanged (cni.md 10), and sets `lo` down on DEL (a gone namespace is success).
CHECK verifies `lo` is up and still has the addresses of prevResult's `lo` entry.
"""

from __future__ import annotations

from typing import Any

from metaplug_delegates import CHECK_FAILED
from metaplug_delegates import _netlink as nl
from metaplug_delegates._common import finish, prev_result, require_version, serve, version_only

from metaplug.cni.env import CniEnv
from metaplug.cni.errors import CniError
from metaplug.cni.skel import Handler

NAME = "mp-loopback"
LO = "lo"
LO_MAC = "00:00:00:00:00:00"


def _lo(ipr: nl.Rtnl, netns: str) -> nl.Link:
    link = nl.find_link(ipr, LO)
    if link is None:  # every network namespace has lo; only a broken one does not
        raise CniError(CHECK_FAILED, "no loopback interface", f"{netns} has no {LO!r}")
    return link


def cmd_add(env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    with nl.netns(env.netns) as ipr:
        lo = _lo(ipr, env.netns)
        nl.set_up(ipr, lo.ifindex, LO)
        addrs = sorted(nl.global_addresses(ipr, lo.ifindex), key=lambda a: (a.version, str(a)))
    if isinstance(conf.get("prevResult"), dict):  # in a chain: pass the previous result on unchanged
        return finish(prev_result(conf, "ADD"), conf)
    result: dict[str, Any] = {
        "interfaces": [{"name": LO, "mac": LO_MAC, "sandbox": env.netns}],
        "ips": [{"address": str(a), "interface": 0} for a in addrs],
    }
    return finish(result, conf)


def cmd_del(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 11: `lo` down when the namespace still exists; nothing to do otherwise."""
    if not nl.netns_exists(env.netns):
        return None
    with nl.netns(env.netns) as ipr:
        lo = nl.find_link(ipr, LO)
        if lo is not None and lo.up:
            try:
                ipr.set_link(lo.ifindex, up=False)
            except OSError as exc:
                raise nl.failed("set lo down", exc) from None
    return None


def cmd_check(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """cni.md 12: `lo` is up and has the addresses prevResult lists for it."""
    require_version(conf, "0.4.0", "CHECK")
    prev = prev_result(conf, "CHECK")
    with nl.netns(env.netns) as ipr:
        lo = _lo(ipr, env.netns)
        if not lo.up:
            raise CniError(CHECK_FAILED, "loopback interface is down", f"{LO} in {env.netns} is not up")
        for idx, iface in enumerate(prev.get("interfaces") or []):
            if iface.get("name") == LO and iface.get("sandbox"):
                mine = [ip for ip in prev.get("ips") or [] if ip.get("interface") == idx]
                nl.verify(ipr, lo, {"ips": mine}, idx)
    return None


# the verbs, for the executable (main) and for metaplug daemon, which serves them in-process
HANDLERS: dict[str, Handler] = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check,
                                "STATUS": version_only("STATUS"), "GC": version_only("GC")}


def main() -> None:
    serve(NAME, HANDLERS)


if __name__ == "__main__":
    main()
