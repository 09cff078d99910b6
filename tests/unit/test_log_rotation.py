"""Multus's logging keys (issue 10.4): `logOptions` rotates the log file (maxSize MB, maxBackups, maxAge days,
compress), `logToStderr: false` keeps stderr silent."""

from __future__ import annotations

import gzip
import json
import logging
import time
from pathlib import Path

import pytest

from metaplug import log as mplog
from metaplug.log import LogRotation, RotatingLogFile


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"metaplug.test.{id(handler)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    handler.setFormatter(mplog.JsonLines())
    return logger


def _backups(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("mp-"))


def test_rotates_at_max_size_and_compresses(tmp_path: Path) -> None:
    path = tmp_path / "mp.log"
    handler = RotatingLogFile(str(path), LogRotation(max_backups=0, max_age_days=0), max_bytes=2000)
    logger = _logger(handler)
    for i in range(40):
        logger.info("line %d %s", i, "x" * 80)
    handler.close()
    backups = _backups(tmp_path)
    assert backups and all(b.endswith(".log.gz") for b in backups)
    assert path.stat().st_size <= 2000
    lines = []
    for name in backups:  # every line is somewhere, none twice
        lines += gzip.decompress((tmp_path / name).read_bytes()).decode().splitlines()
    lines += path.read_text().splitlines()
    assert [json.loads(line)["msg"].split()[1] for line in lines] == [str(i) for i in range(40)]


def test_max_backups_and_max_age_prune(tmp_path: Path) -> None:
    path = tmp_path / "mp.log"
    old = tmp_path / "mp-2001-01-01T00-00-00.000.log.gz"  # far older than maxAge
    old.write_bytes(b"")
    handler = RotatingLogFile(str(path), LogRotation(max_backups=2, max_age_days=1, compress=False), max_bytes=300)
    logger = _logger(handler)
    for i in range(30):
        logger.info("line %d %s", i, "y" * 50)
        time.sleep(0.002)  # distinct backup names (millisecond stamps)
    handler.close()
    backups = _backups(tmp_path)
    assert len(backups) == 2 and not old.exists()
    assert all(b.endswith(".log") for b in backups)


def test_a_file_rotated_by_another_process_is_only_reopened(tmp_path: Path) -> None:
    path = tmp_path / "mp.log"
    first = RotatingLogFile(str(path), LogRotation(compress=False), max_bytes=500)
    second = RotatingLogFile(str(path), LogRotation(compress=False), max_bytes=500)
    a, b = _logger(first), _logger(second)
    b.info("b first")
    for i in range(12):
        a.info("a %d %s", i, "z" * 40)
    before = _backups(tmp_path)
    assert before
    b.info("b %s", "z" * 300)  # its fd still points at the rotated file: it must not rotate the fresh one again
    first.close()
    second.close()
    assert _backups(tmp_path) == before
    assert "b zzz" in path.read_text()


@pytest.mark.parametrize("to_stderr", [True, False])
def test_log_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str], to_stderr: bool) -> None:
    path = tmp_path / "mp.log"
    mplog.configure("info", str(path), {"verb": "ADD"}, to_stderr=to_stderr)
    logging.getLogger("metaplug.test").warning("hello")
    mplog.configure("warning", None)  # close the file handler again
    err = capsys.readouterr().err
    assert ("hello" in err) is to_stderr
    assert json.loads(path.read_text())["msg"] == "hello"
