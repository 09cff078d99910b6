"""Loggers that import `logging` only when a record is actually emitted.

Importing `logging` costs 3-8 ms of every thin-mode CNI call (it pulls in traceback, string, threading, ...), and a
call that goes well at the default level logs nothing. A LazyLogger has the logger methods the verbs use; a record
below the configured threshold is dropped without importing anything. Once `logging` is loaded (by a record, by
httpx, by the daemon or by pytest), every call goes straight to the real `logging.getLogger(name)`, which then
decides as usual.

The host program says how logging would be set up: `defer(threshold, activate)` (metaplug/plugin.py passes its level
and `metaplug.log.configure`); `activate` runs once, right before the first record is handed to `logging`. When
`logging` is already loaded, `defer` activates at once, so nothing changes for long-lived processes and tests.
"""

from __future__ import annotations

import sys

from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50  # logging's numeric levels

_threshold = WARNING  # records below this are dropped while `logging` is not loaded (logging's own default)
_activate: Callable[[], None] | None = None


def defer(threshold: int, activate: Callable[[], None]) -> None:
    """Records at `threshold` or above need logging: `activate` (which sets it up) runs before the first one."""
    global _threshold, _activate
    if "logging" in sys.modules:
        _activate = None
        activate()
        return
    _threshold, _activate = threshold, activate


def _real(name: str) -> Any:
    global _activate
    import logging

    if _activate is not None:
        activate, _activate = _activate, None
        activate()
    return logging.getLogger(name)


class LazyLogger:
    """Stands in for `logging.getLogger(name)`: debug, info, warning, error, exception."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: Any = None

    def _emit(self, level: int, method: str, msg: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._logger is None:
            if "logging" not in sys.modules and level < _threshold:
                return
            self._logger = _real(self.name)
        kwargs.setdefault("stacklevel", 3)  # the caller of debug()/info()/..., not this module
        getattr(self._logger, method)(msg, *args, **kwargs)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(DEBUG, "debug", msg, args, kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(INFO, "info", msg, args, kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(WARNING, "warning", msg, args, kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(ERROR, "error", msg, args, kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._emit(ERROR, "exception", msg, args, kwargs)
