"""The README's main command, and metaplug's logging contract (JSON lines on stderr/logFile, never on stdout)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory, is_root, run


def test_demo_runs_and_leaves_nothing_behind() -> None:
    """`metaplug demo` attaches three networks with the bundled delegates, CHECKs, DELs and cleans up."""
    if not is_root():
        pytest.skip("needs root")
    before = set(run(["ip", "netns", "list"]).stdout.decode().split())
    proc = subprocess.run([str(VENV_BIN / "metaplug"), "demo"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mp-bridge" in proc.stdout  # the project's own delegates were used
    assert "192.168.77.10/24" in proc.stdout and "== CHECK: exit 0" in proc.stdout
    assert "state files left after DEL: 0" in proc.stdout
    after = set(run(["ip", "netns", "list"]).stdout.decode().split())
    assert not {n for n in after - before if n.startswith("mpdemo-")}


def test_log_file_gets_one_json_object_per_line(world: MetaplugWorld, pod: Netns) -> None:
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0
    json.loads(add.stdout)  # stdout is exactly one JSON document
    lines = (world.tmp / "metaplug.log").read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "msg", "verb", "container"} <= set(r) for r in records)
    assert any(r["level"] == "debug" and "bridge" in r["msg"] for r in records)
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0 and delete.stdout == ""


def test_state_command_lists_recorded_attachments(world: MetaplugWorld, pod: Netns) -> None:
    """`metaplug state` shows what the journal holds (read-only), and marks corrupt journals."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")), "red")
    assert world.call("ADD", conf, pod=pod, container_id="podA").code == 0
    state = [str(VENV_BIN / "metaplug"), "state", "--state-dir", str(world.state_dir)]
    table = run(state).stdout.decode()
    assert "podA" in table and "default/red" in table and "10.99.0.2/24" in table and "added" in table
    full = json.loads(run([*state, "podA"]).stdout)
    assert [a["ifname"] for a in full[0]["journal"]["attachments"]] == ["eth0", "net1"]
    assert run([*state, "nosuch"], check=False).returncode == 1
    (world.state_dir / "podA" / "mp-eth0.json").write_text("{broken")
    assert "CORRUPT" in run(state).stdout.decode()
    assert world.call("DEL", conf, pod=pod, container_id="podA").code == 0


def test_state_json_prints_every_attachment_as_one_json_line(world: MetaplugWorld, pod: Netns,
                                                             netns_factory: NetnsFactory) -> None:
    """`metaplug state --json`: one object per attachment of every journal; a corrupt journal is a line too."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")), "red")
    other = netns_factory.new("pod")
    assert world.call("ADD", conf, pod=pod, container_id="podA").code == 0
    assert world.call("ADD", conf, pod=other, container_id="podB").code == 0
    state = [str(VENV_BIN / "metaplug"), "state", "--json", "--state-dir", str(world.state_dir)]
    lines = [json.loads(line) for line in run(state).stdout.decode().splitlines()]
    assert [(r["container"], r["ifname"], r["network"], r["state"]) for r in lines] == [
        ("podA", "eth0", "cluster", "added"), ("podA", "net1", "default/red", "added"),
        ("podB", "eth0", "cluster", "added"), ("podB", "net1", "default/red", "added")]
    first = lines[0]
    assert first["netns"] == pod.path and first["cluster"] is True and first["metaNetwork"] == "mp"
    assert first["addresses"] == pod.addresses("eth0") and first["mac"] == pod.links()["eth0"]["address"]
    assert first["conflist"] == "cluster" and first["pod"] == {"namespace": "default", "name": "p1", "uid": None}
    assert first["cniArgs"] == "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1"
    (world.state_dir / "podB" / "mp-eth0.json").write_text("{broken")
    lines = [json.loads(line) for line in run(state).stdout.decode().splitlines()]
    assert len(lines) == 3 and "not JSON" in lines[2]["problem"] and lines[2]["container"] == "podB"
    assert world.call("DEL", conf, pod=pod, container_id="podA").code == 0
    assert world.call("DEL", conf, pod=other, container_id="podB").code == 0


def _replay_block(out: str, verb: str) -> str:
    """The shell command `--show-calls` printed for `verb` (from `ip netns exec` to the stdin redirection)."""
    block = out.split(f"== CNI call {verb}:", 1)[1]
    start = block.index("ip netns exec")
    end = block.index("\n", block.index(" < ", start))
    return block[start:end]


def test_demo_shows_network_status_and_calls_that_replay_by_hand() -> None:
    """The demo prints the network-status (which network each interface came from) and, with --show-calls, each
    call's exact env and stdin; replaying the printed ADD and DEL by hand (with --keep) attaches and detaches."""
    if not is_root():
        pytest.skip("needs root")
    proc = subprocess.run([str(VENV_BIN / "metaplug"), "demo", "--show-calls", "--keep"], capture_output=True,
                          text=True, timeout=120)
    first = proc.stdout.splitlines()[0].split()
    node, pod = first[3], first[7].rstrip(";")
    work = proc.stdout.rsplit("rm -r ", 1)[-1].strip()
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        status = proc.stdout.split("== network-status", 1)[1]
        assert "eth0       demo-cluster     true" in status
        assert "blue0      default/blue     false" in status and "192.168.77.10" in status
        assert "net2       default/red      false" in status
        add = _replay_block(proc.stdout, "ADD")
        assert "CNI_COMMAND=ADD" in add and f"ip netns exec {node} env -i" in add
        replay = subprocess.run(["bash", "-c", add], capture_output=True, text=True, timeout=60)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert json.loads(replay.stdout)["ips"][1]["address"] == "192.168.77.10/24"
        links = run(["ip", "-n", pod, "-br", "link"]).stdout.decode()
        assert "blue0" in links and "net2" in links
        replay = subprocess.run(["bash", "-c", _replay_block(proc.stdout, "DEL")], capture_output=True, text=True,
                                timeout=60)
        assert replay.returncode == 0 and replay.stdout == ""
        assert "blue0" not in run(["ip", "-n", pod, "-br", "link"]).stdout.decode()
    finally:
        for ns in (node, pod):
            if ns.startswith("mpdemo-"):
                run(["ip", "netns", "delete", ns], check=False)
        if work.startswith("/tmp/metaplug-demo-"):
            subprocess.run(["rm", "-rf", work], check=False)
