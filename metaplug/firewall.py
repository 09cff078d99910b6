"""Firewall rules of a running attachment changed in place (issue 12.4): `metaplug set-firewall`.

The attachment's reference `firewall` plugin (type `firewall`) runs again with the new settings, by the mechanism
of set-bandwidth (inplace.py): its DEL with the recorded config and result, then its ADD with the changed config and
the recorded result as prevResult; the interface, its addresses and the other plugins of the list stay. The changed
plugin config is journaled in the attachment's conflist, so CHECK and the pod's DEL use the rules now in force.

The only setting is the plugin's `ingressPolicy` (containernetworking/plugins v1.1+): `open` (the default: any
source may reach the pod) or `same-bridge` (the plugin's CNI-ISOLATION-STAGE-1/2 rules: nothing from another bridge
reaches the attachment's bridge). Those rules are per bridge, so they isolate every pod on that bridge, as they do
when the plugin adds them at ADD, and the plugin's DEL never removes them (another container may still rely on them:
ingresspolicy.go, teardownIngressPolicy): so `open` -> `same-bridge` works in place, the way back does not and is
refused (code 7) before anything runs. The same policy again re-applies the plugin's rules for the attachment (after
someone flushed them). The plugin runs where metaplug runs (the node's network namespace) and writes that namespace's
tables, as at ADD; nothing else is touched.
"""

from __future__ import annotations

import copy
import json
import logging
from typing import TYPE_CHECKING

from metaplug import journal
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError

if TYPE_CHECKING:
    from metaplug.cni.documents import JsonObject
    from metaplug.config import MetaplugConfig
    from metaplug.hotplug import Outcome

log = logging.getLogger("metaplug.firewall")
INGRESS_POLICIES = ("open", "same-bridge")


def validated(settings: object) -> JsonObject:
    """{"ingressPolicy": "open" | "same-bridge"}; code 7 naming the field otherwise."""
    if not isinstance(settings, dict) or not settings:
        raise CniError(INVALID_NETWORK_CONFIG, "no firewall setting given", "give ingressPolicy (open, same-bridge)")
    unknown = sorted(set(settings) - {"ingressPolicy"})
    if unknown:
        raise CniError(INVALID_NETWORK_CONFIG, "unknown firewall setting", f"{', '.join(unknown)}: only ingressPolicy")
    policy = settings["ingressPolicy"]
    if policy not in INGRESS_POLICIES:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid ingressPolicy",
                       f"{policy!r}: one of {', '.join(INGRESS_POLICIES)}")
    return {"ingressPolicy": policy}


def set_firewall(cfg: MetaplugConfig, key: journal.JournalKey, ifname: str, settings: object) -> Outcome:
    from metaplug import hotplug
    from metaplug.inplace import plugin_index, rerun_plugin

    wanted = validated(settings)
    with hotplug.live_journal(key) as body:
        attachment = hotplug.find_attachment(body, ifname)
        conflist = json.loads(attachment["conflist"])
        index = plugin_index(conflist, lambda p: p.get("type") == "firewall", "firewall plugin",
                             f"{ifname} ({attachment['network']}): plugins of type firewall")
        current = conflist["plugins"][index].get("ingressPolicy") or "open"
        if current == "same-bridge" and wanted["ingressPolicy"] != "same-bridge":
            raise CniError(INVALID_NETWORK_CONFIG, "same-bridge isolation cannot be opened in place",
                           f"{ifname} ({attachment['network']}): the firewall plugin's same-bridge rules belong to the "
                           "bridge and its DEL never removes them; detach and attach the network with ingressPolicy "
                           "open, and remove the bridge's CNI-ISOLATION rules once no pod needs them")
        new = copy.deepcopy(conflist)
        new["plugins"][index].update(wanted)
        rt = journal.runtime_conf(body, attachment, body["netns"])
        # on failure nothing is journaled: the old config stays recorded (its DEL again is harmless, cni.md 11)
        attachment["result"] = rerun_plugin(conflist, new, index, (rt, rt), body["paths"], attachment["result"],
                                            body.get("timeout"), what=f"firewall of {ifname}",
                                            undone="its firewall rules are removed now")
        attachment["conflist"] = json.dumps(new, separators=(",", ":"))
        status = hotplug.commit(key, body, hotplug.recorded_results(body["attachments"]))
    log.info("firewall changed in place", extra={"ifname": ifname, "firewall": wanted})
    return hotplug._outcome("set-firewall", key, attachment, status)
