"""The spool: DELs a shim could not deliver, replayed by the daemon (DESIGN: "Two modes, one core").

A record is the exact request frame (protocol.py) in `<spoolDir>/<unix-time-ns>-<pid>.del`, written by
metaplug-shim.c (tmp name, fsync, 0600, rename, fsync of the directory). Records replay oldest first; a record is
removed only after its DEL succeeded; one that cannot be decoded (or is not a DEL) is moved aside as `.corrupt` and
logged, because no retry could ever make it succeed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import NamedTuple

from metaplug.cni import files
from metaplug.daemon.protocol import ProtocolError, Request, decode_request

log = logging.getLogger("metaplug.daemon.spool")
SUFFIX = ".del"


class Record(NamedTuple):
    path: str
    request: Request

    @property
    def container_id(self) -> str:
        return self.request.env.get("CNI_CONTAINERID", "")


def _order(name: str) -> tuple[int, str]:
    stamp = name.split("-", 1)[0]
    return (int(stamp) if stamp.isdigit() else 0, name)


class Spool:
    """The records of one spool directory; each file is read once and remembered until it is removed."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._known: dict[str, Record] = {}
        self._lock = threading.Lock()

    def create(self) -> None:
        files.make_dirs(self.directory)  # 0700 each, parents too, whatever the umask

    def pending(self) -> list[Record]:
        """Every readable record, oldest first (unreadable ones are moved aside on the way)."""
        try:
            names = sorted((n for n in os.listdir(self.directory) if n.endswith(SUFFIX)), key=_order)
        except FileNotFoundError:
            return []
        with self._lock:
            paths = [os.path.join(self.directory, n) for n in names]
            for stale in set(self._known) - set(paths):
                del self._known[stale]
            out = []
            for path in paths:
                record = self._known.get(path) or self._load(path)
                if record is not None:
                    self._known[path] = record
                    out.append(record)
            return out

    def pending_for(self, container_id: str) -> list[Record]:
        return [r for r in self.pending() if r.container_id == container_id]

    def _load(self, path: str) -> Record | None:
        try:
            # A record is replayed as root: one that someone else could have written is not (issue 9), and a FIFO
            # in its place must not block the replay.
            problem = files.untrusted(os.lstat(path))
            if problem:
                raise ProtocolError(f"record {problem}")
            request = decode_request(files.read_file(path))
            if request.env.get("CNI_COMMAND") != "DEL":
                raise ProtocolError(f"spooled call is {request.env.get('CNI_COMMAND')!r}, not DEL")
        except FileNotFoundError:
            return None  # replayed meanwhile
        except (OSError, ProtocolError) as exc:
            aside = path + ".corrupt"
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.error("spool record cannot be replayed; moved aside", extra={"path": path, "moved_to": aside,
                                                                               "error": str(exc)})
            return None
        return Record(path, request)

    def remove(self, record: Record) -> None:
        with self._lock:
            self._known.pop(record.path, None)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record.path)
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def exists(self, record: Record) -> bool:
        return os.path.exists(record.path)
