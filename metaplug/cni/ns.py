"""Network namespace paths (CNI_NETNS): open one safely, make sure it is a network namespace, run code inside it.

The runtime hands over a path, and nothing guarantees what is there (issue 9): a FIFO would block a plain `open(2)`
forever, a regular file or /dev/null opens fine and only `setns(2)` fails, with a bare EINVAL. So a path is opened
non-blocking (O_RDONLY | O_NONBLOCK | O_CLOEXEC, and O_NOCTTY for terminals), and the open file must be an nsfs inode
(a namespace is a regular, empty file there; anything else is refused before any ioctl) whose
`ioctl(NS_GET_NSTYPE)` (linux/nsfs.h, Linux 4.11+) is CLONE_NEWNET. Every failure is a CniError code 4 naming
CNI_NETNS (cni.md 2, 32). DEL, which must succeed when the namespace is gone (cni.md 11), asks `is_netns` instead: a
path that is no network namespace holds nothing of ours.

A network namespace is per thread on Linux, so `run_in` enters it in another thread (a reused one, cni.workers), which
goes back to its own namespace afterwards (or ends, when it cannot): the calling thread and the process never leave
their own namespace, and nothing forks. A socket made in that thread stays in the namespace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

from metaplug.cni.errors import INVALID_ENVIRONMENT, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
NS_TYPES = {0x00020000: "mount", 0x02000000: "cgroup", 0x04000000: "UTS", 0x08000000: "IPC", 0x10000000: "user",
            0x20000000: "PID", 0x00000080: "time", CLONE_NEWNET: "network"}
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class NotNetns(CniError):
    """CNI_NETNS is not a network namespace that can be entered (code 4)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(INVALID_ENVIRONMENT, "CNI_NETNS is not a network namespace", f"CNI_NETNS={path!r} {problem}")


def open_netns(path: str) -> int:
    """An fd (O_CLOEXEC) of the network namespace at `path`; the caller closes it. Raises NotNetns (code 4)."""
    if not path:
        raise NotNetns(path, "is empty")
    if "\0" in path:
        raise NotNetns(path, "contains a NUL byte")
    try:
        fd = os.open(path, OPEN_FLAGS)
    except FileNotFoundError:
        raise NotNetns(path, "does not exist (the container's namespace is gone or the path is wrong)") from None
    except (OSError, ValueError) as exc:  # ValueError: a lone surrogate that has no bytes
        raise NotNetns(path, f"cannot be opened: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        _require_netns(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _require_netns(fd: int, path: str) -> None:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        raise NotNetns(path, f"is a {_kind(mode)}, not a network namespace")
    try:
        nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            raise NotNetns(path, "is a regular file, not a namespace (an unmounted namespace leaves one)") from None
        raise NotNetns(path, f"cannot be inspected: {exc.strerror}") from None
    if nstype != CLONE_NEWNET:
        raise NotNetns(path, f"is a {NS_TYPES.get(nstype, hex(nstype))} namespace, not a network namespace")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


@contextlib.contextmanager
def opened(path: str) -> Iterator[int]:
    """`open_netns` as a context manager."""
    fd = open_netns(path)
    try:
        yield fd
    finally:
        os.close(fd)


def require_netns(path: str) -> None:
    """Raise NotNetns (code 4) unless `path` is a network namespace (ADD and CHECK, before anything is done)."""
    os.close(open_netns(path))


def is_netns(path: str) -> bool:
    """True when `path` is a network namespace that can be entered."""
    try:
        require_netns(path)
    except NotNetns:
        return False
    return True


_libc: Any = None
_pool: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        import ctypes

        raise CniError(INVALID_ENVIRONMENT, "cannot enter the network namespace", os.strerror(ctypes.get_errno()))


def run_in(fd: int, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread that has entered the network namespace `fd`; return its result or raise its error."""
    global _pool
    from metaplug.cni import workers

    if _pool is None:
        _pool = workers.Pool("cni-netns")

    def job() -> T:
        state = workers.thread_state()  # per pooled thread: an fd of the namespace it started in
        home = state.get("home_netns")
        if home is None:  # a new pooled thread, still in the namespace of the process
            home = state["home_netns"] = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
            return fn()
        finally:
            try:
                _setns(home)
            except CniError:
                workers.retire()  # never serve another call from inside someone's namespace

    result: T = _pool.run(job)  # cni.workers imports threading: only when a namespace is entered (not on DEL)
    return result


def run_in_path(path: str, fn: Callable[[], T]) -> T:
    """`run_in` for the namespace at `path` (checked first: NotNetns, code 4)."""
    with opened(path) as fd:
        return run_in(fd, fn)
