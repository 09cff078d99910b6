"""Hot-plug from the daemon's pod watch (issue 12.1): the `k8s.v1.cni.cncf.io/networks` annotation of a running pod
changes in the API simulator, and the daemon attaches and detaches to match, publishes network-status equal to the
journal, and posts FailedAddingInterface for an element it cannot attach; the pod's DEL then removes everything."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from tests.helpers.kube_sim import KubeSim
from tests.helpers.metaplug_env import Daemon, MetaplugWorld
from tests.helpers.netns import Netns
from tests.integration.test_daemon import wait_for
from tests.integration.test_daemon_k8s import UID, args, red, sim, start
from tests.integration.test_hotplug import default_routes, journal_body

__all__ = ["sim"]  # the fixture
NETWORKS = "k8s.v1.cni.cncf.io/networks"
STATUS = "k8s.v1.cni.cncf.io/network-status"


def annotate(sim: KubeSim, networks: Any) -> None:
    """Change the pod's networks annotation, keeping its other annotations (as `kubectl annotate` does)."""
    annotations = {**sim.annotations("default", "web"), NETWORKS: json.dumps(networks)}
    sim.add_pod("default", "web", uid=UID, annotations=annotations)


def interfaces(world: MetaplugWorld, sim: KubeSim) -> list[str] | None:
    """The pod's interfaces per the published network-status, when it equals the journal's; else None."""
    published = sim.annotations("default", "web").get(STATUS)
    if published is None or json.loads(published) != journal_body(world)["status"]:
        return None
    return [entry["interface"] for entry in json.loads(published)]


def pod_del_leaves_nothing(world: MetaplugWorld, conf: dict[str, Any], pod: Netns, daemon: Daemon) -> None:
    """The pod's DEL removes every attachment, hot-plugged ones included, with no IP or interface leaked."""
    delete = world.call("DEL", conf, pod=pod, args=args())
    assert delete.code == 0, delete.stdout
    assert [name for name in pod.links() if name != "lo"] == []
    assert world.reservations() == [] and world.state_files() == []
    assert "reconciling a pod failed" not in daemon.log()


def pod_with_red(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> tuple[Daemon, dict[str, Any]]:
    """NADs red and green; the pod asks for red and is ADDed with a daemon watching."""
    sim.add_nad("default", "red", red(world))
    sim.add_nad("default", "green", red(world, "10.98.0.0/24", "mpgreen0", "green"))
    sim.add_pod("default", "web", uid=UID, annotations={NETWORKS: json.dumps([{"name": "red"}])})
    daemon, conf = start(world, sim)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 0, add.stdout + add.stderr
    return daemon, conf


def test_annotation_changes_are_applied_to_the_running_pod(world: MetaplugWorld, sim: KubeSim, pod: Netns) -> None:
    sim.add_nad("default", "red", red(world))
    sim.add_nad("default", "green", red(world, "10.98.0.0/24", "mpgreen0", "green"))
    sim.add_nad("default", "blue", json.dumps(world.macvlan_static_net("blue")))
    sim.add_pod("default", "web", uid=UID, annotations={NETWORKS: json.dumps(
        [{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]}, {"name": "red"}])})
    daemon, conf = start(world, sim)
    add = world.call("ADD", conf, pod=pod, args=args())
    assert add.code == 0, add.stdout + add.stderr
    assert interfaces(world, sim) == ["eth0", "blue0", "net2"]

    # blue (attached at creation) is no longer requested, green is new and unnamed: the next free net<N>
    annotate(sim, [{"name": "red"}, {"name": "green"}])
    wait_for(lambda: interfaces(world, sim) == ["eth0", "net2", "net1"], what="blue0 detached, green attached")
    assert not pod.has_link("blue0") and pod.addresses("net1") == ["10.98.0.2/24"]
    assert pod.addresses("eth0") == ["10.88.0.2/24"] and pod.addresses("net2") == ["10.99.0.2/24"]

    # an element that cannot be attached: an event naming it, the others as they were
    annotate(sim, [{"name": "red"}, {"name": "green"}, {"name": "nosuch"}])
    wait_for(lambda: any(e.get("reason") == "FailedAddingInterface" for e in sim.events), what="the event")
    (event,) = [e for e in sim.events if e.get("reason") == "FailedAddingInterface"]
    assert "default/nosuch" in event["message"] and event["type"] == "Warning", event
    assert interfaces(world, sim) == ["eth0", "net2", "net1"]

    # a changed interface is a detach and an attach
    annotate(sim, [{"name": "red", "interface": "r9"}, {"name": "green"}])
    wait_for(lambda: interfaces(world, sim) == ["eth0", "net1", "r9"], what="red moved to r9")
    assert not pod.has_link("net2") and pod.addresses("r9") == ["10.99.0.3/24"]
    check = world.call("CHECK", conf, pod=pod, args=args())
    assert check.code == 0, check.stdout + check.stderr

    pod_del_leaves_nothing(world, conf, pod, daemon)


def test_a_change_made_while_the_daemon_was_down_is_applied_once_it_is_back(world: MetaplugWorld, sim: KubeSim,
                                                                             pod: Netns) -> None:
    """No watch sees what changed while no daemon ran: after its first sync, the daemon reconciles every cached pod
    (and leaves alone those whose journal already matches)."""
    daemon, conf = pod_with_red(world, sim, pod)
    assert interfaces(world, sim) == ["eth0", "net1"]

    world.stop_daemon()
    annotate(sim, [{"name": "red"}, {"name": "green"}])  # nobody is watching
    daemon, _ = start(world, sim)
    wait_for(lambda: interfaces(world, sim) == ["eth0", "net1", "net2"], what="green attached after the restart")
    assert pod.addresses("net1") == ["10.99.0.2/24"] and pod.addresses("net2") == ["10.98.0.2/24"]

    pod_del_leaves_nothing(world, conf, pod, daemon)


def failed_attempts(sim: KubeSim) -> list[str]:
    return [e["message"] for e in sim.events if e.get("reason") == "FailedAddingInterface"]


def test_a_failing_element_is_retried_only_on_later_changes_with_backoff(world: MetaplugWorld, sim: KubeSim,
                                                                         pod: Netns) -> None:
    """Issue 12.1 (backoff.py): a failing element is tried once per change of the annotation, never again for the
    same annotation (a relist, a pod update that leaves it alone); a later change retries it, no sooner than its
    backoff (1 s, doubling); one event per attempt; it succeeds once what it needs exists and the next change comes."""
    daemon, conf = pod_with_red(world, sim, pod)

    annotate(sim, [{"name": "red"}, {"name": "later"}])
    wait_for(lambda: len(failed_attempts(sim)) == 1, what="the first attempt's event")
    assert "default/later" in failed_attempts(sim)[0]

    # the same annotation again: a pod update that leaves it alone, then a relist after compaction (410)
    sim.add_pod("default", "web", uid=UID, annotations={**sim.annotations("default", "web"), "touched": "1"})
    sim.compact()
    sim.drop_watches()
    sim.wait_watching(2)
    sim.add_pod("default", "web", uid=UID, annotations={**sim.annotations("default", "web"), "touched": "2"})
    time.sleep(3)
    assert len(failed_attempts(sim)) == 1, failed_attempts(sim)

    # a later change: green is attached at once, `later` tried once more
    annotate(sim, [{"name": "red"}, {"name": "later"}, {"name": "green"}])
    wait_for(lambda: interfaces(world, sim) == ["eth0", "net1", "net2"], what="green attached")
    wait_for(lambda: len(failed_attempts(sim)) == 2, what="the second attempt's event")
    # a change right after it: `later` waits out its backoff (2 s now), then is tried once, and not again
    annotate(sim, [{"name": "later"}, {"name": "red"}, {"name": "green"}])
    wait_for(lambda: len(failed_attempts(sim)) == 3, what="the owed attempt after the backoff")
    time.sleep(5)
    assert len(failed_attempts(sim)) == 3, failed_attempts(sim)
    attempts = [json.loads(line) for line in daemon.log().splitlines() if '"live change failed"' in line]
    assert [a["failures"] for a in attempts] == [1, 2, 3], attempts
    second, third = (datetime.fromisoformat(a["ts"].replace("Z", "+00:00")) for a in attempts[1:])
    assert (third - second).total_seconds() >= 1.9, (second, third)  # not before the 2 s backoff ended
    assert "backing off" in daemon.log()

    # what it needs now exists: still nothing without a change; with the next one it is attached
    sim.add_nad("default", "later", red(world, "10.96.0.0/24", "mplater0", "later"))
    time.sleep(2)
    assert interfaces(world, sim) == ["eth0", "net1", "net2"]
    annotate(sim, [{"name": "later"}, {"name": "red"}])
    wait_for(lambda: [s["name"] for s in journal_body(world)["status"]] == ["cluster", "default/red", "default/later"]
             and interfaces(world, sim) == ["eth0", "net1", "net2"], what="green detached, later attached in its place")
    assert pod.addresses("net2") == ["10.96.0.2/24"]
    assert len(failed_attempts(sim)) == 3

    pod_del_leaves_nothing(world, conf, pod, daemon)


def red_attachment(world: MetaplugWorld) -> dict[str, Any]:
    """red's journal record ({} while it is being made anew)."""
    found = [a for a in journal_body(world)["attachments"] if a["network"] == "default/red" and a["state"] == "added"]
    return found[0] if len(found) == 1 else {}


def test_changed_cni_args_remake_the_attachment_and_default_route_moves(world: MetaplugWorld, sim: KubeSim,
                                                                       pod: Netns) -> None:
    """A changed `cni-args` (R10) of an element is a detach then an attach with ADD's rules (the delegates get the new
    args); a changed `default-route` (R13) moves the pod's default route in place and back when dropped."""
    daemon, conf = pod_with_red(world, sim, pod)
    assert pod.addresses("net1") == ["10.99.0.2/24"]

    annotate(sim, [{"name": "red", "cni-args": {"note": "v2"}}])
    # a new attachment: the next address of the range, and the delegates got the new args
    wait_for(lambda: interfaces(world, sim) == ["eth0", "net1"] and pod.addresses("net1") == ["10.99.0.3/24"],
             what="red made anew")
    assert red_attachment(world)["requestedCniArgs"] == {"note": "v2"}
    plugins = json.loads(red_attachment(world)["conflist"])["plugins"]
    assert all(p["args"]["cni"] == {"note": "v2"} for p in plugins), plugins

    # default-route added, then dropped: the route moves in place, the interface stays (same ifindex and address)
    ifindex = pod.links()["net1"]["ifindex"]
    annotate(sim, [{"name": "red", "cni-args": {"note": "v2"}, "default-route": ["10.99.0.1"]}])
    wait_for(lambda: default_routes(pod) == [("10.99.0.1", "net1")], what="the default route moved to net1")
    wait_for(lambda: [(s["interface"], s["default"]) for s in json.loads(
        sim.annotations("default", "web")[STATUS])] == [("eth0", False), ("net1", True)], what="status follows")
    annotate(sim, [{"name": "red", "cni-args": {"note": "v2"}}])
    wait_for(lambda: default_routes(pod) == [("10.88.0.1", "eth0")], what="the cluster network's default back")
    wait_for(lambda: red_attachment(world).get("defaultRoute") == [], what="journal without an owner")
    assert pod.links()["net1"]["ifindex"] == ifindex and pod.addresses("net1") == ["10.99.0.3/24"]
    assert "default route moved in place" in daemon.log()
    assert not [e for e in sim.events if e.get("reason", "").startswith("Failed")], sim.events
    check = world.call("CHECK", conf, pod=pod, args=args())
    assert check.code == 0, check.stdout + check.stderr
    pod_del_leaves_nothing(world, conf, pod, daemon)
