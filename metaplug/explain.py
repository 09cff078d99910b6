"""`metaplug explain`: what an ADD would do for a pod, without running any delegate.

It takes the inputs of an ADD (metaplug's conflist as the runtime has it, the pod's annotation or CNI_ARGS, or with a
kubeconfig the pod's name and namespace), builds the call exactly as a runtime would, and runs the same planning
function as ADD (`plugin.plan_add`): so the plan it prints is the plan ADD journals, and an error it prints is the
error ADD would return. For every attachment: its ifname, NAD (status name), the delegate config list, the
runtimeConfig values and CNI_ARGS it gets, and per plugin the binary and the exact stdin and environment of its ADD.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from metaplug.attach.annotations import DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION
from metaplug.attach.plan import POD_ANNOTATIONS_CAPABILITY
from metaplug.cni.errors import CniError

if TYPE_CHECKING:
    from metaplug.journal import AttachmentRecord, JournalRecord

PREV_RESULT_PLACEHOLDER = "<the result of the previous plugin of this list>"
DEFAULT_CNI_PATH = "/opt/cni/bin"


def add_arguments(sub: Any) -> None:
    parser = sub.add_parser("explain", help="print the attachments an ADD would make for a pod, without running any "
                                            "delegate (exit 1 when the ADD would fail)")
    parser.add_argument("--config", required=True,
                        help="metaplug's network config as the runtime reads it (a .conflist with a metaplug plugin, "
                             "or metaplug's own .conf)")
    parser.add_argument("--annotation", metavar="VALUE",
                        help=f"the pod's {NETWORKS_ANNOTATION} annotation (comma or JSON form), sent as containerd "
                             f"and CRI-O do ({POD_ANNOTATIONS_CAPABILITY})")
    parser.add_argument("--default-network", metavar="VALUE", help=f"the pod's {DEFAULT_NETWORK_ANNOTATION} annotation")
    parser.add_argument("--pod", metavar="NAMESPACE/NAME",
                        help="the pod (K8S_POD_NAMESPACE/K8S_POD_NAME); with a kubeconfig its annotations and NADs "
                             "come from the API server")
    parser.add_argument("--cni-args", default="",
                        help="CNI_ARGS as the runtime sends them (e.g. METAPLUG_NETWORKS=a,b)")
    parser.add_argument("--runtime-config", metavar="JSON", help="runtimeConfig the runtime sends (ips, portMappings, "
                                                                 "...): it goes to the cluster network (R30)")
    parser.add_argument("--kubeconfig", help="override the config's kubeconfig")
    parser.add_argument("--netns", default="", help="the pod's network namespace: also check interface names in it")
    parser.add_argument("--ifname", default="eth0", help="CNI_IFNAME (default eth0)")
    parser.add_argument("--container-id", default="explain", help="CNI_CONTAINERID (default 'explain')")
    parser.add_argument("--cni-path", default=os.environ.get("CNI_PATH") or DEFAULT_CNI_PATH,
                        help=f"CNI_PATH (default: $CNI_PATH, else {DEFAULT_CNI_PATH})")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    parser.set_defaults(handler=run)


class UsageError(Exception):
    """explain cannot even build the call (unreadable file, bad flag value): exit 2."""


def runtime_stdin(path: str, runtime_config: dict[str, Any]) -> dict[str, Any]:
    """metaplug's stdin as a runtime builds it from the config file: the metaplug plugin of the list, with the list's
    cniVersion and name and the runtimeConfig (cni.md 18)."""
    from metaplug.cni.chain import load_conflist

    try:
        with open(path, "rb") as fh:
            conflist = load_conflist(fh.read())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except CniError as err:
        raise UsageError(f"{path}: {err}") from None
    plugins = conflist["plugins"]
    ours = [p for p in plugins if p.get("type") == "metaplug"] or plugins[:1]
    conf = dict(ours[0])
    conf["cniVersion"] = conflist["cniVersion"]
    conf["name"] = conflist["name"]
    if runtime_config:
        conf["runtimeConfig"] = {**(conf.get("runtimeConfig") or {}), **runtime_config}
    return conf


def _runtime_config(args: argparse.Namespace) -> dict[str, Any]:
    runtime: dict[str, Any] = {}
    if args.runtime_config:
        try:
            runtime = json.loads(args.runtime_config)
        except ValueError as exc:
            raise UsageError(f"--runtime-config is not JSON: {exc}") from None
        if not isinstance(runtime, dict):
            raise UsageError("--runtime-config must be a JSON object")
    annotations = {key: value for key, value in ((NETWORKS_ANNOTATION, args.annotation),
                                                 (DEFAULT_NETWORK_ANNOTATION, args.default_network)) if value}
    if annotations:
        runtime[POD_ANNOTATIONS_CAPABILITY] = {**runtime.get(POD_ANNOTATIONS_CAPABILITY, {}), **annotations}
    return runtime


def _cni_args(args: argparse.Namespace) -> str:
    pairs = [p for p in args.cni_args.split(";") if p]
    if args.pod:
        namespace, sep, name = args.pod.partition("/")
        if not sep or not namespace or not name:
            raise UsageError("--pod must be NAMESPACE/NAME")
        keys = {p.split("=", 1)[0] for p in pairs}
        pairs = [*(["IgnoreUnknown=1"] if "IgnoreUnknown" not in keys else []), *pairs,
                 f"K8S_POD_NAMESPACE={namespace}", f"K8S_POD_NAME={name}"]
    return ";".join(pairs)


def explain(args: argparse.Namespace) -> dict[str, Any]:
    """The plan as a JSON-able document: {"ok", "error", "warnings", "env", "attachments"}."""
    from metaplug import plugin
    from metaplug.cni.env import parse_env
    from metaplug.config import load_config

    runtime_config = _runtime_config(args)
    conf = runtime_stdin(args.config, runtime_config)
    if args.kubeconfig:
        conf["kubeconfig"] = args.kubeconfig
    environ = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": args.container_id, "CNI_NETNS": args.netns or "-",
               "CNI_IFNAME": args.ifname, "CNI_ARGS": _cni_args(args), "CNI_PATH": args.cni_path}
    doc: dict[str, Any] = {"ok": False, "error": None, "warnings": [], "env": {**environ, "CNI_NETNS": args.netns},
                           "attachments": []}
    declared = (conf.get("capabilities") or {}).get(POD_ANNOTATIONS_CAPABILITY) is True
    if POD_ANNOTATIONS_CAPABILITY in runtime_config and not declared:
        doc["warnings"].append(f"the config does not declare the capability {POD_ANNOTATIONS_CAPABILITY}: a runtime "
                               "would not pass the pod's annotations this way")
    if not args.netns:
        doc["warnings"].append("no --netns: interface names already present in the pod were not checked (R9)")
    try:
        env = parse_env(environ)._replace(netns=args.netns)
        cfg = load_config(conf)
        body, _ = plugin.plan_add(env, conf, cfg, dry_run=True)
    except CniError as err:
        doc["error"] = err.to_dict(conf.get("cniVersion") or "1.1.0")
        return doc
    ready = cfg.readiness_indicator_file
    if ready and not os.path.exists(ready):
        doc["warnings"].append(f"readiness indicator file {ready} is missing: ADD would wait "
                               f"{cfg.readiness_timeout:g} s for it, then fail with code 11 (R25)")
    doc["ok"] = True
    doc["stateDir"] = cfg.state_dir
    doc["attachments"] = [_attachment(body, att) for att in body["attachments"]]
    return doc


def _attachment(body: JournalRecord, att: AttachmentRecord) -> dict[str, Any]:
    """One planned attachment: what the journal records plus, per plugin, the exact ADD call."""
    from metaplug import journal
    from metaplug.cni.chain import plugin_stdin
    from metaplug.cni.invoke import build_env, find_plugin

    conflist = json.loads(att["conflist"])
    rt = journal.runtime_conf(body, att, body["netns"])
    calls = []
    for index, plugin in enumerate(conflist["plugins"]):
        stdin = json.loads(plugin_stdin(conflist, plugin, rt, None))
        if index:
            stdin["prevResult"] = PREV_RESULT_PLACEHOLDER
        calls.append({"type": plugin["type"], "binary": find_plugin(plugin["type"], body["paths"]), "stdin": stdin,
                      "env": build_env("ADD", container_id=rt.container_id, netns=rt.netns, ifname=rt.ifname,
                                       args=rt.cni_args(), paths=body["paths"], base={})})
    planned = {k: v for k, v in att.items() if k not in ("state", "result")}
    return {**planned, "calls": calls}


def _print_human(doc: dict[str, Any]) -> None:
    env = doc["env"]
    print(f"ADD for container {env['CNI_CONTAINERID']}, CNI_IFNAME {env['CNI_IFNAME']}, CNI_ARGS {env['CNI_ARGS']!r}")
    for warning in doc["warnings"]:
        print(f"warning: {warning}")
    if doc["error"] is not None:
        err = doc["error"]
        print(f"\nADD would fail with CNI error {err['code']}: {err['msg']}")
        if err.get("details"):
            print(f"  {err['details']}")
        return
    for number, att in enumerate(doc["attachments"], start=1):
        role = "cluster network" if att["cluster"] else "secondary"
        print(f"\n{number}. {att['ifname']}  <-  {att['network']}  ({role})")
        if att["defaultRoute"]:
            print(f"   default route via {', '.join(att['defaultRoute'])} (R13)")
        print(f"   runtimeConfig values: {json.dumps(att['capabilityArgs'], sort_keys=True)}")
        print(f"   CNI_ARGS: {att['cniArgs']!r}")
        print(f"   delegate config list: {att['conflist']}")
        for call in att["calls"]:
            print(f"   - {call['type']} ({call['binary']}) gets on stdin:")
            print(f"     {json.dumps(call['stdin'], sort_keys=True)}")
    print(f"\n{len(doc['attachments'])} attachment(s); journal in {doc['stateDir']}")


def run(args: argparse.Namespace) -> int:
    try:
        doc = explain(args)
    except UsageError as exc:
        print(f"metaplug explain: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print_human(doc)
    return 0 if doc["ok"] else 1
