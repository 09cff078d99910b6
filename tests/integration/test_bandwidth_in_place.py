"""`metaplug set-bandwidth` (issue 12.3): the shaping of a running attachment changes while its interface, its
addresses and a live TCP connection between the node and the pod namespaces survive; measured with tc and with the
rate of traffic over that connection (bounded in time)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from metaplug.netns import run_in_netns
from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns
from tests.integration.test_hotplug import Cli, journal_body

PORT = 5301
CHUNK = b"x" * 65536


def shaped_pod(world: MetaplugWorld, rate: int) -> dict[str, Any]:
    shaped = world.bridge_net("shaped", "10.95.0.0/24", "mpshape0")
    shaped["plugins"].append({"type": "bandwidth", "capabilities": {"bandwidth": True}})
    world.add_nad("shaped", shaped)
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    return world.annotated(world.metaplug_conf(cluster), [{
        "name": "shaped", "interface": "sh0",
        "bandwidth": {"ingressRate": rate, "ingressBurst": 400_000, "egressRate": rate, "egressBurst": 400_000}}])


class Stream:
    """A TCP connection from the node namespace to a listener in the pod, pushing bytes as fast as it may."""

    def __init__(self, node: Netns, pod: Netns, address: str) -> None:
        def listen() -> socket.socket:
            server = socket.create_server(("0.0.0.0", PORT))
            server.settimeout(10)
            return server

        server = run_in_netns(pod.path, listen)
        self.sender = run_in_netns(node.path, lambda: socket.create_connection((address, PORT), timeout=10))
        self.receiver, _ = server.accept()
        server.close()
        self.receiver.settimeout(10)
        self.received = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._receive, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        try:
            while not self.stop.is_set():
                self.sender.sendall(CHUNK)
        except OSError as exc:
            if not self.stop.is_set():
                self.error = exc

    def _receive(self) -> None:
        try:
            while not self.stop.is_set():
                data = self.receiver.recv(1 << 20)
                if not data:
                    raise ConnectionError("connection closed")
                self.received += len(data)
        except OSError as exc:
            if not self.stop.is_set():
                self.error = exc

    def rate(self, seconds: float = 2.0) -> float:
        """Bits per second received over `seconds`, after a settling second."""
        time.sleep(1.0)
        start, began = self.received, time.monotonic()
        time.sleep(seconds)
        assert self.error is None, self.error
        return (self.received - start) * 8 / (time.monotonic() - began)

    def close(self) -> None:
        self.stop.set()
        for sock in (self.sender, self.receiver):
            sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def shaped(world: MetaplugWorld, pod: Netns, node: Netns) -> Iterator[tuple[dict[str, Any], Stream]]:
    conf = shaped_pod(world, 4_000_000)
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout + add.stderr
    stream = Stream(node, pod, "10.95.0.2")
    try:
        yield conf, stream
    finally:
        stream.close()
        world.call("DEL", conf, pod=pod)


def host_veth(world: MetaplugWorld) -> str:
    (attachment,) = [a for a in journal_body(world)["attachments"] if a["ifname"] == "sh0"]
    names = [i["name"] for i in attachment["result"]["interfaces"] if not i.get("sandbox")]
    return next(n for n in names if n.startswith("veth"))


def test_bandwidth_changes_on_a_live_connection(world: MetaplugWorld, pod: Netns, node: Netns,
                                                shaped: tuple[dict[str, Any], Stream]) -> None:
    conf, stream = shaped
    veth = host_veth(world)
    link_before = pod.links()["sh0"]
    slow = stream.rate()
    assert 2_000_000 < slow < 6_000_000, slow  # ingressRate 4 Mbit/s (R12)
    assert "rate 4Mbit" in node.exec(["tc", "qdisc", "show", "dev", veth]).stdout.decode()

    code, out = Cli(world, conf)("set-bandwidth", "c1", "sh0", "--ingress-rate", "40000000", "--ingress-burst",
                                 "800000", "--egress-rate", "40000000", "--egress-burst", "800000")
    assert code == 0, out
    fast = stream.rate()
    print(f"rate at 4 Mbit/s: {slow / 1e6:.2f} Mbit/s; at 40 Mbit/s: {fast / 1e6:.2f} Mbit/s")
    assert fast > 3 * slow and fast < 60_000_000, (slow, fast)
    assert len([n for n in node.links() if n.startswith("bwp")]) == 1, list(node.links())  # egress: one ifb
    qdiscs = node.exec(["tc", "qdisc", "show", "dev", veth]).stdout.decode()
    assert "rate 40Mbit" in qdiscs and "rate 4Mbit" not in qdiscs, qdiscs
    assert stream.error is None  # the same connection carried on
    link_after = pod.links()["sh0"]
    assert (link_after["ifindex"], link_after["address"]) == (link_before["ifindex"], link_before["address"])
    assert pod.addresses("sh0") == ["10.95.0.2/24"]

    (attachment,) = [a for a in journal_body(world)["attachments"] if a["ifname"] == "sh0"]
    assert attachment["capabilityArgs"]["bandwidth"] == {"ingressRate": 40_000_000, "ingressBurst": 800_000,
                                                         "egressRate": 40_000_000, "egressBurst": 800_000}
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr

    code, out = Cli(world, conf)("set-bandwidth", "c1", "eth0", "--ingress-rate", "1000")
    assert code == 1 and out["code"] == 7 and "bandwidth" in out["details"], out  # no bandwidth plugin there


def test_pod_del_after_set_bandwidth_leaves_nothing(world: MetaplugWorld, pod: Netns, node: Netns,
                                                    shaped: tuple[dict[str, Any], Stream]) -> None:
    conf, stream = shaped
    code, out = Cli(world, conf)("set-bandwidth", "c1", "sh0", "--ingress-rate", "8000000", "--ingress-burst",
                                 "400000")
    assert code == 0, out
    # the new limits replace the old ones whole: no egress limit now, so the old ifb device went and none came
    assert not [n for n in node.links() if n.startswith("bwp")], list(node.links())
    assert "rate 8Mbit" in node.exec(["tc", "qdisc", "show", "dev", host_veth(world)]).stdout.decode()
    stream.close()
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == [] and world.reservations() == []
    assert not [n for n in node.links() if n.startswith(("veth", "bwp"))]


def test_plugins_chained_after_bandwidth(world: MetaplugWorld, pod: Netns, node: Netns) -> None:
    """A plugin chained after the bandwidth plugin: with the reference plugin (which passes its prevResult on) it is
    not run again and the attachment's result stays; after a shaping plugin whose result changes with the limits, it
    runs again (DEL, then ADD with that new result as prevResult) and its output becomes the attachment's result."""
    fakes, calls = world.tmp / "fakebin", world.tmp / "calls.jsonl"
    fake_delegate.install(fakes, "recorder", {"log": str(calls)})
    fake_delegate.install(fakes, "shaper", {"stamp": "bandwidth"})
    reference = world.bridge_net("chained", "10.94.0.0/24", "mpchain0")
    reference["plugins"] += [{"type": "bandwidth", "capabilities": {"bandwidth": True}}, {"type": "recorder"}]
    world.add_nad("chained", reference)
    stamping = world.bridge_net("stamped", "10.93.0.0/24", "mpstamp0")
    stamping["plugins"] += [{"type": "shaper", "capabilities": {"bandwidth": True}}, {"type": "recorder"}]
    world.add_nad("stamped", stamping)
    limits = {"ingressRate": 4_000_000, "ingressBurst": 400_000}
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    conf = world.annotated(world.metaplug_conf(cluster, binDir=str(fakes)), [
        {"name": "chained", "interface": "ch0", "bandwidth": limits},
        {"name": "stamped", "interface": "st0", "bandwidth": limits}])
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout + add.stderr

    def recorder_calls() -> list[tuple[str, str]]:
        return [(c["command"], c["env"]["CNI_IFNAME"]) for c in fake_delegate.read_log(calls)
                if c["command"] in ("ADD", "DEL")]

    def result_of(ifname: str) -> dict[str, Any]:
        (found,) = [a for a in journal_body(world)["attachments"] if a["ifname"] == ifname]
        return dict(found["result"])

    assert recorder_calls() == [("ADD", "ch0"), ("ADD", "st0")]
    before = result_of("ch0")
    cli = Cli(world, conf)
    code, out = cli("set-bandwidth", "c1", "ch0", "--ingress-rate", "8000000", "--ingress-burst", "400000")
    assert code == 0, out
    assert recorder_calls() == [("ADD", "ch0"), ("ADD", "st0")]  # not run again
    assert result_of("ch0") == before
    veth = next(i["name"] for i in before["interfaces"] if not i.get("sandbox") and i["name"].startswith("veth"))
    assert "rate 8Mbit" in node.exec(["tc", "qdisc", "show", "dev", veth]).stdout.decode()

    code, out = cli("set-bandwidth", "c1", "st0", "--ingress-rate", "9000000", "--ingress-burst", "400000")
    assert code == 0, out
    logged = [c for c in fake_delegate.read_log(calls) if c["command"] in ("ADD", "DEL")]
    assert [(c["command"], c["env"]["CNI_IFNAME"]) for c in logged[2:]] == [("DEL", "st0"), ("ADD", "st0")]
    stamp = 'bandwidth={"ingressBurst": 400000, "ingressRate": 9000000}'
    assert logged[-1]["stdin"]["prevResult"]["dns"]["options"] == [stamp]  # the shaper's new result
    assert logged[-2]["stdin"]["prevResult"]["dns"]["options"] == [stamp.replace("9000000", "4000000")]  # the old
    assert result_of("st0")["dns"]["options"] == [stamp]
    assert pod.addresses("st0") == ["10.93.0.2/24"] and pod.addresses("ch0") == ["10.94.0.2/24"]
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == [] and world.reservations() == []
