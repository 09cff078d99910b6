"""Hot-plug and unplug on a running pod (issue 12): `metaplug attach|detach` against real namespaces and the reference
plugins, in thin mode (in-process) and through the daemon; the journal, CHECK and the pod's DEL cover the changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns


class Cli:
    """`metaplug attach|detach|set-bandwidth ... --json` run in the node namespace, with metaplug's conflist."""

    def __init__(self, world: MetaplugWorld, conf: dict[str, Any]) -> None:
        self.world = world
        plugin = {k: v for k, v in conf.items() if k not in ("cniVersion", "name", "runtimeConfig")}
        if world.daemon is not None:
            plugin = {**plugin, "type": "metaplug-shim", "socketPath": str(world.daemon.socket_path)}
        self.path = world.tmp / "00-metaplug.conflist"
        self.path.write_text(json.dumps({"cniVersion": "1.1.0", "name": conf["name"], "plugins": [plugin]}))

    def __call__(self, *argv: str) -> tuple[int, dict[str, Any]]:
        proc = self.world.node.exec([str(VENV_BIN / "metaplug"), *argv, "--config", str(self.path), "--json"],
                                    check=False, timeout=120)
        assert proc.stdout.strip(), proc.stderr.decode()
        return proc.returncode, json.loads(proc.stdout)


def journal_body(world: MetaplugWorld, container: str = "c1") -> dict[str, Any]:
    return json.loads((world.state_dir / container / "mp-eth0.json").read_text())["body"]


def assert_status_is_the_pod(world: MetaplugWorld, pod: Netns) -> list[tuple[str, str, list[str]]]:
    """network-status (the journal's) equals what is in the pod: every interface but lo, with its MAC and addresses."""
    status = journal_body(world)["status"]
    links = {name: link for name, link in pod.links().items() if name != "lo"}
    assert sorted(s["interface"] for s in status) == sorted(links)
    for entry in status:
        assert entry["mac"] == links[entry["interface"]]["address"]
        assert sorted(a.split("/")[0] for a in pod.addresses(entry["interface"])) == sorted(entry["ips"])
    assert [s["default"] for s in status].count(True) == 1
    return [(s["interface"], s["name"], s["ips"]) for s in status]


def pod_with_blue(world: MetaplugWorld) -> dict[str, Any]:
    world.add_nad("blue", world.macvlan_static_net("blue"))
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("green", world.bridge_net("green", "10.98.0.0/24", "mpgreen0"))
    world.add_nad("static", world.macvlan_static_net("static"))
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    return world.annotated(world.metaplug_conf(cluster),
                           [{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]}])


def test_attach_detach_several_then_pod_del(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """Attach of one and of several elements (next free net<N>, explicit names, static ips and mac), detach of a
    hot-plugged one and of one attached at creation, network-status = the journal = the pod after every change,
    CHECK covering them, the pod's DEL removing everything with no IP or interface leaked; thin and daemon."""
    conf = pod_with_blue(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    cli = Cli(world, conf)

    code, out = cli("attach", "c1", "red")
    assert code == 0, out
    assert (out["ifname"], out["network"], out["ips"]) == ("net1", "default/red", ["10.99.0.2"])
    assert pod.addresses("net1") == ["10.99.0.2/24"]
    assert pod.addresses("eth0") == ["10.88.0.2/24"] and pod.addresses("blue0") == ["192.168.77.10/24"]

    code, out = cli("attach", "c1", "default/green")
    assert code == 0 and out["ifname"] == "net2", out
    code, out = cli("attach", "c1", "static@st0", "--ips", "192.168.66.5/24", "--mac", "02:00:00:00:66:05")
    assert code == 0 and out["ifname"] == "st0", out
    assert pod.addresses("st0") == ["192.168.66.5/24"]
    assert pod.links()["st0"]["address"] == "02:00:00:00:66:05"
    assert out["status"] == journal_body(world)["status"]
    assert assert_status_is_the_pod(world, pod) == [
        ("eth0", "cluster", ["10.88.0.2"]), ("blue0", "default/blue", ["192.168.77.10"]),
        ("net1", "default/red", ["10.99.0.2"]), ("net2", "default/green", ["10.98.0.2"]),
        ("st0", "default/static", ["192.168.66.5"])]
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr

    code, out = cli("detach", "c1", "net1")  # hot-plugged
    assert code == 0, out
    assert not pod.has_link("net1")
    assert not [r for r in world.reservations() if r.startswith("red/")]
    code, out = cli("detach", "c1", "blue0")  # attached when the pod was created
    assert code == 0, out
    assert not pod.has_link("blue0")
    assert [i for i, _, _ in assert_status_is_the_pod(world, pod)] == ["eth0", "net2", "st0"]

    code, out = cli("attach", "c1", "red")  # the next free name again
    assert code == 0 and out["ifname"] == "net1", out
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr
    address = pod.addresses("net1")
    pod.exec(["ip", "addr", "del", address[0], "dev", "net1"])
    check = world.call("CHECK", conf, pod=pod)  # CHECK covers hot-plugged attachments
    assert check.code != 0 and "net1" in check.stdout, check.stdout
    pod.exec(["ip", "addr", "add", address[0], "dev", "net1"])

    if world.daemon is not None:  # the CLI went through the daemon (its socket answered)
        assert world.daemon.log().count("attachment hot-plugged") == 4
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0, delete.stdout
    assert [name for name in pod.links() if name != "lo"] == []
    assert world.reservations() == []
    assert world.state_files() == []


def test_refusals_change_nothing(world: MetaplugWorld, pod: Netns) -> None:
    """The cluster network is never detached (R24); an ifname in use (R9), a capability no plugin declares (R7),
    a bad element field, an unknown NAD or container: CNI errors, and the pod and its journal stay as they were."""
    conf = pod_with_blue(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    cli = Cli(world, conf)
    before = journal_body(world)
    cases = [
        (("detach", "c1", "eth0"), 7, "cluster network cannot be detached"),
        (("attach", "c1", "red@blue0"), 7, "R9"),
        (("attach", "c1", "red", "--ips", "10.99.0.9/24"), 7, "declares ips"),
        (("attach", "c1", "static", "--mac", "zz:00"), 7, "mac"),
        (("attach", "c1", "nosuch"), 7, "nosuch"),
        (("attach", "c2", "red"), 3, "c2"),
        (("detach", "c1", "net7"), 3, "net7"),
    ]
    for argv, code, words in cases:
        status, out = cli(*argv)
        assert status == 1 and out["code"] == code, (argv, out)
        assert words in out["msg"] + out.get("details", ""), (argv, out)
    assert journal_body(world) == before
    assert sorted(n for n in pod.links() if n != "lo") == ["blue0", "eth0"]
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == [] and world.reservations() == []


def test_failed_attach_rolls_back_only_itself(world: MetaplugWorld, pod: Netns, node: Netns, mode: str) -> None:
    """A hot-plug whose delegate fails after making its veth (IPAM exhausted) is DELeted, alone: the pod keeps its
    other interfaces, addresses and network-status; CHECK passes; nothing of the failed one is left on the node."""
    conf = pod_with_blue(world)
    full = world.bridge_net("full", "10.97.0.0/24", "mpfull0")
    full["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.97.0.0/24", "rangeStart": "10.97.0.2",
                                               "rangeEnd": "10.97.0.2"}]]
    world.add_nad("full", full)
    assert world.call("ADD", conf, pod=pod).code == 0
    cli = Cli(world, conf)
    assert cli("attach", "c1", "full")[0] == 0  # takes the only address
    before = journal_body(world)
    node_veths = sorted(link["ifname"] for link in node.ip_json("link", "show", "type", "veth"))

    code, out = cli("attach", "c1", "full@again0")
    assert code == 1 and "again0" in out["msg"] and "full" in out["msg"], out
    assert not pod.has_link("again0")
    after = journal_body(world)
    assert after["status"] == before["status"] and after["attachments"] == before["attachments"]
    assert_status_is_the_pod(world, pod)
    assert sorted(link["ifname"] for link in node.ip_json("link", "show", "type", "veth")) == node_veths
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == [] and world.reservations() == []


def test_attach_waits_for_the_containers_lock(world: MetaplugWorld, pod: Netns) -> None:
    """cni.md 23: attach takes the container's journal lock, the one every CNI call for it holds."""
    import fcntl
    import subprocess
    import time

    conf = pod_with_blue(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    cli = Cli(world, conf)
    lock = Path(world.state_dir / "c1" / "mp-eth0.lock")
    with open(lock, "rb") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        proc = subprocess.Popen(["ip", "netns", "exec", world.node.name, str(VENV_BIN / "metaplug"), "attach", "c1",
                                 "red", "--config", str(cli.path), "--json"], stdout=subprocess.PIPE)
        try:
            time.sleep(1.5)
            assert proc.poll() is None  # waiting for the lock
            assert not pod.has_link("net1")
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and json.loads(out)["ifname"] == "net1"
    assert world.call("DEL", conf, pod=pod).code == 0



def default_routes(pod: Netns) -> list[tuple[str, str]]:
    return [(r.get("gateway", ""), r["dev"]) for r in pod.routes() if r["dst"] == "default"]


def test_default_route_moves_on_attach_and_comes_back_on_detach(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """R13 on a running pod, as ADD applies it: attaching an element with `default-route` moves the pod's default route
    to that gateway on the new interface (the cluster network's goes); a second owner is refused; detaching the owner
    (or a rollback of a failed attach) puts the cluster network's default route back as its result records it."""
    conf = pod_with_blue(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    cli = Cli(world, conf)
    assert default_routes(pod) == [("10.88.0.1", "eth0")]

    code, out = cli("attach", "c1", "red", "--default-route", "10.99.0.1")
    assert code == 0 and out["ifname"] == "net1", out
    assert default_routes(pod) == [("10.99.0.1", "net1")]
    assert [(s["interface"], s["default"]) for s in out["status"]] == [("eth0", False), ("blue0", False),
                                                                      ("net1", True)]
    merged = journal_body(world)["result"]
    assert [r for r in merged["routes"] if r["dst"] == "0.0.0.0/0"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr

    before = journal_body(world)
    code, out = cli("attach", "c1", "green", "--default-route", "10.98.0.1")  # R13: one owner only
    assert code == 1 and out["code"] == 7 and "R13" in out["details"] and "net1" in out["details"], out
    assert journal_body(world) == before and default_routes(pod) == [("10.99.0.1", "net1")]

    code, out = cli("detach", "c1", "net1")
    assert code == 0, out
    assert default_routes(pod) == [("10.88.0.1", "eth0")] and not pod.has_link("net1")
    assert [(s["interface"], s["default"]) for s in out["status"]] == [("eth0", True), ("blue0", False)]

    # a gateway the new interface cannot reach: the move fails after the delegate ADD; rolled back whole
    code, out = cli("attach", "c1", "green", "--default-route", "10.55.0.1")
    assert code == 1 and out["code"] == 7 and "10.55.0.1" in out["details"], out
    assert not pod.has_link("net1") and default_routes(pod) == [("10.88.0.1", "eth0")]
    assert not [r for r in world.reservations() if r.startswith("green/")]
    assert [s["interface"] for s in journal_body(world)["status"]] == ["eth0", "blue0"]
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr

    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == [] and world.reservations() == []


def test_detach_of_the_owner_made_at_add_restores_the_cluster_route(world: MetaplugWorld, pod: Netns) -> None:
    """An element that moved the default route at the pod's ADD (R13) can be unplugged too: the route comes back."""
    conf = pod_with_blue(world)
    conf = world.annotated(conf, [{"name": "red", "interface": "r0", "default-route": ["10.99.0.1"]}])
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout + add.stderr
    assert default_routes(pod) == [("10.99.0.1", "r0")]
    code, out = Cli(world, conf)("detach", "c1", "r0")
    assert code == 0, out
    assert default_routes(pod) == [("10.88.0.1", "eth0")]
    assert world.call("CHECK", conf, pod=pod).code == 0
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == [] and world.reservations() == []


def test_set_default_route_moves_it_between_running_attachments(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """`metaplug set-default-route` (R13 in place): no interface is made or removed; one owner at a time; a gateway
    the interface cannot reach is code 7 and leaves the cluster network's route; no gateway gives it back."""
    conf = pod_with_blue(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    cli = Cli(world, conf)
    assert cli("attach", "c1", "red")[0] == 0 and cli("attach", "c1", "green")[0] == 0
    links = {n: link["ifindex"] for n, link in pod.links().items()}

    code, out = cli("set-default-route", "c1", "net1", "10.99.0.1")
    assert code == 0, out
    assert default_routes(pod) == [("10.99.0.1", "net1")]
    assert [s["interface"] for s in out["status"] if s["default"]] == ["net1"]
    code, out = cli("set-default-route", "c1", "net2", "10.98.0.1")  # R13: net1 owns it
    assert code == 1 and out["code"] == 7 and "net1" in out["details"], out
    code, out = cli("set-default-route", "c1", "eth0", "10.88.0.1")
    assert code == 1 and out["code"] == 7, out
    code, out = cli("set-default-route", "c1", "net1", "10.99.0.254")  # another gateway of the same owner
    assert code == 0 and default_routes(pod) == [("10.99.0.254", "net1")], (out, default_routes(pod))

    code, out = cli("set-default-route", "c1", "net1")  # given back
    assert code == 0 and default_routes(pod) == [("10.88.0.1", "eth0")], out
    code, out = cli("set-default-route", "c1", "net2", "10.55.0.1")  # unreachable from net2
    assert code == 1 and out["code"] == 7 and "is back" in out["details"], out
    assert default_routes(pod) == [("10.88.0.1", "eth0")]
    assert [s["interface"] for s in journal_body(world)["status"] if s["default"]] == ["eth0"]
    code, out = cli("set-default-route", "c1", "net2", "10.98.0.1")
    assert code == 0 and default_routes(pod) == [("10.98.0.1", "net2")], out
    merged = journal_body(world)["result"]
    assert [r for r in merged["routes"] if r["dst"] == "0.0.0.0/0"] == [{"dst": "0.0.0.0/0", "gw": "10.98.0.1"}]
    assert {n: link["ifindex"] for n, link in pod.links().items()} == links
    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0, check.stdout + check.stderr
    assert world.call("DEL", conf, pod=pod).code == 0
    assert world.state_files() == [] and world.reservations() == []
