"""Devices: the recorded interfaces inside each pod's namespace (what CHECK would say), and host-side veths.

How a host-side device is attributed to a journal, and nothing else:
- doctor looks only at veths in its own namespace (the node's) whose master is a bridge that a recorded delegate
  config names (`bridge` of a bridge / mp-bridge plugin, default cni0);
- such a veth is accounted for when a recorded result lists it as a host-side interface (name without sandbox), or
  when its ifindex is the peer of a veth inside a namespace a journal records (an ADD still in progress);
- any other veth on such a bridge is reported, with where its peer is, and never touched: a lost journal, or
  something other than metaplug attaching to that bridge, cannot be told apart from here.
Macvlans are not judged: a macvlan attachment lives inside the container (mp-macvlan creates it there), its result
lists only that sandbox interface, and it goes when the namespace goes; nothing a journal records ties a macvlan in
the node's namespace to a pod, so one there may well be the operator's own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from metaplug.doctor import namespaces
from metaplug.doctor.findings import Finding
from metaplug.doctor.state import Recorded

if TYPE_CHECKING:
    from metaplug.cni import rtnl

BRIDGE_TYPES = ("bridge", "mp-bridge")
DEFAULT_BRIDGE = "cni0"  # both plugins' default


def _conflists(rec: Recorded) -> Iterable[dict[str, Any]]:
    for attachment in rec.body.get("attachments", []):
        try:
            yield json.loads(attachment["conflist"])
        except (KeyError, TypeError, ValueError):
            continue


def bridges(recorded: Iterable[Recorded]) -> set[str]:
    return {str(plugin.get("bridge") or DEFAULT_BRIDGE)
            for rec in recorded for conflist in _conflists(rec) for plugin in conflist.get("plugins", [])
            if isinstance(plugin, dict) and plugin.get("type") in BRIDGE_TYPES}


def host_side_names(recorded: Iterable[Recorded]) -> set[str]:
    """Interfaces the recorded results list outside any sandbox (host ends of veths, bridges)."""
    names: set[str] = set()
    for rec in recorded:
        results = [a.get("result") for a in rec.body.get("attachments", [])] + [rec.body.get("result")]
        for result in results:
            if isinstance(result, dict):
                names |= {str(i.get("name")) for i in result.get("interfaces") or [] if not i.get("sandbox")}
    return names


def check_interfaces(rec: Recorded) -> Finding | None:
    """What CHECK would say about a complete journal whose namespace exists (the caller holds the lock, as CHECK)."""
    from metaplug import netns

    problems = netns.check_result(rec.body["netns"], rec.body["result"])
    if not problems:
        return None
    return Finding("interfaces-differ", rec.body["netns"],
                   f"container {rec.key.container_id} ({rec.key.meta_network}, {rec.key.ifname}): "
                   f"{'; '.join(problems)}",
                   "CHECK fails for this pod (code 105): something changed its network after ADD; recreate the pod "
                   "(the runtime's DEL and ADD) to get what its networks describe")


def veth_ends(netns_path: str) -> set[tuple[int, int]]:
    """(id of `netns_path` as doctor's namespace knows it, ifindex) of every veth inside it: the values a host-side
    veth whose other end is there holds as (IFLA_LINK_NETNSID, IFLA_LINK)."""
    from metaplug import netns
    from metaplug.cni import rtnl

    nsid = rtnl.netnsid(netns_path)
    if nsid is None:
        return set()  # no id: no veth of doctor's namespace has its peer there
    return {(nsid, link.ifindex) for link in netns.run_in_netns(netns_path, rtnl.link_details) if link.kind == "veth"}


def unaccounted_veths(read_journals: Callable[[], list[Recorded]],
                      read_others: Callable[[], set[str]] = set) -> tuple[list[Finding], list[str]]:
    """The node's links are read first, the journals after (`read_journals`): an ADD journals before its delegates
    create anything, so every veth seen belongs to a journal that is read. `read_others`: the host-side names that
    something other than a journal accounts for (Multus's cache, doctor/multus.py)."""
    from metaplug.cni import rtnl
    from metaplug.cni.errors import CniError

    links = rtnl.link_details()
    recorded = read_journals()
    watched = bridges(recorded)
    if not watched:
        return [], []
    bridge_of = {link.ifindex: link.name for link in links if link.kind == "bridge" and link.name in watched}
    known = host_side_names(recorded) | read_others()
    pending: set[tuple[int, int]] = set()
    problems: list[str] = []
    for path in sorted({str(rec.body["netns"]) for rec in recorded if live(rec)}):
        try:
            pending |= veth_ends(path)
        except (CniError, OSError) as exc:
            problems.append(f"cannot look into {path}: {exc}")
    findings = []
    unaccounted = [link for link in links if link.kind == "veth" and link.master in bridge_of
                   and link.name not in known and (link.peer_netnsid, link.peer) not in pending]
    peers = _find_peers(unaccounted) if unaccounted else {}
    for link in unaccounted:
        peer = peers.get(link.ifindex) or f"ifindex {link.peer}" + (
            f" in the namespace with id {link.peer_netnsid} (`ip netns list-id`)" if link.peer_netnsid is not None
            else " in this namespace")
        findings.append(Finding(
            "unaccounted-veth", link.name,
            f"veth {link.name} on bridge {bridge_of[link.master]} (a bridge the journals' configs use): no journal "
            f"records it, and its peer, {peer}, is in no namespace a journal records",
            "if only metaplug attaches pods to this bridge, a pod's journal was lost: find the pod by its netns and "
            "delete it through the runtime, or `ip link delete " + link.name + "` once you are sure; doctor never "
            "removes devices"))
    return findings, problems


def _find_peers(veths: list[rtnl.Link]) -> dict[int, str]:
    """{host ifindex: "<name> in <namespace path>"} for the veths whose other end is in a visible namespace."""
    from metaplug import netns
    from metaplug.cni import rtnl
    from metaplug.cni.errors import CniError

    wanted: dict[tuple[int | None, int], int] = {(v.peer_netnsid, v.peer): v.ifindex for v in veths
                                                 if v.peer_netnsid is not None}
    found: dict[int, str] = {}
    for path in namespaces.visible():
        if len(found) == len(wanted):
            break
        try:
            nsid = rtnl.netnsid(path)
            links = netns.run_in_netns(path, rtnl.link_details) if nsid is not None else []
        except (CniError, OSError):
            continue
        for link in links:
            host = wanted.get((nsid, link.ifindex))
            if host is not None and link.kind == "veth":
                found[host] = f"{link.name} in {path}"
    return found


def live(rec: Recorded) -> bool:
    """The recorded netns is still a network namespace (a leftover file of a deleted one is not)."""
    from metaplug.cni import ns

    path = rec.body.get("netns")
    return isinstance(path, str) and bool(path) and ns.is_netns(path)
