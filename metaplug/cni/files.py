"""Reading files that others may have put in place (issue 9).

`read_file` opens without blocking (O_NONBLOCK: a FIFO where a config file should be would block a plain open(2)
forever) and accepts only a regular file. Every failure, a NUL byte in the path included, is an OSError, which the
callers already turn into their CNI error.
"""

from __future__ import annotations

import errno
import os
import stat

READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
MAX_READ = 16 << 20  # bytes: more than any config or journal; a file that never ends (/dev/zero) is not read forever


def _os_path(path: str) -> str:
    """`path`, or OSError EINVAL when no system call could take it (a NUL byte, a lone surrogate)."""
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        raise OSError(errno.EINVAL, "path is not valid UTF-8", path) from None
    if "\0" in path:
        raise OSError(errno.EINVAL, "path contains a NUL byte", path)
    return path


def read_file(path: str, limit: int = MAX_READ) -> bytes:
    """The content of the regular file at `path`; OSError for anything else (missing: FileNotFoundError)."""
    fd = os.open(_os_path(path), READ_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, f"larger than {limit} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)
