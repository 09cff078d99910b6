"""Live changes to a running container: hot-plug (attach) and unplug (detach) of one attachment (issue 12).

The CLI (`metaplug attach|detach`, in-process or through the daemon), the daemon and the Kubernetes reconciler all
reach it through `live.perform`. It acts on the container's journal alone (the netns, the CNI_ARGS, the plugin paths
and every recorded attachment come from it) under the same lock as the CNI verbs (cni.md 23), and reuses ADD's
pieces, never a copy:
- attach: the element is validated as an annotation element (R4-R16), its NAD resolved (R1-R3, R29), its ifname is
  its `interface` or the next free `net<N>` (R9: not used by another attachment, not present in the netns), its
  runtimeConfig and capabilities checked as ADD does (`plan.secondary_attachment`, R7-R14, R30), its binaries found;
  then it is journaled "planned", "adding", "added" by `runner.run_attachments`, exactly like ADD. An element with
  `default-route` (R13: one owner per pod, so refused while another attachment owns it) then moves the pod's default
  route as ADD does (`netns.move_default_route`: the cluster network's default routes of the gateways' families go,
  the default goes via the gateways on the new interface). A failure DELs that attachment only (R27 for one
  element), and puts back the cluster network's default route when it had moved: the other interfaces are untouched.
- detach: DEL of exactly the recorded config of that attachment (`plugin._delete_attachments`); never the cluster
  network (R24). Detaching the default route's owner (hot-plugged or made at ADD) puts the cluster network's default
  routes back, as its recorded result lists them (`restore_cluster_default`).
After every change the merged result and network-status are recomputed (`plugin.summarize`) and journaled, so CHECK
covers hot-plugged attachments and the pod's DEL removes them; with a kubeconfig, network-status is published.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from metaplug import journal
from metaplug.cni.env import CniEnv
from metaplug.cni.errors import (
    DEL_INCOMPLETE,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)

if TYPE_CHECKING:
    from typing import TypedDict

    from metaplug.cni.documents import JsonObject, Result
    from metaplug.config import MetaplugConfig
    from metaplug.journal import AttachmentRecord, JournalRecord
    from metaplug.merge import NetworkStatusEntry

    class Outcome(TypedDict):
        """What `live.perform` answers on success (the CLI's --json document)."""

        operation: str
        containerId: str
        ifname: str
        network: str  # the attachment's status name
        ips: list[str]
        status: list[NetworkStatusEntry]  # the container's network-status after the change (= the journal's)

log = logging.getLogger("metaplug.hotplug")
MERGE_VERSION = "1.1.0"


# ---------------------------------------------------------------- finding the container


def find_journal(state_dir: str, container_id: str, meta_network: str | None) -> journal.JournalKey:
    """The journal of `container_id` for `meta_network` (any, when None and there is exactly one). Code 3 otherwise."""
    from metaplug.cni.env import validate_container_id

    validate_container_id(container_id)
    found: list[journal.JournalKey] = []
    for cid, path in journal.list_journals(state_dir):
        if cid != container_id:
            continue
        try:
            body = journal.load(path)
        except (OSError, journal.CorruptJournal):
            continue
        if meta_network is None or body.get("network") == meta_network:
            found.append(journal.JournalKey(state_dir, cid, body["network"], body["ifname"]))
    if not found:
        named = f" for network {meta_network!r}" if meta_network else ""
        raise CniError(UNKNOWN_CONTAINER, "no attachments recorded for this container",
                       f"container {container_id}{named} has no journal in {state_dir}")
    if len(found) > 1:
        raise CniError(UNKNOWN_CONTAINER, "several journals for this container",
                       f"container {container_id}: " + ", ".join(f"{k.meta_network}/{k.ifname}" for k in found)
                       + "; give the configuration (--config) of the one meant")
    return found[0]


@contextlib.contextmanager
def live_journal(key: journal.JournalKey) -> Iterator[JournalRecord]:
    """The container's journal read under its lock (the CNI verbs' lock, cni.md 23), for a change to a container whose
    ADD completed and whose netns still exists."""
    from metaplug.cni import ns

    with journal.locked(key, create=False) as exists:
        try:
            body = journal.read(key) if exists else None
        except journal.CorruptJournal as bad:
            raise CniError(UNKNOWN_CONTAINER, "the container's journal is corrupt", f"{bad.path}: {bad.reason}"
                           ) from None
        if body is None:
            if exists:
                journal.remove(key)
            raise CniError(UNKNOWN_CONTAINER, "no attachments recorded for this container",
                           f"container {key.container_id} (deleted meanwhile?)")
        if "result" not in body or any(a.get("state") != "added" for a in body["attachments"]):
            raise CniError(TRY_AGAIN_LATER, "the container's ADD has not completed",
                           f"{key.path}: an ADD is unfinished (the runtime's DEL or a repeated ADD settles it)")
        if not body.get("netns") or not ns.is_netns(body["netns"]):
            raise CniError(UNKNOWN_CONTAINER, "the container's network namespace is gone",
                           f"{body.get('netns')!r} recorded for container {key.container_id}")
        yield body


def _env(key: journal.JournalKey, body: JournalRecord, verb: str) -> CniEnv:
    return CniEnv(command=verb, container_id=key.container_id, netns=body["netns"], ifname=key.ifname,
                  args=body.get("cniArgs", ""), path=tuple(body["paths"]))


def recorded_results(attachments: list[AttachmentRecord]) -> list[Result]:
    from metaplug.cni.convert import convert_result

    return [convert_result(cast("Result", a["result"]), MERGE_VERSION) for a in attachments]


def commit(key: journal.JournalKey, body: JournalRecord, results: list[Result]) -> list[NetworkStatusEntry]:
    """Merged result and network-status recomputed from the attachments now made, and journaled."""
    from metaplug import plugin

    merged, status = plugin.summarize(body, results)
    body["result"] = merged
    body["status"] = status
    journal.write(key, body)
    return status


def _publish(cfg: MetaplugConfig, body: JournalRecord, status: list[NetworkStatusEntry]) -> None:
    """R17-R23: the pod's network-status follows every change (Kubernetes only; a failure is only logged)."""
    kube = _kube(cfg, body)
    if kube is not None:
        kube.publish_status(status)


def _kube(cfg: MetaplugConfig, body: JournalRecord) -> Any:
    from metaplug import plugin
    from metaplug.attach.plan import PodRef
    from metaplug.cni.env import parse_cni_args

    pod = body.get("pod") or {}
    ref = PodRef(namespace=pod.get("namespace") or "default", name=pod.get("name"), uid=pod.get("uid"))
    return plugin._kube_context(cfg, ref, parse_cni_args(body.get("cniArgs", "")))


def _outcome(operation: str, key: journal.JournalKey, attachment: AttachmentRecord,
             status: list[NetworkStatusEntry]) -> Outcome:
    result = attachment.get("result") or {}
    ips = [str(ip.get("address", "")).split("/")[0] for ip in result.get("ips") or [] if ip.get("address")]
    return {"operation": operation, "containerId": key.container_id, "ifname": attachment["ifname"],
            "network": attachment["network"], "ips": ips, "status": status}


# ---------------------------------------------------------------- attach


def attach(cfg: MetaplugConfig, key: journal.JournalKey, element: JsonObject) -> Outcome:
    """Hot-plug one selection element into the running container of `key`."""
    with live_journal(key) as body:
        record = _plan_element(cfg, body, element)
        body["attachments"].append(record)
        return _attach_locked(cfg, key, body, record)


def _plan_element(cfg: MetaplugConfig, body: JournalRecord, element: JsonObject) -> AttachmentRecord:
    """ADD's validation and planning for one more element of this pod (nothing runs, nothing is written)."""
    from metaplug import netns, plugin
    from metaplug.attach.annotations import NETWORKS_ANNOTATION, parse_networks_annotation
    from metaplug.attach.plan import next_free_ifname, secondary_attachment

    pod_namespace = (body.get("pod") or {}).get("namespace") or "default"
    (sel,) = parse_networks_annotation(json.dumps([element]), pod_namespace)  # R4-R16, errors name the field
    if sel.default_route:
        owner = next((a for a in body["attachments"] if a["defaultRoute"]), None)
        if owner is not None:
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid {NETWORKS_ANNOTATION} element",
                           f"network {sel.index} ({sel.namespace}/{sel.name}): 'default-route' is already owned by "
                           f"{owner['ifname']} ({owner['network']}); one element only (R13): detach that first")
    resolver = plugin.nad_resolver(cfg, _kube(cfg, body))
    resolved = resolver.nad(sel.namespace, sel.name, pod_namespace=pod_namespace,
                            what=f"network {sel.index} ({sel.namespace}/{sel.name})")
    recorded = {a["ifname"] for a in body["attachments"]}
    present = netns.interface_names(body["netns"])
    if sel.interface:
        if sel.interface in recorded or sel.interface in present:
            raise CniError(INVALID_NETWORK_CONFIG, "interface name already in use",
                           f"network {sel.index} ({sel.namespace}/{sel.name}): interface {sel.interface!r} is "
                           "already used by an attachment of this pod or present in its netns (R9)")
        ifname = sel.interface
    else:
        ifname, _ = next_free_ifname(recorded | present)
    attachment = secondary_attachment(resolved, sel, ifname)
    plugin._find_binaries([attachment], body["paths"])
    return plugin.attachment_record(attachment, body.get("cniArgs", ""))


def _attach_locked(cfg: MetaplugConfig, key: journal.JournalKey, body: JournalRecord,
                   record: AttachmentRecord) -> Outcome:
    from metaplug import netns, plugin
    from metaplug.runner import Recorder, run_attachments

    earlier = body["attachments"][:-1]
    try:
        results = recorded_results(earlier)
        results += run_attachments(Recorder(key, body), start=len(earlier))
        if record["defaultRoute"]:  # R13 exactly as ADD does it (plugin._finish)
            netns.move_default_route(body["netns"], body["attachments"][0]["ifname"], record["ifname"],
                                     record["defaultRoute"])
        status = commit(key, body, results)
    except BaseException as exc:
        # R27 for this element only: its DEL, the pod's other attachments stay as they are
        failures = plugin._delete_attachments(key, _env(key, body, "DEL"), body, only=[record])
        if record["defaultRoute"] and record not in body["attachments"]:
            failures += restore_cluster_default(body, record)
        journal.write(key, body)  # the pod's result and status as before (a record whose DEL failed stays for DEL)
        raise plugin.rolled_back(exc, failures, "attach") from exc
    log.info("attachment hot-plugged", extra={"ifname": record["ifname"], "status_name": record["network"]})
    _publish(cfg, body, status)
    return _outcome("attach", key, record, status)


# ---------------------------------------------------------------- detach


def detach(cfg: MetaplugConfig, key: journal.JournalKey, ifname: str) -> Outcome:
    """Unplug one attachment (hot-plugged or made at the pod's ADD) by its ifname: DEL of its recorded config."""
    from metaplug import plugin

    with live_journal(key) as body:
        attachment = find_attachment(body, ifname)
        if attachment["cluster"]:
            raise CniError(INVALID_NETWORK_CONFIG, "the cluster network cannot be detached",
                           f"{ifname} ({attachment['network']}) is the pod's cluster network (R24); DEL the pod")
        failures = plugin._delete_attachments(key, _env(key, body, "DEL"), body, only=[attachment])
        if failures:
            raise CniError(DEL_INCOMPLETE, f"detach of {ifname} failed; it stays recorded", "; ".join(failures))
        # R13 undone: the default route goes back to the cluster network, as its recorded result gives it
        unrestored = restore_cluster_default(body, attachment) if attachment["defaultRoute"] else []
        status = commit(key, body, recorded_results(body["attachments"]))
    if unrestored:
        _publish(cfg, body, status)
        raise CniError(IO_FAILURE, f"{ifname} detached, but the pod's default route could not be restored",
                       "; ".join(unrestored))
    log.info("attachment unplugged", extra={"ifname": ifname, "status_name": attachment["network"]})
    _publish(cfg, body, status)
    return _outcome("detach", key, attachment, status)


def restore_cluster_default(body: JournalRecord, owner: AttachmentRecord) -> list[str]:
    """Undo R13 after `owner` (which owned the pod's default route) is gone: the cluster network's default routes, of
    the families of the owner's gateways, as the cluster network's recorded result lists them, go back on its
    interface (ADD removed exactly those when it moved the default route). Returns the problems."""
    from metaplug import netns
    from metaplug.merge import is_default_route

    families = {":" in gw for gw in owner["defaultRoute"]}  # True: IPv6
    cluster = body["attachments"][0]
    (result,) = recorded_results([cluster])
    routes = [r for r in result.get("routes") or [] if is_default_route(r) and (":" in str(r["dst"])) in families]
    if not routes:
        return []
    return netns.restore_default_routes(body["netns"], cluster["ifname"], routes)


def find_attachment(body: JournalRecord, ifname: str) -> AttachmentRecord:
    for attachment in body["attachments"]:
        if attachment["ifname"] == ifname:
            return attachment
    raise CniError(UNKNOWN_CONTAINER, "no such attachment",
                   f"container {body['containerId']} has no attachment {ifname!r} (it has "
                   f"{', '.join(a['ifname'] for a in body['attachments'])})")
