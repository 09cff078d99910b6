"""The watch caches (metaplug/k8s/watch.py) against the HTTPS API simulator, over loopback only: list then watch,
field selectors, a watch the server ends resumed from its resourceVersion, bookmarks moving the resourceVersion on,
410 Gone (as an ERROR event and as an HTTP status) relisting, bounded backoff, stop without waiting."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from metaplug.k8s import watch
from metaplug.k8s.client import new_http_client
from metaplug.k8s.kubeconfig import Credentials, load_kubeconfig
from metaplug.k8s.watch import NADS, Reflector, pods_on_node
from tests.helpers.kube_sim import KubeSim


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.restarts: list[tuple[str, str]] = []

    def watch_event(self, resource: str, type: str) -> None:
        self.events.append((resource, type))

    def watch_restart(self, resource: str, reason: str) -> None:
        self.restarts.append((resource, reason))


@pytest.fixture
def sim() -> Iterator[KubeSim]:
    with KubeSim() as s:
        yield s


@pytest.fixture
def http(sim: KubeSim, tmp_path: Path) -> Iterator[tuple[httpx.Client, Credentials]]:
    creds = load_kubeconfig(sim.kubeconfig(tmp_path / "kubeconfig"))
    with new_http_client(creds) as client:
        yield client, creds


def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def since(request_path: str) -> str:
    return parse_qs(urlsplit(request_path).query).get("resourceVersion", [""])[0]


@pytest.fixture
def reflectors() -> Iterator[list[Reflector]]:
    made: list[Reflector] = []
    try:
        yield made
    finally:
        for r in made:
            r.stop()


def started(made: list[Reflector], reflector: Reflector) -> Reflector:
    made.append(reflector)
    reflector.start()
    assert reflector.synced.wait(10)
    return reflector


def test_lists_this_nodes_pods_then_follows_them(sim: KubeSim, http: tuple[httpx.Client, Credentials],
                                                 reflectors: list[Reflector]) -> None:
    sim.add_pod("default", "here", uid="u1", annotations={"a": "1"})
    sim.add_pod("default", "there", node="node-2")
    seen = Seen()
    pods = started(reflectors, Reflector(*http, pods_on_node("node-1"), seen))
    assert pods.store.get("default", "here") == {
        "apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "here", "namespace": "default", "uid": "u1", "annotations": {"a": "1"},
            "resourceVersion": sim.pods[("default", "here")]["metadata"]["resourceVersion"]}}  # trimmed: no spec
    assert pods.store.get("default", "there") is None and len(pods.store) == 1
    sim.wait_watching(1)
    sim.add_pod("kube-system", "new", uid="u2")
    sim.add_pod("default", "other-node", node="node-2")
    sim.delete_pod("default", "here")
    until(lambda: pods.store.get("default", "here") is None)
    assert pods.store.get("kube-system", "new") is not None and len(pods.store) == 1
    assert seen.events == [("pods", "ADDED"), ("pods", "DELETED")]


def test_a_watch_the_server_ends_resumes_without_a_relist(sim: KubeSim, http: tuple[httpx.Client, Credentials],
                                                          reflectors: list[Reflector]) -> None:
    sim.add_nad("default", "a", "{}")
    seen = Seen()
    nads = started(reflectors, Reflector(*http, NADS, seen, watch_timeout=1))
    sim.wait_watching(1)
    sim.add_nad("default", "b", "{}")
    rv = sim.nads[("default", "b")]["metadata"]["resourceVersion"]
    until(lambda: ("network-attachment-definitions", "closed") in seen.restarts)
    until(lambda: len(sim.watch_requests("network-attachment-definitions")) >= 2)
    assert since(sim.watch_requests("network-attachment-definitions")[1].path) == rv
    assert [r for r in sim.requests if "watch=" not in r.path] == sim.requests[:1]  # one list only
    assert nads.store.get("default", "b") is not None


def test_bookmarks_move_the_resource_version_on(sim: KubeSim, http: tuple[httpx.Client, Credentials],
                                                reflectors: list[Reflector]) -> None:
    sim.bookmark_interval = 0.1
    seen = Seen()
    pods = started(reflectors, Reflector(*http, pods_on_node("node-1"), seen))
    sim.wait_watching(1)
    sim.add_nad("default", "unrelated", "{}")  # moves the server's resourceVersion, no pod event
    until(lambda: pods.resource_version == str(sim.resource_version))
    assert ("pods", "BOOKMARK") in seen.events and len(pods.store) == 0


@pytest.mark.parametrize("as_status", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists(sim: KubeSim, http: tuple[httpx.Client, Credentials], reflectors: list[Reflector],
                          as_status: bool) -> None:
    sim.add_nad("default", "a", "{}")
    seen = Seen()
    nads = started(reflectors, Reflector(*http, NADS, seen))
    sim.wait_watching(1)
    sim.watches_paused = True
    sim.delete_nad("default", "a")
    sim.add_nad("default", "b", "{}")
    sim.compact()
    if as_status:
        sim.fail_next(1, status=410, match="watch=")
    sim.drop_watches()
    sim.watches_paused = False
    until(lambda: nads.store.get("default", "b") is not None)
    assert nads.store.get("default", "a") is None  # the relist replaced the store
    assert ("network-attachment-definitions", "gone") in seen.restarts
    assert len([r for r in sim.requests if "watch=" not in r.path]) == 2


def test_failures_back_off_within_bounds_and_stop_is_prompt(sim: KubeSim, http: tuple[httpx.Client, Credentials],
                                                            reflectors: list[Reflector],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(watch, "BACKOFF_MAX", 0.2)
    sim.fail_next(8, status=500)
    seen = Seen()
    reflector = Reflector(*http, NADS, seen)
    reflectors.append(reflector)
    reflector.start()
    assert reflector.synced.wait(10)
    times = [r.at for r in sim.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)][:8]
    assert all(g < 0.2 + 0.15 for g in gaps), gaps  # never longer than BACKOFF_MAX (plus scheduling slack)
    assert seen.restarts == [("network-attachment-definitions", "error")] * 8
    sim.wait_watching(1)
    began = time.monotonic()
    reflector.stop()
    assert time.monotonic() - began < 0.5  # the blocked read is woken, not waited out
