"""The daemon's config file: metaplug's conflist keys (the defaults of every call) plus the daemon's own keys.

Per call, the keys of the shim's conflist entry override the file's (as in Multus thick), and the SAME core runs on
the merged object. The daemon-only keys never reach the core.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

DEFAULT_SOCKET = "/run/metaplug/metaplug.sock"  # also compiled into metaplug-shim.c
DEFAULT_METRICS = "127.0.0.1:9091"
DEFAULT_MAX_CALLS = 16
SHUTDOWN_TIMEOUT = 30.0  # seconds SIGTERM waits for the calls in flight
WAIT_TIMEOUT = 60.0  # seconds a call waits for its container or a free slot before it is answered "try again"
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"  # the runtime's conflists (install's --cni-conf-dir)
DAEMON_KEYS = ("socketPath", "spoolDir", "metricsAddress", "maxConcurrentCalls", "inProcessDelegates", "nodeName",
               "cniConfDir")
NODE_NAME_ENV = "NODE_NAME"  # set from the downward API (fieldRef spec.nodeName) in the DaemonSet


class ConfigError(Exception):
    """The daemon's config file is missing or wrong (the message names the key)."""


class DaemonConfig(NamedTuple):
    defaults: dict[str, Any]  # conflist keys every call starts from
    socket_path: str
    spool_dir: str
    metrics_host: str
    metrics_port: int
    max_concurrent_calls: int
    in_process_delegates: bool  # serve the bundled mp-* delegates in-process (inprocess.py)
    node_name: str | None  # whose pods the daemon watches (with a kubeconfig)
    cni_conf_dir: str  # where readiness finds the shim's conflist, else the network install wraps (readiness.py)
    log_level: str
    log_file: str | None


def load(path: str) -> DaemonConfig:
    try:
        with open(path, "rb") as fh:
            raw = json.loads(fh.read())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    return from_dict(raw)


def from_dict(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> DaemonConfig:
    socket_path = _absolute(raw, "socketPath", DEFAULT_SOCKET)
    spool_dir = _absolute(raw, "spoolDir", os.path.join(os.path.dirname(socket_path), "spool"))
    host, _, port = str(raw.get("metricsAddress", DEFAULT_METRICS)).rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError("metricsAddress: must be host:port")
    max_calls = raw.get("maxConcurrentCalls", DEFAULT_MAX_CALLS)
    if isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1:
        raise ConfigError("maxConcurrentCalls: must be a positive integer")
    in_process = raw.get("inProcessDelegates", True)
    if not isinstance(in_process, bool):
        raise ConfigError("inProcessDelegates: must be true or false")
    node_name = raw.get("nodeName")
    if node_name is not None and (not isinstance(node_name, str) or not node_name):
        raise ConfigError("nodeName: must be a non-empty string (the node's name in Kubernetes)")
    node_name = node_name or (os.environ if environ is None else environ).get(NODE_NAME_ENV) or None
    log_file = raw.get("logFile")
    cni_conf_dir = _absolute(raw, "cniConfDir", DEFAULT_CNI_CONF_DIR)
    return DaemonConfig(
        defaults={k: v for k, v in raw.items() if k not in DAEMON_KEYS},
        socket_path=socket_path, spool_dir=spool_dir, metrics_host=host.strip("[]"), metrics_port=int(port),
        max_concurrent_calls=max_calls, in_process_delegates=in_process, node_name=node_name,
        cni_conf_dir=cni_conf_dir,
        log_level=str(raw.get("logLevel", raw.get("loglevel", "info"))).lower(),
        log_file=log_file if isinstance(log_file, str) and log_file else None,
    )


def _absolute(raw: Mapping[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{key}: must be an absolute path")
    return value


def merged_stdin(defaults: Mapping[str, Any], stdin: bytes) -> tuple[bytes, dict[str, Any]]:
    """The call's stdin with the file's keys underneath its own, and the merged object.

    A stdin that is not a JSON object goes to the core unchanged, so it reports the error exactly as thin mode does.
    """
    if not stdin.strip() and not defaults:
        return stdin, {}
    try:
        call = json.loads(stdin) if stdin.strip() else {}
    except ValueError:
        return stdin, {}
    if not isinstance(call, dict):
        return stdin, {}
    merged = {**defaults, **call}
    for key in DAEMON_KEYS:
        merged.pop(key, None)
    return json.dumps(merged).encode(), merged
