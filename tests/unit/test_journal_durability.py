"""journal.write: atomic always; a durable write syncs the data before the rename and the directories after it, a
cheap one syncs nothing. runner.Recorder: an ADD's first record is durable, the later ones cheap, and `.prev` stays
the durable one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from metaplug import journal
from metaplug.runner import Recorder


def _record_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        calls.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(journal.os, "fsync", fsync)
    monkeypatch.setattr(journal.os, "replace", replace)
    return calls


# durable: the container dir's fsync makes the rename survive a power cut, stateDir's keeps the container dir's entry
@pytest.mark.parametrize(("durable", "expected"), [(True, ["fsync file", "rename", "fsync dir", "fsync dir"]),
                                                    (False, ["rename"])])
def test_data_is_synced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool,
                                          expected: list[str]) -> None:
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    journal.write(key, {"attachments": [{"ifname": "eth0"}]}, durable=durable)
    assert calls == expected
    assert journal.read(key) == {"attachments": [{"ifname": "eth0"}], "version": journal.JOURNAL_VERSION}
    assert os.listdir(key.container_dir) == ["mp-eth0.json"]  # no temp file left


def test_an_adds_later_records_sync_nothing_and_keep_the_durable_one_as_prev(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut may lose or empty every record after the first: `.prev` must then be that first, durable record,
    which lists every planned attachment (DEL deletes them all from it alone)."""
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    body: Any = {"attachments": [{"ifname": "eth0", "state": "planned"}, {"ifname": "net1", "state": "planned"}]}
    recorder = Recorder(key, body)
    recorder.write()
    durable = journal.read(key)
    assert calls == ["fsync file", "rename", "fsync dir", "fsync dir"]
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
