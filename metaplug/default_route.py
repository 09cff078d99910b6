"""The pod's default route moved between its attachments in place (issue 12, R13): `metaplug set-default-route`, and
the reconciler when only an element's `default-route` changes. No interface is made or removed.

- Gateways given: the attachment becomes the owner of the pod's default route as ADD makes it (R13, one gateway per
  IP family, one owner per pod: refused while another attachment owns it; never the cluster network, which owns it
  whenever no element does). If it owned it already, its default routes go first and the cluster network's come back
  (`hotplug.restore_cluster_default`); then `netns.move_default_route` as ADD: the cluster network's default routes
  of the gateways' families go, the default goes via the gateways on this interface.
- No gateway: the attachment gives the default route back: its default routes go, the cluster network's come back.
- The journal's `defaultRoute` of the attachment changes, and the merged result and network-status are recomputed
  (`hotplug.commit`: `default: true` follows the owner). When the new route cannot be set (a gateway the interface
  cannot reach), the cluster network's default route is put back, the journal says the cluster network owns it, and
  the error says so.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from metaplug.cni.errors import INVALID_NETWORK_CONFIG, IO_FAILURE, CniError

if TYPE_CHECKING:
    from metaplug import journal
    from metaplug.config import MetaplugConfig
    from metaplug.hotplug import Outcome

log = logging.getLogger("metaplug.default_route")


def validated(gateways: object, pod_namespace: str) -> list[str]:
    """R13's checks, exactly as for an annotation element's `default-route` (code 7 naming the field)."""
    from metaplug.attach.annotations import parse_networks_annotation

    if gateways is None:
        return []
    (sel,) = parse_networks_annotation(json.dumps([{"name": "set-default-route", "default-route": gateways}]),
                                       pod_namespace)
    return list(sel.default_route)


def set_default_route(cfg: MetaplugConfig, key: journal.JournalKey, ifname: str, gateways: object) -> Outcome:
    from metaplug import hotplug, netns

    with hotplug.live_journal(key) as body:
        attachment = hotplug.find_attachment(body, ifname)
        wanted = validated(gateways, (body.get("pod") or {}).get("namespace") or "default")
        if attachment["cluster"]:
            raise CniError(INVALID_NETWORK_CONFIG, "the cluster network's default route is not set here",
                           f"{ifname} ({attachment['network']}) owns the default route whenever no element does "
                           "(R13): give it back by setting no gateway on the owner")
        owner = next((a for a in body["attachments"] if a["defaultRoute"]), None)
        if wanted and owner is not None and owner is not attachment:
            raise CniError(INVALID_NETWORK_CONFIG, "the default route has another owner",
                           f"{owner['ifname']} ({owner['network']}) owns the pod's default route; one owner only "
                           f"(R13): give it back first")
        problems: list[str] = []
        if attachment["defaultRoute"]:
            netns.remove_default_routes(body["netns"], ifname, (":" in gw for gw in attachment["defaultRoute"]))
            problems = hotplug.restore_cluster_default(body, attachment)
            attachment["defaultRoute"] = []
        failure: CniError | None = None
        if wanted and not problems:
            try:
                netns.move_default_route(body["netns"], body["attachments"][0]["ifname"], ifname, wanted)
                attachment["defaultRoute"] = wanted
            except CniError as err:
                netns.remove_default_routes(body["netns"], ifname, (":" in gw for gw in wanted))
                problems = hotplug.restore_cluster_default(body, {**attachment, "defaultRoute": wanted})
                failure = err
        status = hotplug.commit(key, body, hotplug.recorded_results(body["attachments"]))
    hotplug._publish(cfg, body, status)
    if failure is not None:
        back = "could not be put back: " + "; ".join(problems) if problems else "is back"
        raise CniError(failure.code, f"the pod's default route was not moved to {ifname}",
                       f"{failure.msg}: {failure.details}; the cluster network's default route {back}")
    if problems:
        raise CniError(IO_FAILURE, f"{ifname} gave the default route back, but the cluster network's could not be "
                       "put back" + ("; no new route was set" if wanted else ""), "; ".join(problems))
    log.info("default route moved in place", extra={"ifname": ifname, "gateways": wanted})
    return hotplug._outcome("set-default-route", key, attachment, status)
