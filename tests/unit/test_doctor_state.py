"""doctor's look at a stateDir (metaplug/doctor/state.py), on plain temp dirs: what counts as in progress and is left
alone, and what is reported as left behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from metaplug import journal
from metaplug.cni import files
from metaplug.doctor import state


def _journal(tmp: Path, cid: str = "c1") -> journal.JournalKey:
    key = journal.JournalKey(str(tmp), cid, "mp-net", "eth0")
    body = {"containerId": cid, "ifname": "eth0", "network": "mp-net", "netns": "/nonexistent", "cniArgs": "",
            "paths": [], "timeout": 1, "requestVersion": "1.0.0", "pod": {}, "attachments": []}
    with journal.locked(key):
        journal.write(key, body)  # type: ignore[arg-type]
    return key


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_key_for_names_the_same_files_whatever_the_dashes() -> None:
    key = state.key_for("/s", "c1", "my-meta-net-eth0")
    assert key is not None
    assert (key.path, key.lock_path) == ("/s/c1/my-meta-net-eth0.json", "/s/c1/my-meta-net-eth0.lock")
    assert state.key_for("/s", "c1", "nodash") is None


def test_temp_file_of_a_live_writer_is_in_progress_of_a_dead_one_left_behind(tmp_path: Path) -> None:
    key = _journal(tmp_path)
    cdir, name = os.path.split(key.path)
    live = Path(cdir, f".{name}.tmp.{os.getpid()}")  # as cni.files.atomic_write names its temp files
    dead = Path(cdir, f".{name}.tmp.{_dead_pid()}")
    live.write_text("{")
    dead.write_text("{")
    scan = state.scan_state(str(tmp_path))
    assert [(f.kind, f.subject) for f in scan.findings] == [("temp-file", str(dead))]
    assert [r.key for r in scan.recorded] == [key]
    repair = scan.findings[0].repair
    assert repair is not None and repair().startswith("removed")
    assert not dead.exists() and live.exists() and os.path.exists(key.path) and os.path.exists(key.lock_path)


def test_lock_without_journal_is_reported_only_when_nobody_holds_it(tmp_path: Path) -> None:
    key = journal.JournalKey(str(tmp_path), "c2", "mp", "eth0")
    with journal.locked(key):  # an ADD that has not written its journal yet
        assert state.scan_state(str(tmp_path)).findings == []
    # Released with nothing recorded, the lock file goes (journal.locked); one stays only after its holder was
    # killed, as here.
    assert not os.path.exists(key.lock_path)
    files.make_dirs(key.container_dir)
    os.close(files.open_private(key.lock_path, os.O_RDWR))
    [finding] = state.scan_state(str(tmp_path)).findings
    assert (finding.kind, finding.subject) == ("lock-without-journal", key.lock_path)
    assert finding.repair is not None and finding.repair().startswith("removed")
    assert not os.path.exists(key.container_dir)  # lock and empty dir gone


def test_corrupt_and_set_aside_journals_and_loose_permissions_are_reported_never_repaired(tmp_path: Path) -> None:
    key = _journal(tmp_path)
    Path(key.path).write_text("{broken")
    aside = Path(f"{key.path}.corrupt.1700000000")
    aside.write_text("{old")
    os.chmod(key.container_dir, 0o777)
    scan = state.scan_state(str(tmp_path))
    assert sorted((f.kind, f.subject) for f in scan.findings) == [
        ("corrupt-journal", key.path), ("corrupt-journal-set-aside", str(aside)),
        ("permissions", key.container_dir)]
    assert all(f.repair is None for f in scan.findings) and scan.unreadable_containers == {"c1"}


def test_a_missing_state_dir_cannot_be_checked(tmp_path: Path) -> None:
    scan = state.scan_state(str(tmp_path / "nosuch"))
    assert scan.findings == [] and "does not exist" in scan.problems[0]


def test_container_accounts_for_reads_the_journals_now(tmp_path: Path) -> None:
    key = _journal(tmp_path)
    assert not state.container_accounts_for([str(tmp_path)], "c1", "eth0")  # no attachments recorded
    assert not state.container_accounts_for([str(tmp_path)], "other", "eth0")
    Path(key.path).write_text("{broken")
    assert state.container_accounts_for([str(tmp_path)], "c1", "eth0")  # unreadable: nothing is known
