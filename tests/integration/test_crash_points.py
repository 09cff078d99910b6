"""Crash at every step of an ADD with three attachments, and of its DEL (issue 9, "Done when"): metaplug is SIGKILLed
right before
each change it makes to the world (a file created, written, synced, renamed, linked or removed, a lock taken) or right
after it starts a delegate (which then runs on alone); then the runtime's DEL must leave nothing: no interface, no
node veth, no IP reservation, no journal, temp file, lock or directory. The steps come from a counting run of the
same ADD (tests/helpers/crashpoint/sitecustomize.py, loaded through PYTHONPATH by these calls only)."""

from __future__ import annotations

import contextlib
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


CRASH_ENV = {"PYTHONPATH": f"{CRASHPOINT}:{os.environ.get('PYTHONPATH', '')}".rstrip(":")}


def three_attachments(world: MetaplugWorld) -> dict[str, Any]:
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("blue", world.bridge_net("blue", "10.77.0.0/24", "mpblue0"))
    return world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0",
                                                                default_gw=True)), "red,blue")


def _count_steps(world: MetaplugWorld, conf: dict[str, Any], pod: Netns, verb: str) -> list[dict[str, Any]]:
    """The steps of a warm ADD or DEL (the first ADD also makes stateDir and the IPAM dirs)."""
    for n in range(2):
        log = world.tmp / f"count-{verb}-{n}.jsonl"
        env = {**CRASH_ENV, "METAPLUG_TEST_CRASH_LOG": str(log)}
        add = world.call("ADD", conf, pod=pod, container_id="count", extra_env=env if verb == "ADD" else None)
        assert add.code == 0, add.stdout
        assert world.call("DEL", conf, pod=pod, container_id="count",
                          extra_env=env if verb == "DEL" else None).code == 0
    steps = _steps(log)
    assert [s["op"] for s in steps].count("spawn") == 3, steps
    return steps


def _kill_then_del(world: MetaplugWorld, verb: str, conf: dict[str, Any], pod: Netns, cid: str,
                   step: dict[str, Any]) -> None:
    """`verb` killed before `step`, then the runtime's DEL: it succeeds and leaves nothing."""
    n = step["step"]
    log = world.tmp / f"steps-{verb}-{n}.jsonl"
    killed = world.call(verb, conf, pod=pod, container_id=cid,
                        extra_env={**CRASH_ENV, "METAPLUG_TEST_CRASH_AT": str(n), "METAPLUG_TEST_CRASH_LOG": str(log)})
    seen = _steps(log)
    assert killed.code in (-9, 137) and len(seen) == n, (verb, n, step, killed)
    _wait_for_orphans(seen[-1]["spawned"])
    delete = world.call("DEL", conf, pod=pod, container_id=cid)
    where = f"{verb} killed before step {n} ({step['op']} {step['arg']})"
    assert delete.code == 0, (where, delete.stdout)
    assert set(pod.links()) == {"lo"}, where
    assert node_veths(world) == [], where
    assert world.reservations() == [], where
    assert world.state_files() == [], (where, world.state_files())


def test_sigkill_at_every_step_of_an_add_then_del_leaves_nothing(world: MetaplugWorld, pod: Netns) -> None:
    conf = three_attachments(world)
    steps = _count_steps(world, conf, pod, "ADD")
    assert any(s["op"] == "replace" for s in steps)
    for step in steps:
        _kill_then_del(world, "ADD", conf, pod, f"crash{step['step']}", step)


def test_sigkill_at_every_step_of_a_del_then_the_next_del_leaves_nothing(world: MetaplugWorld, pod: Netns) -> None:
    """The runtime repeats a DEL that did not answer: killed anywhere in the first, the second finishes (cni.md 11)."""
    conf = three_attachments(world)
    for step in _count_steps(world, conf, pod, "DEL"):
        cid = f"del{step['step']}"
        assert world.call("ADD", conf, pod=pod, container_id=cid).code == 0
        _kill_then_del(world, "DEL", conf, pod, cid, step)


def _power_cut(world: MetaplugWorld, cid: str, steps: list[dict[str, Any]], killed_at: int) -> list[str]:
    """What a power cut leaves of the container's journal files: a file whose data was never fsynced is emptied (a
    rename survives a cut only after its directory's fsync; a journaling filesystem keeps renames in order, so the
    names left point at a prefix of the records). `killed_at`: the step the process died right before (0: none), an
    fsync that therefore never ran. Returns the emptied names."""
    synced = {s["ino"] for s in steps if s["op"] == "fsync" and s["step"] != killed_at}
    cdir = Path(f"{world.view_root}{world.state_dir}") / cid
    emptied = []
    for path in sorted(cdir.iterdir()) if cdir.exists() else []:
        if path.suffix != ".lock" and path.stat().st_ino not in synced:
            os.truncate(path, 0)
            emptied.append(path.name)
    return emptied


def test_a_power_cut_at_every_delegate_start_or_after_the_add_then_del_leaves_nothing(world: MetaplugWorld,
                                                                                       pod: Netns) -> None:
    """Only an ADD's first record is synced (runner.Recorder); a power cut then empties every later one, and DEL from
    the first alone (every attachment "planned", no results) must still remove everything. The interfaces are left
    in the pod's namespace here (a real power cut would take them along), and DEL's configuration no longer names the
    secondary networks (nothing to recompute them from): a stricter test. What DEL moves aside
    (`*.corrupt.<time>`, for the operator) is all that may stay in stateDir. Each attachment's record is written
    once its first delegate has started and before that delegate is given its configuration (runner.Recorder); the
    first record is renamed into place before its fsyncs (files.create): so the power is also cut right before each
    of those fsyncs, when the record may be empty and the started delegate, killed with metaplug, never got its
    stdin."""
    conf = three_attachments(world)
    steps = _count_steps(world, conf, pod, "ADD")
    syncs = [s["step"] for s in steps if s["op"] == "fsync"]
    assert len(syncs) == 3, steps  # one durable record
    first_spawn = next(s["step"] for s in steps if s["op"] == "spawn")
    # the first delegate starts, the record is written and renamed into place (the power cut at syncs[0] empties
    # it), the three fsyncs, and only then the delegate's stdin (its configuration)
    ops = [s["op"] for s in steps]  # steps count from 1
    assert ops[first_spawn - 1:first_spawn + 8] == ["spawn", "unlink", "open", "write", "replace", "fsync", "fsync",
                                                    "fsync", "write"], steps
    assert "fsync" not in ops[:first_spawn - 1], steps
    spawns = [s["step"] for s in steps if s["op"] == "spawn"]
    cuts = [*spawns, 0, *syncs]  # 0: after the whole ADD
    # the journal file a cut empties (its data never synced): none yet at the first spawn, the durable first record
    # at the second, an unsynced later one at the third and after the ADD, the first record before its fsyncs. The
    # three fsyncs run at once (files.PendingSync): a cut before the second or third may come before or after the
    # file's own, so either is right there.
    empties: dict[int, bool | None] = {spawns[0]: False, spawns[1]: False, spawns[2]: True, 0: True, syncs[0]: True,
                                       syncs[1]: None, syncs[2]: None}
    for n in cuts:
        cid = f"cut{n}"
        log = world.tmp / f"cut-{n}.jsonl"
        env = {**CRASH_ENV, "METAPLUG_TEST_CRASH_LOG": str(log), **({"METAPLUG_TEST_CRASH_AT": str(n)} if n else {})}
        added = world.call("ADD", conf, pod=pod, container_id=cid, extra_env=env)
        seen = _steps(log)
        assert added.code == (0 if n == 0 else -9) or (n and added.code == 137), (n, added)
        _wait_for_orphans(seen[-1]["spawned"])
        emptied = _power_cut(world, cid, seen, n)
        assert empties[n] is None or ("mp-eth0.json" in emptied) == empties[n], (n, emptied)
        if n == spawns[0]:  # killed as the first delegate started: no record yet, and that delegate did nothing
            assert emptied == [], (n, emptied)
        if n in syncs:
            assert len(seen[-1]["spawned"]) == 1, (n, seen)  # started, waiting for a configuration it never got
        # without the pod's annotation (a reboot's DEL need not carry it): only the journal knows red and blue
        delete = world.call("DEL", {k: v for k, v in conf.items() if k != "runtimeConfig"}, pod=pod, container_id=cid)
        where = f"power cut {'after the ADD' if n == 0 else f'at step {n}'} (emptied {emptied})"
        assert delete.code == 0, (where, delete.stdout)
        assert set(pod.links()) == {"lo"}, where
        assert node_veths(world) == [], where
        assert world.reservations() == [], where
        assert all(".corrupt." in f or f == cid for f in world.state_files()), (where, world.state_files())
        for left in [f for f in world.state_files() if ".corrupt." in f]:
            os.unlink(Path(f"{world.view_root}{world.state_dir}") / left)
        with contextlib.suppress(OSError):
            os.rmdir(Path(f"{world.view_root}{world.state_dir}") / cid)
