"""Crash at every step of an ADD with three attachments (issue 9, "Done when"): metaplug is SIGKILLed right before
each change it makes to the world (a file created, written, synced, renamed, linked or removed, a lock taken) or right
after it starts a delegate (which then runs on alone); then the runtime's DEL must leave nothing: no interface, no
node veth, no IP reservation, no journal, temp file, lock or directory. The steps come from a counting run of the
same ADD (tests/helpers/crashpoint/sitecustomize.py, loaded through PYTHONPATH by these calls only)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import REPO, Netns

CRASHPOINT = REPO / "tests" / "helpers" / "crashpoint"


def _steps(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_for_orphans(pids: list[int]) -> None:
    """Delegates started before the kill run on; the runtime's DEL comes after they are done."""
    deadline = time.monotonic() + 30
    while not all(_gone(p) for p in pids):
        assert time.monotonic() < deadline, f"delegates {pids} still running"
        time.sleep(0.05)


def node_veths(world: MetaplugWorld) -> list[str]:
    return sorted(n for n, link in world.node.links().items() if n.startswith("veth"))


def test_sigkill_at_every_step_of_an_add_then_del_leaves_nothing(world: MetaplugWorld, pod: Netns) -> None:
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("blue", world.bridge_net("blue", "10.77.0.0/24", "mpblue0"))
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0",
                                                                default_gw=True)), "red,blue")
    crash_env = {"PYTHONPATH": f"{CRASHPOINT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":")}

    for warm in (True, False):  # the first ADD also makes stateDir and the IPAM dirs: count the second one
        counting = world.tmp / f"steps-{warm}.jsonl"
        add = world.call("ADD", conf, pod=pod, container_id="count",
                         extra_env={**crash_env, "METAPLUG_TEST_CRASH_LOG": str(counting)})
        assert add.code == 0, add.stdout
        assert world.call("DEL", conf, pod=pod, container_id="count").code == 0
    steps = _steps(counting)
    assert [s["op"] for s in steps].count("spawn") == 3 and any(s["op"] == "replace" for s in steps)

    for step in steps:
        n = step["step"]
        cid = f"crash{n}"
        log = world.tmp / f"steps-{n}.jsonl"
        killed = world.call("ADD", conf, pod=pod, container_id=cid,
                            extra_env={**crash_env, "METAPLUG_TEST_CRASH_AT": str(n),
                                       "METAPLUG_TEST_CRASH_LOG": str(log)})
        seen = _steps(log)
        assert killed.code in (-9, 137) and len(seen) == n, (n, step, killed)
        _wait_for_orphans(seen[-1]["spawned"])
        delete = world.call("DEL", conf, pod=pod, container_id=cid)
        where = f"killed before step {n} ({step['op']} {step['arg']})"
        assert delete.code == 0, (where, delete.stdout)
        assert set(pod.links()) == {"lo"}, where
        assert node_veths(world) == [], where
        assert world.reservations() == [], where
        assert world.state_files() == [], (where, world.state_files())
