"""The journal is on disk before every delegate runs, with fewer writes (issue 10.7: thin-mode speed).

ADD writes an attachment as "adding" before its delegate runs, and that same write carries the previous attachment's
result ("added"); DEL rewrites the journal once at the end. These tests kill metaplug (SIGKILL) while a delegate runs
and check what is on disk, then that the runtime's DEL still removes everything: interfaces, IPs, journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns


def _journal(world: MetaplugWorld, cid: str) -> dict[str, Any]:
    path = world.state_dir / cid / "mp-eth0.json"
    body: dict[str, Any] = json.loads(path.read_text())["body"]
    return body


def _start(world: MetaplugWorld, verb: str, conf: dict[str, Any], pod: Netns, cid: str) -> subprocess.Popen[bytes]:
    """metaplug started inside the node namespace as a runtime would, not waited for."""
    env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": verb, "CNI_CONTAINERID": cid,
           "CNI_IFNAME": "eth0", "CNI_PATH": world.cni_path, "CNI_NETNS": pod.path,
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1"}
    proc = subprocess.Popen(["ip", "netns", "exec", world.node.name, str(VENV_BIN / "metaplug")], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(conf).encode())
    proc.stdin.close()
    return proc


def _kill(proc: subprocess.Popen[bytes], hung: dict[str, Any]) -> None:
    """SIGKILL metaplug (nothing of it runs any more), then the hanging fake delegate and its child."""
    proc.kill()
    proc.wait()
    for pid in (hung.get("pid"), hung.get("child_pid")):
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _fake(world: MetaplugWorld) -> tuple[Path, Path]:
    """The fake delegate installed as `fake`; returns its sidecar file (defaults) and its call log."""
    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, "fake")
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    return bin_dir / "fake.json", world.tmp / "fake.log"


def _wait_for_call(log: Path, command: str, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        calls = [c for c in fake_delegate.read_log(log) if c.get("command") == command]
        if calls:
            return calls[0]
        assert proc.poll() is None, f"metaplug exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
        time.sleep(0.05)
    raise AssertionError(f"the fake delegate never saw {command}")


def test_kill_during_the_third_delegate_leaves_a_journal_del_can_finish(world: MetaplugWorld, pod: Netns) -> None:
    """While attachment 3 runs, the journal on disk has attachments 1 and 2 "added" with their results and
    attachment 3 "adding"; metaplug killed there, the runtime's DEL removes every interface, IP and file."""
    sidecar, log = _fake(world)
    sidecar.write_text(json.dumps({"on": {"ADD": "hang"}}))
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("slow", {"cniVersion": "1.0.0", "name": "slow",
                           "plugins": [{"type": "fake", "fake": {"log": str(log)}}]})
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0",
                                                                default_gw=True)), "red,slow")
    proc = _start(world, "ADD", conf, pod, "crash1")
    hung: dict[str, Any] = {}
    try:
        hung = _wait_for_call(log, "ADD", proc)
        on_disk = _journal(world, "crash1")
        states = [(a["ifname"], a["state"], a["result"] is not None) for a in on_disk["attachments"]]
        assert states == [("eth0", "added", True), ("net1", "added", True), ("net2", "adding", False)]
        assert on_disk["attachments"][1]["result"]["ips"][0]["address"] == "10.99.0.2/24"
        # cni.md 23: the lock file this ADD holds is still the one on disk (a fresh ADD used to unlink it while
        # holding it, letting a concurrent call for the same container lock a new file).
        fd = os.open(world.state_dir / "crash1" / "mp-eth0.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        _kill(proc, hung)
    assert pod.has_link("eth0") and pod.has_link("net1")
    sidecar.write_text("{}")
    assert world.call("DEL", conf, pod=pod, container_id="crash1").code == 0
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == []
    assert world.state_files() == []
    assert len([c for c in fake_delegate.read_log(log) if c.get("command") == "DEL"]) == 1  # the half-made one too


def test_kill_during_del_leaves_the_record_and_the_next_del_finishes(world: MetaplugWorld, pod: Netns) -> None:
    """DEL writes the journal once at the end: killed while deleting the second attachment, the record still lists
    all three, and the runtime's repeated DEL deletes again what is already gone and the rest (cni.md 11)."""
    sidecar, log = _fake(world)
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("slow", {"cniVersion": "1.0.0", "name": "slow",
                           "plugins": [{"type": "fake", "fake": {"log": str(log)}}]})
    # DEL runs in reverse: net2 (red) goes first, then net1 (the fake) hangs.
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0",
                                                                default_gw=True)), "slow,red")
    assert world.call("ADD", conf, pod=pod, container_id="crash2").code == 0
    assert pod.has_link("net2") and world.reservations() != []
    sidecar.write_text(json.dumps({"on": {"DEL": "hang"}}))
    proc = _start(world, "DEL", conf, pod, "crash2")
    hung: dict[str, Any] = {}
    try:
        hung = _wait_for_call(log, "DEL", proc)
        assert not pod.has_link("net2")  # red is deleted before the hang
        assert [a["ifname"] for a in _journal(world, "crash2")["attachments"]] == ["eth0", "net1", "net2"]
    finally:
        _kill(proc, hung)
    sidecar.write_text("{}")
    assert world.call("DEL", conf, pod=pod, container_id="crash2").code == 0
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == []
    assert world.state_files() == []
