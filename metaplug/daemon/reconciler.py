"""Hot-plug from the pod watch (issue 12.1): when the `k8s.v1.cni.cncf.io/networks` annotation of a running pod of
this node changes, its containers get what the new value asks for.

The pod reflector (k8s/watch.py) tells `pod_event` of every ADDED/MODIFIED pod; a pod whose annotation differs from
the cached one before is queued (a pod seen for the first time is ADD's business; our own network-status patches
leave the annotation as it was, so they queue nothing). One worker thread then, per queued pod: finds its journals
(pod namespace, name and UID as ADD recorded them), computes `reconcile.diff` against each, and applies it with
`live.perform` under the daemon's turn for that container (and the journal lock): detaches first, then default
routes moved in place, then attaches, then bandwidth changes in place. A failing change is rolled back by the core
and leaves the others as they are; it posts a `FailedAddingInterface` or `FailedRemovingInterface` event naming it,
and is tried again only on a later change of the annotation, no sooner than its backoff allows (backoff.py: 1 s
doubling to 5 min per pod, container and change; a change that arrives during the wait is applied when it ends,
once). network-status is published after every change (hotplug.py).

A change made while the daemon was down reaches no watch: so once the pod cache has first synced, every cached pod is
reconciled once (a pod whose journal already matches its annotation gives an empty diff and is left alone).
"""

from __future__ import annotations

import heapq
import json
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from metaplug import journal
from metaplug.attach.annotations import NETWORKS_ANNOTATION
from metaplug.cni.errors import CniError

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

    from metaplug.cni.documents import JsonObject
    from metaplug.daemon.backoff import Backoff, Container
    from metaplug.daemon.cache import KubeCache
    from metaplug.live import Operation
    from metaplug.reconcile import Changes

    Turn = Callable[[str], AbstractContextManager[bool]]  # the daemon's turn for a container (Daemon._turn)

log = logging.getLogger("metaplug.daemon.reconciler")
Pod = dict[str, Any]
BUSY_RETRY = 1.0  # seconds: a pod the daemon was too busy to reconcile is tried again this much later


def _networks(pod: Pod | None) -> str | None:
    return ((pod or {}).get("metadata") or {}).get("annotations", {}).get(NETWORKS_ANNOTATION)


class Planned(NamedTuple):
    """One live change a reconcile may run, with what its failure's event says."""

    change: str  # its identity for the backoff (`change_id`)
    operation: Operation
    reason: str  # FailedAddingInterface | FailedRemovingInterface
    what: str  # names it in the event


class Queued(NamedTuple):
    pod: Pod
    triggered: bool  # a change of the annotation (or the first sync); False: a return for owed retries


def change_id(kind: str, subject: object) -> str:
    """A live change's identity within its container: same identity, same change (backoff.py)."""
    return f"{kind} {json.dumps(subject, sort_keys=True, separators=(',', ':'))}"


class PodReconciler:
    def __init__(self, kube: KubeCache, defaults: dict[str, Any], state_dirs: set[str], turn: Turn,
                 backoff: Backoff | None = None) -> None:
        from metaplug.daemon.backoff import Backoff

        self.kube = kube
        self.defaults = defaults  # the daemon's config: the conf of every live change
        self.state_dirs = state_dirs  # the daemon's, growing as calls name others
        self.turn = turn
        self.backoff = backoff or Backoff()
        self.pending: queue.Queue[Queued | None] = queue.Queue()
        self._returns: list[tuple[float, int, str, str, bool]] = []  # heap: (when, seq, namespace, name, triggered)
        self._seq = 0
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
            self.pending.put(Queued(now, triggered=True))

    def _resync(self) -> None:
        """Queue every pod of the first sync (changes made while no daemon was watching)."""
        pods = self.kube.pods
        if pods is None:
            return
        while not pods.synced.wait(0.5):
            if self._stopped.is_set():
                return
        for pod in pods.store.values():
            self.pending.put(Queued(pod, triggered=True))

    def _come_back(self, when: float, namespace: str, name: str, *, triggered: bool) -> None:
        """Reconcile this pod again at `when` (worker thread only)."""
        self._seq += 1
        heapq.heappush(self._returns, (when, self._seq, namespace, name, triggered))

    def _next(self) -> Queued | None:
        """The next queued pod, or a pod whose return time came (read afresh from the cache)."""
        while True:
            if self._returns:
                when, _, namespace, name, triggered = self._returns[0]
                wait = when - time.monotonic()
                if wait <= 0:
                    heapq.heappop(self._returns)
                    pod = self.kube.pods.store.get(namespace, name) if self.kube.pods is not None else None
                    if pod is not None:
                        return Queued(pod, triggered)
                    continue
            else:
                wait = None
            try:
                return self.pending.get(timeout=wait)
            except queue.Empty:
                continue

    def _work(self) -> None:
        self._resync()
        while True:
            item = self._next()
            if item is None:
                return
            try:
                self.reconcile(item.pod, triggered=item.triggered)
            except Exception:  # never let the worker die; the next change tries again
                log.exception("reconciling a pod failed")

    # ------------------------------------------------------------------------------------------ one pod
    def reconcile(self, pod: Pod, *, triggered: bool = True) -> None:
        meta = pod.get("metadata") or {}
        namespace, name, uid = str(meta.get("namespace") or ""), str(meta.get("name") or ""), meta.get("uid")
        if self.kube.pods is not None:
            alive = {((p.get("metadata") or {}).get("namespace"), (p.get("metadata") or {}).get("name"))
                     for p in self.kube.pods.store.values()}
            self.backoff.forget_pods({(str(ns), str(n)) for ns, n in alive} | {(namespace, name)})
        for key in self._journals(namespace, name, uid):
            with self.turn(key.container_id) as ok:
                if not ok:
                    log.warning("daemon busy: pod reconciled again in a second", extra={"pod": f"{namespace}/{name}"})
                    self._come_back(time.monotonic() + BUSY_RETRY, namespace, name, triggered=triggered)
                    continue
                self._reconcile_container(key, namespace, name, _networks(pod) or "", triggered)

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

    def _reconcile_container(self, key: journal.JournalKey, namespace: str, name: str, value: str,
                             triggered: bool) -> None:
        from metaplug.attach.annotations import parse_networks_annotation, validate_default_route_owner
        from metaplug.config import load_config
        from metaplug.reconcile import diff, fixed_count

        conf = {"cniVersion": "1.1.0", **self.defaults, "name": key.meta_network,
                "stateDir": key.state_dir}
        try:
            body = journal.read(key)
            if body is None or "result" not in body:
                return  # gone, or its ADD is still running (ADD reads the annotation itself)
            elements = parse_networks_annotation(value, namespace) if value.strip() else []
            validate_default_route_owner(elements)  # R13: one element at most, as at ADD
            cfg = load_config(conf)
        except (CniError, journal.CorruptJournal) as err:
            if triggered:  # once per change of the annotation, not again on a return for retries
                self._event(namespace, name, "FailedAddingInterface", f"cannot apply {NETWORKS_ANNOTATION}: {err}")
            return
        fixed = fixed_count(len(cfg.default_networks), len(cfg.delegates), namespace in cfg.system_namespaces)
        planned = self._planned(diff(elements, body["attachments"], fixed), key, conf)
        container = (namespace, name, key.container_id)
        self.backoff.keep(container, {p.change for p in planned})
        now = time.monotonic()
        come_back: float | None = None
        ran = False
        for change in planned:
            verdict = self.backoff.decide(container, change.change, now, triggered=triggered)
            if not verdict.run:
                if verdict.come_back_at is not None:
                    come_back = min(come_back or verdict.come_back_at, verdict.come_back_at)
                    log.info("live change backing off after a failure", extra={
                        "pod": f"{namespace}/{name}", "what": change.what,
                        "retry_in": round(verdict.come_back_at - now, 3)})
                continue
            if not ran:
                log.info("pod's networks changed", extra={"pod": f"{namespace}/{name}",
                                                          "container": key.container_id})
                ran = True
            self._apply(container, change)
        if come_back is not None:
            self._come_back(come_back, namespace, name, triggered=False)
        if ran and not cfg.kubeconfig:  # the core publishes with a kubeconfig; with in-cluster credentials only, here
            self._publish(key, namespace, name)

    @staticmethod
    def _planned(changes: Changes, key: journal.JournalKey, conf: JsonObject) -> list[Planned]:
        """The diff as live changes, in the order they run: detaches, default routes (given back, then taken),
        attaches, bandwidth changes."""
        from metaplug.reconcile import element_json

        base: Operation = {"operation": "detach", "containerId": key.container_id, "conf": conf}
        planned = [Planned(change_id("detach", ifname), {**base, "ifname": ifname}, "FailedRemovingInterface",
                           f"interface {ifname}") for ifname in changes.detach]
        for route in changes.reroute:
            planned.append(Planned(change_id("default-route", [route.ifname, route.gateways]),
                                   {**base, "operation": "set-default-route", "ifname": route.ifname,
                                    "gateways": route.gateways}, "FailedAddingInterface",
                                   f"default route via interface {route.ifname}" if route.gateways
                                   else f"default route given back by interface {route.ifname}"))
        seen: dict[str, int] = {}
        for element in changes.attach:
            wanted = element_json(element)
            identity = change_id("attach", wanted)
            seen[identity] = seen.get(identity, 0) + 1  # R16: the same element twice is two changes
            planned.append(Planned(f"{identity} #{seen[identity]}", {**base, "operation": "attach", "element": wanted},
                                   "FailedAddingInterface", f"network {element.namespace}/{element.name}"
                                   + (f"@{element.interface}" if element.interface else "")))
        for reshape in changes.reshape:
            planned.append(Planned(change_id("bandwidth", [reshape.ifname, reshape.bandwidth]),
                                   {**base, "operation": "set-bandwidth", "ifname": reshape.ifname,
                                    "bandwidth": reshape.bandwidth}, "FailedAddingInterface",
                                   f"bandwidth of interface {reshape.ifname}"))
        return planned

    def _publish(self, key: journal.JournalKey, namespace: str, name: str) -> None:
        from metaplug.k8s.client import KubeClient

        try:
            body = journal.read(key)
            if body is not None and "status" in body:
                KubeClient(self.kube.creds, http=self.kube.http).publish_network_status(namespace, name,
                                                                                       body["status"])
        except (CniError, journal.CorruptJournal) as err:
            log.warning("could not publish network-status", extra={"pod": f"{namespace}/{name}", "error": str(err)})

    def _apply(self, container: Container, change: Planned) -> None:
        from metaplug import live

        namespace, name, _ = container
        try:
            live.perform(change.operation)
        except CniError as err:
            failure = self.backoff.failed(container, change.change, time.monotonic())
            log.warning("live change failed", extra={"pod": f"{namespace}/{name}", "what": change.what,
                                                     "error": str(err), "failures": failure.failures,
                                                     "retry_after": round(failure.not_before - time.monotonic(), 3)})
            self._event(namespace, name, change.reason, f"{change.what}: {err}")
            return
        self.backoff.succeeded(container, change.change)

    def _event(self, namespace: str, name: str, reason: str, message: str) -> None:
        from metaplug.k8s.client import KubeClient

        kube = self.kube

        # best effort: post_event never raises
        KubeClient(kube.creds, http=kube.http).post_event(namespace, name, reason, message, type="Warning")
