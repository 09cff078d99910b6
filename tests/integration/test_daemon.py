"""Daemon mode for real (DESIGN: "Two modes, one core"): `metaplug daemon` and metaplug-shim inside the test's node
namespace, real reference plugins, fault injection by the fake delegate. Thin and daemon mode share the journal; the
daemon being down never blocks or loses a DEL; a daemon killed in the middle of an ADD leaves a journal the next DEL
(from either mode) cleans up completely; SIGTERM drains; calls of one container serialize, others overlap."""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import CallResult, Daemon, MetaplugWorld
from tests.helpers.netns import Netns, NetnsFactory

MP_PLUGINS = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local", "static": "mp-static"}


def two_networks(world: MetaplugWorld) -> dict[str, Any]:
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    return world.annotated(world.metaplug_conf(cluster), "red")


def assert_attached(world: MetaplugWorld, pod: Netns) -> None:
    assert pod.addresses("eth0") == ["10.88.0.2/24"] and pod.addresses("net1") == ["10.99.0.2/24"]
    assert len(world.reservations()) == 2


def assert_nothing_left(world: MetaplugWorld, pod: Netns) -> None:
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == []
    assert world.state_files() == []


class Background:
    """A CNI call running in the background (the runtime waiting on it)."""

    def __init__(self, world: MetaplugWorld, verb: str, conf: dict[str, Any], **kw: Any) -> None:
        argv, stdio = world.command(verb, conf, **kw)
        self.proc = subprocess.Popen(["ip", "netns", "exec", world.node.name, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=stdio["env"])
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdio["input"])
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not flush it again

    def result(self, timeout: float = 60) -> CallResult:
        out, err = self.proc.communicate(timeout=timeout)
        return CallResult(self.proc.returncode, out.decode(), err.decode())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def results(calls: list[Background]) -> list[CallResult]:
    """Wait for every background call; none outlives the test."""
    try:
        return [c.result() for c in calls]
    finally:
        for c in calls:
            c.kill()


@pytest.fixture
def fakes(world: MetaplugWorld) -> Iterator[list[Path]]:
    """Fake delegate logs; every process a fake left behind (hang mode) is killed by its process group at the end."""
    logs: list[Path] = []
    try:
        yield logs
    finally:
        for log in logs:
            for entry in fake_delegate.read_log(log):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry["pgid"], signal.SIGKILL)


def fake_net(world: MetaplugWorld, name: str, log: Path, **fake: Any) -> dict[str, Any]:
    bin_dir = world.tmp / "fakebin"
    if not (bin_dir / "fake").exists():
        fake_delegate.install(bin_dir, "fake")
        world.cni_path = f"{bin_dir}:{world.cni_path}"
    return {"cniVersion": "1.0.0", "name": name, "plugins": [{"type": "fake", "fake": {"log": str(log), **fake}}]}


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


# ---------------------------------------------------------------- one core, one journal


@pytest.mark.parametrize("add_mode,other_mode", [("thin", "daemon"), ("daemon", "thin")])
def test_added_in_one_mode_checked_and_deleted_in_the_other(world: MetaplugWorld, pod: Netns, add_mode: str,
                                                           other_mode: str) -> None:
    world.start_daemon()
    conf = two_networks(world)
    add = world.call("ADD", conf, pod=pod, mode=add_mode)
    assert add.code == 0, add.stdout + add.stderr
    assert_attached(world, pod)
    check = world.call("CHECK", conf, pod=pod, mode=other_mode)
    assert check.code == 0 and check.stdout == "", check.stdout
    delete = world.call("DEL", conf, pod=pod, mode=other_mode)
    assert delete.code == 0 and delete.stdout == "", delete.stdout
    assert_nothing_left(world, pod)


def test_socket_is_private_and_the_config_file_gives_defaults(world: MetaplugWorld, pod: Netns) -> None:
    """Socket 0600 in a 0700 dir; keys the shim's entry does not carry come from the daemon's config file."""
    conf = two_networks(world)
    daemon = world.start_daemon(delegates=conf["delegates"], confDir=conf["confDir"])
    assert stat.S_IMODE(daemon.socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket_path.parent.stat().st_mode) == 0o700
    thin_conf = {k: v for k, v in conf.items() if k not in ("delegates", "confDir")}
    add = world.call("ADD", thin_conf, pod=pod)
    assert add.code == 0, add.stdout
    assert_attached(world, pod)
    assert world.call("DEL", thin_conf, pod=pod).code == 0
    assert_nothing_left(world, pod)


def test_trace_context_reaches_the_delegates_in_both_modes(world: MetaplugWorld, pod: Netns, mode: str,
                                                           fakes: list[Path]) -> None:
    """TRACEPARENT and BAGGAGE of the runtime reach the delegates: inherited in thin mode, forwarded by the shim and
    handed to that call's delegates only in daemon mode."""
    log = world.tmp / "trace.log"
    fakes.append(log)
    conf = world.metaplug_conf(fake_net(world, "traced", log))
    trace = {"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "BAGGAGE": "pod=p1"}
    assert world.call("ADD", conf, pod=pod, extra_env=trace).code == 0
    assert world.call("DEL", conf, pod=pod, container_id="c1").code == 0  # a call without them
    add, delete = [e for e in fake_delegate.read_log(log) if e["command"] in ("ADD", "DEL")]
    assert {k: add["env"].get(k) for k in trace} == trace
    assert "TRACEPARENT" not in delete["env"]  # never leaks into another call


# ---------------------------------------------------------------- daemon down, spool, readiness


def test_daemon_down_add_fails_at_once_del_is_spooled_and_replayed_before_ready(world: MetaplugWorld,
                                                                                pod: Netns) -> None:
    conf = two_networks(world)
    daemon = world.start_daemon(delegates=conf["delegates"], confDir=conf["confDir"])
    assert world.call("ADD", conf, pod=pod).code == 0
    assert_attached(world, pod)
    assert daemon.stop() == 0

    started = time.monotonic()
    add = world.call("ADD", conf, pod=pod, container_id="c2")
    assert time.monotonic() - started < 2.0
    assert add.code == 1 and add.json["code"] == 11 and str(daemon.socket_path) in add.json["details"]
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0 and delete.stdout == "", delete.stdout  # the pod's deletion is not blocked
    records = list(daemon.spool_dir.glob("*.del"))
    assert len(records) == 1
    assert_attached(world, pod)  # nothing deleted yet: the DEL waits in the spool

    daemon.start()
    daemon.wait_ready()
    assert_nothing_left(world, pod)  # replayed before /readyz said 200
    assert list(daemon.spool_dir.iterdir()) == []
    assert "spooled DEL replayed" in daemon.log()


def test_a_failing_replay_keeps_the_daemon_not_ready_until_it_succeeds(world: MetaplugWorld, pod: Netns,
                                                                       fakes: list[Path]) -> None:
    log = world.tmp / "fake.log"
    fakes.append(log)
    conf = world.metaplug_conf(fake_net(world, "flaky", log))
    sidecar = world.tmp / "fakebin" / "fake.json"
    daemon = world.start_daemon()
    assert world.call("ADD", conf, pod=pod).code == 0
    daemon.stop()
    sidecar.write_text(json.dumps({"on": {"DEL": "error-json"}}))
    assert world.call("DEL", conf, pod=pod).code == 0  # spooled
    daemon.start()
    wait_for(lambda: any(e["command"] == "DEL" for e in fake_delegate.read_log(log)), what="a replay attempt")
    time.sleep(1.5)  # the next attempts fail too
    status, body = daemon.http("/readyz")
    assert status == 503 and "spooled DEL" in body, body
    assert len(list(daemon.spool_dir.glob("*.del"))) == 1 and world.state_files()
    sidecar.write_text("{}")  # the delegate recovers
    daemon.wait_ready()
    assert list(daemon.spool_dir.iterdir()) == [] and world.state_files() == []
    assert "spooled DEL failed" in daemon.log()


def test_an_undecodable_spool_record_is_set_aside_and_does_not_block(world: MetaplugWorld) -> None:
    daemon = world.start_daemon()
    daemon.stop()
    daemon.spool_dir.mkdir(parents=True, exist_ok=True)
    (daemon.spool_dir / "1-1.del").write_bytes(b"MPQ1 this is not a frame")
    daemon.start()
    daemon.wait_ready()
    assert [p.name for p in daemon.spool_dir.iterdir()] == ["1-1.del.corrupt"]


def test_readiness_needs_the_cluster_network(world: MetaplugWorld) -> None:
    """STATUS of the cluster network named in the daemon's config (cni.md 13) is part of /readyz."""
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")
    cluster["plugins"][0]["type"] = "no-such-plugin"
    daemon = world.start_daemon(delegates=[cluster], binDir=str(world.tmp / "bin"))
    wait_for(lambda: "no-such-plugin" in daemon.http("/readyz")[1], what="the first readiness check")
    time.sleep(1.5)  # and it stays so
    status, body = daemon.http("/readyz")
    assert status == 503 and "no-such-plugin" in body, body
    assert daemon.http("/healthz")[0] == 200


def _log_lines(daemon: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]


def _failing_status(world: MetaplugWorld, name: str, log: Path, *, fail: bool) -> dict[str, Any]:
    conf = fake_net(world, name, log, **({"on": {"STATUS": "error-json"}} if fail else {}),
                    error={"code": 50, "msg": f"{name} is down", "details": "the fake says so"})
    conf["cniVersion"] = "1.1.0"  # STATUS reaches delegates of 1.1.0 (cni.md 13)
    return conf


def test_readiness_checks_the_network_install_would_wrap(world: MetaplugWorld, fakes: list[Path]) -> None:
    """The shipped ConfigMap names no clusterNetwork: /readyz checks what a call would use, here the first conf file
    of cniConfDir (install wraps it); its failing STATUS keeps the daemon not ready, the reason in the body and the
    log, until it recovers."""
    log = world.tmp / "fake.log"
    fakes.append(log)
    conf_dir = world.tmp / "d" / "net.d"
    conf_dir.mkdir(parents=True)
    cluster = conf_dir / "10-flaky.conflist"
    cluster.write_text(json.dumps(_failing_status(world, "flaky", log, fail=True)))
    daemon = world.start_daemon(binDir=str(world.tmp / "bin"))
    wait_for(lambda: "flaky is down" in daemon.http("/readyz")[1], what="the first readiness check")
    status, body = daemon.http("/readyz")
    assert status == 503 and str(cluster) in body, body
    assert any(e["command"] == "STATUS" for e in fake_delegate.read_log(log))
    assert any(line.get("msg") == "not ready" and line.get("level") == "warning"
               and "flaky is down" in line.get("reason", "") for line in _log_lines(daemon)), daemon.log()
    cluster.write_text(json.dumps(_failing_status(world, "flaky", log, fail=False)))
    daemon.wait_ready()
    assert any(line.get("msg") == "ready" for line in _log_lines(daemon)), daemon.log()


def test_readiness_checks_the_cluster_network_of_the_shims_conflist(world: MetaplugWorld, fakes: list[Path]) -> None:
    """The shim's conflist (as install writes it) names the cluster network: that one is checked, not the first
    conf file, and not only what the daemon's config says."""
    log = world.tmp / "fake.log"
    fakes.append(log)
    conf_dir = world.tmp / "d" / "net.d"
    conf_dir.mkdir(parents=True)
    (conf_dir / "10-good.conflist").write_text(json.dumps(_failing_status(world, "good", log, fail=False)))
    bad = conf_dir / "20-bad.conflist"
    bad.write_text(json.dumps(_failing_status(world, "bad", log, fail=True)))
    (conf_dir / "00-metaplug.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "metaplug",
        "plugins": [{"type": "metaplug-shim", "socketPath": str(world.tmp / "d" / "run" / "mp.sock"),
                     "clusterNetwork": str(bad)}]}))
    daemon = world.start_daemon(binDir=str(world.tmp / "bin"))
    wait_for(lambda: "bad is down" in daemon.http("/readyz")[1], what="the first readiness check")
    status, body = daemon.http("/readyz")
    assert status == 503 and "00-metaplug.conflist" in body, body
    (conf_dir / "00-metaplug.conflist").unlink()  # without it, the first conf file (good) is what install wraps
    daemon.wait_ready()


# ---------------------------------------------------------------- crashes and shutdown


@pytest.mark.parametrize("del_mode", ["thin", "daemon"])
def test_sigkill_in_the_middle_of_an_add_then_del_leaves_nothing(world: MetaplugWorld, pod: Netns,
                                                                 fakes: list[Path], del_mode: str) -> None:
    """The cluster network is attached, the second attachment's delegate hangs, the daemon is killed: the journal
    lets the next DEL, from either mode, remove everything."""
    log = world.tmp / "hang.log"
    fakes.append(log)
    world.add_nad("slow", fake_net(world, "slow", log, on={"ADD": "hang"}))
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")), "slow")
    daemon = world.start_daemon()
    add = Background(world, "ADD", conf, pod=pod)
    try:
        wait_for(lambda: any(e["command"] == "ADD" for e in fake_delegate.read_log(log)), what="the hanging ADD")
        assert pod.addresses("eth0") == ["10.88.0.2/24"]
        daemon.kill()
        broken = add.result()
    finally:
        add.kill()
    assert broken.code == 1 and broken.json["code"] == 11  # the runtime sees "try again", then deletes
    if del_mode == "daemon":
        daemon.start()
    delete = world.call("DEL", conf, pod=pod, mode=del_mode)
    assert delete.code == 0, delete.stdout + delete.stderr
    assert_nothing_left(world, pod)
    assert [e["command"] for e in fake_delegate.read_log(log)].count("DEL") == 1


def test_sigterm_drains_the_call_in_flight_and_exits_0(world: MetaplugWorld, pod: Netns, fakes: list[Path]) -> None:
    log = world.tmp / "slow.log"
    fakes.append(log)
    conf = world.metaplug_conf(fake_net(world, "slowcluster", log, sleep=2))
    daemon = world.start_daemon()
    add = Background(world, "ADD", conf, pod=pod)
    try:
        wait_for(lambda: fake_delegate.read_log(log), what="the ADD to reach the delegate")
        assert daemon.proc is not None
        os.kill(daemon.proc.pid, signal.SIGTERM)
        wait_for(lambda: not daemon.socket_path.exists(), timeout=5, what="the daemon to stop accepting")
        refused = world.call("ADD", conf, pod=pod, container_id="late")
        assert refused.code == 1 and refused.json["code"] == 11
        result = add.result()
    finally:
        add.kill()
    assert result.code == 0, result.stdout + result.stderr
    assert result.json["ips"][0]["address"] == "10.99.0.2/24"
    assert daemon.stop() == 0
    assert world.call("DEL", conf, pod=pod, mode="thin").code == 0
    assert world.state_files() == []


def test_sigterm_taken_by_another_thread_still_stops_the_daemon(world: MetaplugWorld, pod: Netns) -> None:
    """The kernel gives a process-directed signal to any thread that does not block it. CPython runs the handler in
    the main thread only, and a main thread blocked in select() is not woken when another thread took the signal:
    the daemon must wake itself (found by a clean-clone CI run: podman's SIGTERM was ignored for the whole grace
    period, then SIGKILL)."""
    daemon = world.start_daemon()
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    assert world.call("ADD", conf, pod=pod).code == 0  # the pooled call threads exist now, idle
    assert daemon.proc is not None
    pid = daemon.proc.pid
    others = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert others, "the daemon runs threads besides its main one"
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(pid, others[-1], signal.SIGTERM) == 0, os.strerror(ctypes.get_errno())
    wait_for(lambda: daemon.proc is not None and daemon.proc.poll() is not None, timeout=10,
             what="the daemon to exit after SIGTERM")
    assert daemon.proc.returncode == 0
    assert world.call("DEL", conf, pod=pod, mode="thin").code == 0
    assert world.state_files() == []


THREADS_FAIL = """
import os
_fail = os.environ.pop("METAPLUG_TEST_CALL_THREADS_FAIL", "")
if _fail:
    from metaplug.cni import workers

    _real = workers.Pool.submit
    _first, _last = map(int, _fail.split("-"))
    _seen = [0]

    def _submit(self, fn):
        if self.name == "metaplug-call":
            _seen[0] += 1
            if _first <= _seen[0] <= _last:
                raise RuntimeError("can't start new thread")
        return _real(self, fn)

    workers.Pool.submit = _submit
"""


def test_no_thread_to_hand_the_waiting_on_to_and_calls_are_still_served(world: MetaplugWorld, pod: Netns) -> None:
    """Fault injection: the call threads' pool cannot start a thread (as at a cgroup's pids limit) for the second to
    fourth hand-on, i.e. at the first three calls. The thread that took each call waits for the next connection
    itself after serving it: nothing is refused, nothing hangs, and once threads start again all is as before."""
    injector = world.tmp / "inject"
    injector.mkdir()
    (injector / "sitecustomize.py").write_text(THREADS_FAIL)
    world.daemon = Daemon(world.node, world.tmp / "d", {"stateDir": str(world.state_dir)},
                          env={"CNI_PATH": world.cni_path, "PYTHONPATH": str(injector),
                               "METAPLUG_TEST_CALL_THREADS_FAIL": "2-4"}).start()
    world.mode = "daemon"
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    for verb in ("ADD", "CHECK", "DEL", "ADD"):
        done = world.call(verb, conf, pod=pod, timeout=30)
        assert done.code == 0, (verb, done.stdout, world.daemon.log())
    (address,) = pod.addresses("eth0")  # host-local hands out the next address after a release: .3
    assert ipaddress.ip_interface(address).network == ipaddress.ip_network("10.88.0.0/24")
    assert world.call("DEL", conf, pod=pod, timeout=30).code == 0
    assert set(pod.links()) == {"lo"} and world.state_files() == []
    failures = [line for line in world.daemon.log().splitlines() if "cannot start a call thread" in line]
    assert len(failures) == 3, world.daemon.log()
    world.stop_daemon()  # exits 0, no traceback logged


# ---------------------------------------------------------------- concurrency


def test_same_container_serializes_while_different_containers_overlap(world: MetaplugWorld, pod: Netns,
                                                                      fakes: list[Path]) -> None:
    log = world.tmp / "slow.log"
    fakes.append(log)
    conf = world.metaplug_conf(fake_net(world, "slowcluster", log, sleep=1.5))
    world.start_daemon()
    # two ifnames of ONE container (different journals, so only the daemon's per-container lock orders them),
    # and two other containers
    keys = (("same", "eth0"), ("same", "eth1"), ("other1", "eth0"), ("other2", "eth0"))
    added = results([Background(world, "ADD", conf, pod=pod, container_id=cid, ifname=ifname) for cid, ifname in keys])
    assert [r.code for r in added] == [0, 0, 0, 0], [r.stdout for r in added]
    adds = [e for e in fake_delegate.read_log(log) if e["command"] == "ADD"]
    starts: dict[str, list[float]] = {}
    for e in adds:
        starts.setdefault(e["env"]["CNI_CONTAINERID"], []).append(e["time"])
    same = sorted(starts["same"])
    assert same[1] - same[0] >= 1.4  # one at a time
    firsts = sorted(min(v) for v in starts.values())
    assert firsts[-1] - firsts[0] < 1.4  # the three containers started together
    deleted = results([Background(world, "DEL", conf, pod=pod, container_id=cid, ifname=ifname)
                       for cid, ifname in keys])
    assert [r.code for r in deleted] == [0, 0, 0, 0]
    assert world.state_files() == []


def test_above_max_concurrent_calls_callers_wait(world: MetaplugWorld, pod: Netns, fakes: list[Path]) -> None:
    log = world.tmp / "slow.log"
    fakes.append(log)
    conf = world.metaplug_conf(fake_net(world, "slowcluster", log, sleep=1))
    daemon = world.start_daemon(maxConcurrentCalls=1)
    calls = [Background(world, "ADD", conf, pod=pod, container_id=f"c{i}") for i in range(3)]
    try:
        wait_for(lambda: metric(daemon.http("/metrics")[1], "metaplug_calls_waiting") >= 1, timeout=10,
                 what="a waiting call")
    finally:
        done = results(calls)
    assert [r.code for r in done] == [0, 0, 0]
    times = sorted(e["time"] for e in fake_delegate.read_log(log) if e["command"] == "ADD")
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))  # never two at once


def test_metrics_count_calls_delegates_and_journals(world: MetaplugWorld, pod: Netns) -> None:
    conf = two_networks(world)
    daemon = world.start_daemon()
    assert world.call("ADD", conf, pod=pod).code == 0
    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_calls_total", verb="ADD", outcome="success") == 1
    assert metric(text, "metaplug_call_duration_seconds_count", verb="ADD") == 1
    assert metric(text, "metaplug_journal_entries", state_dir=str(world.state_dir)) == 1
    assert metric(text, "metaplug_delegate_calls_total", plugin="bridge", verb="ADD", outcome="success") == 2
    assert metric(text, "metaplug_calls_in_flight") == 0
    assert world.call("CHECK", {**conf, "cniVersion": "0.3.1"}, pod=pod).code == 1  # CHECK needs 0.4.0+
    assert world.call("DEL", conf, pod=pod).code == 0
    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_calls_total", verb="CHECK", outcome="error", code="1") == 1
    assert metric(text, "metaplug_calls_total", verb="DEL", outcome="success") == 1
    assert metric(text, "metaplug_journal_entries", state_dir=str(world.state_dir)) == 0
    assert metric(text, "metaplug_delegate_call_duration_seconds_count", plugin="bridge", verb="DEL") == 2


@pytest.mark.parametrize("delegates", ["reference", "bundled"])
def test_concurrent_pods_through_the_daemon_leave_nothing_behind(world: MetaplugWorld, netns_factory: NetnsFactory,
                                                                 delegates: str) -> None:
    """Ten pods at once; with the bundled delegates they run in-process, concurrently, in the daemon's threads."""
    if delegates == "bundled":
        world.plugins = dict(MP_PLUGINS)
    conf = two_networks(world)
    world.start_daemon()
    pods = [netns_factory.new("pod") for _ in range(10)]
    adds = results([Background(world, "ADD", conf, pod=p, container_id=f"p{i}") for i, p in enumerate(pods)])
    assert [a.code for a in adds] == [0] * 10, [a.stdout for a in adds if a.code]
    addresses = {p.addresses("net1")[0] for p in pods}
    assert len(addresses) == 10  # ten distinct IPs: host-local under concurrent calls
    dels = results([Background(world, "DEL", conf, pod=p, container_id=f"p{i}") for i, p in enumerate(pods)])
    assert [d.code for d in dels] == [0] * 10
    assert world.reservations() == [] and world.state_files() == []
    assert all(set(p.links()) == {"lo"} for p in pods)


# ---------------------------------------------------------------- bundled delegates in-process



def normalized(result: dict[str, Any]) -> dict[str, Any]:
    """A result with what differs between two pods blanked: MACs, sandbox paths, host veth names (random), the host
    part of addresses."""
    out = json.loads(json.dumps(result))
    for iface in out.get("interfaces", []):
        iface["mac"] = "*" if "mac" in iface else None
        if iface["name"].startswith("veth"):
            iface["name"] = "veth*"
        if "sandbox" in iface:
            iface["sandbox"] = "*"
    for ip in out.get("ips", []):
        ip["address"] = str(ipaddress.ip_interface(ip["address"]).network)
    return out


def test_bundled_delegates_are_served_in_process_with_the_executables_results(world: MetaplugWorld,
                                                                              netns_factory: NetnsFactory) -> None:
    """The daemon serves mp-* without exec: stand-ins that fail when executed are never run, and the result equals
    the one the real executables give in thin mode."""
    world.plugins = dict(MP_PLUGINS)
    world.add_nad("blue", world.macvlan_static_net("blue"))
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)),
                           [{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]}, {"name": "red"}])
    thin_pod, daemon_pod = netns_factory.new("pod"), netns_factory.new("pod")
    thin = world.call("ADD", conf, pod=thin_pod, container_id="thin", mode="thin")
    assert thin.code == 0, thin.stdout + thin.stderr
    assert world.call("DEL", conf, pod=thin_pod, container_id="thin", mode="thin").code == 0

    decoys, marker = world.tmp / "decoys", world.tmp / "executed"
    decoys.mkdir()
    for name in (*MP_PLUGINS.values(), "mp-loopback"):
        (decoys / name).write_text(f"#!/bin/sh\necho {name} >> {marker}\nexit 1\n")
        (decoys / name).chmod(0o755)
    world.cni_path = f"{decoys}:/usr/lib/cni"
    daemon_conf = {**conf, "binDir": str(decoys)}
    daemon = world.start_daemon()
    served = world.call("ADD", daemon_conf, pod=daemon_pod, container_id="daemon")
    assert served.code == 0, served.stdout + served.stderr
    assert not marker.exists()
    assert normalized(served.json) == normalized(thin.json)
    assert daemon_pod.addresses("blue0") == ["192.168.77.10/24"] and daemon_pod.has_link("net2")
    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_delegate_calls_total", plugin="mp-bridge", verb="ADD", outcome="success") == 2
    assert world.call("CHECK", daemon_conf, pod=daemon_pod, container_id="daemon").code == 0
    assert world.call("DEL", daemon_conf, pod=daemon_pod, container_id="daemon").code == 0
    assert set(daemon_pod.links()) == {"lo"} and world.state_files() == []
    assert not marker.exists()


def test_in_process_can_be_turned_off(world: MetaplugWorld, pod: Netns, tmp_path: Path) -> None:
    """inProcessDelegates: false execs the bundled delegates like any other."""
    world.plugins = dict(MP_PLUGINS)
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    daemon = world.start_daemon(inProcessDelegates=False)
    assert world.call("ADD", conf, pod=pod).code == 0
    assert '"inProcess": []' in daemon.log()
    assert world.call("DEL", conf, pod=pod).code == 0


@pytest.mark.parametrize("delegates", ["reference", "bundled"])
def test_a_hundred_pods_at_once_keep_the_daemon_bounded(world: MetaplugWorld, netns_factory: NetnsFactory,
                                                        delegates: str) -> None:
    """A burst of 100 pods: every one gets its own address, the daemon's peak RSS stays under 80 MiB (issue 11's
    bound; measured 33 MiB with the reference plugins), at most maxConcurrentCalls run at once (the rest wait), and
    DEL of all leaves nothing; with the bundled delegates in-process too."""
    if delegates == "bundled":
        world.plugins = dict(MP_PLUGINS)
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    daemon = world.start_daemon(maxConcurrentCalls=8)
    pods = [netns_factory.new("pod") for _ in range(100)]
    adds = results([Background(world, "ADD", conf, pod=p, container_id=f"h{i}") for i, p in enumerate(pods)])
    assert [a.code for a in adds].count(0) == 100, [a.stdout for a in adds if a.code][:3]
    assert len({p.addresses("eth0")[0] for p in pods}) == 100
    assert daemon.proc is not None
    with open(f"/proc/{daemon.proc.pid}/status") as fh:
        peak_kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    assert peak_kib < 80 * 1024, f"daemon peak RSS {peak_kib} KiB"
    text = daemon.http("/metrics")[1]
    assert metric(text, "metaplug_calls_total", verb="ADD", outcome="success") == 100
    assert metric(text, "metaplug_call_duration_seconds_count", verb="ADD") == 100
    dels = results([Background(world, "DEL", conf, pod=p, container_id=f"h{i}") for i, p in enumerate(pods)])
    assert [d.code for d in dels].count(0) == 100
    assert world.reservations() == [] and world.state_files() == []
