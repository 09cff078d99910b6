"""Reading files that others may have put in place, and writing private state whatever the umask (issue 9).

Reading: `read_file` opens without blocking (O_NONBLOCK: a FIFO where a config file should be would block a plain
open(2) forever) and accepts only a regular file. Every failure, a NUL byte in the path included, is an OSError, which
the callers already turn into their CNI error.

Writing: metaplug and the bundled delegates keep state that root acts on later (DEL runs the delegate binaries and
configs recorded in the journal), so every directory they create is DIR_MODE (0700) and every file FILE_MODE (0600),
set with chmod after creation: the runtime's umask (000, 022, 077) never decides. `atomic_write` writes a hidden temp
file `.<name>.tmp.<pid>` next to the target, fsyncs it, renames it over the target, fsyncs the directory, and removes
the temp file when any step fails. `create` puts a file that does not exist yet in place and leaves its fsyncs to
the caller (`PendingSync`): the rename first (no version is replaced, so none can be
lost), then the fsyncs of the file and of each directory, started together so that they share one journal commit.

Trust: `untrusted` says why an existing file or directory must not be trusted with root's actions.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import stat

from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

DIR_MODE = 0o700
FILE_MODE = 0o600
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


def make_dirs(path: str, mode: int = DIR_MODE) -> None:
    """mkdir -p: every directory created here gets exactly `mode` (os.makedirs leaves the parents to the umask)."""
    path = _os_path(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path.rstrip("/"))
    if parent and parent != path:
        make_dirs(parent, mode)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    os.chmod(path, mode)


def open_private(path: str, flags: int, mode: int = FILE_MODE) -> int:
    """os.open with O_CREAT | O_CLOEXEC | O_NOFOLLOW; a file created by this call gets exactly `mode`."""
    path = _os_path(path)
    base = flags | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(path, base | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        if flags & os.O_EXCL:
            raise
        return os.open(path, base, mode)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_write(path: str, data: bytes, mode: int = FILE_MODE, *, durable: bool = True,
                 sync_dir: bool = True, previous: str | None = None) -> None:
    """Replace `path` by `data` so that a crash leaves the old or the new content, never a mix (see module doc).
    `durable=False` skips the fsyncs (state that is rebuilt anyway). `sync_dir=False` keeps the data's fsync (so any
    version a power cut leaves is whole) but skips the directory's: the rename itself may then be lost to a power cut,
    leaving the previous version (for a caller whose previous version is safe to fall back to). With `previous`, the
    version being replaced stays there (`keep_previous`)."""
    directory = os.path.dirname(path) or "."
    tmp = _temp_path(path)
    fd = _write_temp(tmp, data, mode)
    try:
        try:
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if previous is not None:
            keep_previous(path, previous)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable and sync_dir:
        fsync_dir(directory)


def create(path: str, data: bytes, mode: int = FILE_MODE, *, also_sync: tuple[str, ...] = ()) -> PendingSync:
    """Put a new file at `path`, which must not exist yet (the caller holds the lock that makes sure), holding
    `data`: temp file, rename. The returned PendingSync makes it durable: fsync of the file, of its directory and of
    every `also_sync` directory (a parent whose entry for a new directory must survive too). Renaming before the
    data is synced replaces nothing, so no version can be lost: until the fsyncs are done a power cut may leave the
    file empty (there was none before), after them it is whole. The fsyncs then share one journal commit on ext4 and
    XFS instead of two (a rename after a data fsync needs a commit of its own): ~0.3-1 ms per call on this project's
    disk. A crash (SIGKILL) leaves the temp file or the whole new file."""
    tmp = _temp_path(path)
    fd = _write_temp(tmp, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return PendingSync(fd, (os.path.dirname(path) or ".", *also_sync))


class PendingSync:
    """The fsyncs still owed to a file `create` put in place (its fd stays open until then)."""

    __slots__ = ("_dirs", "_fd")

    def __init__(self, fd: int, dirs: tuple[str, ...]) -> None:
        self._fd = fd
        self._dirs = dirs

    def complete(self) -> None:
        """fsync the file and each directory, all at once; once (later calls do nothing). OSError when one fails,
        after every one has ended.

        The directories are synced in threads of their own while this thread syncs the file: each fsync waits for
        the journal commit that holds the new entries, and then for a flush of the disk's cache; started together
        they share the commit and the flushes instead of paying them one after another (1.2-1.4 ms instead of
        1.7-2.2 ms here, on the first record of every ADD). Durability does not depend on their order."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        syncs = [_Concurrent(fsync_dir, directory) for directory in self._dirs]
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            failures = [sync.wait() for sync in syncs]
        for failure in failures:
            if failure is not None:
                raise failure

    def abandon(self) -> None:
        """Close the file without syncing it (the caller replaces or removes it)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class _Concurrent:
    """`fn(arg)` in a new thread (`_thread`: the threading module costs a thin-mode call its import); `wait` for
    its end, and the OSError it raised, if any."""

    __slots__ = ("_done", "_error")

    def __init__(self, fn: Callable[[str], None], arg: str) -> None:
        self._error: OSError | None = None
        self._done = _thread.allocate_lock()
        self._done.acquire()
        _thread.start_new_thread(self._run, (fn, arg))

    def _run(self, fn: Callable[[str], None], arg: str) -> None:
        try:
            fn(arg)
        except OSError as exc:
            self._error = exc
        finally:
            self._done.release()

    def wait(self) -> OSError | None:
        self._done.acquire()
        return self._error


def _temp_path(path: str) -> str:
    return os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp.{os.getpid()}")


def _write_temp(tmp: str, data: bytes, mode: int) -> int:
    """A new temp file at `tmp` holding `data`; its fd, open (the file is removed again when writing fails)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # left by a crashed process that had our pid
    fd = open_private(tmp, os.O_WRONLY | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return fd


def keep_previous(path: str, previous: str) -> None:
    """`previous` becomes a second name of the file at `path` (nothing when there is none yet); the rename that
    follows in `atomic_write` gives `path` the new file, so the two names hold two whole, independent versions. Done
    once the new data is written: links and unlinks need no free space, so a write that fails on a full disk leaves
    both versions as they were. On a filesystem without hard links there is no previous version."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(previous)
    try:
        os.link(path, previous)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def untrusted(st: os.stat_result, *, ancestor: bool = False) -> str | None:
    """Why a file or directory with this lstat() must not be trusted with root's actions, or None when it may.

    Trusted: owned by this process's uid (root on a node) and writable by nobody else. An `ancestor` directory may
    also be root's, and writable by others when it is sticky (/tmp: nobody else can rename what is ours in it).
    """
    uid = os.geteuid()
    if st.st_uid not in ((uid, 0) if ancestor else (uid,)):
        return f"is owned by uid {st.st_uid}, not {uid}"
    sticky_dir = stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_ISVTX)
    if st.st_mode & 0o022 and not (ancestor and sticky_dir):
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def open_log(path: str) -> int:
    """An fd appending to the log file at `path`, created FILE_MODE. Non-blocking open and regular files only (a FIFO
    without a reader would block, one with a reader could stall every write); O_NOFOLLOW, so a symlink planted where
    the log file goes cannot make root append to another file."""
    fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd
