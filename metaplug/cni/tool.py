"""A cnitool-like driver over chain.py: act as a container runtime for one network configuration list.

    python -m metaplug.cni.tool add|del|check|status|gc|version CONFLIST [NETNS] [options]

ADD prints the result; VERSION prints the versions each plugin of the list supports; the other verbs print nothing.
Any failure prints the CniError as JSON on stdout and exits 1 (a usage error exits 2). Tests use it as the runtime.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from metaplug.cni import chain
from metaplug.cni import version as cniversion
from metaplug.cni.env import parse_cni_args
from metaplug.cni.errors import INVALID_ENVIRONMENT, IO_FAILURE, CniError
from metaplug.cni.invoke import find_plugin, probe_version

VERBS = ("add", "del", "check", "status", "gc", "version")


def container_id_for(netns: str) -> str:
    """cnitool's derivation: a hash of the absolute netns path."""
    digest = hashlib.sha512(os.path.abspath(netns).encode()).hexdigest()
    return f"cnitool-{digest[:20]}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m metaplug.cni.tool", description="a cnitool-like CNI runtime")
    p.add_argument("verb", choices=VERBS)
    p.add_argument("conflist", help="network configuration list (or single-plugin .conf) file")
    p.add_argument("netns", nargs="?", default="", help="network namespace path (add/check; optional for del)")
    p.add_argument("--ifname", default="eth0")
    p.add_argument("--container-id", default="", help="default: derived from the netns path, as cnitool does")
    p.add_argument("--args", default="", help="CNI_ARGS, K=V;K=V")
    p.add_argument("--cap-args", default="", help="capability arguments, a JSON object")
    p.add_argument("--cache-dir", default=None, help="libcni result cache directory (off when not given)")
    p.add_argument("--path", default=os.environ.get("CNI_PATH", ""), help="CNI_PATH (default: $CNI_PATH)")
    p.add_argument("--valid-attachments", default="[]", help='GC: JSON list of {"containerID", "ifname"}')
    p.add_argument("--timeout", type=float, default=None, help="seconds per delegate call")
    p.add_argument("--rollback", action="store_true", help="add: DEL the attachment when ADD fails")
    p.add_argument("-v", "--verbose", action="store_true", help="log delegate calls and their stderr to stderr")
    return p


def run(argv: Sequence[str]) -> tuple[int, str]:
    """Execute one command; returns (exit status, stdout text)."""
    opts = parser().parse_args(list(argv))
    if opts.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s: %(message)s")
    err_version = cniversion.CURRENT_VERSION
    try:
        try:
            with open(opts.conflist, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise CniError(IO_FAILURE, "cannot read the network configuration", str(exc)) from None
        conf = chain.load_conflist(raw)
        err_version = conf["cniVersion"]
        paths = [p for p in opts.path.split(":") if p]
        out = _dispatch(opts, conf, paths)
    except CniError as err:
        return 1, json.dumps(err.to_dict(err_version)) + "\n"
    return 0, "" if out is None else json.dumps(out, indent=2) + "\n"


def _dispatch(opts: argparse.Namespace, conf: dict[str, Any], paths: list[str]) -> Any:
    verb = opts.verb
    if verb == "status":
        chain.status_network_list(conf, paths, timeout=opts.timeout)
        return None
    if verb == "gc":
        attachments = _json_arg(opts.valid_attachments, "--valid-attachments", list)
        chain.gc_network_list(conf, paths, attachments, timeout=opts.timeout, cache_dir=opts.cache_dir)
        return None
    if verb == "version":
        return {p["type"]: probe_version(find_plugin(p["type"], paths), timeout=opts.timeout) for p in conf["plugins"]}
    rt = _runtime_conf(opts)
    if verb == "add":
        return chain.add_network_list(conf, rt, paths, timeout=opts.timeout, cache_dir=opts.cache_dir,
                                      rollback_on_error=opts.rollback)
    if verb == "check":
        chain.check_network_list(conf, rt, paths, timeout=opts.timeout, cache_dir=opts.cache_dir)
        return None
    chain.del_network_list(conf, rt, paths, timeout=opts.timeout, cache_dir=opts.cache_dir)
    return None


def _runtime_conf(opts: argparse.Namespace) -> chain.RuntimeConf:
    if opts.verb in ("add", "check") and not opts.netns:
        raise CniError(INVALID_ENVIRONMENT, f"{opts.verb} needs a network namespace path", "give NETNS")
    cid = opts.container_id or (container_id_for(opts.netns) if opts.netns else "")
    if not cid:
        raise CniError(INVALID_ENVIRONMENT, "no container ID", "give NETNS or --container-id")
    args = list(parse_cni_args(opts.args).items())
    caps = _json_arg(opts.cap_args, "--cap-args", dict) if opts.cap_args else {}
    return chain.RuntimeConf(container_id=cid, netns=opts.netns, ifname=opts.ifname, args=args, capability_args=caps)


def _json_arg(text: str, what: str, kind: type) -> Any:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise CniError(INVALID_ENVIRONMENT, f"invalid {what}", str(exc)) from None
    if not isinstance(value, kind):
        raise CniError(INVALID_ENVIRONMENT, f"invalid {what}", f"expected a JSON {kind.__name__}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    status, out = run(sys.argv[1:] if argv is None else argv)
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
