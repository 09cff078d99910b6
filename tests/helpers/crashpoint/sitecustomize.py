"""Test-only crash injection for metaplug (tests/integration/test_crash_points.py), loaded through PYTHONPATH.

A "step" is one change metaplug makes to the world: a file created or written, synced, renamed, linked, unlinked, a
directory made or removed, a lock taken, a delegate started. With METAPLUG_TEST_CRASH_LOG every step is appended to
that file (one JSON line: step number, operation, argument, and the PIDs of the delegates started so far); with
METAPLUG_TEST_CRASH_AT=N the process SIGKILLs itself right before step N (or, for a delegate start, right after
it: the delegate then runs on without metaplug, as after a real crash). An fsync's line also names the synced inode
("ino"). Nothing of metaplug knows about this file; both variables are removed from the environment at once, so no
delegate inherits them.
"""

from __future__ import annotations

import _thread
import fcntl
import json
import os
import signal
from typing import Any

_AT = int(os.environ.pop("METAPLUG_TEST_CRASH_AT", "0") or 0)
_LOG = os.environ.pop("METAPLUG_TEST_CRASH_LOG", "")
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT
_step = 0
_counting = _thread.allocate_lock()  # steps of metaplug's own threads too (PendingSync's fsyncs): one count, in order
_spawned: list[int] = []
_open, _write, _close = os.open, os.write, os.close


def _record(op: str, arg: Any) -> None:
    if not _LOG:
        return
    entry = {"step": _step, "op": op, "arg": str(arg), "spawned": _spawned}
    if op == "fsync":  # which file's data reaches the disk (the power-cut tests lose every other file's)
        entry["ino"] = os.fstat(arg).st_ino
    fd = _open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        _write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        _close(fd)


def _reached(op: str, arg: Any) -> bool:
    """Count and log one step; True when it is the one to die at."""
    global _step
    with _counting:
        _step += 1
        _record(op, arg)
        return _step == _AT


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wrap(name: str, counts: Any = None) -> None:
    real = getattr(os, name)

    def step(*args: Any, **kw: Any) -> Any:
        if (counts is None or counts(*args, **kw)) and _reached(name, args[0] if args else ""):
            _die()
        return real(*args, **kw)

    setattr(os, name, step)


if _AT or _LOG:
    _wrap("open", lambda path, flags, *a, **k: bool(flags & _WRITING))
    for _name in ("write", "fsync", "replace", "rename", "link", "unlink", "rmdir", "mkdir"):
        _wrap(_name)
    _flock = fcntl.flock

    def _flock_step(fd: Any, op: int) -> None:
        if _reached("flock", fd):
            _die()
        _flock(fd, op)

    fcntl.flock = _flock_step
    _posix_spawn = os.posix_spawn

    def _spawn_step(path: Any, argv: Any, *args: Any, **kw: Any) -> int:
        """metaplug starts delegates with os.posix_spawn (metaplug/cni/spawn.py)."""
        pid = _posix_spawn(path, argv, *args, **kw)
        _spawned.append(pid)
        if _reached("spawn", argv):
            _die()  # after the start: the delegate runs on without metaplug
        return pid

    os.posix_spawn = _spawn_step
