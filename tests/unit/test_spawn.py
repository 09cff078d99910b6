"""metaplug/cni/spawn.py, the delegate runner that replaced subprocess on the CNI path (issue 10.7): the same pipes,
process group, environment, signal defaults, descriptor hygiene and timeouts (cni.md 24), with real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from metaplug.cni import spawn

SH = "/bin/sh"


def script(tmp_path: Path, body: str, name: str = "plugin") -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_stdin_stdout_stderr_and_status(tmp_path: Path) -> None:
    plugin = script(tmp_path, 'cat; echo "to stderr $CNI_COMMAND" >&2; exit 3\n')
    done = spawn.run(plugin, b'{"cniVersion": "1.0.0"}', {"CNI_COMMAND": "ADD"}, timeout=10)
    assert done == spawn.Finished(3, b'{"cniVersion": "1.0.0"}', b"to stderr ADD\n")


def test_exactly_the_given_environment(tmp_path: Path) -> None:
    plugin = script(tmp_path, "env\n")
    out = spawn.run(plugin, b"", {"ONLY": "this"}, timeout=10).out.decode().split()
    assert "ONLY=this" in out and not any(line.startswith("HOME=") for line in out)


def test_big_input_and_output_do_not_deadlock(tmp_path: Path) -> None:
    """4 MiB each way through 64 KiB pipes: written and read at the same time."""
    data = os.urandom(2 * 1024 * 1024).hex().encode()
    plugin = script(tmp_path, "cat; head -c 4194304 /dev/zero >&2\n")
    done = spawn.run(plugin, data, {}, timeout=30)
    assert done.status == 0 and done.out == data and done.err == b"\0" * 4194304


def test_a_child_that_ignores_its_stdin(tmp_path: Path) -> None:
    plugin = script(tmp_path, "exec 0<&-; echo done\n")
    assert spawn.run(plugin, b"x" * 1024 * 1024, {}, timeout=10) == spawn.Finished(0, b"done\n", b"")


@pytest.mark.parametrize("proc_fd", [True, False])
def test_own_session_signal_defaults_and_no_inherited_descriptors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   proc_fd: bool) -> None:
    """The child leads a session of its own, has SIGPIPE at its default (Python ignores it; that would be inherited)
    and gets no descriptor of ours beyond its pipes, even one marked inheritable (as a runtime may pass them)."""
    if not proc_fd:  # no /proc/self/fd to list (a container without /proc): every possible descriptor is checked
        real_listdir = os.listdir

        def listdir(path: str = ".") -> list[str]:
            if str(path) == "/proc/self/fd":
                raise FileNotFoundError(path)
            return real_listdir(path)

        monkeypatch.setattr(os, "listdir", listdir)
    leaked = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(leaked, True)
    try:
        plugin = script(tmp_path, 'ps -o sid= -p $$ | tr -d " "; echo $$; grep SigIgn /proc/self/status; '
                                  "ls /proc/$$/fd\n")
        out = spawn.run(plugin, b"", {"PATH": os.defpath}, timeout=10).out.decode().split("\n")
    finally:
        os.close(leaked)
    sid, pid, ignored, fds = out[0], out[1], out[2], out[3:]
    assert sid == pid  # setsid: its own session and process group
    assert int(ignored.split()[1], 16) & (1 << (13 - 1)) == 0  # SIGPIPE (13) not ignored
    open_fds = {int(f) for f in fds if f.strip()}
    assert {0, 1, 2} <= open_fds and leaked not in open_fds  # (sh keeps its script open on a high fd of its own)


def test_timeout_kills_the_group_even_after_the_pipes_closed(tmp_path: Path) -> None:
    """A child that closes its outputs and lingers: the wait for its exit is bounded too; its group dies."""
    marker = tmp_path / "grandchild.pid"
    plugin = script(tmp_path, f"sleep 60 >/dev/null 2>&1 & echo $! > {marker}\nexec >&- 2>&-; sleep 60\n")
    started = time.monotonic()
    with pytest.raises(spawn.Timeout):
        spawn.run(plugin, b"", {"PATH": os.defpath}, timeout=0.5)
    assert time.monotonic() - started < 3
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{grandchild}").exists() and "Z" not in Path(f"/proc/{grandchild}/stat").read_text().split()[2]:
        assert time.monotonic() < deadline, "the grandchild survived the group kill"
        time.sleep(0.02)


def test_exec_failures_raise_oserror_and_leak_nothing(tmp_path: Path) -> None:
    before = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(FileNotFoundError):
        spawn.run(str(tmp_path / "missing"), b"", {}, timeout=5)
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        spawn.run(str(noexec), b"", {}, timeout=5)
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_killed_by_a_signal_is_a_negative_status(tmp_path: Path) -> None:
    plugin = script(tmp_path, "kill -SEGV $$\n")
    assert spawn.run(plugin, b"", {}, timeout=10).status == -11


def _switches() -> int:
    """This thread's voluntary context switches so far (each time it blocked)."""
    with open("/proc/thread-self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("voluntary_ctxt_switches"))


def test_the_caller_wakes_at_the_exit_not_at_each_write(tmp_path: Path) -> None:
    """Each wake-up is a context switch, the most of what a daemon call costs on a VM: a child that writes four
    times and then exits wakes the caller for its start (vfork) and its exit, not once per write and end (8 here
    with the pipes polled)."""
    plugin = script(tmp_path, "printf a; sleep 0.02; printf b; sleep 0.02; printf c >&2; sleep 0.02; printf d\n")
    spawn.run(plugin, b"", {"PATH": os.defpath}, timeout=10)  # warm: the script and sh in the page cache
    counts = []
    for _ in range(3):
        before = _switches()
        done = spawn.run(plugin, b"", {"PATH": os.defpath}, timeout=10)
        counts.append(_switches() - before)
        assert done == spawn.Finished(0, b"abd", b"c")
    assert min(counts) <= 3, counts


def test_a_descendant_holding_the_outputs_open_does_not_hold_the_caller(tmp_path: Path) -> None:
    """The child exits, a process it left behind still has its stdout: what the child wrote is its answer, at its
    exit (before, the caller read until that descendant closed the pipe, or until the timeout)."""
    plugin = script(tmp_path, "sleep 30 & echo done\n")
    child = spawn.Child(plugin, {"PATH": os.defpath})
    started = time.monotonic()
    try:
        done = child.communicate(b"", timeout=20)
        assert done == spawn.Finished(0, b"done\n", b"")
        assert time.monotonic() - started < 5
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # the sleep, still in the child's process group


def test_more_output_than_a_pipe_holds_after_the_input(tmp_path: Path) -> None:
    """A child blocked writing (its pipe full) never exits by itself: the caller finds it out and reads on."""
    plugin = script(tmp_path, "cat >/dev/null; head -c 3000000 /dev/zero; echo end >&2\n")
    started = time.monotonic()
    done = spawn.run(plugin, b"x" * 1000, {}, timeout=20)
    assert done == spawn.Finished(0, b"\0" * 3000000, b"end\n")
    assert time.monotonic() - started < 5


def test_without_pidfds_the_pipes_are_read_to_their_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel before 5.3 has no pidfd_open: the outputs are read to their end, then the child is reaped."""
    monkeypatch.setattr(spawn, "_pidfd", lambda pid: -1)
    data = os.urandom(300000).hex().encode()
    plugin = script(tmp_path, "cat; echo err >&2; exit 4\n")
    assert spawn.run(plugin, data, {}, timeout=20) == spawn.Finished(4, data, b"err\n")
