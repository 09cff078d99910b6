"""The Kubernetes side of one ADD: the pod's annotations, NADs from the API, network-status publishing.

plugin.py uses it only when a `kubeconfig` is configured and the runtime names the pod (K8S_POD_NAME); DEL, CHECK and GC
never do (they run from the journal), so they work with the API server down.

Where the pod and the NADs come from is the one thing that differs between modes: thin mode GETs them; a long-lived
process (the daemon, daemon/cache.py) registers a KubeBackend whose KubeContexts read an ObjectCache first and GET only
on a miss. A cached pod whose UID is not the runtime's K8S_POD_UID is a miss too: the GET then decides.
"""

from __future__ import annotations

from metaplug.cni.errors import POD_UID_MISMATCH, CniError
from metaplug.cni.lazylog import LazyLogger
from metaplug.cni.runtime_typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from typing import Any

    from metaplug.attach.plan import PodRef
    from metaplug.k8s.client import KubeClient
    from metaplug.merge import NetworkStatusEntry

log = LazyLogger("metaplug.k8s")
CONFIG_SOURCE_ANNOTATION = "kubernetes.io/config.source"


class ObjectCache(Protocol):
    """Pods and NADs already known (None: not known, GET it)."""

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def nad(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class KubeBackend(Protocol):
    """What a long-lived process offers each ADD: its KubeContext for `kubeconfig`, or None (then a direct one)."""

    def context(self, kubeconfig: str, deadline: float, pod: PodRef) -> KubeContext | None: ...


_backend: KubeBackend | None = None


def use_backend(backend: KubeBackend | None) -> None:
    """Serve the ADDs of this process from `backend` (the daemon, at start; None: back to direct calls)."""
    global _backend
    _backend = backend


class _ApiNads:
    """NadSource over the API; a missing NAD posts a NoNetworkFound event (best effort) unless `events` is off."""

    def __init__(self, ctx: KubeContext, events: bool = True) -> None:
        self.ctx = ctx
        self.events = events

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        cache = self.ctx.cache
        nad = cache.nad(namespace, name) if cache is not None else None
        if nad is not None:
            return nad
        nad = self.ctx.client.get_nad(namespace, name)
        if nad is None and self.ctx.pod.name and self.events:
            self.ctx.client.post_event(self.ctx.pod.namespace, self.ctx.pod.name, "NoNetworkFound",
                                       f"cannot find NetworkAttachmentDefinition {namespace}/{name}", type="Warning")
        return nad


class KubeContext:
    def __init__(self, client: KubeClient, pod: PodRef, deadline: float, cache: ObjectCache | None = None) -> None:
        if not pod.name:
            raise ValueError("a KubeContext serves a pod the runtime names (K8S_POD_NAME)")
        self.client = client
        self.pod = pod
        self.pod_name: str = pod.name
        self.deadline = deadline
        self.cache = cache

    @classmethod
    def create(cls, kubeconfig: str, deadline: float, pod: PodRef) -> KubeContext:
        if _backend is not None:
            served = _backend.context(kubeconfig, deadline, pod)
            if served is not None:
                return served
        from metaplug.k8s.client import KubeClient
        from metaplug.k8s.kubeconfig import load_kubeconfig

        creds = load_kubeconfig(kubeconfig)
        return cls(KubeClient(creds, deadline=deadline), pod, deadline)

    def pod_annotations(self) -> dict[str, str]:
        """The pod's annotations (from the cache, else the API); the pod must be the one the runtime means
        (K8S_POD_UID)."""
        cached = self.cache.pod(self.pod.namespace, self.pod_name) if self.cache is not None else None
        if cached is not None and self._uid_problem(cached) is None:
            return _annotations(cached)
        obj = self.client.get_pod(self.pod.namespace, self.pod_name)
        problem = self._uid_problem(obj)
        if problem is not None:
            raise problem
        return _annotations(obj)

    def _uid_problem(self, pod: dict[str, Any]) -> CniError | None:
        uid = (pod.get("metadata") or {}).get("uid")
        static = _annotations(pod).get(CONFIG_SOURCE_ANNOTATION, "api") != "api"  # a static pod's mirror has its own
        if self.pod.uid and uid and uid != self.pod.uid and not static:
            return CniError(POD_UID_MISMATCH, "pod UID mismatch",
                            f"runtime asked for pod {self.pod.namespace}/{self.pod.name} with UID {self.pod.uid}, "
                            f"the API server has UID {uid} (the pod was probably deleted and recreated)")
        return None

    def nad_source(self, *, events: bool = True) -> _ApiNads:
        """NADs from the API; `events` off (`metaplug explain`): nothing is posted to the pod."""
        return _ApiNads(self, events)

    def publish_status(self, status: list[NetworkStatusEntry]) -> None:
        """R17-R23: publish network-status; a failure is logged, never fails the pod (it is already attached)."""
        self.client.reset_deadline(self.deadline)
        try:
            self.client.publish_network_status(self.pod.namespace, self.pod_name, status)
        except CniError as err:
            log.warning("could not publish network-status", extra={"error": str(err)})
            return
        interfaces = ", ".join(f"{s['interface']} {s['ips']} from {s['name']}" for s in status)
        self.client.post_event(self.pod.namespace, self.pod_name, "AddedInterface", f"Added interfaces {interfaces}")


def _annotations(pod: dict[str, Any]) -> dict[str, str]:
    meta = pod.get("metadata") or {}
    return {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
