"""Hot-plug from the pod watch (issue 12.1): when the `k8s.v1.cni.cncf.io/networks` annotation of a running pod of
this node changes, its containers get what the new value asks for.

The pod reflector (k8s/watch.py) tells `pod_event` of every ADDED/MODIFIED pod; a pod whose annotation differs from
the cached one before is queued (a pod seen for the first time is ADD's business; our own network-status patches
leave the annotation as it was, so they queue nothing). One worker thread then, per queued pod: finds its journals
(pod namespace, name and UID as ADD recorded them), computes `reconcile.diff` against each, and applies it with
`live.perform` under the daemon's turn for that container (and the journal lock): detaches first, then attaches,
then bandwidth changes in place. A failing element is rolled back by the core and leaves the others as they are; it
posts a `FailedAddingInterface` or `FailedRemovingInterface` event naming it, and is tried again only on a later
change of the annotation. network-status is published after every change (hotplug.py).

A change made while the daemon was down reaches no watch: so once the pod cache has first synced, every cached pod is
reconciled once (a pod whose journal already matches its annotation gives an empty diff and is left alone).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

from metaplug import journal
from metaplug.attach.annotations import NETWORKS_ANNOTATION
from metaplug.cni.errors import CniError

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from metaplug.daemon.cache import KubeCache
    from metaplug.live import Operation

    Turn = Callable[[str], AbstractContextManager[bool]]  # the daemon's turn for a container (Daemon._turn)

log = logging.getLogger("metaplug.daemon.reconciler")
Pod = dict[str, Any]


def _networks(pod: Pod | None) -> str | None:
    return ((pod or {}).get("metadata") or {}).get("annotations", {}).get(NETWORKS_ANNOTATION)


class PodReconciler:
    def __init__(self, kube: KubeCache, defaults: dict[str, Any], state_dirs: set[str], turn: Turn) -> None:
        self.kube = kube
        self.defaults = defaults  # the daemon's config: the conf of every live change
        self.state_dirs = state_dirs  # the daemon's, growing as calls name others
        self.turn = turn
        self.pending: queue.Queue[Pod | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="metaplug-reconciler", daemon=True)
        self._stopped = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self.pending.put(None)
        self._thread.join(timeout)

    def pod_event(self, kind: str, before: Pod | None, now: Pod) -> None:
        """A watch listener: queue a pod whose networks annotation changed (never blocks the reflector)."""
        if kind == "MODIFIED" and before is not None and _networks(before) != _networks(now):
            self.pending.put(now)

    def _resync(self) -> None:
        """Queue every pod of the first sync (changes made while no daemon was watching)."""
        pods = self.kube.pods
        if pods is None:
            return
        while not pods.synced.wait(0.5):
            if self._stopped.is_set():
                return
        for pod in pods.store.values():
            self.pending.put(pod)

    def _work(self) -> None:
        self._resync()
        while True:
            pod = self.pending.get()
            if pod is None:
                return
            try:
                self.reconcile(pod)
            except Exception:  # never let the worker die; the next change tries again
                log.exception("reconciling a pod failed")

    # ------------------------------------------------------------------------------------------ one pod
    def reconcile(self, pod: Pod) -> None:
        meta = pod.get("metadata") or {}
        namespace, name, uid = str(meta.get("namespace") or ""), str(meta.get("name") or ""), meta.get("uid")
        for key in self._journals(namespace, name, uid):
            with self.turn(key.container_id) as ok:
                if not ok:
                    log.warning("daemon busy: pod not reconciled", extra={"pod": f"{namespace}/{name}"})
                    continue
                self._reconcile_container(key, namespace, name, _networks(pod) or "")

    def _journals(self, namespace: str, name: str, uid: object) -> list[journal.JournalKey]:
        found = []
        for state_dir in sorted(self.state_dirs):
            try:
                listed = list(journal.list_journals(state_dir))
            except CniError:
                continue
            for cid, path in listed:
                try:
                    body = journal.load(path)
                except (OSError, journal.CorruptJournal, CniError):
                    continue
                recorded = body.get("pod") or {}
                if (recorded.get("namespace"), recorded.get("name")) == (namespace, name) and (
                        not uid or not recorded.get("uid") or recorded.get("uid") == uid):
                    found.append(journal.JournalKey(state_dir, cid, body["network"], body["ifname"]))
        return found

    def _reconcile_container(self, key: journal.JournalKey, namespace: str, name: str, value: str) -> None:
        from metaplug.attach.annotations import parse_networks_annotation
        from metaplug.config import load_config
        from metaplug.reconcile import diff, element_json, fixed_count

        conf = {"cniVersion": "1.1.0", **self.defaults, "name": key.meta_network,
                "stateDir": key.state_dir}
        try:
            body = journal.read(key)
            if body is None or "result" not in body:
                return  # gone, or its ADD is still running (ADD reads the annotation itself)
            elements = parse_networks_annotation(value, namespace) if value.strip() else []
            cfg = load_config(conf)
        except (CniError, journal.CorruptJournal) as err:
            self._event(namespace, name, "FailedAddingInterface", f"cannot apply {NETWORKS_ANNOTATION}: {err}")
            return
        fixed = fixed_count(len(cfg.default_networks), len(cfg.delegates), namespace in cfg.system_namespaces)
        changes = diff(elements, body["attachments"], fixed)
        if not changes:
            return
        log.info("pod's networks changed", extra={"pod": f"{namespace}/{name}", "container": key.container_id,
                                                  "detach": changes.detach, "attach": len(changes.attach),
                                                  "reshape": [r.ifname for r in changes.reshape]})
        base: Operation = {"operation": "detach", "containerId": key.container_id, "conf": conf}
        for ifname in changes.detach:
            self._apply({**base, "ifname": ifname}, namespace, name, "FailedRemovingInterface", f"interface {ifname}")
        for element in changes.attach:
            self._apply({**base, "operation": "attach", "element": element_json(element)}, namespace, name,
                        "FailedAddingInterface", f"network {element.namespace}/{element.name}"
                        + (f"@{element.interface}" if element.interface else ""))
        for reshape in changes.reshape:
            self._apply({**base, "operation": "set-bandwidth", "ifname": reshape.ifname,
                         "bandwidth": reshape.bandwidth}, namespace, name, "FailedAddingInterface",
                        f"bandwidth of interface {reshape.ifname}")
        if not cfg.kubeconfig:  # the core publishes with a kubeconfig; with in-cluster credentials only, here
            self._publish(key, namespace, name)

    def _publish(self, key: journal.JournalKey, namespace: str, name: str) -> None:
        from metaplug.k8s.client import KubeClient

        try:
            body = journal.read(key)
            if body is not None and "status" in body:
                KubeClient(self.kube.creds, http=self.kube.http).publish_network_status(namespace, name,
                                                                                       body["status"])
        except (CniError, journal.CorruptJournal) as err:
            log.warning("could not publish network-status", extra={"pod": f"{namespace}/{name}", "error": str(err)})

    def _apply(self, operation: Operation, namespace: str, name: str, reason: str, what: str) -> None:
        from metaplug import live

        try:
            live.perform(operation)
        except CniError as err:
            log.warning("live change failed", extra={"pod": f"{namespace}/{name}", "what": what, "error": str(err)})
            self._event(namespace, name, reason, f"{what}: {err}")

    def _event(self, namespace: str, name: str, reason: str, message: str) -> None:
        from metaplug.k8s.client import KubeClient

        kube = self.kube

        # best effort: post_event never raises
        KubeClient(kube.creds, http=kube.http).post_event(namespace, name, reason, message, type="Warning")
