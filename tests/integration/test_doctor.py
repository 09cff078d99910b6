"""`metaplug doctor`: planted leaks of each kind, with real namespaces and the reference plugins, are found, and
`--fix` repairs exactly the provably orphaned ones and nothing else. Doctor runs inside the node namespace, where the
runtime would run it.

The subnets (10.213.x, 10.214.x) are used by no other test: doctor looks at every namespace of the machine before it
releases an address, and another test's pod with the same address would (rightly) keep it."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory

CLUSTER, RED = "10.213.0.0/24", "10.214.0.0/24"


def doctor(world: MetaplugWorld, *flags: str, state_dirs: list[Path] | None = None) -> tuple[int, dict[str, Any]]:
    dirs = [a for d in (state_dirs or [world.state_dir]) for a in ("--state-dir", str(d))]
    proc = world.node.exec([str(VENV_BIN / "metaplug"), "doctor", *dirs, "--json", *flags], check=False, timeout=120)
    assert proc.returncode in (0, 1, 2), proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def kinds(report: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((f["kind"], f["subject"]) for f in report["findings"])


def conf_of(world: MetaplugWorld) -> dict[str, Any]:
    world.add_nad("red", world.bridge_net("red", RED, "mpdr0"))
    cluster = world.bridge_net("cluster", CLUSTER, "mpdc0", default_gw=True)
    return world.annotated(world.metaplug_conf(cluster), "red")


def host_veths(world: MetaplugWorld) -> set[str]:
    return {name for name, link in world.node.links().items() if name.startswith("veth")}


def owners(world: MetaplugWorld) -> dict[str, str]:
    """reservation ("network/address") -> the container ID in it."""
    return {r: (world.ipam_dir / r).read_text().split()[0] for r in world.reservations()}


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_doctor_is_clean_after_add_and_after_del(world: MetaplugWorld, pod: Netns) -> None:
    conf = conf_of(world)
    assert world.call("ADD", conf, pod=pod, container_id="podA").code == 0
    code, report = doctor(world)
    assert (code, report["status"], report["findings"]) == (0, "clean", []), report
    assert world.call("DEL", conf, pod=pod, container_id="podA").code == 0
    assert doctor(world)[0] == 0


def test_doctor_finds_each_planted_leak_and_fix_repairs_exactly_those(world: MetaplugWorld,
                                                                      netns_factory: NetnsFactory) -> None:
    conf = conf_of(world)
    pods = {name: netns_factory.new("pod") for name in ("podA", "podB", "podC")}
    for cid, ns in pods.items():
        add = world.call("ADD", conf, pod=ns, container_id=cid)
        assert add.code == 0, add.stdout
    assert doctor(world)[0] == 0
    veths_of = {cid: {i["name"] for i in json.loads((world.state_dir / cid / "mp-eth0.json").read_text())["body"][
        "result"]["interfaces"] if i["name"].startswith("veth")} for cid in pods}
    before = owners(world)
    assert sorted(before.values()) == ["podA", "podA", "podB", "podB", "podC", "podC"]
    c_addresses = sorted(r for r, cid in before.items() if cid == "podC")

    # 1. podB's namespace is deleted without DEL (the pod is gone, DEL never came)
    pods["podB"].delete()
    # 2. podC's journal is deleted (its lock file stays; its pod, addresses and host veths are still there)
    (world.state_dir / "podC" / "mp-eth0.json").unlink()
    # 3. an IP reservation of a container metaplug never heard of
    ghost = world.ipam_dir / "cluster" / "10.213.0.200"
    ghost.write_text("ghost\r\neth0")
    # 4. a temp file of a journal write whose process died
    temp = world.state_dir / "podA" / f".mp-eth0.json.tmp.{dead_pid()}"  # as cni.files.atomic_write names it
    temp.write_text("{half")

    code, report = doctor(world)
    assert code == 1 and report["status"] == "findings"
    assert kinds(report) == sorted([
        ("stale-journal", str(world.state_dir / "podB" / "mp-eth0.json")),
        ("lock-without-journal", str(world.state_dir / "podC" / "mp-eth0.lock")),
        ("orphan-reservation", str(ghost)),
        ("temp-file", str(temp)),
        *[("reservation-in-use", str(world.ipam_dir / r)) for r in c_addresses],
        *[("unaccounted-veth", name) for name in veths_of["podC"]],
    ]), report
    fixable = {f["subject"] for f in report["findings"] if f["fixable"]}
    assert fixable == {str(world.state_dir / "podB" / "mp-eth0.json"), str(world.state_dir / "podC" / "mp-eth0.lock"),
                       str(ghost), str(temp)}
    for finding in report["findings"]:
        assert finding["action"] and finding["detail"]
        if finding["kind"] in ("unaccounted-veth", "reservation-in-use"):
            assert pods["podC"].path in finding["detail"], finding  # where the pod whose journal was lost is

    code, report = doctor(world, "--fix")
    assert code == 1  # podC's leftovers are reported, not touched
    assert len(report["fixed"]) == 4 and all(not line.startswith(("FAILED", "kept")) for line in report["fixed"])
    assert {k for k, _ in kinds(report)} == {"reservation-in-use", "unaccounted-veth"}
    # exactly those were repaired: podB's addresses released by its DEL, the ghost released, files removed
    assert not (world.state_dir / "podB").exists() and not ghost.exists() and not temp.exists()
    assert not (world.state_dir / "podC").exists()
    assert owners(world) == {r: cid for r, cid in before.items() if cid in ("podA", "podC")}
    # and nothing else: podA is intact and passes CHECK, podC's interfaces and host veths are untouched
    assert world.call("CHECK", conf, pod=pods["podA"], container_id="podA").code == 0
    assert pods["podC"].addresses("eth0") and pods["podC"].addresses("net1")
    assert veths_of["podA"] | veths_of["podC"] <= host_veths(world)
    assert not veths_of["podB"] & host_veths(world)

    # once podC's namespace is gone too, its addresses are provably unused: --fix releases them, and all is clean
    pods["podC"].delete()
    code, report = doctor(world, "--fix")
    assert code == 0, report
    assert sorted(line.split()[1] for line in report["fixed"]) == sorted(r.split("/")[1] for r in c_addresses)
    assert owners(world) == {r: cid for r, cid in before.items() if cid == "podA"}
    assert world.call("DEL", conf, pod=pods["podA"], container_id="podA").code == 0
    assert world.reservations() == [] and doctor(world)[0] == 0


def test_doctor_reports_corrupt_and_set_aside_journals_and_permissions_and_fixes_none(world: MetaplugWorld,
                                                                                      pod: Netns) -> None:
    conf = conf_of(world)
    assert world.call("ADD", conf, pod=pod, container_id="podA").code == 0
    journal_file = world.state_dir / "podA" / "mp-eth0.json"
    aside = world.state_dir / "podA" / "mp-net9.json.corrupt.1700000000"
    aside.write_text("{old")
    good = journal_file.read_text()
    journal_file.write_text(good.replace('"added"', '"addxd"', 1))  # checksum mismatch
    os.chmod(world.state_dir / "podA", 0o777)
    code, report = doctor(world, "--fix")
    assert code == 1 and report["fixed"] == []
    assert kinds(report) == sorted([
        ("corrupt-journal", str(journal_file)),
        ("corrupt-journal-set-aside", str(aside)),
        ("permissions", str(world.state_dir / "podA")),
    ]), report  # podA's addresses and veths are not judged while its journal cannot be read
    assert len(world.reservations()) == 2 and aside.exists()
    os.chmod(world.state_dir / "podA", 0o700)
    journal_file.write_text(good)
    aside.unlink()
    assert doctor(world)[0] == 0
    assert world.call("DEL", conf, pod=pod, container_id="podA").code == 0


def test_doctor_checks_recorded_interfaces_like_check(world: MetaplugWorld, pod: Netns) -> None:
    conf = conf_of(world)
    assert world.call("ADD", conf, pod=pod, container_id="podA").code == 0
    pod.ip("addr", "flush", "dev", "net1")
    code, report = doctor(world, "--fix")
    assert code == 1 and report["fixed"] == []
    [finding] = report["findings"]
    assert finding["kind"] == "interfaces-differ" and "net1 lacks address 10.214.0.2/24" in finding["detail"]
    assert finding["subject"] == pod.path and not finding["fixable"]
    assert world.call("DEL", conf, pod=pod, container_id="podA").code == 0


def test_doctor_exit_2_when_it_cannot_check(world: MetaplugWorld) -> None:
    code, report = doctor(world, state_dirs=[world.tmp / "nosuch"])
    assert code == 2 and report["status"] == "could-not-check" and "does not exist" in report["problems"][0]


def test_doctor_with_several_state_dirs_sees_each_networks_journals(world: MetaplugWorld,
                                                                     netns_factory: NetnsFactory) -> None:
    """Two metaplug networks with their own stateDir share a data dir: with both stateDirs given, neither's
    reservations look orphaned."""
    conf = conf_of(world)
    other = dict(conf, name="mp2", stateDir=str(world.tmp / "state2"))
    a, b = netns_factory.new("pod"), netns_factory.new("pod")
    assert world.call("ADD", conf, pod=a, container_id="podA").code == 0
    assert world.call("ADD", other, pod=b, container_id="podB").code == 0
    assert doctor(world, state_dirs=[world.state_dir, world.tmp / "state2"])[0] == 0
    code, report = doctor(world)  # only the first: podB's addresses are in use, so reported but never released
    assert code == 1 and {f["kind"] for f in report["findings"]} == {"reservation-in-use", "unaccounted-veth"}
    assert world.call("DEL", conf, pod=a, container_id="podA").code == 0
    assert world.call("DEL", other, pod=b, container_id="podB").code == 0


def test_doctor_fix_is_safe_while_the_runtime_calls_metaplug(world: MetaplugWorld,
                                                             netns_factory: NetnsFactory) -> None:
    """ADD/DEL cycles run while doctor --fix runs again and again: every verb succeeds, doctor finds nothing and
    repairs nothing (an ADD journals before its delegates run; doctor judges a journal only when nobody holds it)."""
    conf = conf_of(world)
    pods = [netns_factory.new("pod") for _ in range(2)]
    failures: list[str] = []
    done = threading.Event()

    def runtime(i: int) -> None:
        try:
            for round_ in range(4):
                for verb in ("ADD", "DEL"):
                    result = world.call(verb, conf, pod=pods[i], container_id=f"busy{i}")
                    if result.code != 0:
                        failures.append(f"{verb} busy{i} round {round_}: {result.stdout}")
        finally:
            done.set()

    threads = [threading.Thread(target=runtime, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    reports = []
    while not done.is_set() or any(t.is_alive() for t in threads):
        reports.append(doctor(world, "--fix"))
        if len(reports) > 30:
            break
    for t in threads:
        t.join()
    assert failures == []
    bad = [r for _, r in reports if r["fixed"] or r["findings"]]
    assert len(reports) >= 3 and not bad, json.dumps(bad[:2], indent=1)
    assert world.reservations() == [] and world.state_files() == []


def test_duty23_an_add_keeps_its_lock_file_while_it_runs(world: MetaplugWorld, pod: Netns) -> None:
    """cni.md 23: the ADD of a new container (and a repeated ADD) works under a lock file that stays in place, so a
    DEL, GC or doctor for the same container waits instead of locking a new file beside it."""
    from metaplug import journal
    from tests.helpers import fake_delegate

    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, "fake")
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    conf = world.metaplug_conf({"cniVersion": "1.0.0", "name": "slow",
                                "plugins": [{"type": "fake", "fake": {"sleep": 1.5, "log": str(world.tmp / "calls")}}]})
    key = journal.JournalKey(str(world.state_dir), "c1", "mp", "eth0")
    for number, attempt in enumerate(("first ADD", "repeated ADD"), start=1):
        seen: list[bool] = []
        adder = threading.Thread(target=lambda out=seen: out.append(world.call("ADD", conf, pod=pod).code == 0))
        adder.start()
        deadline = 100
        while deadline and [c["command"] for c in fake_delegate.read_log(world.tmp / "calls")].count("ADD") < number:
            threading.Event().wait(0.05)  # until this ADD's delegate runs (and sleeps)
            deadline -= 1
        assert os.path.exists(key.lock_path), attempt
        with journal.locked_if_present(key, wait=False) as acquired:
            assert not acquired, attempt  # held by the ADD, not a stray file
        adder.join()
        assert seen == [True], attempt
    assert world.call("DEL", conf, pod=pod).code == 0 and world.state_files() == []


def test_doctor_counts_what_multus_attached_before_the_switch(world: MetaplugWorld,
                                                             netns_factory: NetnsFactory) -> None:
    """A pod Multus attached (its cache entry in cniDir, no journal; issue 10.4) to the bridge and host-local store a
    metaplug pod also uses: its address and host-side veth are Multus's cache's, so doctor reports neither and
    `--fix` releases nothing; told of no cniDir, doctor sees them as a lost journal's (the check can fail)."""
    from tests.helpers.multus_node import MultusCall, MultusDelegate, k8s_args, multus_add

    cni_dir = world.tmp / "multus"
    cluster = world.bridge_net("cluster", CLUSTER, "mpdc0", default_gw=True)
    multus_pod, pod = netns_factory.new("pod"), netns_factory.new("pod")
    multus_add(world.node, cni_dir, [MultusCall(MultusDelegate("cluster", cluster), "eth0",
                                                k8s_args("K8S_POD_NAMESPACE=default;K8S_POD_NAME=old;K8S_POD_INFRA_CONTAINER_ID=multusPod;"
                                                         "K8S_POD_UID=u1"), {})],
               container_id="multusPod", netns=multus_pod.path, cni_path=world.cni_path)
    conf = world.metaplug_conf(cluster)
    assert world.call("ADD", conf, pod=pod, container_id="podA").code == 0
    assert len(world.reservations()) == 2 and len(host_veths(world)) == 2

    blind = ["--multus-cache-dir", ""]
    code, report = doctor(world, *blind)
    assert code == 1 and [k for k, _ in kinds(report)] == ["reservation-in-use", "unaccounted-veth"], report

    code, report = doctor(world, "--multus-cache-dir", str(cni_dir), "--fix")
    assert (code, report["findings"], report["fixed"]) == (0, [], []), report
    assert len(world.reservations()) == 2 and multus_pod.has_link("eth0")
    assert world.call("DEL", conf, pod=pod, container_id="podA").code == 0
    assert world.call("DEL", dict(conf, cniDir=str(cni_dir)), pod=multus_pod, container_id="multusPod").code == 0
    assert world.reservations() == [] and doctor(world, *blind)[0] == 0
