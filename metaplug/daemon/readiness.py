"""Which cluster network /readyz checks: the one the daemon would use for a call (issue 11: "cluster network STATUS
good").

A call's configuration is the shim's conflist entry over the daemon's config file (config.merged_stdin), so the
cluster network is found in this order:
1. the metaplug entry of the shim's conflist, `<cniConfDir>/00-metaplug.conflist`, read as the CLI reads it
   (explain.runtime_stdin), over the daemon's config: the keys the runtime will send win, as in a call;
2. without a cluster network there (`clusterNetwork` or `delegates`): the network `metaplug install` would wrap,
   the first other conf file of cniConfDir (install.find_cluster_network), which is what the conflist will name;
3. none at all: nothing to check (no call could be served yet, and install refuses to write a conflist without one).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from metaplug.cni.version import CURRENT_VERSION
from metaplug.daemon.config import DAEMON_KEYS, DaemonConfig


class ClusterConf(NamedTuple):
    conf: dict[str, Any] | None  # metaplug's configuration for a STATUS call, None when no cluster network is known
    source: str  # where the cluster network comes from (for /readyz and the log)


class Unreadable(Exception):
    """The shim's conflist or a conf file of cniConfDir cannot be read (the message says which and why)."""


def cluster_conf(cfg: DaemonConfig) -> ClusterConf:
    from metaplug.install import CONFLIST_NAME, InstallError, find_cluster_network

    conf: dict[str, Any] = {"cniVersion": CURRENT_VERSION, "name": "metaplug", **cfg.defaults}
    source = "the daemon's config"
    shim_conflist = os.path.join(cfg.cni_conf_dir, CONFLIST_NAME)
    if os.path.exists(shim_conflist):
        from metaplug.explain import UsageError, runtime_stdin

        try:
            entry = runtime_stdin(shim_conflist, {})
        except UsageError as exc:
            raise Unreadable(str(exc)) from None
        conf.update({k: v for k, v in entry.items() if k not in DAEMON_KEYS and k != "type"})
        source = f"{shim_conflist} over the daemon's config"
    if conf.get("clusterNetwork") or conf.get("delegates"):
        return ClusterConf(conf, source)
    try:
        found = find_cluster_network(cfg.cni_conf_dir)
    except InstallError as exc:
        raise Unreadable(str(exc)) from None
    if found is None:
        return ClusterConf(None, f"no cluster network in the daemon's config, nor a CNI conf in {cfg.cni_conf_dir}")
    conf["clusterNetwork"] = found
    return ClusterConf(conf, f"{found} (the first CNI conf in {cfg.cni_conf_dir}, which install wraps)")
