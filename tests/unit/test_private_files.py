"""Issue 9, defect 6: explicit modes whatever the umask, and no trust in state others could have written.

- Under umask 000 and 022 (in a subprocess: the umask is per process) every directory the writers create is 0700 and
  every file 0600: the journal (and its lock), the libcni cache (cni.md 35), the log file, the IPAM store. install's
  directories are exactly 0755.
- A stateDir, container directory or journal that another uid owns or that group/others may write is refused with
  code 5 on every verb (README "Error codes"): DEL would run, as root, the delegates such a journal names.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metaplug import journal, plugin

WRITERS = r"""
import json, logging, os, sys
from metaplug import journal, log
from metaplug.cni import cache, files
from metaplug.cni.runtime import RuntimeConf
from metaplug_delegates._store import Store
root = sys.argv[1]
key = journal.JournalKey(os.path.join(root, "state", "deep"), "c1", "mp", "eth0")
with journal.locked(key):
    journal.write(key, {"attachments": []})
cache.write_cache(os.path.join(root, "cache", "deep"), {"cniVersion": "1.1.0", "name": "n", "plugins": []},
                  RuntimeConf("c1", "", "eth0"), {"cniVersion": "1.1.0"})
os.mkdir(os.path.join(root, "logs"), 0o700)
log.configure("info", os.path.join(root, "logs", "metaplug.log"))
logging.getLogger("metaplug.test").warning("a line")
rotating = log.RotatingLogFile(os.path.join(root, "logs", "rotating.log"), log.LogRotation(), max_bytes=10)
for _ in range(2):  # the second line rotates the first into a compressed backup
    rotating.emit(logging.LogRecord("metaplug.test", logging.WARNING, "", 0, "a longer line", None, None))
rotating.close()
store = Store(os.path.join(root, "ipam", "deep"), "net")
with store.locked():
    store.reserve(__import__("ipaddress").ip_address("10.1.0.2"), "c1", "eth0", 0)
files.make_dirs(os.path.join(root, "install", "etc", "cni", "net.d"), 0o755)
"""


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077], ids=["umask000", "umask022", "umask077"])
def test_every_writer_sets_its_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    code = f"import os; os.umask({umask}); exec(compile({WRITERS!r}, 'writers', 'exec'))"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    found: dict[str, str] = {}
    for path in tmp_path.rglob("*"):
        st = path.lstat()
        found[str(path.relative_to(tmp_path))] = f"{'dir' if stat.S_ISDIR(st.st_mode) else 'file'} " \
                                                 f"{stat.S_IMODE(st.st_mode):04o}"
    assert found["state/deep/c1/mp-eth0.json"] == "file 0600"
    assert found["state/deep/c1/mp-eth0.lock"] == "file 0600"
    assert found["cache/deep/results/n-c1-eth0"] == "file 0600"
    assert found["logs/metaplug.log"] == "file 0600"
    assert found["logs/rotating.log"] == "file 0600"
    backups = {m for p, m in found.items() if p.startswith("logs/rotating") and p.endswith(".gz")}
    assert backups == {"file 0600"}  # compressed rotation backups too
    assert found["ipam/deep/net/10.1.0.2"] == "file 0600"
    assert found["ipam/deep/net/last_reserved_ip.0"] == "file 0600"
    install = {p: m for p, m in found.items() if p.startswith("install")}
    assert set(install.values()) == {"dir 0755"}, install
    rest = {p: m for p, m in found.items() if p not in install and m not in ("dir 0700", "file 0600")}
    assert rest == {}
    assert not [p for p in found if ".tmp." in p]  # no temp file stays


# ---- refusing state others could have written ------------------------------------------------------------------


def _conf(state: Path) -> bytes:
    return json.dumps({"cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "stateDir": str(state),
                       "binDir": str(state.parent / "bin"), "confDir": str(state.parent / "conf"),
                       "delegates": [{"cniVersion": "1.1.0", "name": "c", "plugins": [{"type": "bridge"}]}],
                       "cni.dev/valid-attachments": []}).encode()


def _env(verb: str) -> dict[str, str]:
    return {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/proc/self/ns/net",
            "CNI_PATH": "/nonexistent"}


def _seed(state: Path) -> journal.JournalKey:
    key = journal.JournalKey(str(state), "c1", "mp", "eth0")
    journal.write(key, {"containerId": "c1", "ifname": "eth0", "network": "mp", "netns": "", "cniArgs": "",
                        "paths": ["/nonexistent"], "attachments": [], "result": {"cniVersion": "1.1.0"}})
    return key


def _refused(state: Path, verb: str, where: Path) -> dict[str, Any]:
    code, out, err = plugin.run(_env(verb), _conf(state))
    assert code == 1 and err == "", out + err
    doc = json.loads(out)
    # GC goes on past one container's problem and reports them all (cni.md 14): 104, the refusal in the details.
    assert doc["code"] == (104 if verb == "GC" and where != state and state in where.parents else 5), doc
    assert str(where) in doc["details"], doc
    return doc


VERBS = ["ADD", "DEL", "CHECK", "GC"]


@pytest.mark.parametrize("verb", VERBS)
def test_a_state_dir_others_may_write_is_refused(tmp_path: Path, verb: str) -> None:
    state = tmp_path / "state"
    _seed(state)
    state.chmod(0o777)
    doc = _refused(state, verb, state)
    assert "writable by group or others" in doc["details"]
    assert (state / "c1" / "mp-eth0.json").exists()  # nothing was acted on


@pytest.mark.parametrize("verb", VERBS)
def test_a_state_dir_another_uid_owns_is_refused(tmp_path: Path, verb: str) -> None:
    state = tmp_path / "state"
    _seed(state)
    os.chown(state, 4242, -1)
    assert "owned by uid 4242" in _refused(state, verb, state)["details"]


@pytest.mark.parametrize("verb", VERBS)
def test_a_parent_others_may_write_is_refused_unless_it_is_sticky(tmp_path: Path, verb: str) -> None:
    parent = tmp_path / "shared"
    state = parent / "state"
    _seed(state)
    parent.chmod(0o777)  # anyone could rename state away and put their own in its place
    _refused(state, verb, parent)
    parent.chmod(0o1777)  # sticky, root's: like /tmp, nobody else can rename what is ours
    code, out, _ = plugin.run(_env(verb), _conf(state))
    assert code == 0 or json.loads(out)["code"] != 5, out


@pytest.mark.parametrize("verb", ["DEL", "CHECK", "GC"])
@pytest.mark.parametrize("what", ["container dir", "journal"])
def test_a_container_dir_or_journal_others_may_write_is_refused(tmp_path: Path, verb: str, what: str) -> None:
    state = tmp_path / "state"
    key = _seed(state)
    target = Path(key.container_dir if what == "container dir" else key.path)
    target.chmod(0o777 if what == "container dir" else 0o666)
    _refused(state, verb, target)
    target.chmod(0o700 if what == "container dir" else 0o600)
    os.chown(target, 4242, -1)
    _refused(state, verb, target)
    assert Path(key.path).exists()


def test_a_private_state_dir_is_used(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = _seed(state)
    assert plugin.run(_env("DEL"), _conf(state))[:2] == (0, "")
    assert not Path(key.path).exists()


def test_the_daemon_replays_no_spooled_del_someone_else_could_have_written(tmp_path: Path) -> None:
    """A spool record is replayed as root (a DEL with the config it carries): one writable by others, or a FIFO, is
    moved aside instead of replayed or blocking the replay."""
    from metaplug.daemon.protocol import encode_request
    from metaplug.daemon.spool import Spool

    spool = Spool(str(tmp_path / "run" / "spool"))
    spool.create()
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    frame = encode_request(_env("DEL"), _conf(tmp_path / "state"))
    good, loose = tmp_path / "run" / "spool" / "1-1.del", tmp_path / "run" / "spool" / "2-1.del"
    for path in (good, loose):
        path.write_bytes(frame)
        path.chmod(0o600)
    loose.chmod(0o666)
    os.mkfifo(tmp_path / "run" / "spool" / "3-1.del", 0o600)
    assert [r.path for r in spool.pending()] == [str(good)]
    assert (tmp_path / "run" / "spool" / "2-1.del.corrupt").exists()
    assert (tmp_path / "run" / "spool" / "3-1.del.corrupt").exists()
