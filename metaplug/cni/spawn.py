"""Run one delegate process: stdin in, stdout and stderr out, bounded by a timeout (cni.md 24).

What subprocess.Popen(..., stdin/stdout/stderr=PIPE, start_new_session=True, close_fds=True).communicate(input,
timeout) did, with os.posix_spawn, pipes and select.poll: importing subprocess (and signal, selectors, locale with
it) cost ~2.6 ms of every thin-mode CNI call (issue 10.7). The same guarantees:
- the child runs in a session and process group of its own (a timeout kills the group: the delegate and all it
  started), with exactly the given environment, SIGPIPE and SIGXFSZ back at their defaults (Python ignores SIGPIPE;
  an ignored signal survives exec), and no descriptor of ours but its three pipes;
- stdin is written while stdout and stderr are read (no deadlock on big answers); a child that closes its stdin
  early just stops the writing;
- the whole run (writing, reading, waiting for the exit) is bounded by `timeout`: then Timeout, after the group was
  SIGKILLed and the child reaped; any other exception (e.g. KeyboardInterrupt) does the same before it propagates;
- exec failures (ENOENT, EACCES, ETXTBSY...) raise OSError from posix_spawn, before anything ran.
Once its stdin is written, the caller waits for the child's exit (a pidfd) rather than for each write and end of
its outputs, which the pipes hold meanwhile (`exchange_until_exit`: one wake-up per delegate instead of three or
more); what the child wrote is its answer at its exit, even if a process it left behind still holds a pipe open.
"""

from __future__ import annotations

import _signal  # the C module behind `signal`: its constants without the enum classes signal.py builds
import contextlib
import fcntl
import os
import select
import time

from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping

READ_SIZE = 64 * 1024
WRITE_SIZE = 64 * 1024
DRAIN_AFTER_KILL = 5.0  # seconds to read what a killed group still writes before giving up on its pipes
QUIET_MS = 100  # how often a child that is neither done nor reading is looked at for output it cannot get rid of
_IN = select.POLLIN | select.POLLPRI
_GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


class Finished(NamedTuple):
    status: int  # exit status, or -N when killed by signal N (as subprocess reports it)
    out: bytes
    err: bytes


class Timeout(Exception):
    """The child did not finish within the timeout; its process group was killed and it was reaped."""


class Child:
    """A started child: feed it, read it and reap it with communicate() (once)."""

    def __init__(self, path: str, env: Mapping[str, str]) -> None:
        """Start `path` (OSError when it cannot be executed: nothing runs, nothing leaks)."""
        self.pid, to_child, from_out, from_err = _start(path, env)
        self.streams = _Streams(to_child, from_out, from_err)

    def abandon(self) -> None:
        """Kill the child's process group before it got anything on stdin, and reap it (instead of communicate)."""
        _kill_and_reap(self.pid, self.streams)

    def communicate(self, stdin: bytes, timeout: float | None) -> Finished:
        deadline = None if timeout is None else time.monotonic() + timeout
        streams = self.streams
        pidfd = _pidfd(self.pid)
        try:
            if pidfd >= 0:
                exited = streams.exchange_until_exit(stdin, deadline, pidfd)
            else:
                streams.exchange(stdin, deadline)
                exited = False
            status = _wait(self.pid, deadline, -1 if exited else pidfd)
        except BaseException as exc:
            _kill_and_reap(self.pid, streams)
            if isinstance(exc, _Expired):
                raise Timeout from None
            raise
        finally:
            streams.close()
            if pidfd >= 0:
                os.close(pidfd)
        return Finished(status, bytes(streams.out), bytes(streams.err))


def run(path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None) -> Finished:
    """Start `path`, write `stdin`, read both outputs, reap it: Popen + communicate in one."""
    return Child(path, env).communicate(stdin, timeout)


class _Expired(Exception):
    pass


def _above_stdio(fd: int) -> int:
    """`fd`, moved to 3 or above (a child-side pipe end must not be 0-2 already: dup2 onto itself would keep its
    close-on-exec flag)."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def _inherited_fds() -> list[int]:
    """Our descriptors above 2 that an exec would pass on (from the runtime, say): the child must not get them."""
    try:
        candidates = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: try every possible descriptor
        candidates = list(range(3, min(os.sysconf("SC_OPEN_MAX"), 65536)))
    found = []
    for fd in candidates:
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the descriptor listdir itself used, closed by now
                continue
    return found


def _start(path: str, env: Mapping[str, str]) -> tuple[int, int, int, int]:
    """Spawn `path` with three fresh pipes; (pid, its stdin writer, its stdout reader, its stderr reader)."""
    pipes = [os.pipe() for _ in range(3)]  # close-on-exec both ends (PEP 446)
    pipes = [(_above_stdio(r), _above_stdio(w)) for r, w in pipes]
    (in_r, in_w), (out_r, out_w), (err_r, err_w) = pipes
    actions: list[tuple[int, int] | tuple[int, int, int]] = [
        (os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_fds()]
    try:
        pid = os.posix_spawn(path, [path], dict(env), file_actions=actions, setsid=True,
                             setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
    except BaseException:
        for fd in (in_r, in_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    return pid, in_w, out_r, err_r


class _Streams:
    """Our ends of the child's three pipes and what came out of them."""

    def __init__(self, to_child: int, from_out: int, from_err: int) -> None:
        self.to_child: int | None = to_child
        self.readers: dict[int, bytearray] = {from_out: bytearray(), from_err: bytearray()}
        self.out = self.readers[from_out]
        self.err = self.readers[from_err]
        self.open = {from_out, from_err}

    def exchange(self, stdin: bytes, deadline: float | None) -> None:
        """Write all of `stdin` (then close it) while reading both outputs to their end."""
        poller = self._feed(stdin, deadline)
        self._stream(poller, deadline)

    def exchange_until_exit(self, stdin: bytes, deadline: float | None, pidfd: int) -> bool:
        """`exchange`, waiting for the child's exit (its `pidfd`) rather than for each piece of its output: True when
        it has exited (its outputs read, as far as they were written), False when both outputs ended first.

        A delegate writes its answer (a few KiB, which the pipe holds) and exits; woken at each write and again at
        each end of output, then at the exit, the caller would wake three times where once is enough. On this
        project's VM a wake-up costs a context switch (and an idle vCPU's wake), which is most of the daemon's
        CPU per call, and it competes with the exiting child for the CPU. A child that has more to say than the
        pipe holds is found out at the next QUIET look (it is blocked writing): from then on its outputs are read
        as they come, as by `exchange`. At the exit, what the pipes hold is read; a pipe that a descendant still
        holds open (it left the child's process group running) ends there."""
        self._feed(stdin, deadline)
        for fd in self.open:
            os.set_blocking(fd, False)
        exit_poll = select.poll()
        exit_poll.register(pidfd, select.POLLIN)
        while self.open:
            wait_ms = _poll_ms(deadline)
            if exit_poll.poll(QUIET_MS if wait_ms is None else min(wait_ms, QUIET_MS)):
                self._read_available()
                return True
            if self._read_available():  # output is waiting: the child writes more than a pipe holds
                streaming = select.poll()
                for fd in self.open:
                    os.set_blocking(fd, True)
                    streaming.register(fd, _IN)
                self._stream(streaming, deadline)
                return False
        return False

    def _feed(self, stdin: bytes, deadline: float | None) -> select.poll:
        """Write all of `stdin` (then close it), reading both outputs meanwhile (a child may answer before it has
        read all of its input); the poller, with the outputs still open registered (and no other descriptor)."""
        poller = select.poll()
        view = memoryview(stdin)
        sent = 0
        if self.to_child is not None:
            if stdin:
                os.set_blocking(self.to_child, False)
                poller.register(self.to_child, select.POLLOUT)
            else:
                self._close_stdin()
        for fd in self.open:
            poller.register(fd, _IN)
        while self.to_child is not None:
            for fd, event in poller.poll(_poll_ms(deadline)):
                if fd == self.to_child:
                    if event & _GONE:
                        poller.unregister(fd)
                        self._close_stdin()
                        continue
                    try:
                        sent += os.write(fd, view[sent:sent + WRITE_SIZE])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # the child closed its stdin: it wants no more
                        sent = len(view)
                    if sent >= len(view):
                        poller.unregister(fd)
                        self._close_stdin()
                elif not self._read(fd):
                    poller.unregister(fd)
        return poller

    def _stream(self, poller: select.poll, deadline: float | None) -> None:
        """Read both outputs as they come, to their end (`poller`: the open ones, registered)."""
        while self.open:
            for fd, _event in poller.poll(_poll_ms(deadline)):
                if not self._read(fd):
                    poller.unregister(fd)

    def _read_available(self) -> bool:
        """Read what the (non-blocking) outputs hold now; True when there was anything. An output at its end is
        closed."""
        found = False
        for fd in list(self.open):
            while fd in self.open:
                try:
                    if not self._read(fd):
                        break
                except BlockingIOError:
                    break
                found = True
        return found

    def drain(self, deadline: float) -> None:
        """Read until both outputs end or `deadline` passes (after the kill)."""
        self._close_stdin()
        poller = select.poll()
        for fd in self.open:
            poller.register(fd, _IN)
        try:
            while self.open:
                for fd, _event in poller.poll(_poll_ms(deadline)):
                    try:
                        if not self._read(fd):
                            poller.unregister(fd)
                    except BlockingIOError:  # left non-blocking by exchange_until_exit
                        continue
        except _Expired:  # a descendant that left the group still holds a pipe open
            pass

    def _read(self, fd: int) -> bool:
        """Read what is there; False at the end of that stream (then closed)."""
        data = os.read(fd, READ_SIZE)
        if data:
            self.readers[fd] += data
            return True
        self.open.discard(fd)
        os.close(fd)
        return False

    def _close_stdin(self) -> None:
        if self.to_child is not None:
            os.close(self.to_child)
            self.to_child = None

    def close(self) -> None:
        self._close_stdin()
        for fd in self.open:
            os.close(fd)
        self.open.clear()


def _poll_ms(deadline: float | None) -> int | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired
    return max(1, int(left * 1000 + 0.999))


def _pidfd(pid: int) -> int:
    """A pidfd of the child, or -1 on a kernel without them (before 5.3)."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return -1


def _wait(pid: int, deadline: float | None, pidfd: int) -> int:
    """Reap the child (its outputs have ended, or it has exited), within the deadline: with its `pidfd` (-1: none,
    or known to have exited) bounded by the deadline; without, not bounded (its pipes closed: it is exiting)."""
    if pidfd >= 0 and deadline is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll(_poll_ms(deadline)):
            pass
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _kill_and_reap(pid: int, streams: _Streams) -> None:
    """SIGKILL the child's whole process group, read what is left for a while, reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, _signal.SIGKILL)
    streams.drain(time.monotonic() + DRAIN_AFTER_KILL)
    streams.close()
    with contextlib.suppress(ChildProcessError):  # already reaped
        os.waitpid(pid, 0)
