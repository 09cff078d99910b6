"""metaplug when its stateDir fails it (issue 9): a full disk (ENOSPC, a real tmpfs in a private mount namespace),
leftovers of killed writers, values that explode late, and a lost journal. In every case the runtime's DEL must
still remove every interface, node veth and IP reservation, and leave nothing in stateDir (R27, cni.md 11)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns, NetnsFactory
from tests.helpers.private_tmpfs import PrivateTmpfs


@pytest.fixture
def tmpfs_state(world: MetaplugWorld) -> Iterator[PrivateTmpfs]:
    """stateDir on a 256 KiB tmpfs that only metaplug's calls (world.call) see."""
    with PrivateTmpfs(world.state_dir, size_kib=256) as fs:
        world.prefix, world.view_root = fs.prefix, fs.root
        try:
            yield fs
        finally:
            world.prefix, world.view_root = [], ""


def cluster_conf(world: MetaplugWorld, *, chained: list[dict] | None = None, **extra: object) -> dict:
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    cluster["plugins"] += chained or []
    return world.metaplug_conf(cluster, **extra)


def fake_bin(world: MetaplugWorld, defaults: dict | None = None) -> tuple[Path, Path]:
    """The fake delegate as `fake`; returns its sidecar (defaults any call reads) and its call log."""
    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, "fake", defaults or {})
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    return bin_dir / "fake.json", world.tmp / "fake.log"


def node_veths(world: MetaplugWorld) -> list[str]:
    return sorted(n for n, link in world.node.links().items() if link.get("link_type") == "ether"
                  and n.startswith("veth"))


def assert_nothing_left(world: MetaplugWorld, pod: Netns, *, keep: tuple[str, ...] = ()) -> None:
    assert set(pod.links()) == {"lo"}
    assert node_veths(world) == []
    assert world.reservations() == []
    assert [f for f in world.state_files() if f not in keep] == []


# ---------------------------------------------------------------- defect 1: a full stateDir


def test_add_failing_on_a_full_state_dir_rolls_back_every_attachment(world: MetaplugWorld, pod: Netns,
                                                                      tmpfs_state: PrivateTmpfs) -> None:
    """The disk fills while the cluster network is attached: the next journal write fails (code 5), and the
    rollback must still DEL the cluster network (interface, node veth, host-local reservation) from memory, name the
    journal problem, and leave no temp file (R27)."""
    fake_bin(world)
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.annotated(cluster_conf(world, chained=[{"type": "fake", "fake": {"fill": str(tmpfs_state.path /
                                                                                            "filler")}}]), "red")
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 1, add.stdout
    err = add.json
    assert err["code"] == 5 and "journal" in err["msg"] and "No space left" in err["details"], err
    assert_nothing_left(world, pod, keep=("filler",))
    tmpfs_state.free()
    assert world.call("DEL", conf, pod=pod).code == 0
    assert_nothing_left(world, pod)


def test_del_on_a_full_state_dir_attempts_every_attachment_and_a_later_del_finishes(
        world: MetaplugWorld, pod: Netns, tmpfs_state: PrivateTmpfs) -> None:
    """One attachment's DEL fails while stateDir is full: every other attachment is still deleted, the error (104)
    lists the failure and the journal problem, no temp file stays, and the runtime's next DEL finishes the job even
    before space comes back (the record on disk still lists everything; DEL of what is gone succeeds, cni.md 11)."""
    sidecar, log = fake_bin(world)
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("f", {"cniVersion": "1.0.0", "name": "f", "plugins": [{"type": "fake",
                                                                          "fake": {"log": str(log)}}]})
    conf = world.annotated(cluster_conf(world), "f,red")
    assert world.call("ADD", conf, pod=pod).code == 0
    assert pod.has_link("net2") and len(world.reservations()) == 2
    sidecar.write_text(json.dumps({"on": {"DEL": "error-json"}, "error": {"code": 117, "msg": "cannot delete"}}))
    tmpfs_state.fill()
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 1 and delete.json["code"] == 104, delete.stdout
    details = delete.json["details"]
    assert "cannot delete" in details and "journal" in details and "No space left" in details, details
    assert not pod.has_link("eth0") and not pod.has_link("net2")  # attempted although the journal cannot change
    assert world.reservations() == [] and node_veths(world) == []
    assert not [f for f in world.state_files() if ".tmp." in f]
    sidecar.write_text("{}")
    assert world.call("DEL", conf, pod=pod).code == 0
    assert_nothing_left(world, pod, keep=("filler",))
    assert [c["command"] for c in fake_delegate.read_log(log)] == ["ADD", "DEL", "DEL"]


# ---------------------------------------------------------------- defect 7: a lost journal


def three_attachments(world: MetaplugWorld) -> dict:
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("blue", world.bridge_net("blue", "10.77.0.0/24", "mpblue0"))
    return world.annotated(cluster_conf(world), "red,blue")


def damage(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:  # corrupt beyond its checksum: not even JSON any more
        raw = bytearray(path.read_bytes())
        raw[10:60] = b"\xff" * 50
        path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["deleted", "truncated", "corrupt"])
@pytest.mark.parametrize("which", ["mp-eth0.json", "mp-eth0.json.prev"])
def test_del_after_losing_any_one_journal_file_removes_everything(world: MetaplugWorld, pod: Netns, which: str,
                                                                  how: str) -> None:
    """Any single journal file deleted, truncated or corrupt: DEL still removes every interface, veth and IP (from
    the previous version when the journal itself is hit), and only a damaged journal stays, moved aside for the
    operator."""
    conf = three_attachments(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    assert world.state_files() == ["c1", "c1/mp-eth0.json", "c1/mp-eth0.json.prev", "c1/mp-eth0.lock"]
    damage(world.state_dir / "c1" / which, how)
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0, delete.stdout
    assert set(pod.links()) == {"lo"} and node_veths(world) == [] and world.reservations() == []
    left = world.state_files()
    if which == "mp-eth0.json.prev" or how == "deleted":
        assert left == []  # a whole journal needs no look at its previous version
    else:
        assert len(left) == 2 and ".corrupt." in left[1], left
    if which == "mp-eth0.json":
        assert "corrupt journal" in delete.stderr


def test_del_without_any_journal_recomputes_from_the_configuration_and_prev_result(world: MetaplugWorld,
                                                                                   pod: Netns) -> None:
    """Nothing of the record is left (its directory deleted), but the runtime's prevResult says the ADD succeeded:
    DEL recomputes the attachments from the current configuration, deletes them all and says so at error level."""
    conf = three_attachments(world)
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0
    for f in (world.state_dir / "c1").iterdir():
        f.unlink()
    (world.state_dir / "c1").rmdir()
    delete = world.call("DEL", {**conf, "prevResult": add.json}, pod=pod)
    assert delete.code == 0, delete.stdout
    assert "journal lost" in delete.stderr and '"level": "error"' in delete.stderr
    assert_nothing_left(world, pod)
    # Without a prevResult and without a record nothing was made as far as anyone knows: DEL succeeds (cni.md 11).
    assert world.call("DEL", conf, pod=pod).code == 0


def test_del_with_every_journal_file_unreadable_recomputes(world: MetaplugWorld, pod: Netns) -> None:
    conf = three_attachments(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    for name in ("mp-eth0.json", "mp-eth0.json.prev"):
        (world.state_dir / "c1" / name).write_text("{not json")
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0, delete.stdout
    assert "journal lost" in delete.stderr
    assert set(pod.links()) == {"lo"} and node_veths(world) == [] and world.reservations() == []
    assert len([f for f in world.state_files() if ".corrupt." in f]) == 2


# ---------------------------------------------------------------- defect 3: values that explode late


def rewrite_journal(world: MetaplugWorld, change: Callable[[dict], None]) -> None:
    """Edit the journal body as an older metaplug could have written it, checksum kept valid."""
    from metaplug.journal import checksum

    path = world.state_dir / "c1" / "mp-eth0.json"
    doc = json.loads(path.read_text())
    change(doc["body"])
    doc["checksum"] = checksum(doc["body"])
    path.write_text(json.dumps(doc))


def test_del_survives_a_journal_with_an_unusable_timeout_and_path(world: MetaplugWorld, pod: Netns) -> None:
    """A journal recording delegateTimeout Infinity and a binDir with a NUL byte (accepted by older versions):
    DEL used to fail with 199 forever (OverflowError, ValueError); now it uses the default timeout, skips the
    unusable path and removes everything."""
    conf = three_attachments(world)
    assert world.call("ADD", conf, pod=pod).code == 0

    def old_values(body: dict) -> None:
        body["timeout"] = float("inf")
        body["paths"] = ["/opt/cni\0/bin", *body["paths"]]

    rewrite_journal(world, old_values)
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0, delete.stdout
    assert_nothing_left(world, pod)


def test_one_attachment_raising_anything_never_stops_the_others(world: MetaplugWorld, pod: Netns) -> None:
    """An attachment whose record makes DEL raise (not a CniError): the others are still deleted, and the error lists
    it (104, never 199); the runtime's DEL keeps retrying it."""
    conf = three_attachments(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    rewrite_journal(world, lambda body: body["attachments"][1].update(conflist=12345))
    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 1 and delete.json["code"] == 104, delete.stdout
    assert "net1" in delete.json["details"] and "AttributeError" in delete.json["details"]
    assert not pod.has_link("eth0") and not pod.has_link("net2")  # before and after the broken one (reverse order)
    assert pod.has_link("net1")
    assert [f for f in world.state_files() if f.endswith(".json")] == ["c1/mp-eth0.json"]


def test_mp_host_local_on_a_full_data_dir_leaves_no_reservation_or_temp_file(world: MetaplugWorld,
                                                                              tmp_path: Path) -> None:
    """The bundled IPAM store, a sibling of the journal: one free page takes the address file, writing the
    last-reserved marker fails (ENOSPC); the ADD fails with code 5 and leaves neither the address nor a temp file."""
    from tests.helpers.netns import VENV_BIN, metaplug_env, run

    data_dir = tmp_path / "ipam-full"
    conf = {"cniVersion": "1.0.0", "name": "full", "type": "mp-bridge",
            "ipam": {"type": "mp-host-local", "dataDir": str(data_dir), "ranges": [[{"subnet": "10.55.0.0/24"}]]}}
    env = metaplug_env({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/none",
                        "CNI_IFNAME": "eth0", "CNI_PATH": str(VENV_BIN)})
    with PrivateTmpfs(data_dir, size_kib=64) as fs:
        fs.view(data_dir / "full").mkdir()
        fs.fill(leave_pages=1)
        proc = run([*fs.prefix, "ip", "netns", "exec", world.node.name, str(VENV_BIN / "mp-host-local")],
                   check=False, input=json.dumps(conf).encode(), env=env)
        assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == 5, proc.stdout
        assert sorted(p.name for p in fs.view(data_dir / "full").iterdir()) == ["lock"]


def test_gc_uses_the_previous_version_and_survives_a_broken_record(world: MetaplugWorld,
                                                                   netns_factory: NetnsFactory) -> None:
    """GC (cni.md 14) with one stale container whose journal is corrupt (its previous version serves) and another
    whose record makes GC raise: the first is deleted completely, the second except its broken attachment, which is
    reported (104); the valid one is kept."""
    conf = three_attachments(world)
    pods = {cid: netns_factory.new("pod") for cid in ("corrupt", "broken", "keep")}
    for cid, ns in pods.items():
        assert world.call("ADD", conf, pod=ns, container_id=cid).code == 0
    damage(world.state_dir / "corrupt" / "mp-eth0.json", "corrupt")
    path = world.state_dir / "broken" / "mp-eth0.json"
    doc = json.loads(path.read_text())
    doc["body"]["attachments"][1]["conflist"] = 12345
    from metaplug.journal import checksum
    doc["checksum"] = checksum(doc["body"])
    path.write_text(json.dumps(doc))
    gc = world.call("GC", {**conf, "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]})
    assert gc.code == 1 and gc.json["code"] == 104 and "broken" in gc.json["details"], gc.stdout
    assert set(pods["corrupt"].links()) == {"lo"}
    assert set(pods["broken"].links()) == {"lo", "net1"}  # only the broken record's attachment stays
    assert pods["keep"].has_link("net2")
    assert [f for f in world.state_files() if f.startswith("corrupt/")] == [
        next(f for f in world.state_files() if f.startswith("corrupt/mp-eth0.json.corrupt."))]
    assert world.call("DEL", conf, pod=pods["keep"], container_id="keep").code == 0
