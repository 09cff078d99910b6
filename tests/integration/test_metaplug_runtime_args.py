"""R30 with a libcni-driven runtime: the per-container settings a runtime puts in CNI_ARGS for its own network
(Podman's `--ip` and `--mac-address` become `IP=...;MAC=...`) reach the cluster network only. A secondary attachment
gets the generic keys (IgnoreUnknown, K8S_POD_*) and what its own selection element asks for. The runtime is
metaplug.cni.tool (cnitool-like, on metaplug.cni.chain), the delegates are Debian's reference plugins."""

from __future__ import annotations

import json

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns

POD_IP = "10.79.0.250"
POD_MAC = "02:42:0a:4f:00:fa"
# What Podman 4 sends for `podman run --ip 10.79.0.250 --mac-address ...` (cni.md 33: Podman's K8S_POD_NAME is the
# container name).
PODMAN_ARGS = f"IgnoreUnknown=1;K8S_POD_NAME=web;IP={POD_IP};MAC={POD_MAC}"


def tool(world: MetaplugWorld, verb: str, conflist: str, pod: Netns, args: str):  # type: ignore[no-untyped-def]
    cmd = [str(VENV_BIN / "python"), "-m", "metaplug.cni.tool", verb, conflist, pod.path,
           "--container-id", "podman1", "--ifname", "eth0", "--args", args, "--path", world.cni_path]
    return world.node.exec(cmd, check=False, env={"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"})


def write_conflist(world: MetaplugWorld, own: dict) -> str:
    path = world.tmp / "87-podman.conflist"
    path.write_text(json.dumps({"cniVersion": "1.0.0", "name": "podman", "plugins": [own]}))
    return str(path)


def test_r30_runtime_ip_and_mac_go_to_the_cluster_network_only(world: MetaplugWorld, pod: Netns) -> None:
    world.add_nad("blue", world.macvlan_hostlocal_net("blue", "10.80.0.0/24"))
    cluster = world.bridge_net("podman", "10.79.0.0/24", "mpcni0", default_gw=True)
    own = world.metaplug_conf(cluster)
    own["args"] = {"cni": {"networks": "blue"}}  # no Kubernetes: the request is in the config (source 3)
    conflist = write_conflist(world, own)

    add = tool(world, "add", conflist, pod, PODMAN_ARGS)
    assert add.returncode == 0, add.stdout.decode() + add.stderr.decode()
    result = json.loads(add.stdout)
    assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == ["eth0", "net1"]
    links = pod.links()
    assert pod.addresses("eth0") == [f"{POD_IP}/24"]
    assert links["eth0"]["address"] == POD_MAC
    # host-local of the macvlan NAD was not asked for 10.79.0.250 (it would fail: not in 10.80.0.0/24) and the
    # macvlan kept its own MAC
    assert pod.addresses("net1") == ["10.80.0.2/24"]
    assert links["net1"]["address"] != POD_MAC

    assert tool(world, "del", conflist, pod, PODMAN_ARGS).returncode == 0
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == [] and world.state_files() == []


def test_r30_secondary_gets_generic_cni_args_and_del_the_same(world: MetaplugWorld, pod: Netns) -> None:
    """What each delegate saw in CNI_ARGS, on ADD and on DEL (the fake delegate logs every call)."""
    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, "fake")
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    log = str(world.tmp / "calls.jsonl")
    net = {"cniVersion": "1.0.0", "name": "side", "plugins": [{"type": "fake", "fake": {"log": log}}]}
    world.add_nad("side", net)
    cluster = {"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "fake", "fake": {"log": log}}]}
    own = world.metaplug_conf(cluster)
    own["args"] = {"cni": {"networks": "side"}}
    conflist = write_conflist(world, own)
    args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;IP={POD_IP};MAC={POD_MAC};NOMAD_X=1"
    assert tool(world, "add", conflist, pod, args).returncode == 0
    assert tool(world, "del", conflist, pod, args).returncode == 0
    seen = [(c["command"], c["env"]["CNI_IFNAME"], c["env"]["CNI_ARGS"]) for c in fake_delegate.read_log(log)]
    secondary = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"
    assert seen == [("ADD", "eth0", args), ("ADD", "net1", secondary),
                    ("DEL", "net1", secondary), ("DEL", "eth0", args)]
