"""One entry for every live change to a running container (issue 12): attach, detach (hotplug.py), set-bandwidth
(bandwidth.py), set-firewall (firewall.py) and set-default-route (default_route.py). The CLI in-process, the daemon
(a live-change request, daemon/protocol.py) and the Kubernetes reconciler call `perform` (or `answer`, its reply
form)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from metaplug.cni.env import CniEnv
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError

if TYPE_CHECKING:
    from typing import Literal, NotRequired, TypedDict

    from metaplug.cni.documents import JsonObject
    from metaplug.hotplug import Outcome

    class Operation(TypedDict):
        """One live change, as the CLI sends it to the daemon (and as `perform` takes it)."""

        operation: Literal["attach", "detach", "set-bandwidth", "set-firewall", "set-default-route"]
        containerId: str
        conf: JsonObject  # metaplug's plugin entry as the runtime passes it (name, stateDir, confDir, kubeconfig, ...)
        element: NotRequired[JsonObject]  # attach: one selection element (name, namespace, interface, ips, mac, ...)
        ifname: NotRequired[str]  # detach, set-bandwidth, set-firewall: the attachment's CNI_IFNAME
        bandwidth: NotRequired[JsonObject]  # set-bandwidth: {ingressRate, ingressBurst, egressRate, egressBurst}
        firewall: NotRequired[JsonObject]  # set-firewall: {ingressPolicy}
        gateways: NotRequired[list[str]]  # set-default-route: the new gateways (R13), [] to give the route back

log = logging.getLogger("metaplug.live")
OPERATION_VAR = "METAPLUG_OPERATION"  # in a daemon request's env: a live change, not a CNI call (protocol.py)


def perform(operation: Operation) -> Outcome:
    """Run one live change on the container's journal. CniError on failure."""
    from metaplug import hotplug, plugin
    from metaplug.config import DEFAULT_STATE_DIR, load_config

    conf = dict(operation.get("conf") or {})
    conf.setdefault("cniVersion", "1.1.0")
    container_id = str(operation.get("containerId") or "")
    name = conf.get("name")
    key = hotplug.find_journal(str(conf.get("stateDir") or DEFAULT_STATE_DIR), container_id,
                               name if isinstance(name, str) and name else None)
    conf.setdefault("name", key.meta_network)
    cfg = load_config(conf)
    verb = operation.get("operation")
    plugin._setup(CniEnv(command=str(verb).upper(), container_id=container_id, ifname=key.ifname), cfg.settings)
    if verb == "attach":
        element = operation.get("element")
        if not isinstance(element, dict):
            raise CniError(INVALID_NETWORK_CONFIG, "attach needs a network element", "element must be an object")
        return hotplug.attach(cfg, key, element)
    ifname = operation.get("ifname")
    if not isinstance(ifname, str) or not ifname:
        raise CniError(INVALID_NETWORK_CONFIG, f"{verb} needs the attachment's ifname")
    if verb == "detach":
        return hotplug.detach(cfg, key, ifname)
    if verb == "set-bandwidth":
        from metaplug.bandwidth import set_bandwidth

        return set_bandwidth(cfg, key, ifname, operation.get("bandwidth"))
    if verb == "set-firewall":
        from metaplug.firewall import set_firewall

        return set_firewall(cfg, key, ifname, operation.get("firewall"))
    if verb == "set-default-route":
        from metaplug.default_route import set_default_route

        return set_default_route(cfg, key, ifname, operation.get("gateways"))
    raise CniError(INVALID_NETWORK_CONFIG, "unknown live operation",
                   f"{verb!r}: attach, detach, set-bandwidth, set-firewall or set-default-route")


def answer(operation: Operation) -> tuple[int, JsonObject]:
    """`perform` as a reply: (0, the Outcome) or (1, the CNI error document); never a traceback (cni.md 32)."""
    from metaplug.cni import skel

    try:
        return 0, dict(perform(operation))
    except CniError as err:
        return 1, err.to_dict("1.1.0")
    except Exception as exc:
        log.exception("live change failed")
        return 1, CniError(skel.INTERNAL_ERROR, "internal error in a live change", f"{type(exc).__name__}: {exc}"
                           ).to_dict("1.1.0")
