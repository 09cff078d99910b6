"""KubeContext with an ObjectCache (the daemon's watch caches): a hit makes no API call, a miss is a GET, a cached pod
whose UID is not K8S_POD_UID is a miss (static pods exempt), and a KubeBackend decides which context an ADD gets.
The daemon config's nodeName and its NODE_NAME fallback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metaplug.attach.plan import PodRef
from metaplug.cni.errors import POD_UID_MISMATCH, CniError
from metaplug.daemon.config import ConfigError, from_dict
from metaplug.k8s import source
from metaplug.k8s.source import KubeContext


def pod(uid: str, **annotations: str) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default", "uid": uid, "annotations": annotations}}


class FakeClient:
    """Counts the calls a KubeContext makes (stands in for KubeClient)."""

    def __init__(self, pods: dict[str, dict[str, Any]] | None = None,
                 nads: dict[str, dict[str, Any]] | None = None) -> None:
        self.pods, self.nads = pods or {}, nads or {}
        self.calls: list[str] = []

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls.append(f"get pod {name}")
        return self.pods[name]

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"get nad {name}")
        return self.nads.get(name)

    def post_event(self, namespace: str, name: str, reason: str, message: str, type: str = "Normal") -> None:
        self.calls.append(f"event {reason}")


class Cache:
    def __init__(self, pods: dict[str, dict[str, Any]], nads: dict[str, dict[str, Any]]) -> None:
        self.pods, self.nads = pods, nads

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.pods.get(name)

    def nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.nads.get(name)


def context(client: FakeClient, cache: Cache | None, uid: str | None = "u1") -> KubeContext:
    return KubeContext(client, PodRef("default", "web", uid), 3.0, cache=cache)  # type: ignore[arg-type]


def test_a_cached_pod_and_nad_make_no_call() -> None:
    client = FakeClient()
    ctx = context(client, Cache({"web": pod("u1", a="1")}, {"red": {"spec": {"config": "{}"}}}))
    assert ctx.pod_annotations() == {"a": "1"}
    assert ctx.nad_source().get_nad("default", "red") == {"spec": {"config": "{}"}}
    assert client.calls == []


def test_misses_are_gets_and_a_missing_nad_posts_its_event() -> None:
    client = FakeClient(pods={"web": pod("u1", a="api")})
    ctx = context(client, Cache({}, {}))
    assert ctx.pod_annotations() == {"a": "api"}
    assert ctx.nad_source().get_nad("default", "ghost") is None
    assert client.calls == ["get pod web", "get nad ghost", "event NoNetworkFound"]


def test_a_cached_pod_with_another_uid_is_a_miss_and_the_get_decides() -> None:
    client = FakeClient(pods={"web": pod("u1", a="new")})
    assert context(client, Cache({"web": pod("old", a="old")}, {})).pod_annotations() == {"a": "new"}
    assert client.calls == ["get pod web"]
    client = FakeClient(pods={"web": pod("old")})
    with pytest.raises(CniError) as err:
        context(client, Cache({"web": pod("old")}, {}), uid="u1").pod_annotations()
    assert err.value.code == POD_UID_MISMATCH


def test_a_static_pod_in_the_cache_is_a_hit_whatever_its_uid() -> None:
    client = FakeClient()
    mirror = pod("mirror-uid", **{"kubernetes.io/config.source": "file"})
    assert context(client, Cache({"web": mirror}, {})).pod_annotations()["kubernetes.io/config.source"] == "file"
    assert client.calls == []


def test_a_backend_serves_its_kubeconfig_only() -> None:
    served = context(FakeClient(), None)

    class Backend:
        def context(self, kubeconfig: str, deadline: float, pod: PodRef) -> KubeContext | None:
            return served if kubeconfig == "/mine" else None

    source.use_backend(Backend())
    try:
        assert KubeContext.create("/mine", 3.0, PodRef("default", "web", "u1")) is served
        with pytest.raises(CniError):  # another kubeconfig: built directly (this one does not exist)
            KubeContext.create("/nonexistent/kubeconfig", 3.0, PodRef("default", "web", "u1"))
    finally:
        source.use_backend(None)


def test_node_name_from_the_config_else_node_name_env() -> None:
    assert from_dict({"nodeName": "n1"}, {"NODE_NAME": "n2"}).node_name == "n1"
    assert from_dict({}, {"NODE_NAME": "n2"}).node_name == "n2"
    assert from_dict({}, {}).node_name is None
    assert "nodeName" not in from_dict({"nodeName": "n1"}, {}).defaults  # never reaches the core
    with pytest.raises(ConfigError, match="nodeName"):
        from_dict({"nodeName": 7}, {})


def test_daemon_credentials_kubeconfig_else_in_cluster_else_none(tmp_path: Any) -> None:
    from metaplug.daemon.cache import daemon_credentials

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "clusters": [{"name": "c", "cluster": {"server": "https://api.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}))
    sa = tmp_path / "sa"
    sa.mkdir()
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = daemon_credentials(str(kubeconfig), in_pod, str(sa))
    assert creds is not None and creds.server == "https://api.example:6443"
    assert daemon_credentials(None, {}, str(sa)) is None  # not in a pod: no caches
    assert daemon_credentials(None, in_pod, str(sa)) is None  # a pod without a service account: no caches, a warning
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_text("ca")
    creds = daemon_credentials(None, in_pod, str(sa))
    assert creds is not None and creds.server == "https://10.96.0.1:443" and creds.source == "in-cluster"
    with pytest.raises(CniError):
        daemon_credentials(str(tmp_path / "missing"), in_pod, str(sa))  # a named kubeconfig must work
