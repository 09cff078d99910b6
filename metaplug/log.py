"""Logging for plugin mode: one JSON object per line, to stderr and optionally to a log file, never to stdout.

stdout belongs to the CNI protocol (exactly one JSON document, cni.md 32), so no handler here ever writes there.
Multus's logging keys mean here what they mean there: `logToStderr: false` silences stderr, and the log file rotates
as Multus's does (`logOptions`: maxSize MB, maxBackups, maxAge days, compress; Multus's defaults 100, 5, 5, true).
A rotated file is `<stem>-<UTC time>.<ext>` (`metaplug-2026-12-01T09-55-13.000.log`, `.gz` when compressed), the
naming of Multus's rotating writer, so existing log collection keeps working.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from metaplug.cni import files
from metaplug.config import LogRotation as LogRotation  # defined beside the other settings (no logging import)

LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "panic": logging.CRITICAL}
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("metaplug_log_context",
                                                                                  default=None)
_lock = threading.Lock()
_installed: tuple[Any, ...] | None = None  # (level, logFile, to_stderr, rotation) of the handlers in place
_pinned = False


class JsonLines(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extra}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class RotatingLogFile(logging.Handler):
    """Appends lines to `path`; when the next line would take the file past `max_bytes`, the file is renamed to a
    timestamped backup (compressed, pruned by count and age) and a new one started. Many short-lived plugin
    processes share the file: rotation happens under an flock on the current file, and a process that finds the
    file already rotated by another only reopens it."""

    def __init__(self, path: str, rotation: LogRotation, *, max_bytes: int | None = None) -> None:
        super().__init__()
        self.path = path
        self.rotation = rotation
        self.max_bytes = max_bytes if max_bytes is not None else (rotation.max_size_mb or 100) * 1024 * 1024
        self.fd = self._open()

    def _open(self) -> int:
        return files.open_log(self.path)  # 0600 whatever the umask, never blocks, no symlink followed (issue 9)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode()
            if os.fstat(self.fd).st_size + len(data) > self.max_bytes:
                self._rotate()
            os.write(self.fd, data)
        except Exception:  # logging must never break a CNI call
            self.handleError(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        super().close()

    def _rotate(self) -> None:
        import fcntl

        old = self.fd
        fcntl.flock(old, fcntl.LOCK_EX)
        try:
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(old).st_ino:
                backup = self._backup_name()
                os.rename(self.path, backup)
            else:
                backup = None  # another process rotated it meanwhile
            self.fd = self._open()
        finally:
            fcntl.flock(old, fcntl.LOCK_UN)
            os.close(old)
        if backup is not None:
            if self.rotation.compress:
                _gzip(backup)
            self._prune()

    def _split(self) -> tuple[str, str, str]:
        directory, name = os.path.split(self.path)
        stem, ext = os.path.splitext(name)
        return directory or ".", stem, ext

    def _backup_name(self) -> str:
        """A timestamped name no backup has yet (called under the rotation lock; two rotations in one millisecond
        take the next millisecond)."""
        directory, stem, ext = self._split()
        millis = int(time.time() * 1000)
        while True:
            seconds, ms = divmod(millis, 1000)
            stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(seconds)) + f".{ms:03d}"
            path = os.path.join(directory, f"{stem}-{stamp}{ext}")
            if not os.path.exists(path) and not os.path.exists(path + ".gz"):
                return path
            millis += 1

    def _prune(self) -> None:
        import calendar
        import re

        directory, stem, ext = self._split()
        pattern = re.compile(re.escape(stem) + r"-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3})" + re.escape(ext)
                             + r"(\.gz)?$")
        backups = []
        for name in os.listdir(directory):
            m = pattern.match(name)
            if m:
                stamp = calendar.timegm(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H-%M-%S"))
                backups.append((stamp, os.path.join(directory, name)))
        backups.sort(reverse=True)  # newest first
        cutoff = time.time() - self.rotation.max_age_days * 86400
        for index, (stamp, path) in enumerate(backups):
            too_many = self.rotation.max_backups and index >= self.rotation.max_backups
            too_old = self.rotation.max_age_days and stamp < cutoff
            if too_many or too_old:
                with contextlib.suppress(OSError):
                    os.unlink(path)


def _gzip(path: str) -> None:
    import gzip
    import shutil

    fd = files.open_private(path + ".gz", os.O_WRONLY | os.O_TRUNC)  # 0600 whatever the umask (issue 9)
    with open(path, "rb") as src, os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(path)


def configure(level: str = "warning", log_file: str | None = None, context: dict[str, Any] | None = None, *,
              to_stderr: bool = True, rotation: LogRotation | None = None) -> None:
    """Set up the `metaplug` loggers for one call. `context` (container ID, verb) is added to every line it logs.
    `to_stderr` False (Multus's `logToStderr: false`) logs to the file only; the file rotates per `rotation`.

    The context lives in a contextvar, so concurrent calls in one process (the daemon's threads) each log their own.
    Once `pin` was called (the daemon), the handlers stay as pinned and only the context changes.
    """
    _context.set(dict(context) if context else None)
    with _lock:
        if _pinned or _installed == (level, log_file, to_stderr, rotation):
            return
        _install(level, log_file, to_stderr, rotation)


def pin(level: str = "info", log_file: str | None = None) -> None:
    """Install the handlers once for a long-running process; later `configure` calls only set their call's context."""
    global _pinned
    with _lock:
        _install(level, log_file)
        _pinned = True


def _install(level: str, log_file: str | None, to_stderr: bool = True, rotation: LogRotation | None = None) -> None:
    global _installed
    root = logging.getLogger("metaplug")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    _installed = (level, log_file, to_stderr, rotation)
    root.setLevel(LEVELS.get(level, logging.WARNING))
    root.propagate = False
    formatter = JsonLines()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)] if to_stderr else []
    if log_file:
        try:
            handlers.append(RotatingLogFile(log_file, rotation or LogRotation()))
        except OSError as exc:
            sys.stderr.write(json.dumps({"level": "error", "msg": f"cannot open logFile {log_file}: {exc}"}) + "\n")
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_ContextFilter())
        root.addHandler(handler)


class _ContextFilter(logging.Filter):
    """Adds the current call's context to each record (fields the record sets itself win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
