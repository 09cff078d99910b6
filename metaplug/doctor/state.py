"""Doctor's look at a stateDir: the journals and everything else lying there.

Layout (journal.py): `<stateDir>/<containerID>/<meta network>-<ifname>.json` (+ `.lock`), written through
`.<journal>.tmp.<pid>`, set aside as `<journal>.corrupt.<time>`. Only the lock of a journal tells whether an
operation is in progress, so anything that looks unfinished is judged only while nobody holds that lock.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import TYPE_CHECKING, NamedTuple

from metaplug import journal
from metaplug.doctor.findings import Finding

if TYPE_CHECKING:
    from metaplug.journal import JournalRecord

TMP_MARK = ".json.tmp."
CORRUPT_MARK = ".json.corrupt."


class Recorded(NamedTuple):
    """One readable journal."""

    key: journal.JournalKey
    body: JournalRecord


class StateScan(NamedTuple):
    recorded: list[Recorded]
    unreadable_containers: set[str]  # containers with a journal that cannot be read: nothing of theirs is judged
    findings: list[Finding]
    problems: list[str]


def key_for(state_dir: str, container_id: str, stem: str) -> journal.JournalKey | None:
    """The key whose files are `<stem>.json`/`<stem>.lock`. The stem is `<meta network>-<ifname>`; any split at a
    dash names the same files, so the first one is taken."""
    meta, dash, ifname = stem.partition("-")
    return journal.JournalKey(state_dir, container_id, meta, ifname) if dash and meta and ifname else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _permissions(path: str, st: os.stat_result, what: str) -> Finding | None:
    """stateDir, container dirs, journals and locks: trusted as the verbs trust them (cni.files.untrusted: ours and
    writable by nobody else), since DEL runs the configs a journal holds, as root; the verbs refuse the others."""
    from metaplug.cni import files

    problem = files.untrusted(st)
    if problem is None:
        return None
    return Finding("permissions", path, f"{what} {problem}: the verbs refuse it (whoever can write here chooses what "
                                        "DEL runs as root)",
                   f"check what is in it, then chown {os.geteuid()} {path} && chmod go-w {path}")


def scan_state(state_dir: str) -> StateScan:
    scan = StateScan([], set(), [], [])
    try:
        st = os.stat(state_dir)
        containers = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        scan.problems.append(f"stateDir {state_dir} does not exist (nothing recorded yet, or a wrong --state-dir)")
        return scan
    except OSError as exc:
        scan.problems.append(f"cannot read stateDir {state_dir}: {exc.strerror}")
        return scan
    if (bad := _permissions(state_dir, st, "stateDir")) is not None:
        scan.findings.append(bad)
    for cid in containers:
        cdir = os.path.join(state_dir, cid)
        try:
            cst = os.lstat(cdir)
            if not stat.S_ISDIR(cst.st_mode):
                continue
            names = set(os.listdir(cdir))
        except OSError as exc:
            scan.problems.append(f"cannot read {cdir}: {exc.strerror}")
            continue
        if (bad := _permissions(cdir, cst, "container dir")) is not None:
            scan.findings.append(bad)
        for name in sorted(names):
            _scan_file(scan, state_dir, cid, cdir, name, names)
    return scan


def _scan_file(scan: StateScan, state_dir: str, cid: str, cdir: str, name: str, names: set[str]) -> None:
    path = os.path.join(cdir, name)
    if name.endswith((".json", ".lock")):
        with contextlib.suppress(OSError):
            if (bad := _permissions(path, os.lstat(path), "journal file")) is not None:
                scan.findings.append(bad)
    if name.endswith(".json"):
        _scan_journal(scan, state_dir, cid, path)
    elif CORRUPT_MARK in name:
        scan.findings.append(Finding(
            "corrupt-journal-set-aside", path,
            f"a DEL of container {cid} found this journal damaged, moved it aside and deleted what it could read",
            f"read it (`cat {path}`), remove by hand what it names that still exists (doctor lists reservations "
            f"no journal holds), then `rm {path}`"))
    elif TMP_MARK in name:  # `.<journal>.tmp.<pid>` (cni.files.atomic_write); `<journal>.tmp.<pid>` before
        stem, _, pid_text = name.removeprefix(".").partition(TMP_MARK)
        tmp_key = key_for(state_dir, cid, stem)
        if tmp_key is None or not pid_text.isdigit():
            return
        pid = int(pid_text)
        if pid_alive(pid):
            return  # a journal write in progress
        scan.findings.append(Finding(
            "temp-file", path, f"left by process {pid}, which no longer runs, while writing {stem}.json (the journal "
                               "itself is intact: writes are atomic)",
            "doctor --fix removes it", repair=lambda: _remove_temp(tmp_key, path, pid)))
    elif name.endswith(".lock") and f"{name[:-5]}.json" not in names:
        lock_key = key_for(state_dir, cid, name[:-5])
        if lock_key is None or not _lone_lock(lock_key):
            return
        scan.findings.append(Finding(
            "lock-without-journal", path, "no journal beside it and nobody holds it",
            "doctor --fix removes it", repair=lambda: _remove_lone_lock(lock_key)))


def _scan_journal(scan: StateScan, state_dir: str, cid: str, path: str) -> None:
    try:
        with open(path, "rb") as fh:
            body = journal.decode(path, fh.read())
    except PermissionError as exc:
        scan.problems.append(f"cannot read {path}: {exc.strerror}")
        scan.unreadable_containers.add(cid)
        return
    except (OSError, journal.CorruptJournal) as exc:
        scan.unreadable_containers.add(cid)
        scan.findings.append(Finding(
            "corrupt-journal", path, f"container {cid}: {exc}",
            f"the runtime's next DEL for {cid} moves it aside and deletes what it can read; `metaplug state {cid}` "
            "shows it; if the container is gone, compare it with what exists and remove leftovers by hand"))
        return
    key = journal.JournalKey(state_dir, cid, str(body.get("network")), str(body.get("ifname")))
    scan.recorded.append(Recorded(key, body))


def container_accounts_for(state_dirs: list[str], cid: str, ifname: str) -> bool:
    """Read now: does any journal of `cid` record an attachment `ifname` (any one, when `ifname` is empty), or have a
    journal that cannot be read (then nothing is known)?"""
    for state_dir in state_dirs:
        cdir = os.path.join(state_dir, cid)
        try:
            names = os.listdir(cdir)
        except FileNotFoundError:
            continue
        except OSError:
            return True
        for name in names:
            if not name.endswith(".json"):
                continue
            path = os.path.join(cdir, name)
            try:
                with open(path, "rb") as fh:
                    body = journal.decode(path, fh.read())
            except FileNotFoundError:
                continue
            except (OSError, journal.CorruptJournal):
                return True
            if any(not ifname or a.get("ifname") == ifname for a in body.get("attachments", [])):
                return True
    return False


def _remove_temp(key: journal.JournalKey, path: str, pid: int) -> str:
    with journal.locked(key):  # journal writes happen under this lock
        if pid_alive(pid):
            return f"kept {path}: process {pid} runs again"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if not os.path.exists(key.path):
            journal.remove(key)  # the lock this took, and the container dir when empty
    return f"removed {path}"


def _lone_lock(key: journal.JournalKey) -> bool:
    """Holding the lock (so no verb is between taking it and writing its journal), is there no journal?"""
    with journal.locked_if_present(key, wait=False) as acquired:
        return acquired and not os.path.exists(key.path)


def _remove_lone_lock(key: journal.JournalKey) -> str:
    with journal.locked_if_present(key, wait=False) as acquired:
        if acquired and not os.path.exists(key.path):
            journal.remove(key)  # a verb waiting for this lock notices the unlinked file and takes a new one
            return f"removed {key.lock_path}"
    return f"kept {key.lock_path}: in use, or a journal appeared meanwhile"
