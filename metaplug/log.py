"""Logging for plugin mode: one JSON object per line, to stderr and optionally to a log file, never to stdout.

stdout belongs to the CNI protocol (exactly one JSON document, cni.md 32), so no handler here ever writes there.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LEVELS = {"debug": logging.DEBUG, "verbose": logging.INFO, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "panic": logging.CRITICAL}
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}
_configured = False


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
    """Set up the `metaplug` loggers once per process. `context` (container ID, verb) is added to every line."""
    global _configured
    root = logging.getLogger("metaplug")
    if _configured:
        for handler in list(root.handlers):
            root.removeHandler(handler)
    _configured = True
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
        if context:
            handler.addFilter(_ContextFilter(context))
        root.addHandler(handler)


class _ContextFilter(logging.Filter):
    def __init__(self, context: dict[str, Any]) -> None:
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.context.items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True
