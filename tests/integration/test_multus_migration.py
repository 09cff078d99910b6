"""A node switched from Multus to metaplug: pods that Multus attached leak nothing (issue 10.4).

Each test makes a pod's attachments as Multus v4 would have (tests/helpers/multus_node.py: its cache entry in cniDir
written in Multus's format, the delegates called directly as Multus's CmdAdd calls them through libcni, libcni's
result cache beside it), then runs metaplug with no journal for that pod. Real namespaces, the Debian reference
plugins (the bundled mp-* ones where GC is needed), the fake delegate only to record exactly what each call got.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.multus_node import MultusCall, MultusDelegate, k8s_args, multus_add, write_entry
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory

RUNTIME_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1"


def _cni_dir(world: MetaplugWorld) -> Path:
    return world.tmp / "multus"


def _multus_conf(world: MetaplugWorld, **extra: Any) -> dict[str, Any]:
    """What the node's 00-multus.conf says, pointed at this test's dirs (metaplug installed as `multus`)."""
    return world.metaplug_conf(None, **{"type": "multus", "name": "multus-cni-network", "cniVersion": "1.0.0",
                                        "cniDir": str(_cni_dir(world)), **extra})


def _pod_delegates(world: MetaplugWorld) -> list[MultusDelegate]:
    """The cluster network (a conflist), NAD default/blue (a single conf) as net1, NAD default/green (a conflist,
    `interface: green0`, `cni-args` injected into its plugins as Multus's addCNIArgsInConfList does)."""
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mmcl0")
    blue = world.macvlan_hostlocal_net("blue", "10.80.0.0/24")["plugins"][0]
    green = world.macvlan_hostlocal_net("green", "10.81.0.0/24", version="0.4.0")
    green["plugins"][0]["args"] = {"cni": {"team": "green"}}
    return [MultusDelegate("cluster", cluster),
            MultusDelegate("default/blue", {"cniVersion": "1.0.0", "name": "blue", **blue}),
            MultusDelegate("default/green", green, ifname_request="green0")]


def _attach_as_multus(world: MetaplugWorld, pod: Netns, delegates: list[MultusDelegate],
                      caps: list[dict[str, Any]] | None = None, container_id: str = "c1") -> list[dict[str, Any]]:
    """Multus's CmdAdd: ifnames from getIfname (CNI_IFNAME, then net<index> or the request)."""
    args = k8s_args(RUNTIME_ARGS)
    calls = [MultusCall(d, d.ifname_request or ("eth0" if i == 0 else f"net{i}"), args, (caps or [{}] * 9)[i])
             for i, d in enumerate(delegates)]
    return multus_add(world.node, _cni_dir(world), calls, container_id=container_id, netns=pod.path,
                      cni_path=world.cni_path)


def _log(world: MetaplugWorld) -> list[dict[str, Any]]:
    """metaplug's log lines: the call's logFile, or in daemon mode the daemon's own log."""
    path = world.tmp / "metaplug.log"
    lines = path.read_text().splitlines() if path.exists() else []
    if world.daemon is not None:
        lines += world.daemon.log().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_del_removes_every_delegate_multus_attached(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    results = _attach_as_multus(world, pod, _pod_delegates(world))
    assert {"eth0", "net1", "green0"} <= set(pod.links())
    assert world.reservations() == ["blue/10.80.0.2", "cluster/10.88.0.2", "green/10.81.0.2"]
    # The runtime's DEL carries the prevResult it cached (Multus's answer: the cluster network's result); with a
    # Multus entry present it must not send metaplug to its config-and-prevResult fallback.
    conf = dict(_multus_conf(world), prevResult=results[0])
    delete = world.call("DEL", conf, pod=pod, args=RUNTIME_ARGS)
    assert delete.code == 0, delete.stdout + delete.stderr
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == []
    assert sorted(p.name for p in _cni_dir(world).rglob("*")) == ["results"]  # entry and libcni results gone
    assert world.state_files() == []
    migrated = [d for d in _log(world) if "migration from Multus" in d["msg"]]
    assert len(migrated) == 1 and migrated[0]["level"] == "warning", _log(world)
    assert migrated[0]["delegates"] == ["eth0 (cluster)", "net1 (default/blue)", "green0 (default/green)"]
    assert world.call("DEL", conf, pod=pod, args=RUNTIME_ARGS).code == 0  # repeated DEL (cni.md 11)


def test_del_after_the_pod_namespace_is_gone_releases_every_address(world: MetaplugWorld,
                                                                    netns_factory: NetnsFactory) -> None:
    """cni.md 11: the runtime may DEL after the netns is gone; the delegates still release their IPAM, and the bridge
    side of the cluster network's veth went with the namespace."""
    pod = netns_factory.new("pod")
    _attach_as_multus(world, pod, _pod_delegates(world))
    path = pod.path
    pod.delete()
    delete = world.call("DEL", _multus_conf(world), netns_path=path, args=RUNTIME_ARGS)
    assert delete.code == 0, delete.stdout + delete.stderr
    assert world.reservations() == []
    assert not (_cni_dir(world) / "c1").exists() and world.state_files() == []


def test_del_sends_each_delegate_what_multus_would(world: MetaplugWorld, pod: Netns, tmp_path: Path) -> None:
    """Reverse order, ifnames, Multus's CNI_ARGS (its five entries, then the runtime's pairs again), runtimeConfig
    (the runtime's for the cluster network; a delegate's cached ips/mac over it), prevResult from libcni's cache;
    one failing delegate: the others are still deleted, the entry stays, and the next DEL finishes (cni.md 11)."""
    bin_dir = tmp_path / "fakebin"
    calls_log = tmp_path / "calls.jsonl"
    fake_delegate.install(bin_dir, "fake", {"log": str(calls_log)})
    fake_delegate.install(bin_dir, "fake-flaky", {"log": str(calls_log), "on": {"DEL": "error-json"}})
    world.cni_path = f"{bin_dir}:{world.cni_path}"

    def plugin(kind: str, **caps: bool) -> dict[str, Any]:
        return {"type": kind, "capabilities": caps} if caps else {"type": kind}

    delegates = [
        MultusDelegate("cluster", {"cniVersion": "1.0.0", "name": "cluster",
                                   "plugins": [plugin("fake"), plugin("fake", portMappings=True)]}),
        MultusDelegate("default/static", {"cniVersion": "1.0.0", "name": "static", **plugin("fake", ips=True,
                       mac=True)}, ip_request=["10.9.0.5/24"], mac_request="0a:58:0a:09:00:05"),
        MultusDelegate("default/flaky", {"cniVersion": "1.0.0", "name": "flaky", **plugin("fake-flaky")},
                       ifname_request="fl0"),
    ]
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP"}]
    _attach_as_multus(world, pod, delegates, [{"portMappings": ports},
                                              {"portMappings": ports, "ips": ["10.9.0.5/24"],
                                               "mac": "0a:58:0a:09:00:05"}, {"portMappings": ports}])
    calls_log.unlink()
    # containerd's spelling of the capability's keys; a capability Multus does not read is dropped.
    runtime_config = {"portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "TCP"}],
                      "io.kubernetes.cri.pod-annotations": {"a": "b"}}
    conf = _multus_conf(world, runtimeConfig=runtime_config)
    first = world.call("DEL", conf, pod=pod, args=RUNTIME_ARGS)
    assert first.code == 1 and first.json["code"] == 104, first.stdout
    assert "fl0 (default/flaky)" in first.json["details"]
    assert (_cni_dir(world) / "c1").exists()

    calls = [c for c in fake_delegate.read_log(calls_log) if c["command"] == "DEL"]
    assert [(c["plugin"], c["env"]["CNI_IFNAME"]) for c in calls] == [
        ("fake-flaky", "fl0"), ("fake", "net1"), ("fake", "eth0"), ("fake", "eth0")]
    expected_args = ("IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID=c1;"
                     "K8S_POD_UID=u1;" + RUNTIME_ARGS)
    assert {c["env"]["CNI_ARGS"] for c in calls} == {expected_args}
    assert {c["env"]["CNI_NETNS"] for c in calls} == {pod.path}
    static, cluster_last, cluster_first = calls[1]["stdin"], calls[2]["stdin"], calls[3]["stdin"]
    assert static["runtimeConfig"] == {"ips": ["10.9.0.5/24"], "mac": "0a:58:0a:09:00:05"}
    assert cluster_last["runtimeConfig"] == {"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                                               "protocol": "TCP"}]}
    assert "runtimeConfig" not in cluster_first  # declares no capability
    assert cluster_first["prevResult"]["cniVersion"] == "1.0.0" and static["prevResult"]["cniVersion"] == "1.0.0"
    assert not (_cni_dir(world) / "results" / "static-c1-net1").exists()  # deleted with its DEL
    assert (_cni_dir(world) / "results" / "flaky-c1-fl0").exists()

    (bin_dir / "fake-flaky.json").write_text(json.dumps({"log": str(calls_log)}))
    second = world.call("DEL", conf, pod=pod, args=RUNTIME_ARGS)
    assert second.code == 0, second.stdout
    assert not (_cni_dir(world) / "c1").exists()
    assert world.state_files() == []


@pytest.mark.parametrize("content", [b"{not json", b"[]", b'[{"Name": "x", "Bytes": "%%%"}]'])
def test_corrupt_entry_is_logged_and_the_fallback_deletes(world: MetaplugWorld, pod: Netns, content: bytes) -> None:
    """An unusable entry: one error line naming it, then metaplug's own fallback (the current configuration and
    the runtime's prevResult, as Multus falls back to the API); no traceback, nothing leaked."""
    delegates = _pod_delegates(world)[:2]
    results = _attach_as_multus(world, pod, delegates)
    (_cni_dir(world) / "c1").write_bytes(content)
    world.add_nad("blue", delegates[1].config)
    conf = world.annotated(_multus_conf(world, delegates=[delegates[0].config]), "blue")
    delete = world.call("DEL", dict(conf, prevResult=results[0]), pod=pod, args=RUNTIME_ARGS)
    assert delete.code == 0, delete.stdout + delete.stderr
    assert "Traceback" not in delete.stderr
    assert set(pod.links()) == {"lo"} and world.reservations() == []
    errors = [d for d in _log(world) if d["level"] == "error" and "Multus's cache entry" in d["msg"]]
    assert len(errors) == 1 and str(_cni_dir(world) / "c1") in errors[0]["multus_cache"], _log(world)


def test_check_runs_every_delegate_multus_attached(world: MetaplugWorld, pod: Netns) -> None:
    _attach_as_multus(world, pod, _pod_delegates(world))
    conf = _multus_conf(world)
    check = world.call("CHECK", conf, pod=pod, args=RUNTIME_ARGS)
    assert check.code == 0, check.stdout + check.stderr
    pod.ip("link", "del", "green0")
    broken = world.call("CHECK", conf, pod=pod, args=RUNTIME_ARGS)
    assert broken.code == 1, broken.stdout
    assert "green0 (default/green)" in broken.json["msg"] + broken.json.get("details", ""), broken.stdout
    assert world.call("DEL", conf, pod=pod, args=RUNTIME_ARGS).code == 0
    assert set(pod.links()) == {"lo"} and world.reservations() == []


def test_gc_keeps_what_multus_attached_and_collects_what_is_stale(world: MetaplugWorld,
                                                                  netns_factory: NetnsFactory) -> None:
    """GC forwards every attachment of Multus's result cache as valid to a network metaplug also uses, so a shared
    IPAM keeps a live Multus pod's address (as Multus's own GC does); a Multus pod that no valid attachment names is
    deleted as its DEL would be, with the CNI_IFNAME, netns and CNI_ARGS of its cached result (cni.md 14)."""
    if not (VENV_BIN / "mp-host-local").exists():
        pytest.skip("bundled delegates not installed")
    world.plugins = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local",
                     "static": "mp-static"}
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mmcl0", version="1.1.0")
    blue = world.macvlan_hostlocal_net("blue", "10.80.0.0/24", version="1.1.0")
    old_pod, gone_pod, new_pod = (netns_factory.new("pod") for _ in range(3))
    _attach_as_multus(world, old_pod, [MultusDelegate("cluster", cluster)], container_id="old")
    _attach_as_multus(world, gone_pod, [MultusDelegate("cluster", cluster), MultusDelegate("default/blue", blue)],
                      container_id="gone")
    conf = _multus_conf(world, delegates=[cluster], cniVersion="1.1.0")
    assert world.call("ADD", conf, pod=new_pod, container_id="new").code == 0
    assert world.reservations() == ["blue/10.80.0.2", "cluster/10.88.0.2", "cluster/10.88.0.3", "cluster/10.88.0.4"]
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "new", "ifname": "eth0"},
                                                    {"containerID": "old", "ifname": "eth0"}]})
    result = world.call("GC", gc)
    assert result.code == 0, result.stdout + result.stderr
    assert world.reservations() == ["cluster/10.88.0.2", "cluster/10.88.0.4"]  # old's and new's
    assert set(gone_pod.links()) == {"lo"} and not (_cni_dir(world) / "gone").exists()
    assert old_pod.has_link("eth0") and new_pod.has_link("eth0")
    for cid, p in (("old", old_pod), ("new", new_pod)):
        assert world.call("DEL", conf, pod=p, container_id=cid).code == 0
        assert set(p.links()) == {"lo"}
    assert world.reservations() == [] and world.state_files() == []
    assert sorted(p.name for p in _cni_dir(world).rglob("*")) == ["results"]


def test_entry_written_as_multus_does(tmp_path: Path) -> None:
    """The fixture's shape, checked against a DelegateNetConf list as Multus v4 writes it (field order, omitempty,
    PluginConf's sorted keys and `ipam: {}`, base64 Bytes)."""
    delegate = MultusDelegate("default/blue", {"cniVersion": "1.0.0", "name": "blue", "type": "macvlan",
                                               "ipam": {"type": "host-local"}}, ifname_request="b0")
    path = write_entry(tmp_path / "multus", "c9", [delegate])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    text = path.read_text()
    assert text.startswith('[{"Conf":{"cniVersion":"1.0.0","ipam":{"type":"host-local"},"name":"blue",'
                           '"type":"macvlan"},"ConfList":{},"Name":"default/blue","ifnameRequest":"b0",'
                           '"IsFilterV4Gateway":false,"IsFilterV6Gateway":false,"Bytes":"'), text
