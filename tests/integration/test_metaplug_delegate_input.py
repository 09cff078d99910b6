"""What exactly each delegate receives from metaplug: per-attachment runtimeConfig from the selection element
(R7/R8/R11/R12/R14), cni-args (R10), injected cniVersion and name (R26, cni.md 18), the runtime's runtimeConfig only
for the cluster network (R30), CNI_IFNAME per attachment and CNI_ARGS passed through. The delegates are the
fault-injecting fake, which logs every call's env and stdin."""

from __future__ import annotations

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns

ALL_CAPS = {"ips": True, "mac": True, "portMappings": True, "bandwidth": True, "infinibandGUID": True,
            "deviceID": True}


def fake_net(name: str, log: str, caps: dict | None = None, **extra: object) -> dict:
    plugin = {"type": "fake", "fake": {"log": log}, **extra}
    if caps:
        plugin["capabilities"] = caps
    return {"cniVersion": "1.0.0", "name": name, "plugins": [plugin]}


def test_each_delegate_gets_its_own_runtime_config(world: MetaplugWorld, pod: Netns) -> None:
    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, "fake")
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    log = str(world.tmp / "calls.jsonl")
    world.add_nad("full", fake_net("full", log, ALL_CAPS, args={"cni": {"keep": "me", "over": "nad"}}))
    world.add_nad("plain", fake_net("plain", log, {"portMappings": True}))
    cluster = fake_net("cluster", log, {"portMappings": True, "dns": True})
    element = {
        "name": "full", "interface": "fast0", "ips": ["10.1.1.5/24", "fd00::5/64"], "mac": "02:11:22:33:44:55",
        "infiniband-guid": "c2:11:22:33:44:55:66:77", "deviceID": "0000:03:00.1",
        "portMappings": [{"hostPort": 8443, "containerPort": 443, "protocol": "udp"}],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 2000, "egressBurst": 20},
        "cni-args": {"over": "annotation", "extra": "x"},
    }
    conf = world.annotated(world.metaplug_conf(cluster), [element, {"name": "plain"}])
    conf["runtimeConfig"]["portMappings"] = [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]
    conf["runtimeConfig"]["dns"] = {"servers": ["10.0.0.10"]}
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"
    add = world.call("ADD", conf, pod=pod, args=args)
    assert add.code == 0, add.stdout + add.stderr
    calls = [c for c in fake_delegate.read_log(log) if c["command"] == "ADD"]
    by_ifname = {c["env"]["CNI_IFNAME"]: c["stdin"] for c in calls}
    assert list(by_ifname) == ["eth0", "fast0", "net2"]  # order R24, ifnames R9
    assert all(c["env"]["CNI_ARGS"] == args and c["env"]["CNI_NETNS"] == pod.path for c in calls)

    cluster_in = by_ifname["eth0"]
    # R30: the runtime's runtimeConfig goes to the cluster network, only the capabilities it declares (cni.md 18)
    assert cluster_in["runtimeConfig"] == {"portMappings": conf["runtimeConfig"]["portMappings"],
                                           "dns": {"servers": ["10.0.0.10"]}}
    assert (cluster_in["cniVersion"], cluster_in["name"]) == ("1.0.0", "cluster")  # R26

    full_in = by_ifname["fast0"]
    assert (full_in["cniVersion"], full_in["name"]) == ("1.0.0", "full")
    assert full_in["runtimeConfig"] == {  # R7, R8, R11, R12, R14
        "ips": ["10.1.1.5/24", "fd00::5/64"], "mac": "02:11:22:33:44:55",
        "infinibandGUID": "c2:11:22:33:44:55:66:77", "deviceID": "0000:03:00.1",
        "portMappings": [{"hostPort": 8443, "containerPort": 443, "protocol": "udp"}],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 10, "egressRate": 2000, "egressBurst": 20},
    }
    assert full_in["args"]["cni"] == {"keep": "me", "over": "annotation", "extra": "x"}  # R10: the annotation wins

    plain_in = by_ifname["net2"]
    assert "runtimeConfig" not in plain_in  # R30: nothing of the runtime's portMappings for a secondary
    assert "args" not in plain_in  # R10: cni-args of one element do not leak into another attachment

    assert world.call("DEL", conf, pod=pod, args=args).code == 0
    dels = [c for c in fake_delegate.read_log(log) if c["command"] == "DEL"]
    assert [c["env"]["CNI_IFNAME"] for c in dels] == ["net2", "fast0", "eth0"]  # reverse order (R27)
    # cni.md 20: DEL gets the same config and the ADD result as prevResult
    assert all("prevResult" in c["stdin"] for c in dels)
    assert dels[1]["stdin"]["runtimeConfig"] == full_in["runtimeConfig"]
