"""The daemon's Kubernetes side: one HTTP client for the daemon's life, watch caches of this node's pods and of every
NetworkAttachmentDefinition (k8s/watch.py), and the KubeContext of each ADD served from them.

ADD runs the same core as thin mode; only where the pod and its NADs come from differs (k8s/source.py's
ObjectCache): a cached pod or NAD is used as is, a miss is a GET (a pod created a moment ago may not have reached
the watch yet), and a cached pod whose UID is not K8S_POD_UID counts as a miss, so the GET decides (code 111 if the
API server agrees it is another pod). Publishing network-status and events work as in thin mode, through the shared
client.

Whose credentials: the `kubeconfig` of the daemon's config file, else, in a pod, its service account (in-cluster).
Which ADDs: every ADD whose kubeconfig names the same API server (on Kubernetes, `metaplug install` writes the
conflist's kubeconfig from the same service account, so they all do); an ADD naming another server gets thin mode's
own client.

The pod watch needs the node's name (`nodeName` in the daemon's config, else the NODE_NAME environment variable, set
from the downward API's spec.nodeName): without one only the NADs are cached and every pod is a GET.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from metaplug.cni.errors import CniError
from metaplug.k8s.watch import NADS, Reflector, pods_on_node

if TYPE_CHECKING:
    from metaplug.attach.plan import PodRef
    from metaplug.daemon.metrics import Metrics
    from metaplug.k8s.kubeconfig import Credentials
    from metaplug.k8s.source import KubeContext

log = logging.getLogger("metaplug.daemon.cache")


def daemon_credentials(kubeconfig: str | None, environ: Mapping[str, str] | None = None,
                       sa_dir: str | None = None) -> Credentials | None:
    """The daemon's own credentials: its config's kubeconfig (an unusable one is a CniError), else its pod's service
    account when it runs in a pod (KUBERNETES_SERVICE_HOST), else None (no caches)."""
    from metaplug.k8s.kubeconfig import SERVICE_ACCOUNT_DIR, in_cluster_credentials, load_kubeconfig

    if kubeconfig:
        return load_kubeconfig(kubeconfig)
    env = os.environ if environ is None else environ
    if not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    try:
        return in_cluster_credentials(env, sa_dir=sa_dir or SERVICE_ACCOUNT_DIR)
    except CniError as err:
        log.warning("in a pod without usable service-account credentials: no Kubernetes caches",
                    extra={"error": f"{err.msg}: {err.details}"})
        return None


class KubeCache:
    """Watch caches behind the ADDs on the daemon's API server (k8s.source.KubeBackend)."""

    def __init__(self, creds: Credentials, node_name: str | None, metrics: Metrics, *,
                 watch_timeout: int | None = None) -> None:
        from metaplug.k8s.client import new_http_client

        self.creds = creds
        self._servers: dict[str, tuple[int, str]] = {}  # kubeconfig path -> (mtime_ns, server) of the calls'
        self.http = new_http_client(self.creds, user_agent="metaplug-daemon")  # one client, closed by stop()
        self.metrics = metrics
        options: dict[str, Any] = {} if watch_timeout is None else {"watch_timeout": watch_timeout}
        self.nads = Reflector(self.http, self.creds, NADS, metrics, **options)
        self.pods = Reflector(self.http, self.creds, pods_on_node(node_name), metrics, **options) if node_name \
            else None
        if not node_name:
            log.warning("no node name (daemon config nodeName, or NODE_NAME): pods are not cached, every ADD GETs "
                        "its pod")
        metrics.kube_cache_sizes = self.sizes

    def reflectors(self) -> list[Reflector]:
        return [r for r in (self.pods, self.nads) if r is not None]

    def start(self) -> None:
        for reflector in self.reflectors():
            reflector.start()

    def stop(self) -> None:
        for reflector in self.reflectors():
            reflector.stop()
        self.http.close()

    def synced(self) -> tuple[bool, str]:
        waiting = [r.resource.name for r in self.reflectors() if not r.synced.is_set()]
        return (False, f"Kubernetes caches not synced yet: {', '.join(waiting)}") if waiting else (True, "synced")

    def sizes(self) -> dict[str, int]:
        return {r.resource.name: len(r.store) for r in self.reflectors()}

    # -- k8s.source.ObjectCache ---------------------------------------------------------------------------------------
    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.pods is None:
            return None
        return self._looked_up(self.pods, namespace, name)

    def nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._looked_up(self.nads, namespace, name)

    def _looked_up(self, reflector: Reflector, namespace: str, name: str) -> dict[str, Any] | None:
        obj = reflector.store.get(namespace, name) if reflector.synced.is_set() else None
        self.metrics.kube_cache_lookups.labels(reflector.resource.name, "miss" if obj is None else "hit").inc()
        return obj

    # -- k8s.source.KubeBackend ---------------------------------------------------------------------------------------
    def context(self, kubeconfig: str, deadline: float, pod: PodRef) -> KubeContext | None:
        """The Kubernetes side of one ADD, or None (thin mode's own client) when its kubeconfig names another API
        server (or cannot be read: thin mode's path then reports it)."""
        if self._server_of(kubeconfig) != self.creds.server:
            return None
        from metaplug.k8s.client import KubeClient
        from metaplug.k8s.source import KubeContext

        return KubeContext(KubeClient(self.creds, deadline=deadline, http=self.http), pod, deadline, cache=self)

    def _server_of(self, kubeconfig: str) -> str | None:
        """The API server a call's kubeconfig names (read again only when the file changed)."""
        from metaplug.k8s.kubeconfig import load_kubeconfig

        try:
            stamp = os.stat(kubeconfig).st_mtime_ns
        except OSError:
            return None
        known = self._servers.get(kubeconfig)
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            server = load_kubeconfig(kubeconfig).server
        except CniError:
            return None
        self._servers[kubeconfig] = (stamp, server)
        return server
