"""A small tmpfs that only metaplug sees: a full stateDir (ENOSPC) without mounting anything on the host.

A holder process (`unshare -m --propagation private`) mounts the tmpfs at a path and sleeps; commands run inside its
mount namespace through `prefix` (`nsenter -t PID -m --`), and the test looks at the files through
`/proc/PID/root` (`view`). Stopping the holder (killed by its PID) ends the namespace and with it the mount, pass or
fail; the host only ever sees the empty mount point.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

PAGE = 4096  # tmpfs counts whole pages: every non-empty file takes at least one


class PrivateTmpfs:
    def __init__(self, path: Path, size_kib: int = 256) -> None:
        self.path = path
        self.size_kib = size_kib
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateTmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        script = 'mount -t tmpfs -o "size=$1k,mode=0700" tmpfs "$0" && echo ready && exec sleep infinity'
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                                      str(self.path), str(self.size_kib)], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise AssertionError(f"could not mount a private tmpfs at {self.path}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None

    @property
    def prefix(self) -> list[str]:
        """Run a command inside the private mount namespace."""
        assert self.proc is not None
        return ["nsenter", "-t", str(self.proc.pid), "-m", "--"]

    @property
    def root(self) -> str:
        """The private mount namespace's root, as seen from the host."""
        assert self.proc is not None
        return f"/proc/{self.proc.pid}/root"

    def view(self, path: Path) -> Path:
        return Path(f"{self.root}{path}")

    @property
    def filler(self) -> Path:
        return self.view(self.path / "filler")

    def fill(self, leave_pages: int = 0) -> None:
        """Write a filler file until the tmpfs is full, then give back `leave_pages` pages."""
        block = b"\0" * PAGE
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            if leave_pages:
                size = os.fstat(fd).st_size
                os.ftruncate(fd, max(0, size - leave_pages * PAGE))
        finally:
            os.close(fd)

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def __enter__(self) -> PrivateTmpfs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
