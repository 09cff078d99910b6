"""`metaplug attach`, `detach`, `set-bandwidth`, `set-firewall`, `set-default-route`: live changes to a running
container from the command line (Podman, Nomad and plain libcni users, operators). The core is `live.perform`; this
module only builds the operation and shows its outcome.

When a metaplug daemon answers on its socket (`--socket`, else the config's `socketPath`, else the default), the
operation goes through it (a live-change request, daemon/protocol.py), so it is serialised with the daemon's calls
for that container; otherwise it runs in this process (thin mode). Either way it takes the container's journal lock.
Exit 0: done; 1: the change failed (a CNI error, printed); 2: bad arguments or unreadable config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metaplug.cni.documents import JsonObject
    from metaplug.live import Operation

DEFAULT_CONFIG = "/etc/cni/net.d/00-metaplug.conflist"


def add_arguments(sub: Any) -> None:
    attach = sub.add_parser("attach", help="hot-plug a network into a running container (from its journal)")
    attach.add_argument("container_id", metavar="CONTAINER_ID")
    attach.add_argument("network", metavar="NETWORK[@IFNAME]",
                        help="the NAD as NAME or NAMESPACE/NAME (namespace: the pod's); @IFNAME names the interface, "
                             "else the next free net<N>")
    attach.add_argument("--ips", nargs="+", metavar="IP", help="static addresses (runtimeConfig ips, R7)")
    attach.add_argument("--mac", help="the interface's MAC (runtimeConfig mac, R8)")
    attach.add_argument("--default-route", nargs="+", metavar="GW",
                        help="move the pod's default route to this attachment's gateway(s), one per IP family (R13)")
    _common(attach)
    detach = sub.add_parser("detach", help="unplug an interface of a running container (DEL of its recorded config)")
    detach.add_argument("container_id", metavar="CONTAINER_ID")
    detach.add_argument("ifname", metavar="IFNAME")
    _common(detach)
    shape = sub.add_parser("set-bandwidth", help="change an attachment's bandwidth limits in place (R12)")
    shape.add_argument("container_id", metavar="CONTAINER_ID")
    shape.add_argument("ifname", metavar="IFNAME")
    for flag in ("ingress-rate", "ingress-burst", "egress-rate", "egress-burst"):
        shape.add_argument(f"--{flag}", type=int, metavar="N", help="bits per second" if "rate" in flag else "bits")
    _common(shape)
    wall = sub.add_parser("set-firewall", help="change the rules of an attachment's firewall plugin in place")
    wall.add_argument("container_id", metavar="CONTAINER_ID")
    wall.add_argument("ifname", metavar="IFNAME")
    wall.add_argument("--ingress-policy", required=True, choices=("open", "same-bridge"),
                      help="same-bridge: only sources on the attachment's own bridge may reach it")
    _common(wall)
    route = sub.add_parser("set-default-route", help="move the pod's default route to an attachment in place (R13)")
    route.add_argument("container_id", metavar="CONTAINER_ID")
    route.add_argument("ifname", metavar="IFNAME")
    route.add_argument("gateways", nargs="*", metavar="GW",
                       help="one gateway per IP family; none: give the route back to the cluster network")
    _common(route)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"metaplug's conflist as the runtime reads it (default {DEFAULT_CONFIG}, "
                                         "when it exists)")
    parser.add_argument("--state-dir", help="override the config's stateDir")
    parser.add_argument("--socket", help="the daemon's socket (default: the config's socketPath, else "
                                         "/run/metaplug/metaplug.sock); in-process when nothing answers there")
    parser.add_argument("--json", action="store_true", help="print the outcome (or the CNI error) as JSON")
    parser.set_defaults(handler=run)


class UsageError(Exception):
    pass


def operation_of(args: argparse.Namespace) -> Operation:
    conf = _conf(args)
    operation: Operation = {"operation": args.command, "containerId": args.container_id, "conf": conf}
    if args.command == "attach":
        operation["element"] = element_of(args.network, args.ips, args.mac, args.default_route)
    else:
        operation["ifname"] = args.ifname
    if args.command == "set-bandwidth":
        given = {"ingressRate": args.ingress_rate, "ingressBurst": args.ingress_burst,
                 "egressRate": args.egress_rate, "egressBurst": args.egress_burst}
        operation["bandwidth"] = {k: v for k, v in given.items() if v is not None}
    if args.command == "set-firewall":
        operation["firewall"] = {"ingressPolicy": args.ingress_policy}
    if args.command == "set-default-route":
        operation["gateways"] = list(args.gateways)
    return operation


def element_of(network: str, ips: list[str] | None, mac: str | None,
               default_route: list[str] | None = None) -> JsonObject:
    """NETWORK[@IFNAME] and the flags as a selection element (validated by the core, R4-R16)."""
    reference, _, ifname = network.partition("@")
    namespace, sep, name = reference.rpartition("/")
    element: JsonObject = {"name": name}
    if sep:
        element["namespace"] = namespace
    if ifname:
        element["interface"] = ifname
    if ips:
        element["ips"] = ips
    if mac:
        element["mac"] = mac
    if default_route:
        element["default-route"] = default_route
    return element


def _conf(args: argparse.Namespace) -> JsonObject:
    from metaplug.explain import UsageError as ExplainUsage
    from metaplug.explain import runtime_stdin

    path = args.config or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
    conf: JsonObject = {}
    if path:
        try:
            conf = runtime_stdin(path, {})
        except ExplainUsage as exc:
            raise UsageError(str(exc)) from None
    if args.state_dir:
        conf["stateDir"] = os.path.abspath(args.state_dir)
    return conf


def _socket_path(args: argparse.Namespace, conf: JsonObject) -> str:
    from metaplug.daemon.config import DEFAULT_SOCKET

    return str(args.socket or conf.get("socketPath") or DEFAULT_SOCKET)


def through_daemon(socket_path: str, operation: Operation) -> tuple[int, JsonObject] | None:
    """The daemon's answer, or None when no daemon answers on `socket_path` (then the caller runs in-process)."""
    import socket

    from metaplug.daemon.protocol import ProtocolError, encode_request, read_response, socket_reader
    from metaplug.live import OPERATION_VAR

    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            conn.connect(socket_path)
        except OSError:
            return None
        env = {OPERATION_VAR: operation["operation"], "CNI_CONTAINERID": operation["containerId"]}
        conn.sendall(encode_request(env, json.dumps(operation).encode()))
        try:
            response = read_response(socket_reader(conn))
        except (ProtocolError, OSError) as exc:
            raise UsageError(f"the daemon on {socket_path} gave no answer: {exc}") from None
        return response.status, json.loads(response.stdout)
    finally:
        conn.close()


def run(args: argparse.Namespace) -> int:
    from metaplug import live

    try:
        operation = operation_of(args)
        answered = through_daemon(_socket_path(args, operation["conf"]), operation)
    except UsageError as exc:
        print(f"metaplug {args.command}: {exc}", file=sys.stderr)
        return 2
    status, doc = answered if answered is not None else live.answer(operation)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif status == 0:
        _print_human(doc)
    if status != 0:
        if not args.json:
            details = f": {doc['details']}" if doc.get("details") else ""
            print(f"metaplug {args.command}: CNI error {doc.get('code')}: {doc.get('msg')}{details}", file=sys.stderr)
        return 1
    return 0


def _print_human(doc: JsonObject) -> None:
    verb = {"attach": "attached", "detach": "detached", "set-bandwidth": "bandwidth set on",
            "set-firewall": "firewall set on", "set-default-route": "default route set on"}[doc["operation"]]
    ips = ", ".join(doc["ips"]) or "no address"
    print(f"{verb} {doc['ifname']} ({doc['network']}) of container {doc['containerId']}: {ips}")
    print("network-status now:")
    for entry in doc["status"]:
        default = " (default)" if entry.get("default") else ""
        print(f"  {entry['interface']:<10} {entry['name']:<30} {', '.join(entry['ips'])}{default}")
