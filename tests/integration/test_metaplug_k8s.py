"""metaplug end to end with a Kubernetes API server (the HTTPS simulator in tests/helpers/kube_sim.py), in real
namespaces with the reference plugins. The simulator listens inside the node namespace, where metaplug runs, so all
traffic stays on that namespace's loopback."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from metaplug.netns import run_in_netns
from tests.helpers.kube_sim import KubeSim
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns

UID = "0b0e9d62-1c55-4d8e-9a51-7e0c5b8f6a11"
ARGS = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID={UID}"


@pytest.fixture
def sim(world: MetaplugWorld) -> Iterator[KubeSim]:
    kube = KubeSim()
    run_in_netns(world.node.path, kube.start)  # the listening socket is created inside the node namespace
    try:
        yield kube
    finally:
        kube.stop()


def kube_conf(world: MetaplugWorld, sim: KubeSim, **extra: object) -> dict:
    path = sim.kubeconfig(world.tmp / "kube" / "config", mode="token")
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    return world.metaplug_conf(cluster, kubeconfig=path, kubeDeadline=3, **extra)


def api_paths(sim: KubeSim) -> list[str]:
    return [f"{r.method} {r.path.split('?')[0]}" for r in sim.requests]


def test_annotations_and_nads_from_api_and_network_status_published(world: MetaplugWorld, sim: KubeSim,
                                                                     pod: Netns, mode: str) -> None:
    """ADD reads the pod's annotation and the NADs from the API, attaches, then publishes network-status (R17-R23);
    in thin and in daemon mode."""
    sim.add_nad("default", "red", json.dumps(world.bridge_net("red", "10.99.0.0/24", "mpred0")))
    sim.add_nad("default", "blue", json.dumps(world.macvlan_static_net("blue")))
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": json.dumps(
        [{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]}, {"name": "red"}])})
    conf = kube_conf(world, sim)
    add = world.call("ADD", conf, pod=pod, args=ARGS)
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("blue0") == ["192.168.77.10/24"] and pod.addresses("net2") == ["10.99.0.2/24"]
    links = pod.links()
    status = json.loads(sim.annotations("default", "web")["k8s.v1.cni.cncf.io/network-status"])
    assert status == [
        {"name": "cluster", "interface": "eth0", "ips": ["10.88.0.2"], "mac": links["eth0"]["address"],
         "default": True, "gateway": ["10.88.0.1"]},
        {"name": "default/blue", "interface": "blue0", "ips": ["192.168.77.10"], "mac": links["blue0"]["address"],
         "default": False},
        {"name": "default/red", "interface": "net2", "ips": ["10.99.0.2"], "mac": links["net2"]["address"],
         "default": False, "gateway": ["10.99.0.1"]},
    ]
    assert any(e.get("reason") == "AddedInterface" for e in sim.events)
    assert "GET /api/v1/namespaces/default/pods/web" in api_paths(sim)

    before = len(sim.requests)
    assert world.call("CHECK", conf, pod=pod, args=ARGS).code == 0  # read-only: no API call
    assert world.call("DEL", conf, pod=pod, args=ARGS).code == 0  # from the journal: no API call
    assert len(sim.requests) == before
    assert set(pod.links()) == {"lo"} and world.reservations() == []


def test_runtime_annotations_skip_the_pod_get(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    """Source 1 first: with io.kubernetes.cri.pod-annotations the pod is not fetched; NADs still come from the API."""
    sim.add_nad("default", "red", json.dumps(world.bridge_net("red", "10.99.0.0/24", "mpred0")))
    sim.add_pod("default", "web", uid=UID)
    conf = world.annotated(kube_conf(world, sim), "red")
    assert world.call("ADD", conf, pod=pod, args=ARGS).code == 0
    paths = api_paths(sim)
    assert "GET /api/v1/namespaces/default/pods/web" not in paths
    assert "GET /apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/red" in paths
    assert world.call("DEL", conf, pod=pod, args=ARGS).code == 0


def test_survives_two_503s(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    sim.add_nad("default", "red", json.dumps(world.bridge_net("red", "10.99.0.0/24", "mpred0")))
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    sim.fail_next(2, status=503)
    add = world.call("ADD", kube_conf(world, sim), pod=pod, args=ARGS)
    assert add.code == 0, add.stdout
    assert [r.status for r in sim.requests[:3]] == [503, 503, 200]
    assert world.call("DEL", kube_conf(world, sim), pod=pod, args=ARGS).code == 0


def test_api_down_on_add_gives_try_again_within_deadline(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    conf = kube_conf(world, sim)
    sim.stop()
    started = time.monotonic()
    add = world.call("ADD", conf, pod=pod, args=ARGS)
    elapsed = time.monotonic() - started
    assert add.code == 1 and add.json["code"] == 11, add.stdout
    assert elapsed < 3 + 2.5
    assert set(pod.links()) == {"lo"} and world.state_files() == []


def test_del_with_api_server_stopped(world: MetaplugWorld, sim: KubeSim, pod: Netns, mode: str) -> None:
    sim.add_nad("default", "red", json.dumps(world.bridge_net("red", "10.99.0.0/24", "mpred0")))
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    conf = kube_conf(world, sim)
    assert world.call("ADD", conf, pod=pod, args=ARGS).code == 0
    sim.stop()
    started = time.monotonic()
    delete = world.call("DEL", conf, pod=pod, args=ARGS)
    assert delete.code == 0, delete.stdout
    assert time.monotonic() - started < 3
    assert set(pod.links()) == {"lo"} and world.reservations() == [] and world.state_files() == []


def test_pod_uid_mismatch_fails_add(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    sim.add_pod("default", "web", uid="another-uid")
    add = world.call("ADD", kube_conf(world, sim), pod=pod, args=ARGS)
    assert add.code == 1 and add.json["code"] == 111 and "another-uid" in add.json["details"]
    assert set(pod.links()) == {"lo"}


def test_static_pod_is_exempt_from_uid_check(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    sim.add_pod("default", "web", uid="mirror-uid", annotations={"kubernetes.io/config.source": "file"})
    conf = kube_conf(world, sim)
    assert world.call("ADD", conf, pod=pod, args=ARGS).code == 0
    assert world.call("DEL", conf, pod=pod, args=ARGS).code == 0


def test_pod_not_found_is_a_clear_error(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    add = world.call("ADD", kube_conf(world, sim), pod=pod, args=ARGS)
    assert add.code == 1 and add.json["code"] == 110
    assert "default/web" in add.json["msg"] + add.json.get("details", "")


def test_missing_nad_posts_event_and_fails(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "ghost"})
    add = world.call("ADD", kube_conf(world, sim), pod=pod, args=ARGS)
    assert add.code == 1 and add.json["code"] == 7 and "default/ghost" in add.json["details"]
    assert any(e.get("reason") == "NoNetworkFound" for e in sim.events)


def test_default_network_override_and_cluster_network_as_nad(world: MetaplugWorld, sim: KubeSim,
                                                             pod: Netns) -> None:
    """clusterNetwork as a NAD name resolves in networkNamespace; v1.multus-cni.io/default-network overrides it."""
    sim.add_nad("kube-system", "podnet", json.dumps(world.bridge_net("podnet", "10.88.0.0/24", "mpcl0",
                                                                     default_gw=True)))
    sim.add_nad("kube-system", "alt", json.dumps(world.bridge_net("alt", "10.44.0.0/24", "mpalt0", default_gw=True)))
    sim.add_pod("default", "web", uid=UID)
    conf = kube_conf(world, sim)
    del conf["delegates"]
    conf["clusterNetwork"] = "podnet"
    add = world.call("ADD", conf, pod=pod, args=ARGS)
    assert add.code == 0, add.stdout
    assert pod.addresses("eth0") == ["10.88.0.2/24"]
    assert world.call("DEL", conf, pod=pod, args=ARGS).code == 0
    sim.add_pod("default", "web", uid=UID, annotations={"v1.multus-cni.io/default-network": "kube-system/alt"})
    add = world.call("ADD", conf, pod=pod, args=ARGS)
    assert add.code == 0, add.stdout
    assert pod.addresses("eth0") == ["10.44.0.2/24"]
    status = json.loads(sim.annotations("default", "web")["k8s.v1.cni.cncf.io/network-status"])
    assert [(s["name"], s["default"]) for s in status] == [("kube-system/alt", True)]
    assert world.call("DEL", conf, pod=pod, args=ARGS).code == 0


def test_status_publish_failure_does_not_fail_the_pod(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    sim.add_pod("default", "web", uid=UID)
    conf = world.annotated(kube_conf(world, sim), "")  # runtime passes annotations: no pod GET
    sim.fail_next(100, status=500)
    add = world.call("ADD", conf, pod=pod, args=ARGS)
    assert add.code == 0, add.stdout
    assert "could not publish network-status" in add.stderr
    assert world.call("DEL", conf, pod=pod, args=ARGS).code == 0
