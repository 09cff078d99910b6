"""The configurations and NetworkAttachmentDefinitions of Multus's own documentation (its configuration reference,
its how-to), used unchanged, behave with Multus's semantics (issue 10.4). Only what must point into the test's
world is re-pointed: host paths (confDir, cniDir, binDir, logFile, clusterNetwork, kubeconfig) to temp dirs. The NAD
`macvlan-conf` keeps `"master": "eth0"` (the node namespace has its own eth0) and host-local's default dataDir
(/var/lib/cni/networks, inside a private mount namespace). Real namespaces, reference plugins, the API simulator."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from metaplug.netns import run_in_netns
from tests.helpers.kube_sim import KubeSim
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns

# its configuration reference, "Example configuration using clusterNetwork" (its last key is unquoted there, i.e. not
# JSON; quoted here as a user fixing it would: Multus itself has no such key and ignores it).
DOCS_CLUSTER_NETWORK_CONFIG: dict[str, Any] = {
    "cniVersion": "0.3.1", "name": "node-cni-network", "type": "multus",
    "kubeconfig": "/etc/kubernetes/node-kubeconfig.yaml", "confDir": "/etc/cni/multus/net.d",
    "cniDir": "/var/lib/cni/multus", "binDir": "/opt/cni/bin", "logFile": "/var/log/multus.log",
    "logLevel": "debug", "logOptions": {"maxAge": 5, "maxSize": 100, "maxBackups": 5, "compress": True},
    "capabilities": {"portMappings": True}, "namespaceIsolation": False,
    "clusterNetwork": "/etc/cni/net.d/99-flannel.conf", "defaultNetworks": ["sidecarCRD", "exampleNetwork"],
    "systemNamespaces": ["kube-system", "admin"], "multusNamespace": "kube-system",
    "auxiliaryCNIChainName": "cni-chain-config", "allowTryDeleteOnErr": False,
}

# its configuration reference "Namespace Isolation" and its how-to: the NAD's spec.config.
DOCS_MACVLAN_CONF: dict[str, Any] = {
    "cniVersion": "0.3.0", "type": "macvlan", "master": "eth0", "mode": "bridge",
    "ipam": {"type": "host-local", "subnet": "192.168.1.0/24", "rangeStart": "192.168.1.200",
             "rangeEnd": "192.168.1.216", "routes": [{"dst": "0.0.0.0/0"}], "gateway": "192.168.1.1"},
}

UID = "6f0c3f4e-93e2-4a4f-9d43-5d2a0c1b7e21"


def pod_args(namespace: str, name: str = "samplepod") -> str:
    return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
            f"K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID={UID}")


@pytest.fixture
def docs_world(world: MetaplugWorld) -> MetaplugWorld:
    world.factory.veth_uplink(world.node, "eth0")  # the NAD's master, inside the node namespace only
    world.private_var_lib = world.tmp / "var-lib"
    return world


@pytest.fixture
def sim(docs_world: MetaplugWorld) -> Iterator[KubeSim]:
    kube = KubeSim()
    run_in_netns(docs_world.node.path, kube.start)
    try:
        yield kube
    finally:
        kube.stop()


def repointed(world: MetaplugWorld, config: dict[str, Any], **paths: Any) -> dict[str, Any]:
    """The docs' config with its host paths moved into the test's world; every other key unchanged."""
    conf = copy.deepcopy(config)
    conf.update({"confDir": str(world.conf_dir), "cniDir": str(world.tmp / "multus-cache"), "binDir": str(VENV_BIN),
                 "logFile": str(world.tmp / "multus.log"), "stateDir": str(world.state_dir), **paths})
    return conf


def host_local_leases(world: MetaplugWorld) -> list[str]:
    root = world.tmp / "var-lib" / "cni" / "networks"
    if not root.exists():
        return []
    return sorted(f"{d.name}/{f.name}" for d in root.iterdir() for f in d.iterdir() if f.name[0].isdigit())


def test_docs_cluster_network_config_with_the_api(docs_world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    world = docs_world
    flannel_like = world.tmp / "net.d-host" / "99-flannel.conf"  # the cluster network file (a bridge here)
    flannel_like.parent.mkdir()
    ipam = {"type": "host-local", "dataDir": str(world.ipam_dir), "subnet": "10.244.1.0/24"}
    flannel_like.write_text(json.dumps({"cniVersion": "0.3.1", "name": "cbr0", "type": "bridge", "bridge": "mpcbr0",
                                        "isGateway": True, "ipam": ipam}))
    # defaultNetworks name confs in confDir (they are no valid NAD names; Multus falls back to the conf's name)
    for name, subnet, bridge in (("sidecarCRD", "10.60.0.0/24", "mpside0"), ("exampleNetwork", "10.61.0.0/24",
                                                                           "mpexam0")):
        (world.conf_dir / f"{name}.conf").write_text(json.dumps(
            {"cniVersion": "0.3.1", "name": name, "type": "bridge", "bridge": bridge,
             "ipam": {"type": "host-local", "dataDir": str(world.ipam_dir), "subnet": subnet}}))
    sim.add_nad("development", "macvlan-conf", json.dumps(DOCS_MACVLAN_CONF))
    sim.add_pod("development", "samplepod", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "macvlan-conf"})
    conf = repointed(world, DOCS_CLUSTER_NETWORK_CONFIG, clusterNetwork=str(flannel_like),
                     kubeconfig=sim.kubeconfig(world.tmp / "kube" / "config", mode="token"))

    add = world.call("ADD", conf, pod=pod, args=pod_args("development"))
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("eth0") == ["10.244.1.2/24"]
    assert pod.addresses("net1") == ["10.60.0.2/24"] and pod.addresses("net2") == ["10.61.0.2/24"]
    assert pod.addresses("net3") == ["192.168.1.200/24"]  # rangeStart of the docs' NAD
    assert host_local_leases(world) == ["macvlan-conf/192.168.1.200"]
    status = json.loads(sim.annotations("development", "samplepod")["k8s.v1.cni.cncf.io/network-status"])
    assert [(s["name"], s["interface"]) for s in status] == [
        ("cbr0", "eth0"), ("sidecarCRD", "net1"), ("exampleNetwork", "net2"), ("development/macvlan-conf", "net3")]
    log = [json.loads(line) for line in (world.tmp / "multus.log").read_text().splitlines()]
    assert any(line["level"] == "debug" for line in log)  # logLevel debug, to logFile
    # auxiliaryCNIChainName: no chain directory next to the cluster network file, so nothing more to attach
    assert not pod.has_link("net4")
    assert not (world.tmp / "multus-cache").exists()  # cniDir is Multus's cache: metaplug never writes it

    assert world.call("DEL", conf, pod=pod, args=pod_args("development")).code == 0
    assert set(pod.links()) == {"lo"}
    assert host_local_leases(world) == [] and world.reservations() == [] and world.state_files() == []


def test_docs_system_namespaces_get_no_default_networks(docs_world: MetaplugWorld, pod: Netns) -> None:
    world = docs_world
    cluster = world.tmp / "99-flannel.conf"
    cluster.write_text(json.dumps(world.bridge_net("cbr0", "10.244.1.0/24", "mpcbr0")))
    (world.conf_dir / "sidecar.conf").write_text(json.dumps(
        {"cniVersion": "0.3.1", "name": "sidecarCRD", "type": "bridge", "bridge": "mpside0",
         "ipam": {"type": "host-local", "dataDir": str(world.ipam_dir), "subnet": "10.60.0.0/24"}}))
    conf = repointed(world, DOCS_CLUSTER_NETWORK_CONFIG, clusterNetwork=str(cluster),
                     defaultNetworks=["sidecarCRD"])
    del conf["kubeconfig"]
    for namespace, links in (("admin", {"lo", "eth0"}), ("development", {"lo", "eth0", "net1"})):
        add = world.call("ADD", conf, pod=pod, args=pod_args(namespace))
        assert add.code == 0, add.stdout + add.stderr
        assert set(pod.links()) == links
        assert world.call("DEL", conf, pod=pod, args=pod_args(namespace)).code == 0


@pytest.mark.parametrize("global_namespaces,reference,allowed", [
    (None, "privileged/macvlan-conf", False),  # the docs' refused pod
    (None, "macvlan-conf", True),  # the docs' positive example: the pod's own namespace
    (None, "default/macvlan-conf", True),  # `default` is global while globalNamespaces is unset
    ("privileged", "default/macvlan-conf", False),  # a given list replaces it ...
    ("privileged", "privileged/macvlan-conf", True),
    ("default,privileged", "default/macvlan-conf", True),  # ... so `default` must be listed to stay global
])
def test_docs_namespace_isolation(docs_world: MetaplugWorld, pod: Netns, global_namespaces: str | None,
                                  reference: str, allowed: bool) -> None:
    """R29 with Multus's rule: the pod's own namespace, the globalNamespaces, and `default` while none are given."""
    world = docs_world
    for namespace in ("privileged", "development", "default"):
        world.add_nad("macvlan-conf", DOCS_MACVLAN_CONF, namespace=namespace)
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"), namespaceIsolation=True)
    if global_namespaces is not None:
        conf["globalNamespaces"] = global_namespaces
    conf = world.annotated(conf, reference)
    add = world.call("ADD", conf, pod=pod, args=pod_args("development"))
    if not allowed:
        assert add.code == 1 and add.json["code"] == 7, add.stdout
        assert "namespace isolation" in add.json["msg"] and "development" in add.json["details"]
        assert set(pod.links()) == {"lo"} and host_local_leases(world) == []
        return
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("net1") == ["192.168.1.200/24"]
    assert world.call("DEL", conf, pod=pod, args=pod_args("development")).code == 0
    assert set(pod.links()) == {"lo"} and host_local_leases(world) == []


def _passthru_bin(world: MetaplugWorld) -> None:
    """Multus's chain opens with a plugin called `passthru`: the bundled mp-passthru under that name."""
    bin_dir = world.tmp / "aux-bin"
    bin_dir.mkdir()
    (bin_dir / "passthru").symlink_to(VENV_BIN / "mp-passthru")
    world.cni_path = f"{bin_dir}:{world.cni_path}"


def test_docs_auxiliary_chain_runs_the_subdirectory_plugins(docs_world: MetaplugWorld, pod: Netns) -> None:
    """auxiliaryCNIChainName: the `.conf` files of `<dir of clusterNetwork>/<name>/` run as one more chained
    attachment (passthru first, then in file name order); other files and subdirectories there are not plugins."""
    world = docs_world
    _passthru_bin(world)
    host_dir = world.tmp / "net.d-host"
    chain_dir = host_dir / "cni-chain-config"
    (chain_dir / "sub").mkdir(parents=True)
    cluster = host_dir / "99-flannel.conf"
    cluster.write_text(json.dumps(world.bridge_net("cbr0", "10.244.1.0/24", "mpcbr0")))
    # the docs' tuning example, on eth0 (the auxiliary chain's own ifname has no device)
    (chain_dir / "mytuning.conf").write_text(json.dumps(
        {"name": "mytuning", "type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}))
    (chain_dir / "notes.json").write_text("not a plugin")
    (chain_dir / "sub" / "other.conf").write_text("not read either")
    conf = repointed(world, DOCS_CLUSTER_NETWORK_CONFIG, clusterNetwork=str(cluster), defaultNetworks=[])
    del conf["kubeconfig"]
    add = world.call("ADD", conf, pod=pod, args=pod_args("development"))
    assert add.code == 0, add.stdout + add.stderr
    assert pod.exec(["cat", "/proc/sys/net/ipv4/conf/eth0/arp_filter"]).stdout.decode().strip() == "1"
    assert set(pod.links()) == {"lo", "eth0"}
    journal = json.loads(next(world.state_dir.rglob("*.json")).read_text())["body"]
    aux = journal["attachments"][-1]
    assert (aux["network"], aux["ifname"]) == ("cni-chain-config", "net1")
    assert [p["type"] for p in json.loads(aux["conflist"])["plugins"]] == ["passthru", "tuning"]
    assert json.loads(aux["conflist"])["cniVersion"] == "0.3.1"  # Multus's own cniVersion
    assert not any("auxiliaryCNIChainName" in line for line in (world.tmp / "multus.log").read_text().splitlines())
    assert world.call("DEL", conf, pod=pod, args=pod_args("development")).code == 0
    assert set(pod.links()) == {"lo"} and world.state_files() == [] and world.reservations() == []


def test_auxiliary_chain_needs_a_cluster_network_file(docs_world: MetaplugWorld, pod: Netns) -> None:
    world = docs_world
    world.add_nad("flannel", world.bridge_net("flannel", "10.244.1.0/24", "mpcbr0"), namespace="kube-system")
    conf = repointed(world, DOCS_CLUSTER_NETWORK_CONFIG, clusterNetwork="kube-system/flannel", defaultNetworks=[])
    del conf["kubeconfig"]
    add = world.call("ADD", conf, pod=pod, args=pod_args("development"))
    assert add.code == 1 and add.json["code"] == 7 and "auxiliaryCNIChainName" in add.json["msg"], add.stdout
    assert set(pod.links()) == {"lo"}
