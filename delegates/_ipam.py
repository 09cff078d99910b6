"""Delegating IPAM from a main plugin (mp-bridge, mp-macvlan) the way libcni's ipam.Exec* does.

The IPAM plugin `ipam.type` is found in CNI_PATH and gets the same stdin (the whole network config) and the same
CNI_* environment as the main plugin, with only CNI_COMMAND set to the verb (cni.md 18).
"""

from __future__ import annotations

import contextlib
from typing import Any

from metaplug_delegates._common import require_version

from metaplug.cni.env import CniEnv
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, NOT_AVAILABLE, CniError
from metaplug.cni.invoke import build_env, exec_plugin, find_plugin
from metaplug.cni.skel import Handler

IPAM_TIMEOUT = 120.0  # seconds; host-local may wait for its store lock under many concurrent ADDs


def ipam_type(conf: dict[str, Any]) -> str | None:
    """`ipam.type`, or None when the config has no IPAM (layer-2 only attachment)."""
    ipam = conf.get("ipam")
    if ipam is None or ipam == {}:
        return None
    if not isinstance(ipam, dict):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam", "ipam must be an object with a type")
    kind = ipam.get("type")
    if kind in (None, ""):
        return None
    if not isinstance(kind, str):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid ipam.type", f"must be a string, got {kind!r}")
    return kind


def exec_ipam(verb: str, conf: dict[str, Any], env: CniEnv, raw_stdin: bytes) -> dict[str, Any] | None:
    """Run `verb` of the config's IPAM plugin; its answer (None for no output). No IPAM configured: None.

    Raises the IPAM plugin's CniError unchanged, so the runtime sees the real reason (e.g. a range exhausted).
    """
    kind = ipam_type(conf)
    if kind is None:
        return None
    try:
        path = find_plugin(kind, env.path)
    except CniError as exc:
        if verb == "STATUS":  # cni.md 13: a missing IPAM plugin means ADD cannot be served
            raise CniError(NOT_AVAILABLE, f"IPAM plugin {kind!r} not available", exc.details) from None
        raise
    call_env = build_env(verb, container_id=env.container_id, netns=env.netns, ifname=env.ifname,
                         args=env.args, paths=env.path)
    return exec_plugin(path, raw_stdin, call_env, timeout=IPAM_TIMEOUT)


def release_quietly(conf: dict[str, Any], env: CniEnv, raw_stdin: bytes) -> None:
    """IPAM DEL after a failed ADD; the ADD's own error is what the caller reports, so errors here are dropped."""
    with contextlib.suppress(CniError):
        exec_ipam("DEL", conf, env, raw_stdin)


def forward_to_ipam(verb: str) -> Handler:
    """A STATUS or GC handler for a main plugin whose only state outside the namespace is its IPAM plugin's
    (its links die with the namespace): check the version, then ask the IPAM plugin (cni.md 13, 14)."""

    def handler(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
        require_version(conf, "1.1.0", verb)
        exec_ipam(verb, conf, env, raw)
        return None

    return handler


def release_and_delete_link(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    """DEL of a main plugin that made one link in the container (cni.md 11): release the IPAM allocation, then delete
    CNI_IFNAME; a missing namespace or interface is success. An IPAM failure is reported after the link is gone."""
    from metaplug_delegates import _netlink as nl

    ipam_error: CniError | None = None
    try:
        exec_ipam("DEL", conf, env, raw)
    except CniError as exc:
        ipam_error = exc
    if nl.netns_exists(env.netns):
        with nl.netns(env.netns) as cipr:
            nl.delete_link(cipr, env.ifname)
    if ipam_error is not None:
        raise ipam_error
