"""The Kubernetes side of one ADD: the pod's annotations, NADs from the API, network-status publishing.

plugin.py uses it only when a `kubeconfig` is configured and the runtime names the pod (K8S_POD_NAME); DEL, CHECK and GC
never do (they run from the journal), so they work with the API server down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metaplug.cni.errors import POD_UID_MISMATCH, CniError
from metaplug.cni.lazylog import LazyLogger

if TYPE_CHECKING:
    from metaplug.attach.plan import PodRef
    from metaplug.k8s.client import KubeClient
    from metaplug.merge import NetworkStatusEntry

log = LazyLogger("metaplug.k8s")
CONFIG_SOURCE_ANNOTATION = "kubernetes.io/config.source"


class _ApiNads:
    """NadSource over the API; a missing NAD posts a NoNetworkFound event (best effort) unless `events` is off."""

    def __init__(self, ctx: KubeContext, events: bool = True) -> None:
        self.ctx = ctx
        self.events = events

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        nad = self.ctx.client.get_nad(namespace, name)
        if nad is None and self.ctx.pod.name and self.events:
            self.ctx.client.post_event(self.ctx.pod.namespace, self.ctx.pod.name, "NoNetworkFound",
                                       f"cannot find NetworkAttachmentDefinition {namespace}/{name}", type="Warning")
        return nad


class KubeContext:
    def __init__(self, client: KubeClient, pod: PodRef, deadline: float) -> None:
        if not pod.name:
            raise ValueError("a KubeContext serves a pod the runtime names (K8S_POD_NAME)")
        self.client = client
        self.pod = pod
        self.pod_name: str = pod.name
        self.deadline = deadline

    @classmethod
    def create(cls, kubeconfig: str, deadline: float, pod: PodRef) -> KubeContext:
        from metaplug.k8s.client import KubeClient
        from metaplug.k8s.kubeconfig import load_kubeconfig

        creds = load_kubeconfig(kubeconfig)
        return cls(KubeClient(creds, deadline=deadline), pod, deadline)

    def pod_annotations(self) -> dict[str, str]:
        """The pod's annotations from the API; the pod must be the one the runtime means (K8S_POD_UID)."""
        obj = self.client.get_pod(self.pod.namespace, self.pod_name)
        meta = obj.get("metadata") or {}
        annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
        uid = meta.get("uid")
        static = annotations.get(CONFIG_SOURCE_ANNOTATION, "api") != "api"  # static pods: the mirror's UID differs
        if self.pod.uid and uid and uid != self.pod.uid and not static:
            raise CniError(POD_UID_MISMATCH, "pod UID mismatch",
                           f"runtime asked for pod {self.pod.namespace}/{self.pod.name} with UID {self.pod.uid}, "
                           f"the API server has UID {uid} (the pod was probably deleted and recreated)")
        return annotations

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
