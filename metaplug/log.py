"""Logging for plugin mode: one JSON object per line, to stderr and optionally to a log file, never to stdout.

stdout belongs to the CNI protocol (exactly one JSON document, cni.md 32), so no handler here ever writes there.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
from typing import Any

LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "panic": logging.CRITICAL}
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("metaplug_log_context",
                                                                                  default=None)
_lock = threading.Lock()
_installed: tuple[str, str | None] | None = None  # (level, logFile) of the handlers in place
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


def configure(level: str = "warning", log_file: str | None = None, context: dict[str, Any] | None = None) -> None:
    """Set up the `metaplug` loggers for one call. `context` (container ID, verb) is added to every line it logs.

    The context lives in a contextvar, so concurrent calls in one process (the daemon's threads) each log their own.
    Once `pin` was called (the daemon), the handlers stay as pinned and only the context changes.
    """
    _context.set(dict(context) if context else None)
    with _lock:
        if _pinned or _installed == (level, log_file):
            return
        _install(level, log_file)


def pin(level: str = "info", log_file: str | None = None) -> None:
    """Install the handlers once for a long-running process; later `configure` calls only set their call's context."""
    global _pinned
    with _lock:
        _install(level, log_file)
        _pinned = True


def _install(level: str, log_file: str | None) -> None:
    global _installed
    root = logging.getLogger("metaplug")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    _installed = (level, log_file)
    root.setLevel(LEVELS.get(level, logging.WARNING))
    root.propagate = False
    formatter = JsonLines()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            handlers.append(logging.FileHandler(log_file))
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
