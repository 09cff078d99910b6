"""The daemon's Kubernetes watch caches for real: `metaplug daemon` and metaplug-shim inside the test's node namespace,
the HTTPS API simulator listening there too (list, watch with resourceVersion, field selectors, 410 Gone), the
reference plugins. ADD is served from the caches of this node's pods and of the NADs, with a GET on a miss; the
requests are counted in the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from metaplug.netns import run_in_netns
from tests.helpers.kube_sim import KubeSim, SimRequest
from tests.helpers.metaplug_env import SHIM, Daemon, MetaplugWorld
from tests.helpers.netns import Netns, NetnsFactory
from tests.integration.test_daemon import Background, metric, results, wait_for

UID = "0b0e9d62-1c55-4d8e-9a51-7e0c5b8f6a11"
NODE = "node-1"
NADS = "network-attachment-definitions"


def args(name: str = "web", uid: str = UID) -> str:
    return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=c1;"
            f"K8S_POD_UID={uid}")


@pytest.fixture
def sim(world: MetaplugWorld) -> Iterator[KubeSim]:
    if not SHIM.exists():
        pytest.skip("metaplug-shim not built (bash .ci/setup)")
    kube = KubeSim()
    run_in_netns(world.node.path, kube.start)  # inside the node namespace, where the daemon runs
    try:
        yield kube
    finally:
        daemon = world.daemon
        world.stop_daemon()  # before the simulator goes: the daemon's watches end first
        kube.stop()
    if daemon is not None:  # watches that end with the daemon are no error
        log = daemon.log()
        assert daemon.exit_code == 0 and "Traceback" not in log and '"exception"' not in log, log


def kubeconfig(world: MetaplugWorld, sim: KubeSim) -> str:
    return sim.kubeconfig(world.tmp / "kube" / "config", mode="token")


def start(world: MetaplugWorld, sim: KubeSim, **extra: Any) -> tuple[Daemon, dict[str, Any]]:
    """A ready daemon watching the simulator as node-1, and the conflist entry the shim gets (same kubeconfig)."""
    path = kubeconfig(world, sim)
    daemon = world.start_daemon(kubeconfig=path, nodeName=NODE, **extra)
    daemon.wait_ready()
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    return daemon, world.metaplug_conf(cluster, kubeconfig=path, kubeDeadline=3)


def sample(daemon: Daemon, name: str, **labels: str) -> float:
    """A metric's value now, 0 while the series (or the endpoint) does not exist yet."""
    try:
        return metric(daemon.http("/metrics")[1], name, **labels)
    except (AssertionError, OSError):
        return 0.0


def readyz(daemon: Daemon) -> tuple[int, str]:
    try:
        return daemon.http("/readyz")
    except OSError:  # the endpoint is not up yet
        return 0, ""


def object_gets(sim: KubeSim, since: int) -> list[str]:
    """GETs of single pods or NADs (not lists, not watches) after request number `since`."""
    out = []
    for r in sim.requests[since:]:
        path = urlsplit(r.path).path
        if r.method == "GET" and "watch=" not in r.path and (
                "/pods/" in path or f"/{NADS}/" in path):
            out.append(path)
    return out


def lists(sim: KubeSim, resource: str) -> list[SimRequest]:
    return [r for r in sim.requests if r.method == "GET" and urlsplit(r.path).path.endswith(f"/{resource}")
            and "watch=" not in r.path]


def red(world: MetaplugWorld, subnet: str = "10.99.0.0/24", bridge: str = "mpred0", name: str = "red") -> str:
    return json.dumps(world.bridge_net(name, subnet, bridge))


def test_add_of_a_cached_pod_makes_no_api_get(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    sim.add_nad("default", "red", red(world))
    sim.add_nad("default", "blue", json.dumps(world.macvlan_static_net("blue")))
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": json.dumps(
        [{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]}, {"name": "red"}])})
    sim.add_pod("default", "elsewhere", node="node-2")
    daemon, conf = start(world, sim)
    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_kube_cache_objects", resource="pods") == 1  # only this node's pods
    assert metric(text, "metaplug_kube_cache_objects", resource=NADS) == 2
    assert any("fieldSelector=spec.nodeName%3Dnode-1" in r.path for r in lists(sim, "pods"))

    mark = len(sim.requests)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("blue0") == ["192.168.77.10/24"] and pod.addresses("net2") == ["10.99.0.2/24"]
    assert object_gets(sim, mark) == []  # annotations and both NADs from the caches
    status = json.loads(sim.annotations("default", "web")["k8s.v1.cni.cncf.io/network-status"])
    assert [s["interface"] for s in status] == ["eth0", "blue0", "net2"]  # published as in thin mode
    assert any(e.get("reason") == "AddedInterface" for e in sim.events)

    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_kube_cache_lookups_total", resource="pods", result="hit") == 1
    assert metric(text, "metaplug_kube_cache_lookups_total", resource=NADS, result="hit") == 2
    assert metric(text, "metaplug_kube_requests_total", verb="patch", resource="pods/status", code="200") == 1
    assert metric(text, "metaplug_kube_requests_total", verb="list", resource="pods", code="200") == 1
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0
    assert set(pod.links()) == {"lo"} and world.reservations() == []


def test_a_pod_not_yet_in_the_cache_is_served_by_a_get(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    """The pod was created a moment ago and its watch event has not arrived (the simulator holds it back)."""
    sim.add_nad("default", "red", red(world))
    daemon, conf = start(world, sim)
    sim.watches_paused = True
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    mark = len(sim.requests)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("net1") == ["10.99.0.2/24"]
    assert object_gets(sim, mark) == ["/api/v1/namespaces/default/pods/web"]  # the NAD still from the cache
    assert metric(daemon.http("/metrics")[1], "metaplug_kube_cache_lookups_total", resource="pods",
                  result="miss") == 1
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0


def test_a_cached_pod_with_another_uid_is_a_miss(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    """The pod was deleted and recreated under the same name; the cache still holds the old one. K8S_POD_UID names
    the new pod: the GET gets it."""
    sim.add_nad("default", "red", red(world))
    sim.add_pod("default", "web", uid="old-uid", annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    _, conf = start(world, sim)
    sim.watches_paused = True
    sim.delete_pod("default", "web")
    sim.add_pod("default", "web", uid=UID)  # no networks this time
    mark = len(sim.requests)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 0, add.stdout + add.stderr
    assert object_gets(sim, mark) == ["/api/v1/namespaces/default/pods/web"]
    assert "net1" not in pod.links()  # the new pod's annotations, not the cached ones
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0
    assert set(pod.links()) == {"lo"}


def test_a_pod_missing_from_the_cache_and_the_api_is_code_110(world: MetaplugWorld, sim: KubeSim,
                                                              pod: Netns) -> None:
    _, conf = start(world, sim)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 1 and add.json["code"] == 110 and "default/web" in add.json["msg"], add.stdout
    assert set(pod.links()) == {"lo"} and world.state_files() == []


def put_nad(world: MetaplugWorld, sim: KubeSim, name: str, config: str) -> None:
    """Update a NAD with a PUT through the simulator's REST API, from inside the node namespace."""
    import httpx

    from metaplug.k8s.client import auth_headers, new_http_client
    from metaplug.k8s.kubeconfig import load_kubeconfig

    creds = load_kubeconfig(kubeconfig(world, sim))
    path = f"/apis/k8s.cni.cncf.io/v1/namespaces/default/{NADS}/{name}"

    def put() -> httpx.Response:
        with new_http_client(creds) as http:
            nad = http.get(path, headers=auth_headers(creds)).json()
            nad["spec"]["config"] = config
            return http.put(path, json=nad, headers=auth_headers(creds))

    assert run_in_netns(world.node.path, put).status_code == 200


def test_a_nad_changed_through_the_api_is_seen_by_the_next_add(world: MetaplugWorld, sim: KubeSim,
                                                               pod: Netns) -> None:
    sim.add_nad("default", "red", red(world))
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    daemon, conf = start(world, sim)
    assert world.call("ADD", conf, pod=pod, args=args()).code == 0
    assert pod.addresses("net1") == ["10.99.0.2/24"]
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0

    put_nad(world, sim, "red", red(world, "10.97.0.0/24", "mpred1"))
    wait_for(lambda: sample(daemon, "metaplug_kube_watch_events_total", resource=NADS,
                            type="MODIFIED") >= 1, timeout=10, what="the NAD's MODIFIED event")
    mark = len(sim.requests)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("net1") == ["10.97.0.2/24"]  # the new config, without a restart and without a GET
    assert object_gets(sim, mark) == []
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0


def resumed_from(request: SimRequest) -> str:
    return parse_qs(urlsplit(request.path).query)["resourceVersion"][0]


def test_a_dropped_watch_resumes_from_its_resource_version_and_410_relists(world: MetaplugWorld, sim: KubeSim,
                                                                          pod: Netns) -> None:
    sim.add_nad("default", "red", red(world))
    daemon, conf = start(world, sim)
    sim.wait_watching(2)
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    pod_rv = sim.pods[("default", "web")]["metadata"]["resourceVersion"]
    wait_for(lambda: sample(daemon, "metaplug_kube_watch_events_total", resource="pods",
                            type="ADDED") >= 1, timeout=10, what="the pod's ADDED event")

    # The server cuts both watches: each resumes from the last resourceVersion it saw, without a relist.
    watches = len(sim.watch_requests("pods"))
    sim.drop_watches()
    wait_for(lambda: len(sim.watch_requests("pods")) > watches and sim.watches_open == 2, timeout=10,
             what="the watches to resume")
    assert resumed_from(sim.watch_requests("pods")[-1]) == pod_rv
    assert len(lists(sim, "pods")) == 1 and len(lists(sim, NADS)) == 1
    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_kube_watch_restarts_total", resource="pods", reason="dropped") >= 1
    assert daemon.http("/readyz")[0] == 200
    assert "watch connection lost" in daemon.log() and "watch failed" not in daemon.log()

    # Changes the daemon has not seen, then compaction: its resourceVersion is gone (410), it relists.
    sim.watches_paused = True
    sim.add_nad("default", "blue", red(world, "10.97.0.0/24", "mpbl0", "blue"))
    sim.compact()
    sim.drop_watches()
    sim.watches_paused = False
    wait_for(lambda: len(lists(sim, NADS)) == 2, timeout=10, what="the NADs to be relisted")
    # the pods' resourceVersion is compacted too: only a change made after their relist arrives as MODIFIED
    wait_for(lambda: len(lists(sim, "pods")) == 2 and sim.watches_open == 2, timeout=10,
             what="the pods to be relisted and both watches open again")
    wait_for(lambda: sample(daemon, "metaplug_kube_cache_objects", resource=NADS) == 2,
             timeout=10, what="the relisted NADs")
    assert metric(daemon.http("/metrics")[1], "metaplug_kube_watch_restarts_total", resource=NADS,
                  reason="gone") >= 1
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red,blue"})
    wait_for(lambda: sample(daemon, "metaplug_kube_watch_events_total", resource="pods",
                            type="MODIFIED") >= 1, timeout=10, what="the pod's MODIFIED event")
    mark = len(sim.requests)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("net2") == ["10.97.0.2/24"]
    assert object_gets(sim, mark) == []  # everything from the caches after the resume and the relist
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0


def test_readyz_waits_for_the_initial_sync(world: MetaplugWorld, sim: KubeSim) -> None:
    sim.fail_next(4, status=503, match=NADS)  # the first NAD lists fail; the daemon retries with a backoff
    daemon = world.start_daemon(kubeconfig=kubeconfig(world, sim), nodeName=NODE)
    wait_for(lambda: NADS in readyz(daemon)[1], timeout=10, what="/readyz to name the NAD cache")
    status, body = readyz(daemon)
    assert status == 503 and NADS in body and "not synced" in body, body
    daemon.wait_ready()
    assert [r.status for r in lists(sim, NADS)] == [503, 503, 503, 503, 200]
    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_kube_requests_total", verb="list", resource=NADS, code="503") == 4
    assert metric(text, "metaplug_kube_watch_restarts_total", resource=NADS, reason="error") == 4


def test_a_burst_of_ten_adds_through_the_shim(world: MetaplugWorld, sim: KubeSim,
                                              netns_factory: NetnsFactory) -> None:
    sim.add_nad("default", "red", red(world))
    uids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(10)]
    for i, uid in enumerate(uids):
        sim.add_pod("default", f"web{i}", uid=uid, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    _, conf = start(world, sim)
    pods = [netns_factory.new("pod") for _ in range(10)]
    mark = len(sim.requests)
    adds = results([Background(world, "ADD", conf, pod=p, container_id=f"p{i}", args=args(f"web{i}", uids[i]))
                    for i, p in enumerate(pods)])
    assert [a.code for a in adds] == [0] * 10, [a.stdout for a in adds if a.code]
    assert object_gets(sim, mark) == []
    assert len({p.addresses("net1")[0] for p in pods}) == 10
    assert all("k8s.v1.cni.cncf.io/network-status" in sim.annotations("default", f"web{i}") for i in range(10))
    dels = results([Background(world, "DEL", conf, pod=p, container_id=f"p{i}", args=args(f"web{i}", uids[i]))
                    for i, p in enumerate(pods)])
    assert [d.code for d in dels] == [0] * 10
    assert world.reservations() == [] and world.state_files() == []


def test_a_call_kubeconfig_naming_the_same_server_is_served_from_the_caches(world: MetaplugWorld, sim: KubeSim,
                                                                           pod: Netns) -> None:
    """As on Kubernetes: the daemon has its own credentials, the conflist names the kubeconfig install wrote (another
    file, the same API server). A kubeconfig naming another server gets thin mode's own client."""
    sim.add_nad("default", "red", red(world))
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    _, conf = start(world, sim)
    conf["kubeconfig"] = sim.kubeconfig(world.tmp / "installed" / "kubeconfig", mode="tokenFile")
    mark = len(sim.requests)
    assert world.call("ADD", conf, pod=pod, args=args()).code == 0
    assert object_gets(sim, mark) == []
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0
    other = sim.kubeconfig(world.tmp / "other" / "kubeconfig", server=f"https://localhost:{sim.port}")
    mark = len(sim.requests)
    assert world.call("ADD", {**conf, "kubeconfig": other}, pod=pod, args=args()).code == 0
    assert object_gets(sim, mark) == ["/api/v1/namespaces/default/pods/web",
                                      f"/apis/k8s.cni.cncf.io/v1/namespaces/default/{NADS}/red"]
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0


def test_no_node_name_caches_nads_only(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    """Without nodeName (or NODE_NAME) the pods are not watched: every ADD GETs its pod, NADs still cached."""
    sim.add_nad("default", "red", red(world))
    sim.add_pod("default", "web", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red"})
    path = kubeconfig(world, sim)
    daemon = world.start_daemon(kubeconfig=path)
    daemon.wait_ready()
    assert lists(sim, "pods") == []
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"), kubeconfig=path)
    mark = len(sim.requests)
    assert world.call("ADD", conf, pod=pod, args=args()).code == 0
    assert object_gets(sim, mark) == ["/api/v1/namespaces/default/pods/web"]
    assert "no node name" in daemon.log()
    assert world.call("DEL", conf, pod=pod, args=args()).code == 0
