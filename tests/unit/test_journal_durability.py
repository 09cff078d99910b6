"""journal.write: atomic always, data on disk before the rename; the directory fsync only for a durable write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from metaplug import journal


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
                                                    (False, ["fsync file", "rename"])])
def test_data_is_synced_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool,
                                          expected: list[str]) -> None:
    key = journal.JournalKey(str(tmp_path), "c1", "mp", "eth0")
    calls = _record_calls(monkeypatch)
    journal.write(key, {"attachments": [{"ifname": "eth0"}]}, durable=durable)
    assert calls == expected
    assert journal.read(key) == {"attachments": [{"ifname": "eth0"}], "version": journal.JOURNAL_VERSION}
    assert os.listdir(key.container_dir) == ["mp-eth0.json"]  # no temp file left
