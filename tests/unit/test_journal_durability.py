"""journal.write: atomic always. An ADD's first record (no journal yet) is renamed into place, then the file, its
directory and stateDir are synced (one journal commit); a durable write over an existing journal syncs the data
before the rename and the directories after it; a cheap one syncs nothing. runner.Recorder: an ADD's first record
is durable, the later ones cheap, and `.prev` stays the durable one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from metaplug import journal
from metaplug.cni.errors import CniError
from metaplug.runner import Recorder


def _record_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(f"fsync dir {os.path.basename(target)}" if os.path.isdir(target) else "fsync file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(journal.os, "fsync", fsync)
    monkeypatch.setattr(journal.os, "replace", replace)
    return calls


def _unordered_syncs(calls: list[str]) -> list[str]:
    """`calls` with each run of fsyncs sorted: a first record's three fsyncs run at once (files.PendingSync)."""
    out: list[str] = []
    run: list[str] = []
    for call in [*calls, ""]:
        if call.startswith("fsync"):
            run.append(call)
            continue
        out += sorted(run)
        run = []
        if call:
            out.append(call)
    return out


def test_the_first_record_is_renamed_then_synced_with_its_directory_and_state_dir(tmp_path: Path,
                                                                                   monkeypatch: pytest.MonkeyPatch
                                                                                   ) -> None:
    """No version exists to be lost, so the rename comes first and the three fsyncs share one journal commit; the
    container dir's fsync makes the new entry survive a power cut, stateDir's the container dir's own entry."""
    state = tmp_path / "state"
    key = journal.JournalKey(str(state), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    journal.write(key, {"attachments": [{"ifname": "eth0"}]})
    assert _unordered_syncs(calls) == _unordered_syncs(["rename", "fsync file", "fsync dir c1", "fsync dir state"])
    assert journal.read(key) == {"attachments": [{"ifname": "eth0"}], "version": journal.JOURNAL_VERSION}
    assert os.listdir(key.container_dir) == ["mp-eth0.json"]  # no temp file left


def test_a_durable_write_over_a_journal_syncs_the_data_before_the_rename(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """DEL's and a rollback's rewrite: the version it replaces must never be lost to a power cut."""
    state = tmp_path / "state"
    key = journal.JournalKey(str(state), "c1", "mp", "eth0")
    journal.write(key, {"attachments": [{"ifname": "eth0"}, {"ifname": "net1"}]})
    calls = _record_calls(monkeypatch)
    journal.write(key, {"attachments": [{"ifname": "net1"}]})
    assert calls == ["fsync file", "rename", "fsync dir c1", "fsync dir state"]
    assert journal.read(key) == {"attachments": [{"ifname": "net1"}], "version": journal.JOURNAL_VERSION}
    assert sorted(os.listdir(key.container_dir)) == ["mp-eth0.json", "mp-eth0.json.prev"]


def test_a_cheap_write_syncs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    journal.write(key, {"attachments": []}, durable=False)
    journal.write(key, {"attachments": [{"ifname": "eth0"}]}, durable=False, keep_previous=False)
    assert calls == ["rename", "rename"]
    assert journal.read(key) == {"attachments": [{"ifname": "eth0"}], "version": journal.JOURNAL_VERSION}
    assert os.listdir(key.container_dir) == ["mp-eth0.json"]


def test_an_adds_later_records_sync_nothing_and_keep_the_durable_one_as_prev(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut may lose or empty every record after the first: `.prev` must then be that first, durable record,
    which lists every planned attachment (DEL deletes them all from it alone)."""
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    body: Any = {"attachments": [{"ifname": "eth0", "state": "planned"}, {"ifname": "net1", "state": "planned"}]}
    recorder = Recorder(key, body)
    recorder.write()
    assert calls == ["rename"]  # in place; synced while the first delegate starts, before it gets its stdin
    recorder.sync()
    recorder.sync()  # once
    durable = journal.read(key)
    assert _unordered_syncs(calls) == _unordered_syncs(["rename", "fsync file", "fsync dir c1",
                                                        f"fsync dir {tmp_path.name}"])
    for state in ("adding", "added", "done"):
        calls.clear()
        body["attachments"][0]["state"] = state
        recorder.write()
        assert calls == ["rename"], state  # no fsync
        assert journal.read(key) == body
        assert journal.load(key.previous_path) == durable  # linked once, then left as it is
    assert os.stat(key.path).st_ino != os.stat(key.previous_path).st_ino


def test_a_single_write_after_the_durable_one_links_it_as_prev(tmp_path: Path) -> None:
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    body: Any = {"attachments": [{"ifname": "eth0", "state": "planned"}]}
    recorder = Recorder(key, body)
    recorder.write()
    first = journal.read(key)
    body["attachments"][0]["state"] = "added"
    recorder.write()
    assert journal.load(key.previous_path) == first


def test_a_first_record_is_synced_before_a_later_one_links_it_as_prev(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    recorder = Recorder(key, {"attachments": [{"ifname": "eth0", "state": "planned"}]})
    recorder.write()
    recorder.write()  # no delegate started in between (a hot-plug of nothing, say): synced first all the same
    assert _unordered_syncs(calls) == _unordered_syncs(["rename", "fsync file", "fsync dir c1",
                                                        f"fsync dir {tmp_path.name}", "rename"])


def test_a_first_record_no_delegate_got_is_closed_unsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first attachment failed before its delegate started: nothing to make durable (the rollback rewrites or
    removes the record), and no descriptor is left open."""
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    recorder = Recorder(key, {"attachments": [{"ifname": "eth0", "state": "adding"}]})
    open_before = len(os.listdir("/proc/self/fd"))
    recorder.write()
    assert len(os.listdir("/proc/self/fd")) == open_before + 1
    recorder.drop_pending()
    recorder.sync()
    assert calls == ["rename"] and len(os.listdir("/proc/self/fd")) == open_before


def test_a_failed_sync_of_the_first_record_is_the_journals_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    recorder = Recorder(key, {"attachments": [{"ifname": "eth0", "state": "adding"}]})
    recorder.write()

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal.os, "fsync", eio)
    with pytest.raises(CniError) as exc:
        recorder.sync()
    assert exc.value.code == 5 and exc.value.msg == "cannot write journal" and "sync" in (exc.value.details or "")


def test_a_failing_directory_fsync_fails_the_sync_once_every_fsync_ended(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The three fsyncs run at once; one failing (EIO from the disk) is raised once all have ended, with the file's
    descriptor closed, and a second complete() does nothing."""
    import errno

    from metaplug.cni import files

    real_fsync = os.fsync
    ended: list[str] = []

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if target == str(tmp_path / "c1"):
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)
        ended.append(os.path.basename(target))

    monkeypatch.setattr(files.os, "fsync", fsync)
    (tmp_path / "c1").mkdir()
    pending = files.create(str(tmp_path / "c1" / "f.json"), b"{}", also_sync=(str(tmp_path),))
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as raised:
        pending.complete()
    assert raised.value.errno == errno.EIO
    assert sorted(ended) == sorted(["f.json", tmp_path.name])  # the file's and stateDir's fsyncs ended
    assert len(set(os.listdir("/proc/self/fd"))) < len(before)  # the file's fd is closed
    pending.complete()  # once
