"""chain.py with the Debian reference plugins in real namespaces (cni.md duties 11, 18-21, 24, 34, 35).

`python -m metaplug.cni.tool` is the container runtime, run inside the test's node namespace (`node.exec`), so bridges,
veths, macvlans and iptables rules are made there and vanish with it. Every state dir is under tmp_path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REFERENCE_PLUGINS
from tests.helpers.fake_delegate import install, read_log
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(REFERENCE_PLUGINS, "bridge").exists(), reason="reference CNI plugins not installed"),
]

SUBNET_PREFIX = "10.77.0."


class Runtime:
    """Writes conflists into tmp_path and drives the tool inside `node`."""

    def __init__(self, node: Netns, tmp: Path) -> None:
        self.node = node
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.cache = tmp / "cache"
        self.ipam = tmp / "ipam"
        self.path = f"{self.bin}:{REFERENCE_PLUGINS}"

    def conflist(self, name: str, *plugins: dict[str, Any]) -> Path:
        path = self.tmp / f"{name}.conflist"
        path.write_text(json.dumps({"cniVersion": "1.0.0", "name": name, "plugins": list(plugins)}))
        return path

    def bridge(self, bridge: str = "mpbr0") -> dict[str, Any]:
        return {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
                "ipam": {"type": "host-local", "subnet": SUBNET_PREFIX + "0/24", "dataDir": str(self.ipam)}}

    def tool(self, verb: str, conf: Path, netns: str = "", *opts: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [str(VENV_BIN / "python"), "-m", "metaplug.cni.tool", verb, str(conf)]
        if netns:
            cmd.append(netns)
        cmd += ["--path", self.path, "--cache-dir", str(self.cache), "--container-id", "ctr-test", *opts]
        return self.node.exec(cmd, check=False)

    def ok(self, verb: str, conf: Path, netns: str = "", *opts: str) -> Any:
        proc = self.tool(verb, conf, netns, *opts)
        assert proc.returncode == 0, f"{verb} failed: {proc.stdout.decode()} {proc.stderr.decode()}"
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def ip_reserved(self, network: str, ip: str) -> bool:
        return (self.ipam / network / ip).exists()

    def bridge_ports(self, bridge: str = "mpbr0") -> list[str]:
        return [name for name, link in self.node.links().items() if link.get("master") == bridge]


@pytest.fixture
def runtime(node: Netns, tmp_path: Path) -> Runtime:
    return Runtime(node, tmp_path)


def error_of(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert proc.returncode == 1, proc.stdout.decode() + proc.stderr.decode()
    err: dict[str, Any] = json.loads(proc.stdout)
    return err


def test_duty19_20_21_bridge_host_local_add_check_del_twice(runtime: Runtime, pod: Netns) -> None:
    conf = runtime.conflist("brnet", runtime.bridge())
    result = runtime.ok("add", conf, pod.path)
    assert pod.addresses("eth0") == [SUBNET_PREFIX + "2/24"]
    assert result["ips"][0]["address"] == SUBNET_PREFIX + "2/24"
    assert next(i for i in result["interfaces"] if i.get("sandbox") == pod.path)["name"] == "eth0"
    assert (runtime.cache / "results" / "brnet-ctr-test-eth0").exists()  # duty 35
    assert runtime.ok("check", conf, pod.path) is None  # CHECK gets the cached result (duty 21)
    assert runtime.ok("del", conf, pod.path) is None
    assert not pod.has_link("eth0") and runtime.bridge_ports() == []
    assert not runtime.ip_reserved("brnet", SUBNET_PREFIX + "2")
    assert not (runtime.cache / "results" / "brnet-ctr-test-eth0").exists()
    runtime.ok("del", conf, pod.path)  # duty 11: a repeated DEL succeeds


@pytest.mark.skipif(shutil.which("iptables") is None, reason="portmap needs iptables")
def test_duty18_34_portmap_gets_containerd_style_port_mappings(runtime: Runtime, pod: Netns) -> None:
    """Capitalised keys (containerd) reach portmap; only the node namespace's firewall is touched.

    No CHECK here: portmap's CHECK looks for IPv6 rules of an IPv4-only pod (containernetworking/plugins#819).
    """
    conf = runtime.conflist("pmnet", runtime.bridge(), {"type": "portmap", "capabilities": {"portMappings": True}})
    caps = {"portMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp"}]}
    runtime.ok("add", conf, pod.path, "--cap-args", json.dumps(caps))
    rules = runtime.node.exec(["iptables", "-t", "nat", "-S"]).stdout.decode()
    assert f"--to-destination {SUBNET_PREFIX}2:80" in rules and "--dport 18080" in rules
    runtime.ok("del", conf, pod.path, "--cap-args", json.dumps(caps))
    rules = runtime.node.exec(["iptables", "-t", "nat", "-S"]).stdout.decode()
    assert "18080" not in rules and not pod.has_link("eth0")
    runtime.ok("del", conf, pod.path)


def test_macvlan_static_on_a_veth_uplink(runtime: Runtime, pod: Netns, netns_factory: NetnsFactory) -> None:
    netns_factory.veth_uplink(runtime.node, "up0")
    conf = runtime.conflist("mvnet", {"type": "macvlan", "master": "up0", "mode": "bridge",
                                      "ipam": {"type": "static", "addresses": [{"address": "192.168.50.10/24"}]}})
    result = runtime.ok("add", conf, pod.path, "--ifname", "net1")
    assert pod.addresses("net1") == ["192.168.50.10/24"]
    assert pod.links()["net1"]["address"] == result["interfaces"][0]["mac"]
    runtime.ok("check", conf, pod.path, "--ifname", "net1")
    runtime.ok("del", conf, pod.path, "--ifname", "net1")
    assert not pod.has_link("net1")
    runtime.ok("del", conf, pod.path, "--ifname", "net1")


def test_duty18_tuning_in_a_chain_gets_its_mac_capability(runtime: Runtime, pod: Netns) -> None:
    tuning = {"type": "tuning", "capabilities": {"mac": True}, "mtu": 1400, "dataDir": str(runtime.tmp / "tuning")}
    conf = runtime.conflist("tunet", runtime.bridge(), tuning)
    mac = "c2:11:22:33:44:55"
    result = runtime.ok("add", conf, pod.path, "--cap-args", json.dumps({"mac": mac}))
    link = pod.links()["eth0"]
    assert (link["address"], link["mtu"]) == (mac, 1400)
    assert [i["mac"] for i in result["interfaces"] if i["name"] == "eth0"] == [mac]  # tuning's result is final
    runtime.ok("check", conf, pod.path, "--cap-args", json.dumps({"mac": mac}))
    runtime.ok("del", conf, pod.path, "--cap-args", json.dumps({"mac": mac}))
    assert not pod.has_link("eth0") and runtime.bridge_ports() == []
    runtime.ok("del", conf, pod.path)


def test_duty11_del_after_the_pod_namespace_is_gone(runtime: Runtime, pod: Netns) -> None:
    conf = runtime.conflist("brnet", runtime.bridge())
    runtime.ok("add", conf, pod.path)
    assert runtime.ip_reserved("brnet", SUBNET_PREFIX + "2")
    pod.delete()
    runtime.ok("del", conf, pod.path)
    assert not runtime.ip_reserved("brnet", SUBNET_PREFIX + "2")
    # The kernel destroys a deleted namespace's veth peers asynchronously (a work queue): on a loaded machine the node
    # side may linger a moment after `ip netns delete`; it must go on its own, with no DEL needed.
    deadline = time.monotonic() + 10
    while runtime.bridge_ports() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runtime.bridge_ports() == []
    runtime.ok("del", conf, pod.path)


def test_duty19_delegate_failing_mid_chain_then_runtime_deletes(runtime: Runtime, pod: Netns) -> None:
    install(runtime.bin, "fake")
    log = runtime.tmp / "fake.jsonl"
    failing = {"type": "fake", "fake": {"mode": "error-json", "log": str(log), "on": {"DEL": "ok"},
                                        "error": {"code": 120, "msg": "fake refuses"}}}
    conf = runtime.conflist("brnet", runtime.bridge(), failing)
    err = error_of(runtime.tool("add", conf, pod.path))
    assert (err["code"], err["msg"]) == (120, "fake refuses")
    assert pod.has_link("eth0"), "without rollback the bridge's work stays for the runtime to DEL"
    (call,) = read_log(log)
    assert call["stdin"]["prevResult"]["ips"][0]["address"] == SUBNET_PREFIX + "2/24"
    runtime.ok("del", conf, pod.path)
    assert not pod.has_link("eth0") and runtime.bridge_ports() == []
    assert not runtime.ip_reserved("brnet", SUBNET_PREFIX + "2")


def test_duty19_rollback_removes_what_the_chain_made(runtime: Runtime, pod: Netns) -> None:
    install(runtime.bin, "fake")
    log = runtime.tmp / "fake.jsonl"
    failing = {"type": "fake", "fake": {"mode": "error-json", "log": str(log), "on": {"DEL": "ok"}}}
    conf = runtime.conflist("brnet", runtime.bridge(), failing)
    err = error_of(runtime.tool("add", conf, pod.path, "--rollback"))
    assert err["code"] == 117
    assert not pod.has_link("eth0") and runtime.bridge_ports() == []
    assert not runtime.ip_reserved("brnet", SUBNET_PREFIX + "2")
    assert [c["command"] for c in read_log(log)] == ["ADD", "DEL"]


def test_duty24_hanging_delegate_and_its_child_are_killed_at_timeout(runtime: Runtime, pod: Netns) -> None:
    install(runtime.bin, "fake")
    log = runtime.tmp / "fake.jsonl"
    conf = runtime.conflist("hang", {"type": "fake", "fake": {"mode": "hang", "log": str(log)}})
    start = time.monotonic()
    err = error_of(runtime.tool("add", conf, pod.path, "--timeout", "1"))
    assert time.monotonic() - start < 10
    assert err["code"] == 100 and "timed out after 1 s" in err["msg"]
    (call,) = read_log(log)
    for pid in (call["pid"], call["child_pid"]):
        assert not _alive(pid), f"process {pid} of the hanging delegate survived"


def _alive(pid: int) -> bool:
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.05)
    return True
