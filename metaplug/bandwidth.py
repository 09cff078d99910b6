"""Bandwidth of a running attachment changed in place (issue 12.3): `metaplug set-bandwidth`, and the reconciler when
an element's `bandwidth` changes.

Only the attachment's bandwidth plugin runs again, never its interface: DEL of that one plugin with the recorded
runtimeConfig and result as prevResult (cni.md 20), then ADD of it with the recorded result as prevResult and the new
`bandwidth` runtimeConfig (R12); the new capability args are journaled. The reference bandwidth plugin's DEL (v1.1.1)
removes only its ifb device and leaves its tbf (root) and ingress qdiscs on the host veth, so its next ADD would fail
with "create qdisc: file exists": between DEL and ADD those two qdiscs are removed, only on this attachment's host
veth (the peer of its container interface, which the recorded result must list as a host interface).

The plugins of the list are not re-run, and their results stand: the recorded result is the list's final one, which
is what the bandwidth plugin's re-run gets as prevResult (the plugins before it made it; those after it only passed
it on or added to it, and they are not re-run). Then the attachment's result is recomputed (`chained_result`):
- the bandwidth plugin is the last of the list: its new output is the attachment's result;
- plugins follow it and its new output is its prevResult unchanged (as the reference plugin's always is): what they
  saw has not changed, so they are not re-run and the result stays;
- plugins follow it and its output changed (a shaping plugin whose result depends on the limits): the plugins after
  it would hold a stale prevResult, so they run again in place, DEL (reverse order, the old final result as
  prevResult) then ADD from its new output on, and their final output is the attachment's result.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from metaplug import journal
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, IO_FAILURE, CniError

if TYPE_CHECKING:
    from metaplug.cni.documents import JsonObject
    from metaplug.cni.runtime import RuntimeConf
    from metaplug.config import MetaplugConfig
    from metaplug.hotplug import Outcome
    from metaplug.journal import AttachmentRecord, JournalRecord

log = logging.getLogger("metaplug.bandwidth")
ROOT = 0xFFFFFFFF  # TC_H_ROOT
INGRESS_PARENT, INGRESS_HANDLE = 0xFFFFFFF1, 0xFFFF0000  # TC_H_INGRESS, ffff:
MERGE_VERSION = "1.1.0"  # results are compared in this shape


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
    from metaplug.cni.chain import add_network_list, del_network_list

    with hotplug.live_journal(key) as body:
        attachment = hotplug.find_attachment(body, ifname)
        new = validated(bandwidth, (body.get("pod") or {}).get("namespace") or "default")
        conflist = json.loads(attachment["conflist"])
        index = _bandwidth_plugin(conflist, attachment)
        only = {**conflist, "plugins": [conflist["plugins"][index]]}
        result = attachment["result"]
        old_rt = journal.runtime_conf(body, attachment, body["netns"])
        new_rt = journal.runtime_conf(body, attachment, body["netns"])
        new_rt.capability_args["bandwidth"] = new
        host_veth = _host_veth(body, attachment)
        timeout = body.get("timeout")
        del_network_list(only, old_rt, body["paths"], prev_result=result, timeout=timeout)
        _remove_shaping_qdiscs(host_veth)
        try:
            shaped = add_network_list(only, new_rt, body["paths"], timeout=timeout, prev_result=result)
        except CniError as err:
            raise CniError(err.code, f"bandwidth of {ifname} could not be set; it is unshaped now",
                           f"{err.msg}: {err.details}" if err.details else err.msg, plugin=err.plugin) from None
        attachment["capabilityArgs"] = {**(attachment.get("capabilityArgs") or {}), "bandwidth": new}
        tail = {**conflist, "plugins": conflist["plugins"][index + 1:]}
        try:
            attachment["result"] = chained_result(tail, new_rt, body["paths"], result, shaped, timeout)
        finally:  # the new limits are in force either way: journaled, with the result as far as it was recomputed
            status = hotplug.commit(key, body, hotplug.recorded_results(body["attachments"]))
    log.info("bandwidth changed in place", extra={"ifname": ifname, "bandwidth": new, "host_veth": host_veth})
    return hotplug._outcome("set-bandwidth", key, attachment, status)


def chained_result(tail: dict[str, Any], rt: RuntimeConf, paths: list[str], recorded: JsonObject | None,
                   shaped: JsonObject, timeout: float | None) -> JsonObject:
    """The attachment's final result after its bandwidth plugin re-ran with `recorded` as prevResult and gave
    `shaped`; `tail` is the list of the plugins after it (module docstring)."""
    from metaplug.cni.chain import add_network_list, del_network_list
    from metaplug.cni.convert import convert_result

    if not tail["plugins"]:
        return shaped
    if recorded is not None and convert_result(shaped, MERGE_VERSION) == convert_result(recorded, MERGE_VERSION):
        return recorded  # passed through: the later plugins' prevResult is what they saw
    log.info("the bandwidth plugin's result changed: re-running the plugins after it",
             extra={"ifname": rt.ifname, "plugins": [p.get("type") for p in tail["plugins"]]})
    try:
        del_network_list(tail, rt, paths, prev_result=recorded, timeout=timeout)
        return add_network_list(tail, rt, paths, timeout=timeout, prev_result=shaped)
    except CniError as err:
        raise CniError(err.code, f"bandwidth of {rt.ifname} set, but the plugins after it could not run again",
                       f"{err.msg}: {err.details}" if err.details else err.msg, plugin=err.plugin) from None


def _bandwidth_plugin(conflist: dict[str, Any], attachment: AttachmentRecord) -> int:
    """The index of the one plugin of the list that declares the bandwidth capability (R12)."""
    found = [i for i, p in enumerate(conflist["plugins"]) if (p.get("capabilities") or {}).get("bandwidth") is True]
    if len(found) != 1:
        raise CniError(INVALID_NETWORK_CONFIG, "no bandwidth plugin to re-run" if not found else
                       "several plugins declare bandwidth",
                       f"{attachment['ifname']} ({attachment['network']}): {len(found)} plugins of "
                       f"{conflist['name']!r} declare the capability bandwidth (R12)")
    return found[0]


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
