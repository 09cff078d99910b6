"""Bandwidth of a running attachment changed in place (issue 12.3): `metaplug set-bandwidth`, and the reconciler when
an element's `bandwidth` changes.

Only the attachment's bandwidth plugin runs again, never its interface: DEL of that one plugin with the recorded
runtimeConfig and result as prevResult (cni.md 20), then ADD of it with the recorded result as prevResult and the new
`bandwidth` runtimeConfig (R12); the new capability args are journaled. The reference bandwidth plugin's DEL (v1.1.1)
removes only its ifb device and leaves its tbf (root) and ingress qdiscs on the host veth, so its next ADD would fail
with "create qdisc: file exists": between DEL and ADD those two qdiscs are removed, only on this attachment's host
veth (the peer of its container interface, which the recorded result must list as a host interface).

The other plugins of the list are not re-run unless the bandwidth plugin's result changed (inplace.py).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from metaplug import journal
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, IO_FAILURE, CniError

if TYPE_CHECKING:
    from metaplug.cni.documents import JsonObject
    from metaplug.config import MetaplugConfig
    from metaplug.hotplug import Outcome
    from metaplug.journal import AttachmentRecord, JournalRecord

log = logging.getLogger("metaplug.bandwidth")
ROOT = 0xFFFFFFFF  # TC_H_ROOT
INGRESS_PARENT, INGRESS_HANDLE = 0xFFFFFFF1, 0xFFFF0000  # TC_H_INGRESS, ffff:


def validated(bandwidth: object, pod_namespace: str) -> JsonObject:
    """R12's checks, exactly as for an annotation element's `bandwidth` (code 7 naming the field)."""
    from metaplug.attach.annotations import parse_networks_annotation

    (sel,) = parse_networks_annotation(json.dumps([{"name": "set-bandwidth", "bandwidth": bandwidth}]), pod_namespace)
    value: JsonObject = sel.runtime_config().get("bandwidth") or {}
    if not value:
        raise CniError(INVALID_NETWORK_CONFIG, "no bandwidth given",
                       "give at least one of ingressRate, ingressBurst, egressRate, egressBurst")
    return value


def set_bandwidth(cfg: MetaplugConfig, key: journal.JournalKey, ifname: str, bandwidth: object) -> Outcome:
    from metaplug import hotplug
    from metaplug.inplace import plugin_index, rerun_plugin

    with hotplug.live_journal(key) as body:
        attachment = hotplug.find_attachment(body, ifname)
        new = validated(bandwidth, (body.get("pod") or {}).get("namespace") or "default")
        conflist = json.loads(attachment["conflist"])
        index = plugin_index(conflist, lambda p: (p.get("capabilities") or {}).get("bandwidth") is True,
                             "bandwidth plugin", f"{ifname} ({attachment['network']}): the capability bandwidth (R12)")
        old_rt = journal.runtime_conf(body, attachment, body["netns"])
        new_rt = journal.runtime_conf(body, attachment, body["netns"])
        new_rt.capability_args["bandwidth"] = new
        host_veth = _host_veth(body, attachment)
        # on failure nothing is journaled: the old limits stay recorded, so a reconcile tries the change again
        attachment["result"] = rerun_plugin(
            conflist, conflist, index, (old_rt, new_rt), body["paths"], attachment["result"], body.get("timeout"),
            what=f"bandwidth of {ifname}", undone="it is unshaped now",
            between=lambda: _remove_shaping_qdiscs(host_veth))
        attachment["capabilityArgs"] = {**(attachment.get("capabilityArgs") or {}), "bandwidth": new}
        status = hotplug.commit(key, body, hotplug.recorded_results(body["attachments"]))
    log.info("bandwidth changed in place", extra={"ifname": ifname, "bandwidth": new, "host_veth": host_veth})
    return hotplug._outcome("set-bandwidth", key, attachment, status)


def _host_veth(body: JournalRecord, attachment: AttachmentRecord) -> str | None:
    """The node-side peer of the attachment's container interface, when the recorded result lists it as a host
    interface (no sandbox); None for a device without such a peer (macvlan): nothing to clean then."""
    import socket

    from metaplug import netns

    result = attachment["result"] or {}
    host_side = {str(i.get("name")) for i in result.get("interfaces") or [] if not i.get("sandbox")}
    ifname = attachment["ifname"]

    def peer_index() -> int | None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        with IPRoute() as ipr:
            try:
                links = ipr.link("get", ifname=ifname)
            except NetlinkError:  # no such interface: nothing of it to clean
                return None
            peer = links[0].get_attr("IFLA_LINK") if links else None
        return int(peer) if peer else None

    index = netns.run_in_netns(body["netns"], peer_index)
    if index is None:
        return None
    try:
        name = socket.if_indextoname(index)
    except OSError:
        return None
    return name if name in host_side else None


def _remove_shaping_qdiscs(device: str | None) -> None:
    """The root (tbf) and ingress qdiscs the bandwidth plugin left on `device` (absent ones are fine)."""
    if device is None:
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=device)
        if not found:
            return
        for parent, handle in ((ROOT, 0), (INGRESS_PARENT, INGRESS_HANDLE)):
            try:
                ipr.tc("del", index=found[0], handle=handle, parent=parent)
            except NetlinkError as exc:
                if exc.code not in (2, 22):  # ENOENT, EINVAL: no such qdisc (only the default one is there)
                    raise CniError(IO_FAILURE, f"cannot remove the shaping qdiscs of {device}",
                                   str(exc)) from None
