"""What a pod's changed `k8s.v1.cni.cncf.io/networks` annotation asks of its running container (issue 12.1): the pure
difference between the requested selection elements and the journal's attachments. No I/O here; the daemon's pod
watch (daemon/reconciler.py) applies the answer with `live.perform`.

- Only attachments that came from the pod's request are candidates: not the cluster network (R24), not the
  `defaultNetworks` and static `delegates` that precede the elements (`fixed` of them, counting the cluster network),
  not an auxiliary chain (its status name is no `<namespace>/<nad>`).
- An element matches an attachment by (namespace, name, interface): with an explicit `interface`, the attachment of
  that NAD with that ifname; without one, the first attachment of that NAD not matched otherwise, in order.
- A matched pair that differs in its runtimeConfig other than `bandwidth` (ips R7, mac R8, portMappings R11,
  infiniband-guid R14, deviceID) or in its `cni-args` (R10: they are part of the delegates' config) is a detach then
  an attach: that attachment is made anew with ADD's rules. Otherwise a changed `default-route` (R13: added,
  dropped, other gateways) moves the pod's default route in place (default_route.py), and a changed `bandwidth`
  (R12) is a bandwidth change in place; limits dropped altogether are a detach then an attach (an unshaped re-ADD of
  the bandwidth plugin is no limit).
  `ipam-claim-reference` is only validated at ADD (R15) and passed to no delegate: a change of it alone changes nothing.
- Detaches come first (their ifnames become free), then default routes given back, then default routes taken (R13:
  one owner at a time), then attaches in annotation order, then bandwidth changes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from metaplug.attach.annotations import SelectionElement
    from metaplug.cni.documents import JsonObject
    from metaplug.journal import AttachmentRecord


class Reshape(NamedTuple):
    ifname: str
    bandwidth: JsonObject


class Reroute(NamedTuple):
    ifname: str
    gateways: list[str]  # [] : the default route goes back to the cluster network


class Changes(NamedTuple):
    detach: list[str]  # ifnames, in the journal's reverse order
    attach: list[SelectionElement]  # in annotation order
    reshape: list[Reshape]
    reroute: list[Reroute]  # routes given back first, then those taken

    def __bool__(self) -> bool:
        return bool(self.detach or self.attach or self.reshape or self.reroute)


def diff(elements: list[SelectionElement], attachments: list[AttachmentRecord], fixed: int) -> Changes:
    candidates = [a for a in attachments[fixed:] if not a["cluster"] and "/" in a["network"]]
    matched: dict[int, AttachmentRecord] = {}  # element position -> attachment
    taken: set[int] = set()  # positions in candidates
    explicit = {e.interface for e in elements if e.interface}
    for named in (True, False):  # explicit interfaces claim their attachment first
        for pos, element in enumerate(elements):
            if bool(element.interface) != named:
                continue
            found = _first(candidates, taken, f"{element.namespace}/{element.name}", element.interface or None,
                           avoid=explicit)
            if found is not None:
                matched[pos] = candidates[found]
                taken.add(found)
    detach = [a["ifname"] for i, a in enumerate(candidates) if i not in taken]
    attach: list[SelectionElement] = []
    reshape: list[Reshape] = []
    reroute: list[Reroute] = []
    for pos, element in enumerate(elements):
        record = matched.get(pos)
        if record is None:
            attach.append(element)
            continue
        wanted, recorded = element.runtime_config(), dict(record.get("capabilityArgs") or {})
        wanted_bw, recorded_bw = wanted.pop("bandwidth", None), recorded.pop("bandwidth", None)
        if wanted != recorded or _cni_args_changed(element, record):
            detach.append(record["ifname"])
            attach.append(element)
            continue
        if list(element.default_route) != list(record.get("defaultRoute") or []):
            reroute.append(Reroute(record["ifname"], list(element.default_route)))
        if wanted_bw != recorded_bw and wanted_bw:
            reshape.append(Reshape(record["ifname"], wanted_bw))
        elif wanted_bw != recorded_bw:  # limits dropped: detach + attach (an unshaped re-ADD is not in place)
            detach.append(record["ifname"])
            attach.append(element)
    order = {a["ifname"]: i for i, a in enumerate(attachments)}
    gone = set(detach)
    reroute = [r for r in reroute if r.ifname not in gone]  # made anew anyway (bandwidth dropped)
    reroute.sort(key=lambda r: bool(r.gateways))  # given back before taken
    return Changes(sorted(gone, key=lambda n: -order[n]), attach, reshape, reroute)


def _cni_args_changed(element: SelectionElement, record: AttachmentRecord) -> bool:
    """R10: the element's cni-args against those its attachment was made with (`requestedCniArgs`). A journal older
    than that key shows them only merged into the conflist with the NAD's own: a key asked now that the conflist lacks,
    or has with another value, is a change; a key dropped since cannot be told from the NAD's and is no change."""
    wanted = element.cni_args or {}
    if "requestedCniArgs" in record:
        return wanted != record["requestedCniArgs"]
    if not wanted:
        return False
    plugins = json.loads(record["conflist"]).get("plugins") or []
    merged = [((p.get("args") or {}).get("cni") or {}) for p in plugins if isinstance(p, dict)]
    return not merged or any(cni.get(k) != v for cni in merged for k, v in wanted.items())


def _first(candidates: list[AttachmentRecord], taken: set[int], network: str, ifname: str | None, *,
           avoid: set[str] | None = None) -> int | None:
    for i, attachment in enumerate(candidates):
        if i in taken or attachment["network"] != network:
            continue
        if ifname is not None and attachment["ifname"] != ifname:
            continue
        if ifname is None and avoid and attachment["ifname"] in avoid:
            continue
        return i
    return None


def fixed_count(default_networks: int, static_delegates: int, system_pod: bool) -> int:
    """How many attachments precede the pod's elements at ADD (R24): the cluster network, `defaultNetworks` (not for
    pods of systemNamespaces) and the static delegates after the first."""
    return 1 + (0 if system_pod else default_networks) + max(0, static_delegates - 1)


def element_json(element: SelectionElement) -> JsonObject:
    """A parsed element back in the annotation's JSON form (what a live attach takes, R5 keys)."""
    out: JsonObject = {"name": element.name, "namespace": element.namespace}
    for key, value in (("interface", element.interface), ("ips", list(element.ips)), ("mac", element.mac),
                       ("infiniband-guid", element.infiniband_guid), ("default-route", list(element.default_route)),
                       ("portMappings", [dict(p) for p in element.port_mappings]), ("bandwidth", element.bandwidth),
                       ("cni-args", element.cni_args), ("deviceID", element.device_id),
                       ("ipam-claim-reference", element.ipam_claim_reference)):
        if value:
            out[key] = value
    return out
