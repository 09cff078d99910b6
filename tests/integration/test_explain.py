"""`metaplug explain`: the plan of an ADD without running a delegate. explain and ADD share `plugin.plan_add`, and
these tests hold them to it: for each attachment scenario, the plan explain prints is what ADD then journals, the
calls it prints are the calls the delegates receive, and its errors are ADD's errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns

ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1"


def explain(world: MetaplugWorld, conf: dict[str, Any], pod: Netns, *, annotation: str | None = None,
            cni_args: str = ARGS, human: bool = False) -> tuple[int, Any]:
    path = world.tmp / "metaplug.conf"
    path.write_text(json.dumps(conf))
    cmd = [str(VENV_BIN / "metaplug"), "explain", "--config", str(path), "--netns", pod.path,
           "--container-id", "c1", "--cni-args", cni_args, "--cni-path", world.cni_path]
    if annotation is not None:
        cmd += ["--annotation", annotation]
    if not human:
        cmd.append("--json")
    proc = world.node.exec(cmd, check=False)
    out = proc.stdout.decode()
    assert proc.returncode in (0, 1), proc.stderr.decode() + out
    return proc.returncode, out if human else json.loads(out)


def journaled(world: MetaplugWorld, container: str = "c1") -> dict[str, Any]:
    return json.loads((world.state_dir / container / "mp-eth0.json").read_text())["body"]


def scenario(world: MetaplugWorld, name: str) -> tuple[dict[str, Any], str | None, str]:
    """(metaplug's conf, the pod's networks annotation or None, CNI_ARGS) of each attachment scenario."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("blue", world.macvlan_static_net("blue"))
    world.add_nad("mgmt", world.bridge_net("mgmt", "10.50.0.0/24", "mpmg0"), namespace="kube-system")
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True))
    if name == "cluster-only":
        return conf, None, ARGS
    if name == "comma-form":
        return conf, "red, default/red@red9", ARGS
    if name == "json-form-ips-mac":
        return conf, json.dumps([{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"],
                                  "mac": "02:00:00:00:77:10"}, {"name": "red", "namespace": "default"}]), ARGS
    if name == "default-networks":
        return world.metaplug_conf(conf["delegates"][0], defaultNetworks=["mgmt"]), "red", ARGS
    if name == "static-delegates":
        conf["delegates"].append(world.bridge_net("second", "10.77.0.0/24", "mpsec0"))
        return conf, "red", ARGS
    if name == "default-route":
        return conf, json.dumps([{"name": "red", "default-route": ["10.99.0.1"]}]), ARGS
    if name == "cni-args":
        return conf, None, f"{ARGS};METAPLUG_NETWORKS=red@r1,red"
    raise AssertionError(name)


SCENARIOS = ["cluster-only", "comma-form", "json-form-ips-mac", "default-networks", "static-delegates",
             "default-route", "cni-args"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_explain_plan_is_what_add_journals(world: MetaplugWorld, pod: Netns, name: str) -> None:
    conf, annotation, cni_args = scenario(world, name)
    code, plan = explain(world, conf, pod, annotation=annotation, cni_args=cni_args)
    assert code == 0 and plan["ok"] and plan["error"] is None, plan
    assert world.state_files() == [] and set(pod.links()) == {"lo"}  # explain ran no delegate
    add_conf = world.annotated(conf, annotation) if annotation is not None else conf
    add = world.call("ADD", add_conf, pod=pod, args=cni_args)
    assert add.code == 0, add.stdout + add.stderr
    body = journaled(world)
    recorded = [{k: v for k, v in a.items() if k not in ("state", "result")} for a in body["attachments"]]
    planned = [{k: v for k, v in a.items() if k != "calls"} for a in plan["attachments"]]
    assert planned == recorded
    assert plan["env"]["CNI_ARGS"] == body["cniArgs"] == plan["attachments"][0]["cniArgs"]
    assert plan["env"]["CNI_NETNS"] == pod.path
    for att in plan["attachments"]:  # each plugin's environment carries its attachment's CNI_ARGS (R30)
        assert all(call["env"]["CNI_ARGS"] == att["cniArgs"] for call in att["calls"])
    sandboxed = [i["name"] for i in add.json["interfaces"] if i.get("sandbox")]
    assert sandboxed == [a["ifname"] for a in plan["attachments"]]
    assert world.call("DEL", add_conf, pod=pod, args=cni_args).code == 0


def test_explain_calls_are_the_calls_the_delegates_receive(world: MetaplugWorld, pod: Netns) -> None:
    """Per plugin, explain shows the exact stdin and CNI_* environment of its ADD (prevResult aside)."""
    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, "fake")
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    log = world.tmp / "calls.jsonl"
    fake = {"type": "fake", "capabilities": {"ips": True, "portMappings": True}, "fake": {"log": str(log)}}
    world.add_nad("two", {"cniVersion": "1.0.0", "name": "two", "plugins": [fake, {**fake, "extra": 1}]})
    conf = world.metaplug_conf({"cniVersion": "1.0.0", "name": "fakecluster", "plugins": [fake]})
    conf["runtimeConfig"] = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    annotation = json.dumps([{"name": "two", "ips": ["10.5.0.7/24"], "cni-args": {"role": "db"}}])
    code, plan = explain(world, conf, pod, annotation=annotation)
    assert code == 0, plan
    assert world.call("ADD", world.annotated(conf, annotation), pod=pod).code == 0
    received = [c for c in fake_delegate.read_log(log) if c["command"] == "ADD"]
    shown = [call for att in plan["attachments"] for call in att["calls"]]
    assert len(received) == len(shown) == 3
    for got, want in zip(received, shown, strict=True):
        if "prevResult" in got["stdin"]:
            assert want["stdin"]["prevResult"].startswith("<")
            got["stdin"]["prevResult"] = want["stdin"]["prevResult"]
        assert got["stdin"] == want["stdin"]
        assert {k: v for k, v in got["env"].items() if k.startswith("CNI_")} == want["env"]
    assert shown[1]["stdin"]["runtimeConfig"] == {"ips": ["10.5.0.7/24"]}  # R7, and R30: no portMappings
    assert shown[1]["stdin"]["args"] == {"cni": {"role": "db"}}  # R10
    assert world.call("DEL", world.annotated(conf, annotation), pod=pod).code == 0


@pytest.mark.parametrize(("annotation", "prepare"), [
    (json.dumps([{"name": "red", "ips": ["10.1.2.300/24"]}]), None),  # R7 invalid IP
    ("red@net9,red@net9", None),  # R9 the same interface twice
    ("red@taken0", "taken0"),  # R9 already in the netns
    ("nosuch", None),  # NAD not found
    (json.dumps([{"name": "red", "mac": "02:00:00:00:00:01"}]), None),  # R8 capability not declared
])
def test_explain_reports_the_error_add_returns(world: MetaplugWorld, pod: Netns, annotation: str,
                                                prepare: str | None) -> None:
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    if prepare:
        pod.ip("link", "add", prepare, "type", "veth", "peer", "name", f"{prepare}p")
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    code, plan = explain(world, conf, pod, annotation=annotation)
    add = world.call("ADD", world.annotated(conf, annotation), pod=pod)
    assert code == 1 and add.code == 1 and not plan["ok"]
    assert plan["error"] == add.json
    assert world.state_files() == []


def test_explain_names_every_missing_binary_like_add(world: MetaplugWorld, pod: Netns) -> None:
    world.add_nad("odd", {"cniVersion": "1.0.0", "name": "odd", "plugins": [{"type": "nosuch-a"},
                                                                          {"type": "nosuch-b"}]})
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    code, plan = explain(world, conf, pod, annotation="odd")
    add = world.call("ADD", world.annotated(conf, "odd"), pod=pod)
    assert code == 1 and plan["error"] == add.json and add.json["code"] == 102
    assert "nosuch-a" in add.json["details"] and "nosuch-b" in add.json["details"]


def test_explain_human_output_lists_each_attachment(world: MetaplugWorld, pod: Netns) -> None:
    conf, annotation, _ = scenario(world, "json-form-ips-mac")
    code, text = explain(world, conf, pod, annotation=annotation, human=True)
    assert code == 0
    assert "1. eth0  <-  cluster  (cluster network)" in text
    assert "2. blue0  <-  default/blue  (secondary)" in text and "3. net2  <-  default/red" in text
    assert '"ips": ["192.168.77.10/24"]' in text and "CNI_ARGS: 'IgnoreUnknown=1" in text


def test_explain_usage_errors_exit_2(world: MetaplugWorld, pod: Netns, tmp_path: Path) -> None:
    proc = world.node.exec([str(VENV_BIN / "metaplug"), "explain", "--config", str(tmp_path / "nope.conf")],
                           check=False)
    assert proc.returncode == 2 and b"cannot read" in proc.stderr


def test_explain_with_a_kubeconfig_reads_the_pod_and_nads_from_the_api(world: MetaplugWorld, pod: Netns) -> None:
    """`--pod NAMESPACE/NAME` with a kubeconfig: the pod's annotation and the NADs come from the API server, as at
    ADD, and the plan equals what ADD journals; explain publishes nothing (no network-status patch)."""
    from metaplug.netns import run_in_netns
    from tests.helpers.kube_sim import KubeSim

    sim = KubeSim()
    run_in_netns(world.node.path, sim.start)  # listens inside the node namespace, where explain and ADD run
    try:
        sim.add_nad("default", "red", json.dumps(world.bridge_net("red", "10.99.0.0/24", "mpred0")))
        sim.add_nad("default", "blue", json.dumps(world.macvlan_static_net("blue")))
        sim.add_pod("default", "web", annotations={"k8s.v1.cni.cncf.io/networks": json.dumps(
            [{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]}, {"name": "red"}])})
        kubeconfig = sim.kubeconfig(world.tmp / "kube" / "config", mode="token")
        conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True),
                                   kubeconfig=kubeconfig, kubeDeadline=3)
        path = world.tmp / "metaplug.conf"
        path.write_text(json.dumps(conf))
        proc = world.node.exec([str(VENV_BIN / "metaplug"), "explain", "--config", str(path), "--pod", "default/web",
                                "--container-id", "c1", "--cni-path", world.cni_path, "--json"], check=False)
        plan = json.loads(proc.stdout)
        assert proc.returncode == 0 and plan["ok"], plan
        assert [(a["ifname"], a["network"]) for a in plan["attachments"]] == [
            ("eth0", "cluster"), ("blue0", "default/blue"), ("net2", "default/red")]
        assert not [r for r in sim.requests if r.method in ("PATCH", "PUT")]
        args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"
        assert plan["env"]["CNI_ARGS"] == args
        assert world.call("ADD", conf, pod=pod, args=args).code == 0
        recorded = [{k: v for k, v in a.items() if k not in ("state", "result")}
                    for a in journaled(world)["attachments"]]
        assert [{k: v for k, v in a.items() if k != "calls"} for a in plan["attachments"]] == recorded
        assert world.call("DEL", conf, pod=pod, args=args).code == 0

        # a NAD the API does not have: explain reports ADD's error but posts no NoNetworkFound event; ADD does
        sim.add_pod("default", "web2", annotations={"k8s.v1.cni.cncf.io/networks": "nosuch"})
        proc = world.node.exec([str(VENV_BIN / "metaplug"), "explain", "--config", str(path), "--pod",
                                "default/web2", "--cni-path", world.cni_path, "--json"], check=False)
        assert proc.returncode == 1 and "nosuch" in json.loads(proc.stdout)["error"]["details"]
        assert not [e for e in sim.events if e.get("reason") == "NoNetworkFound"]
        args2 = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web2"
        assert world.call("ADD", conf, pod=pod, args=args2, container_id="c2").code == 1
        assert [e for e in sim.events if e.get("reason") == "NoNetworkFound"]
    finally:
        sim.stop()
