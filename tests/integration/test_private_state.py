"""Issue 9, defect 6: what metaplug and the bundled delegates write is private whatever the runtime's umask.

DEL runs the delegate binaries and configs recorded in the journal, as root, so a stateDir anyone else can write lets
them choose what root runs. A real ADD and DEL (metaplug, mp-bridge, mp-host-local) run under umask 000 and 022, with
a stateDir whose parents metaplug has to create: every directory must be 0700 and every file 0600 (the journal, its
lock, the log file, the IPAM store), not 0755/0644 (umask 022) or 0777/0666 (umask 000) as before.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns

MP_PLUGINS = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local", "static": "mp-static"}


def modes(root: Path) -> dict[str, str]:
    """Every path below `root` (and `root`): relative name -> "dir 0700" / "file 0600"."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode) else "other"
        out[str(path.relative_to(root.parent))] = f"{kind} {stat.S_IMODE(st.st_mode):04o}"
    return out


def wrong(found: dict[str, str]) -> dict[str, str]:
    return {p: m for p, m in found.items() if m not in ("dir 0700", "file 0600")}


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask000", "umask022"])
def test_state_journal_lock_log_and_ipam_store_are_private(world: MetaplugWorld, pod: Netns, umask: int) -> None:
    if not (VENV_BIN / "mp-bridge").exists():
        pytest.skip("bundled delegates not installed")
    world.plugins = dict(MP_PLUGINS)
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")
    ipam_root = world.tmp / "lib" / "cni" / "networks"
    cluster["plugins"][0]["ipam"]["dataDir"] = str(ipam_root)
    state = world.tmp / "var" / "lib" / "cni" / "metaplug"  # var/, lib/, cni/ are created by metaplug
    conf = world.metaplug_conf(cluster, stateDir=str(state))

    add = world.call("ADD", conf, pod=pod, umask=umask)
    assert add.code == 0, add.stdout + add.stderr
    assert pod.addresses("eth0") == ["10.88.0.2/24"]
    written = modes(world.tmp / "var") | modes(world.tmp / "lib") | modes(world.tmp / "metaplug.log")
    assert any(p.endswith(".json") for p in written), written  # the lock file: tests/unit/test_private_files.py
    assert any(p.endswith("10.88.0.2") for p in written)  # the IPAM reservation
    assert wrong(written) == {}

    delete = world.call("DEL", conf, pod=pod, umask=umask)
    assert delete.code == 0, delete.stdout + delete.stderr
    assert not pod.has_link("eth0")
    assert world.state_files() == [] or not any(state.iterdir())
    assert wrong(modes(world.tmp / "var") | modes(world.tmp / "lib") | modes(world.tmp / "metaplug.log")) == {}
