"""metaplug under failure: rollback (R27), validation before any delegate runs, DEL without the config, repeated ADD,
corrupt journal, concurrency (cni.md 23), GC (cni.md 14), STATUS (cni.md 13, R25)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory


def cluster_conf(world: MetaplugWorld, **extra: object) -> dict:
    return world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True), **extra)


def fake_bin(world: MetaplugWorld, name: str = "fake") -> tuple[Path, Path]:
    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, name)
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    return bin_dir, world.tmp / f"{name}.log"


def test_r27_failed_attachment_rolls_back_everything(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """R27: the 3rd attachment fails -> the 1st and 2nd are deleted, no interface, no IP reservation, no journal."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("broken", world.macvlan_hostlocal_net("broken", "10.66.0.0/24") | {
        "plugins": [{"type": "macvlan", "master": "nosuchdev", "ipam": {
            "type": "host-local", "dataDir": str(world.ipam_dir), "ranges": [[{"subnet": "10.66.0.0/24"}]]}}]})
    conf = world.annotated(cluster_conf(world), "red,broken")
    add = world.call("ADD", conf, pod=pod)
    assert add.code != 0
    err = add.json
    assert "net2" in err["msg"] and "default/broken" in err["msg"], err  # names the failed attachment
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == []
    assert world.state_files() == []  # no journal, no lock file
    assert world.call("DEL", conf, pod=pod).code == 0


def test_validation_happens_before_any_delegate_runs(world: MetaplugWorld, pod: Netns) -> None:
    """An invalid element (bad IP, code 7) fails the ADD before the cluster network is attached."""
    _, log = fake_bin(world)
    world.add_nad("blue", world.macvlan_static_net("blue"))
    conf = world.metaplug_conf({"cniVersion": "1.0.0", "name": "fakecluster",
                                "plugins": [{"type": "fake", "fake": {"log": str(log)}}]})
    bad = world.annotated(conf, [{"name": "blue", "ips": ["10.1.2.300/24"]}])
    add = world.call("ADD", bad, pod=pod)
    assert add.code == 1 and add.json["code"] == 7
    assert "ips" in add.json["details"] and "blue" in add.json["details"]
    assert fake_delegate.read_log(log) == []
    assert world.state_files() == []


@pytest.mark.parametrize("annotation,needle", [
    ([{"name": "red", "interface": "eth0"}], "eth0"),                      # R9: the cluster's ifname
    ([{"name": "red", "interface": "x1"}, {"name": "red", "interface": "x1"}], "x1"),  # R9: twice
    ([{"name": "red", "mac": "02:00:00:00:00:01"}], "mac"),                # R8: capability not declared
    ([{"name": "nosuch"}], "nosuch"),                                      # NAD not found
    ([{"name": "red", "namespace": "other"}], "namespace isolation"),      # R29
])
def test_plan_errors_are_code_7_and_touch_nothing(world: MetaplugWorld, pod: Netns, annotation: list,
                                                   needle: str) -> None:
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("red", world.bridge_net("red", "10.98.0.0/24", "mpred1"), namespace="other")
    conf = world.annotated(cluster_conf(world, namespaceIsolation=True), annotation)
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 1 and add.json["code"] == 7, add.stdout
    assert needle in add.json["msg"] + add.json.get("details", "")
    assert set(pod.links()) == {"lo"} and world.reservations() == [] and world.state_files() == []


def test_r29_global_namespace_is_allowed(world: MetaplugWorld, pod: Netns) -> None:
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"), namespace="shared")
    conf = world.annotated(cluster_conf(world, namespaceIsolation=True, globalNamespaces="shared,other"),
                           "shared/red")
    assert world.call("ADD", conf, pod=pod).code == 0
    assert world.call("DEL", conf, pod=pod).code == 0


def test_r9_name_already_in_netns_fails_before_delegates(world: MetaplugWorld, pod: Netns) -> None:
    """R9 / cni.md 10: an interface name already present in the netns fails the ADD before any delegate runs."""
    pod.ip("link", "add", "net1", "type", "veth", "peer", "name", "net1p")
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    add = world.call("ADD", world.annotated(cluster_conf(world), "red"), pod=pod)
    assert add.code == 1 and "net1" in add.json["details"]
    assert not pod.has_link("eth0") and world.reservations() == []


def test_del_after_pod_namespace_is_gone(world: MetaplugWorld, netns_factory: NetnsFactory, mode: str) -> None:
    """cni.md 11: DEL succeeds when the netns no longer exists, and still releases the IPs."""
    pod = netns_factory.new("pod")
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(cluster_conf(world), "red")
    assert world.call("ADD", conf, pod=pod).code == 0
    path = pod.path
    pod.delete()
    delete = world.call("DEL", conf, netns_path=path)
    assert delete.code == 0, delete.stdout
    assert world.reservations() == [] and world.state_files() == []


def test_del_after_confdir_and_nads_are_deleted(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """DESIGN: DEL runs from the journal alone, even when the NAD files and confDir are gone."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(cluster_conf(world), "red")
    assert world.call("ADD", conf, pod=pod).code == 0
    shutil.rmtree(world.conf_dir)
    bare = {k: v for k, v in conf.items() if k not in ("delegates", "runtimeConfig")}  # config changed too
    assert world.call("DEL", bare, pod=pod).code == 0
    assert set(pod.links()) == {"lo"} and world.reservations() == []


def test_repeated_add_does_not_leak(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """cni.md 36: a repeated ADD (Nomad retry, kubelet restart) first cleans up the previous attempt."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(cluster_conf(world), "red")
    for _ in range(3):
        add = world.call("ADD", conf, pod=pod)
        assert add.code == 0, add.stdout
    assert len(world.reservations()) == 2  # one per network, not three each
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.reservations() == []


def test_corrupt_journal_is_moved_aside_and_del_is_best_effort(world: MetaplugWorld, pod: Netns) -> None:
    """DESIGN: a corrupt journal is kept aside, DEL does what it can from it, and logs loudly."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(cluster_conf(world), "red")
    assert world.call("ADD", conf, pod=pod).code == 0
    path = world.state_dir / "c1" / "mp-eth0.json"
    doc = json.loads(path.read_text())
    doc["body"]["netns"] = "tampered"  # checksum no longer matches; the body is still readable
    path.write_text(json.dumps(doc))
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0, delete.stdout
    assert set(pod.links()) == {"lo"} and world.reservations() == []
    assert [p for p in world.state_files() if ".corrupt." in p]
    assert "corrupt journal" in delete.stderr


def test_unreadable_journal_is_moved_aside(world: MetaplugWorld, pod: Netns) -> None:
    """An unreadable journal is kept aside and DEL works from its previous version (issue 9, defect 7)."""
    conf = cluster_conf(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    (world.state_dir / "c1" / "mp-eth0.json").write_text("{not json")
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0 and "corrupt journal" in delete.stderr
    assert set(pod.links()) == {"lo"} and world.reservations() == []
    assert [p for p in world.state_files() if ".corrupt." in p]


def test_del_keeps_entries_whose_delegate_del_fails_then_retries(world: MetaplugWorld, pod: Netns) -> None:
    """Journal entries leave only after their DEL succeeded; DEL reports every failure (R27)."""
    _, log = fake_bin(world)
    flag = world.tmp / "fail-del"
    world.add_nad("f", {"cniVersion": "1.0.0", "name": "f", "plugins": [
        {"type": "fake", "fake": {"log": str(log), "on": {"DEL": "error-json"},
                                  "error": {"code": 117, "msg": "cannot delete"}}}]})
    conf = world.annotated(cluster_conf(world), "f")
    assert world.call("ADD", conf, pod=pod).code == 0
    flag.touch()
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 1 and delete.json["code"] == 104 and "cannot delete" in delete.json["details"]
    assert not pod.has_link("eth0")  # the other attachment was still deleted
    assert any(p.endswith("mp-eth0.json") for p in world.state_files())
    nad = json.loads((world.conf_dir / "default" / "f.json").read_text())
    assert nad  # the journal, not the NAD, drives the retry: make the fake succeed via its journaled config
    journal = world.state_dir / "c1" / "mp-eth0.json"
    doc = json.loads(journal.read_text())
    entry = doc["body"]["attachments"][0]
    cfg = json.loads(entry["conflist"])
    cfg["plugins"][0]["fake"]["on"] = {}
    entry["conflist"] = json.dumps(cfg)
    from metaplug.journal import checksum
    doc["checksum"] = checksum(doc["body"])
    journal.write_text(json.dumps(doc))
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == []


def test_adding_entry_whose_del_always_fails_is_dropped(world: MetaplugWorld, pod: Netns) -> None:
    """An attachment whose ADD never completed and whose DEL always fails must not block DEL forever."""
    _, log = fake_bin(world)
    world.add_nad("f", {"cniVersion": "1.0.0", "name": "f", "plugins": [
        {"type": "fake", "fake": {"log": str(log), "mode": "error-json",
                                  "error": {"code": 117, "msg": "never works"}}}]})
    conf = world.annotated(cluster_conf(world), "f")
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 1 and add.json["code"] == 117
    assert "dropping attachment" in add.stderr
    assert world.state_files() == [] and world.reservations() == []
    calls = [c["command"] for c in fake_delegate.read_log(log)]
    assert calls == ["ADD", "DEL"]  # rolled back once, the failed one included (R27)


def test_delegate_timeout_is_reported_and_rolled_back(world: MetaplugWorld, pod: Netns) -> None:
    _, log = fake_bin(world)
    world.add_nad("slow", {"cniVersion": "1.0.0", "name": "slow", "plugins": [
        {"type": "fake", "fake": {"log": str(log), "on": {"ADD": "hang"}}}]})
    conf = world.annotated(cluster_conf(world, delegateTimeout=1), "slow")
    started = time.monotonic()
    add = world.call("ADD", conf, pod=pod)
    assert time.monotonic() - started < 15
    assert add.code == 1 and add.json["code"] == 100 and "timed out" in add.json["details"]
    assert set(pod.links()) == {"lo"} and world.reservations() == []


def test_parallel_gives_identical_output(world: MetaplugWorld, netns_factory: NetnsFactory) -> None:
    """BEYOND R28: `parallel: true` gives the same interfaces, addresses and ordering."""
    for name, subnet, br in (("a", "10.61.0.0/24", "mpa0"), ("b", "10.62.0.0/24", "mpb0"),
                             ("c", "10.63.0.0/24", "mpc0")):
        world.add_nad(name, world.bridge_net(name, subnet, br))

    def shape(result: dict) -> list:
        # host-local hands out the next address on the second run, so compare the subnets, not the hosts
        names = [i["name"] for i in result["interfaces"]]
        return [(names[ip["interface"]], str(ipaddress.ip_interface(ip["address"]).network)) for ip in result["ips"]]

    shapes = []
    for parallel in (False, True):
        pod = netns_factory.new("pod")
        conf = world.annotated(cluster_conf(world, parallel=parallel), "a,b,c")
        add = world.call("ADD", conf, pod=pod, container_id=f"c{parallel}")
        assert add.code == 0, add.stdout
        shapes.append(shape(add.json))
        assert world.call("DEL", conf, pod=pod, container_id=f"c{parallel}").code == 0
    assert shapes[0] == shapes[1]
    assert [n for n, _ in shapes[1]] == ["eth0", "net1", "net2", "net3"]


def test_twenty_pods_concurrently_leave_nothing_behind(world: MetaplugWorld, netns_factory: NetnsFactory) -> None:
    """cni.md 23: concurrent ADD/DEL of 20 pods (shared IPAM, shared stateDir): unique IPs, nothing left."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(cluster_conf(world), "red")
    pods = [netns_factory.new("pod") for _ in range(20)]
    results: dict[int, object] = {}

    def life(i: int) -> None:
        add = world.call("ADD", conf, pod=pods[i], container_id=f"pod{i}")
        results[i] = add
        if add.code == 0:
            results[i] = (add, pods[i].addresses("eth0") + pods[i].addresses("net1"))
            assert world.call("DEL", conf, pod=pods[i], container_id=f"pod{i}").code == 0

    threads = [threading.Thread(target=life, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    addrs = []
    for i in range(20):
        entry = results[i]
        assert isinstance(entry, tuple), getattr(entry, "stdout", entry)
        addrs += entry[1]
    assert len(addrs) == 40 and len(set(addrs)) == 40
    assert world.reservations() == [] and world.state_files() == []
    assert all(set(p.links()) == {"lo"} for p in pods)


def test_gc_deletes_attachments_not_in_valid_list(world: MetaplugWorld, netns_factory: NetnsFactory) -> None:
    """cni.md 14: GC fully DELs this network's attachments that are not in cni.dev/valid-attachments."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(cluster_conf(world), "red")
    keep, drop = netns_factory.new("pod"), netns_factory.new("pod")
    assert world.call("ADD", conf, pod=keep, container_id="keep").code == 0
    assert world.call("ADD", conf, pod=drop, container_id="drop").code == 0
    other = dict(conf, name="othernet")  # another metaplug network sharing the stateDir is not touched
    other_pod = netns_factory.new("pod")
    other["delegates"] = [world.bridge_net("cluster2", "10.55.0.0/24", "mpcl2")]
    other.pop("runtimeConfig")
    assert world.call("ADD", other, pod=other_pod, container_id="other").code == 0
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    gc["cniVersion"] = "1.1.0"
    result = world.call("GC", gc)
    assert result.code == 0, result.stdout
    assert set(drop.links()) == {"lo"}
    assert keep.has_link("eth0") and keep.has_link("net1") and other_pod.has_link("eth0")
    # drop's addresses (.3) are released; keep's (.2) and the other network's stay
    assert world.reservations() == ["cluster/10.88.0.2", "cluster2/10.55.0.2", "red/10.99.0.2"]
    for cid, p, c in (("keep", keep, conf), ("other", other_pod, other)):
        assert world.call("DEL", c, pod=p, container_id=cid).code == 0


def test_status_reports_readiness_and_missing_binaries(world: MetaplugWorld, tmp_path: Path) -> None:
    """cni.md 13 + R25: STATUS 50 while the readiness file is missing or a cluster binary is not found."""
    ready = tmp_path / "ready"
    conf = cluster_conf(world, readinessIndicatorFile=str(ready))
    status = world.call("STATUS", conf)
    assert status.code == 1 and status.json["code"] == 50
    ready.touch()
    status = world.call("STATUS", conf)
    assert status.code == 0 and status.stdout == "", status.stdout
    conf["delegates"][0]["plugins"][0]["type"] = "nosuchplugin"
    status = world.call("STATUS", conf)
    assert status.code == 1 and status.json["code"] == 50 and "nosuchplugin" in status.json["msg"] + status.json[
        "details"]


def test_readiness_indicator_waits_then_fails_with_try_again(world: MetaplugWorld, pod: Netns, tmp_path: Path) -> None:
    """R25: ADD waits (bounded) for the readiness indicator file, then fails with code 11."""
    ready = tmp_path / "ready"
    conf = cluster_conf(world, readinessIndicatorFile=str(ready), readinessTimeout=0.5)
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 1 and add.json["code"] == 11
    timer = threading.Timer(0.5, ready.touch)
    timer.start()
    conf["readinessTimeout"] = 10
    add = world.call("ADD", conf, pod=pod)
    timer.join()
    assert add.code == 0, add.stdout
    assert world.call("DEL", conf, pod=pod).code == 0


def test_bad_config_is_code_7_naming_the_key(world: MetaplugWorld, pod: Netns) -> None:
    conf = cluster_conf(world, result="everything")
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 1 and add.json["code"] == 7 and "result" in add.json["details"]


def test_multus_spellings_are_accepted(world: MetaplugWorld, pod: Netns) -> None:
    """Config aliases: multusNamespace, readinessindicatorfile; cniDir (Multus's cache dir) is accepted."""
    conf = cluster_conf(world)
    conf["cniDir"] = str(world.tmp / "multus-cache")
    conf["readinessindicatorfile"] = os.devnull
    conf["multusNamespace"] = "kube-system"
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    add = world.call("ADD", world.annotated(conf, "red"), pod=pod)
    assert add.code == 0, add.stdout
    assert world.call("DEL", conf, pod=pod).code == 0


def test_result_that_cannot_be_converted_rolls_back(world: MetaplugWorld, pod: Netns) -> None:
    """cni.md 30: a 0.2.0 request whose merged result has no IP fails ("cannot convert"), and the ADD is undone."""
    _, log = fake_bin(world)
    no_ip = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": pod.path}]}
    conf = world.metaplug_conf({"cniVersion": "1.0.0", "name": "noip",
                                "plugins": [{"type": "fake", "fake": {"log": str(log), "result": no_ip}}]})
    conf["cniVersion"] = "0.2.0"
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 1 and "cannot convert" in add.json["msg"], add.stdout
    assert [c["command"] for c in fake_delegate.read_log(log)] == ["ADD", "DEL"]
    assert world.state_files() == []


def test_gc_is_forwarded_to_1_1_delegates_with_their_own_valid_attachments(world: MetaplugWorld, pod: Netns) -> None:
    """cni.md 14/22: after its own GC, metaplug forwards GC to every 1.1.0 delegate list it journaled, listing the
    attachments that list still has (with their own ifnames: net1 for a secondary), so the delegate drops only leaks."""
    if not (VENV_BIN / "mp-host-local").exists():
        pytest.skip("bundled delegates not installed")
    world.plugins = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local",
                     "static": "mp-static"}
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0", version="1.1.0"))
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0",
                                                                version="1.1.0")), "red")
    assert world.call("ADD", conf, pod=pod, container_id="live").code == 0
    for net, ip in (("cluster", "10.88.0.77"), ("red", "10.99.0.77")):  # allocations nobody owns any more
        (world.ipam_dir / net / ip).write_text("ghost\r\neth0")
    gc = dict(conf, **{"cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]})
    result = world.call("GC", gc)
    assert result.code == 0, result.stdout + result.stderr
    assert world.reservations() == ["cluster/10.88.0.2", "red/10.99.0.2"]
    assert world.call("DEL", conf, pod=pod, container_id="live").code == 0
    assert world.reservations() == []


def test_status_is_forwarded_to_1_1_cluster_delegates(world: MetaplugWorld) -> None:
    """cni.md 13: STATUS goes to the cluster network's 1.1.0 delegates; their 51 (degraded) comes back as 51."""
    _, log = fake_bin(world)
    fake = {"type": "fake", "fake": {"log": str(log), "on": {"STATUS": "error-json"},
                                     "error": {"code": 51, "msg": "uplink down"}}}
    conf = world.metaplug_conf({"cniVersion": "1.1.0", "name": "c11", "plugins": [fake]})
    status = world.call("STATUS", conf)
    assert status.code == 1 and status.json["code"] == 51 and "uplink down" in status.json["msg"]
    assert [c["command"] for c in fake_delegate.read_log(log)] == ["STATUS"]
    fake["fake"]["on"] = {}
    assert world.call("STATUS", conf).code == 0


def test_gc_without_valid_attachments_collects_nothing(world: MetaplugWorld, pod: Netns) -> None:
    """cni.md 14: GC acts on the list of valid attachments; a GC without that key must not delete every pod."""
    conf = cluster_conf(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    gc = world.call("GC", dict(conf, cniVersion="1.1.0"))
    assert gc.code == 0 and "nothing collected" in gc.stderr
    assert pod.has_link("eth0") and world.reservations() == ["cluster/10.88.0.2"]
    empty = world.call("GC", dict(conf, cniVersion="1.1.0", **{"cni.dev/valid-attachments": []}))
    assert empty.code == 0 and not pod.has_link("eth0") and world.reservations() == []
