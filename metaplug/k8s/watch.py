"""List-then-watch caches of Kubernetes objects (client-go calls this a reflector), for the daemon.

A Reflector keeps a Store of one collection (all namespaces, optionally narrowed by a field selector) up to date:
- LIST the collection, replace the store with its items, remember the list's resourceVersion (synced from then on);
- WATCH from that resourceVersion (with bookmarks): ADDED/MODIFIED put an object, DELETED removes it, every event and
  BOOKMARK moves the resourceVersion on;
- a watch the server ends (timeoutSeconds) or a connection that drops is resumed from the last resourceVersion, with
  no relist; a 410 Gone (as an HTTP status or as an ERROR event: the resourceVersion was compacted away) relists;
- failed requests are retried after a bounded, jittered exponential backoff (BACKOFF_FIRST doubling to BACKOFF_MAX),
  reset by the next request that succeeds.
Objects are trimmed before they are stored (a pod keeps only the metadata ADD reads), so a node's cache stays small.
There is no client-side rate limit: ADDs read the store, they never wait for the reflector.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from metaplug.k8s.client import NAD_GROUP, NAD_RESOURCE, auth_headers, observe_request, request_extensions
from metaplug.k8s.kubeconfig import Credentials

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("metaplug.k8s.watch")

# The calls a Reflector makes; configs/kubernetes/rbac.yaml must grant each (tests/unit/test_k8s_manifests.py).
WATCH_CALLS: tuple[tuple[str, str, str], ...] = (
    ("", "pods", "list"),
    ("", "pods", "watch"),
    (NAD_GROUP, NAD_RESOURCE, "list"),
    (NAD_GROUP, NAD_RESOURCE, "watch"),
)
WATCH_TIMEOUT = 300  # seconds the server keeps one watch open (then it is resumed from its resourceVersion)
READ_SLACK = 30.0  # the client gives up on a silent stream this long after the server should have ended it
CONNECT_TIMEOUT = 10.0
BACKOFF_FIRST = 0.2  # seconds before the first retry of a failed request; doubles on each failure
BACKOFF_MAX = 10.0  # the longest wait between two attempts

Object = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)


class Resource(NamedTuple):
    """A collection to mirror."""

    name: str  # for metrics and logs: "pods", "network-attachment-definitions"
    path: str  # the collection across all namespaces
    field_selector: str  # "" for everything
    trim: Callable[[Object], Object]  # what of an object the store keeps


KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "annotations")  # not managedFields, labels, ...


def _trimmed(obj: Object, api_version: str, kind: str, *keep: str) -> Object:
    """The object with only what ADD reads (a list's items carry no apiVersion and kind: they are filled in)."""
    meta = obj.get("metadata") or {}
    out: Object = {"apiVersion": obj.get("apiVersion") or api_version, "kind": obj.get("kind") or kind,
                   "metadata": {k: meta[k] for k in KEPT_METADATA if k in meta}}
    out.update({k: obj[k] for k in keep if k in obj})
    return out


def trim_pod(pod: Object) -> Object:
    """What ADD reads of a pod: its identity and annotations (not its spec or status)."""
    return _trimmed(pod, "v1", "Pod")


def trim_nad(nad: Object) -> Object:
    """What ADD reads of a NAD: its identity, annotations and spec (the CNI config)."""
    return _trimmed(nad, f"{NAD_GROUP}/v1", "NetworkAttachmentDefinition", "spec")


def pods_on_node(node: str) -> Resource:
    return Resource("pods", "/api/v1/pods", f"spec.nodeName={node}", trim_pod)


NADS = Resource(NAD_RESOURCE, f"/apis/{NAD_GROUP}/v1/{NAD_RESOURCE}", "", trim_nad)


def _key(obj: Object) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _version(obj: Object) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv else None


class Store:
    """Objects of one collection by (namespace, name); safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, Object] = {}

    def get(self, namespace: str, name: str) -> Object | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def replace(self, objects: Iterable[Object]) -> None:
        fresh = {_key(o): o for o in objects}
        with self._lock:
            self._objects = fresh

    def put(self, obj: Object) -> None:
        with self._lock:
            self._objects[_key(obj)] = obj

    def remove(self, obj: Object) -> None:
        with self._lock:
            self._objects.pop(_key(obj), None)

    def values(self) -> list[Object]:
        with self._lock:
            return list(self._objects.values())

    def __len__(self) -> int:
        return len(self._objects)


class WatchObserver(Protocol):
    def watch_event(self, resource: str, type: str) -> None: ...

    def watch_restart(self, resource: str, reason: str) -> None: ...


class _Gone(Exception):
    """410: the resourceVersion is too old; relist."""


class _Failed(Exception):
    """A request that did not work (an error status, a broken stream); retried after a backoff."""


class Reflector:
    """Mirrors one Resource into `store` in a thread of its own (start/stop)."""

    def __init__(self, http: httpx.Client, creds: Credentials, resource: Resource, observer: WatchObserver, *,
                 watch_timeout: int = WATCH_TIMEOUT) -> None:
        self.http = http
        self.creds = creds
        self.resource = resource
        self.observer = observer
        self.watch_timeout = watch_timeout
        self.store = Store()
        self.synced = threading.Event()  # the first list has been stored
        self.resource_version: str | None = None  # None: (re)list first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"metaplug-watch-{resource.name}", daemon=True)
        self._response: httpx.Response | None = None
        self._failures = 0
        # called with (event type, the stored object before or None, the stored object now) after an ADDED or
        # MODIFIED event, in the reflector's thread: they must return quickly (the daemon's reconciler queues)
        self.listeners: list[Callable[[str, Object | None, Object], None]] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """End the watch; the thread is a daemon thread, so one stuck in a read never holds up the exit."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._wake()  # again and again: a watch may be just starting
            self._thread.join(0.05)

    def _wake(self) -> None:
        """Closing a stream does not wake a thread blocked reading it; shutting its socket down does."""
        response = self._response
        if response is None:
            return
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with contextlib.suppress(Exception):  # the reader may be closing it at the same moment
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._watch()
                reason = "closed"  # the server ended the watch (timeoutSeconds): resume at once
            except _Gone:
                log.info("watch: resourceVersion too old, relisting",
                         extra={"resource": self.resource.name, "resourceVersion": self.resource_version})
                self.resource_version = None
                reason = "gone"
            except Exception as exc:  # transport errors, bad answers: never let the cache's thread die
                if self._stop.is_set():
                    return
                self._failures += 1
                pause = random.uniform(0.5, 1.0) * min(BACKOFF_FIRST * 2 ** (self._failures - 1), BACKOFF_MAX)
                reason = "dropped" if isinstance(exc, _Dropped) else "error"
                detail = str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}"
                extra = {"resource": self.resource.name, "error": detail[:400],
                         "resourceVersion": self.resource_version, "retry_in": round(pause, 2)}
                if reason == "dropped":  # an API server restarting or a load balancer's idle timeout: routine
                    log.info("watch connection lost; resuming from its resourceVersion", extra=extra)
                else:
                    log.warning("watch failed; retrying", extra=extra)
                if self._stop.wait(pause):
                    return
            if not self._stop.is_set():
                self.observer.watch_restart(self.resource.name, reason)

    def _params(self, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if self.resource.field_selector:
            params["fieldSelector"] = self.resource.field_selector
        return params

    def _list(self) -> None:
        import httpx

        started = time.monotonic()
        code = "error"
        try:
            resp = self.http.get(self.resource.path, params=self._params(), headers=auth_headers(self.creds),
                                 timeout=httpx.Timeout(CONNECT_TIMEOUT + READ_SLACK), extensions=request_extensions(
                                     self.creds))
            code = str(resp.status_code)
        finally:
            observe_request("list", self.resource.name, code, time.monotonic() - started)
        if resp.status_code != 200:
            raise _Failed(f"list {self.resource.path}: {resp.status_code} {resp.text[:200]}")
        body = resp.json()
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise _Failed(f"list {self.resource.path}: no items in the answer")
        fresh = [self.resource.trim(i) for i in items if isinstance(i, dict)]
        before = {key: self.store.get(*key) for key in map(_key, fresh)} if self.listeners and self.synced.is_set() \
            else {}
        self.store.replace(fresh)
        for obj in fresh:  # a relist (410) may carry changes no event told: the listeners hear of them as MODIFIED
            old = before.get(_key(obj))
            if old is not None and old != obj:
                for listener in self.listeners:
                    listener("MODIFIED", old, obj)
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "") or None
        self._failures = 0
        self.synced.set()
        log.info("watch: listed", extra={"resource": self.resource.name, "objects": len(self.store),
                                         "resourceVersion": self.resource_version})

    def _watch(self) -> None:
        import httpx

        params = self._params(watch="1", allowWatchBookmarks="true", timeoutSeconds=str(self.watch_timeout),
                              resourceVersion=self.resource_version or "")
        timeout = httpx.Timeout(CONNECT_TIMEOUT, read=self.watch_timeout + READ_SLACK)
        started = time.monotonic()
        code = "error"
        try:
            with self.http.stream("GET", self.resource.path, params=params, headers=auth_headers(self.creds),
                                  timeout=timeout, extensions=request_extensions(self.creds)) as resp:
                code = str(resp.status_code)
                if resp.status_code == 410:
                    raise _Gone()
                if resp.status_code != 200:
                    resp.read()
                    raise _Failed(f"watch {self.resource.path}: {resp.status_code} {resp.text[:200]}")
                self._failures = 0
                self._response = resp
                try:
                    for line in resp.iter_lines():
                        if line.strip():
                            self._event(line)
                except httpx.TransportError as exc:
                    raise _Dropped(str(exc) or type(exc).__name__) from None
                finally:
                    self._response = None
        finally:
            observe_request("watch", self.resource.name, code, time.monotonic() - started)

    def _event(self, line: str) -> None:
        try:
            event = json.loads(line)
            kind, obj = event["type"], event["object"]
        except (ValueError, KeyError, TypeError):
            raise _Failed(f"watch {self.resource.path}: undecodable event {line[:200]!r}") from None
        if not isinstance(obj, dict):
            raise _Failed(f"watch {self.resource.path}: event without an object")
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise _Failed(f"watch {self.resource.path}: {obj.get('code')} {obj.get('message')}")
        self.observer.watch_event(self.resource.name, str(kind))
        if kind in ("ADDED", "MODIFIED"):
            trimmed = self.resource.trim(obj)
            before = self.store.get(*_key(trimmed))
            self.store.put(trimmed)
            for listener in self.listeners:
                listener(str(kind), before, trimmed)
        elif kind == "DELETED":
            self.store.remove(obj)
        elif kind != "BOOKMARK":
            raise _Failed(f"watch {self.resource.path}: unknown event type {kind!r}")
        self.resource_version = _version(obj) or self.resource_version


class _Dropped(_Failed):
    """The connection broke in the middle of a watch; resumed from the last resourceVersion."""
