"""Crash-safe record of every attachment metaplug made for one container (DESIGN: "journal").

Layout: `<stateDir>/<containerID>/<meta network>-<ifname>.json` (one journal per metaplug attachment: a container may be
attached by several meta networks or ifnames), its previous version `<...>.json.prev` and the lock file `<...>.lock`.
A journal file is `{"checksum": sha256(body), "body": {...}}`, written atomically (temp file `.<...>.json.tmp.<pid>`,
fsync, rename, fsync dir: `cni.files.atomic_write`; the first record of a container: rename, then the fsyncs,
`cni.files.create`).

Durability: every write is atomic, so a crash leaves the old or the new version, never a mix. A durable write (the
default) also syncs the data before the rename and the directory after it (~4 ms on a busy disk), and stateDir, whose
entry for the new container directory would otherwise be lost to a power cut with the record inside it. An ADD makes
only its first record durable, listing every planned attachment, before the first delegate is given its
configuration (runner.Recorder: written and synced while that delegate starts up, `create`); its later records (a
result, the next attachment "adding", the merged result) are not synced at all: a power cut may lose them or leave
them empty, so none of them ever becomes `.prev` while that durable record is the one to fall back to, and DEL from
it alone deletes every attachment (DEL of what is absent or half-made succeeds, cni.md 11;
tests/integration/test_crash_points.py cuts the power at every delegate start and before each fsync). That first
record is renamed into place before its fsyncs (there is no version to lose yet; data, directory and stateDir then
share one journal commit): a power cut before they are done, when no delegate has its configuration, may leave it
empty, and DEL then sets it aside and deletes what the configuration gives the container, which is nothing made. A
process crash (SIGKILL, OOM) loses nothing: the renamed file is in the page cache.

The body (`JournalRecord`, below, with every on-disk key explained) keeps, per attachment (`AttachmentRecord`), the
exact delegate conflist, its ifname, capability args, its state ("adding" before the delegate ADD, "added" after) and
its result, plus the call's CNI_ARGS, netns and plugin paths. DEL, CHECK and GC read only this.

Losing one file never loses the pod's networks (issue 9): every record lists every planned attachment from the first
write on, and each write keeps the version it replaces as `.json.prev` (same shape, same checksum rule). `recover`
falls back to it when the journal is missing, truncated or corrupt. A failed write (a full disk) leaves both as they
were and no temp file; the temp file of a writer killed midway is removed with the journal.

Locking (cni.md 23): an flock on the lock file serialises every operation on one container+ifname. When the lock is
released with nothing recorded, the lock file and the empty container dir go (a failed ADD and a complete DEL leave
nothing in stateDir); a process that locked a file another process unlinked meanwhile notices (inode changed) and
locks again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from metaplug.cni import files, jsonload, jsontext
from metaplug.cni.env import parse_cni_args, text_problem
from metaplug.cni.errors import IO_FAILURE, CniError
from metaplug.cni.lazylog import LazyLogger
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple, cast
from metaplug.config import DEFAULT_DELEGATE_TIMEOUT, MAX_SECONDS

JOURNAL_VERSION = 1
TMP_INFIX = ".tmp."  # files.atomic_write's temp files: `.<file>.tmp.<pid>`
PREVIOUS_SUFFIX = ".prev"  # the previous good version of a journal, kept beside it
log = LazyLogger("metaplug.journal")

# ---------------------------------------------------------------- the records (an on-disk contract)
# The keys below are what version 1 journals hold on disk: rename none of them and add none without a new
# JOURNAL_VERSION and a reader for the old shape (DESIGN.md says so of every record). The camelCase keys are the disk's.
# Defined for the type checker only (import them under TYPE_CHECKING): at run time a record is the plain dict that
# json gives, and creating these classes would cost every CNI call ~0.1 ms.

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from typing import Literal, NotRequired, TypedDict

    from metaplug.cni.documents import JsonObject, Result
    from metaplug.cni.runtime import RuntimeConf
    from metaplug.merge import NetworkStatusEntry

    # "recomputed": in memory only, an attachment DEL rebuilt from the configuration after the journal was lost
    AttachmentState = Literal["planned", "adding", "added", "recomputed"]

    class PodRecord(TypedDict):
        """The pod from CNI_ARGS (cni.md 33); name and uid are None when the runtime sent none."""

        namespace: str
        name: str | None
        uid: str | None

    class AttachmentRecord(TypedDict):
        """One attachment of the container: one delegate conflist run with one ifname."""

        ifname: str  # its CNI_IFNAME (eth0 for the cluster network, then net1... or the element's `interface`)
        network: str  # its status name: "<namespace>/<nad>", or the cluster conflist's name
        cluster: bool  # the cluster network (R24), always the first attachment
        defaultRoute: list[str]  # R13 gateways when this attachment owns the pod's default route, else []
        conflist: str  # the exact conflist JSON the delegates got at ADD (DEL and CHECK replay it, never re-resolve)
        capabilityArgs: JsonObject  # runtimeConfig values offered to the conflist's plugins (duty 18, R30)
        cniArgs: NotRequired[str]  # this attachment's own CNI_ARGS (R30); absent in older journals: the record's
        state: AttachmentState  # "planned" (not started), "adding" (delegate ADD running), "added" (result below)
        result: Result | None  # the conflist's final ADD result in its own cniVersion; None until "added"
        # the element's `cni-args` (R10) as it asked them, already merged into `conflist` (hot-plug compares a changed
        # element with it); absent when it asked none, and in older journals (then inferred from `conflist`)
        requestedCniArgs: NotRequired[JsonObject]

    class JournalRecord(TypedDict):
        """Everything metaplug made for one container + meta network + CNI_IFNAME (the journal file's `body`)."""

        version: NotRequired[int]  # JOURNAL_VERSION; `write` sets it
        containerId: str  # CNI_CONTAINERID
        ifname: str  # CNI_IFNAME of the ADD (the cluster attachment's ifname)
        network: str  # the meta network: metaplug's own conflist name (also in the file name)
        netns: str  # CNI_NETNS of the ADD (GC deletes inside it when it still exists)
        cniArgs: str  # CNI_ARGS of the ADD, replayed to every delegate call
        paths: list[str]  # the plugin search path of the ADD: binDir, then CNI_PATH
        timeout: float  # delegateTimeout in seconds, per delegate call
        requestVersion: str  # the cniVersion the runtime asked for
        pod: PodRecord
        attachments: list[AttachmentRecord]  # in plan order; DEL walks them in reverse
        primaryResult: NotRequired[Result]  # the cluster attachment's result alone (`"result": "primary"`)
        status: NotRequired[list[NetworkStatusEntry]]  # network-status entries (R17-R23), once ADD completed
        result: NotRequired[Result]  # the merged 1.1.0 result (CHECK compares the container against it)


def _sha256_hex(data: bytes) -> str:
    """SHA-256 of `data`, hex. CPython's own module when it has one: `hashlib` first loads OpenSSL's libcrypto
    (~2-5 ms per process, paid by every DEL and CHECK) for the same digest."""
    try:
        from _sha256 import sha256  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython 3.12+
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def checksum(body: Mapping[str, object]) -> str:
    canonical = jsontext.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return _sha256_hex(canonical)


class CorruptJournal(Exception):
    """The journal file exists but cannot be trusted; `partial` holds whatever body could be decoded."""

    def __init__(self, path: str, reason: str, partial: JsonObject | None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.partial = partial


class JournalKey(NamedTuple):
    """Which journal: one per container, meta network (metaplug's own network name) and CNI_IFNAME."""

    state_dir: str
    container_id: str
    meta_network: str
    ifname: str

    @property
    def container_dir(self) -> str:
        return os.path.join(self.state_dir, self.container_id)

    @property
    def path(self) -> str:
        return os.path.join(self.container_dir, f"{self.meta_network}-{self.ifname}.json")

    @property
    def previous_path(self) -> str:
        """The version of the journal before its last write (a hard link: no data copied)."""
        return self.path + PREVIOUS_SUFFIX

    @property
    def lock_path(self) -> str:
        return os.path.join(self.container_dir, f"{self.meta_network}-{self.ifname}.lock")


def read(key: JournalKey) -> JournalRecord | None:
    """The journal body, None when there is none. Raises CorruptJournal when it exists but is damaged, or when only
    its previous version is left (CHECK trusts nothing less than the latest record; DEL and GC use `recover`)."""
    try:
        return load(key.path)
    except FileNotFoundError:
        if os.path.exists(key.previous_path):
            raise CorruptJournal(key.path, "missing (its previous version is kept beside it)", None) from None
        return None


def load(path: str) -> JournalRecord:
    """The body of the journal file at `path` (FileNotFoundError when there is none). A journal someone else could
    have written is refused (code 5): DEL would run the delegates it names as root."""
    try:
        _require_private(path, os.lstat(path))
        raw = files.read_file(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CniError(IO_FAILURE, "cannot read journal", f"{path}: {exc}") from None
    return decode(path, raw)


class Recovered(NamedTuple):
    """What DEL and GC act on (`recover`)."""

    body: JournalRecord | None  # the newest whole record, else what could be decoded of a damaged one, else None
    damage: list[str]  # what was wrong with the files; empty when the journal was whole or there was none
    found: bool  # some journal file existed


def recover(key: JournalKey) -> Recovered:
    """The best record left (issue 9, defect 7): the journal; when it is missing, truncated or corrupt, its previous
    version, which lists every attachment too (every record does, from the first one on, see `write`); when both are
    damaged, whatever body could be decoded. Damaged files are moved aside (`*.corrupt.<time>`) for the operator."""
    damage: list[str] = []
    partial: JournalRecord | None = None
    found = False
    for path in (key.path, key.previous_path):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if path == key.path and os.path.exists(key.previous_path):
                damage.append(f"{path}: missing")
            continue
        found = True
        _require_private(path, st)  # a file someone else could have written is refused, not used (code 5)
        try:
            raw = files.read_file(path)
        except OSError as exc:  # not a regular file (a FIFO), too large, EIO: as damaged as a corrupt one
            aside = set_aside(path)
            damage.append(f"{path}: cannot read ({exc})" + (f" (moved to {aside})" if aside else ""))
            continue
        try:
            return Recovered(decode(path, raw), damage, True)
        except CorruptJournal as bad:
            aside = set_aside(path)
            damage.append(f"{bad} (moved to {aside})" if aside else str(bad))
            if partial is None and bad.partial is not None and isinstance(bad.partial.get("attachments"), list):
                partial = cast("JournalRecord", bad.partial)  # unverified: each DEL reports what it cannot use
    return Recovered(partial, damage, found)


def decode(path: str, raw: bytes) -> JournalRecord:
    try:
        doc = jsonload.loads(raw)
    except ValueError as exc:
        raise CorruptJournal(path, f"not JSON ({exc})", None) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("body"), dict):
        raise CorruptJournal(path, "no journal body", None)
    body: JsonObject = doc["body"]
    if doc.get("checksum") != checksum(body):
        raise CorruptJournal(path, "checksum mismatch", body)
    if body.get("version") != JOURNAL_VERSION:
        raise CorruptJournal(path, f"unknown journal version {body.get('version')!r}", body)
    return cast("JournalRecord", body)  # written by `write`, checksum intact: the shape metaplug wrote


def write(key: JournalKey, body: JournalRecord, *, durable: bool = True, keep_previous: bool = True) -> None:
    """Replace the journal atomically, keeping the version it replaces as `<journal>.prev` (issue 9, defect 7: one
    lost or damaged file never loses the pod's networks; every record lists every planned attachment). `durable`:
    the new record survives a power loss; else nothing is synced, and with `keep_previous` False `.prev` stays as it
    is (the durable record to fall back to, see the module's docstring)."""
    if durable and not exists(key):
        create(key, body).complete()
        return
    data = _encode(body)
    try:
        files.make_dirs(key.container_dir)
        files.atomic_write(key.path, data, durable=durable, previous=key.previous_path if keep_previous else None)
        if durable:
            files.fsync_dir(key.state_dir)  # the container directory's own entry (made by `locked`) survives too
    except OSError as exc:
        raise CniError(IO_FAILURE, "cannot write journal", f"{key.path}: {exc}") from None


class PendingRecord:
    """An ADD's first record in place, its fsyncs (data, container directory, stateDir) still owed (`create`)."""

    __slots__ = ("key", "pending")

    def __init__(self, key: JournalKey, pending: files.PendingSync) -> None:
        self.key = key
        self.pending = pending

    def complete(self) -> None:
        """Make the record durable (once). CniError code 5 when a sync fails."""
        try:
            self.pending.complete()
        except OSError as exc:
            raise CniError(IO_FAILURE, "cannot write journal", f"{self.key.path}: sync: {exc}") from None

    def abandon(self) -> None:
        self.pending.abandon()


def create(key: JournalKey, body: JournalRecord) -> PendingRecord:
    """The first record of a journal that does not exist yet (an ADD's, under the lock that removed any earlier
    one), put in place and not yet durable: `complete()` syncs it; until then (no delegate may have its
    configuration) a power cut may leave it empty. Renamed first and synced after (files.create): the file, its
    directory and stateDir, whose entry for the container directory made by `locked` must survive too, share one
    journal commit."""
    data = _encode(body)
    try:
        files.make_dirs(key.container_dir)
        return PendingRecord(key, files.create(key.path, data, also_sync=(key.state_dir,)))
    except OSError as exc:
        raise CniError(IO_FAILURE, "cannot write journal", f"{key.path}: {exc}") from None


def _encode(body: JournalRecord) -> bytes:
    body["version"] = JOURNAL_VERSION
    return jsontext.dumps({"checksum": checksum(body), "body": body}, separators=(",", ":")).encode()


def exists(key: JournalKey) -> bool:
    """The journal or its previous version is there."""
    return os.path.exists(key.path) or os.path.exists(key.previous_path)


def set_aside(path: str) -> str | None:
    """Move a corrupt journal file out of the way (kept for the operator) and return where it went."""
    dest = f"{path}.corrupt.{int(time.time())}"
    try:
        os.replace(path, dest)
    except OSError:
        return None
    return dest


def remove(key: JournalKey, *, keep_lock: bool = False) -> None:
    """Remove the journal, its previous version and the temp files of killed writers, then (unless `keep_lock`: the
    caller goes on working under the lock, a repeated ADD) its lock file and the container dir when it is empty.
    The caller holds the lock, and every writer of this journal holds it while it writes, so any
    `.<journal>.tmp.<pid>` belongs to a process that died mid-write (issue 9, defect 2). `locked` also cleans up
    this way when it releases a lock with nothing recorded."""
    journal_name = os.path.basename(key.path)
    try:
        names = os.listdir(key.container_dir)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CniError(IO_FAILURE, "cannot list the container's journal directory",
                       f"{key.container_dir}: {exc}") from None
    for name in names:
        if name in (journal_name, journal_name + PREVIOUS_SUFFIX) or name.startswith(f".{journal_name}{TMP_INFIX}"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(key.container_dir, name))
    if not keep_lock:
        _remove_lock_and_dir(key)


def _remove_lock_and_dir(key: JournalKey) -> None:
    """Nothing is recorded any more: the lock file goes, and the container dir when it is empty (a failed ADD and a
    complete DEL leave nothing in stateDir). Whoever waits for this lock notices the unlinked file and locks anew."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(key.lock_path)
    try:
        os.rmdir(key.container_dir)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise


@contextlib.contextmanager
def locked(key: JournalKey, *, create: bool = True) -> Iterator[bool]:
    """Hold the per-container lock (cni.md 23).

    Yields False without locking when `create` is False and nothing exists yet.
    """
    require_private_state_dir(key.state_dir)
    if not create and not os.path.exists(key.container_dir):
        yield False
        return
    vanished = 0
    while True:
        try:
            files.make_dirs(key.container_dir)  # stateDir and its missing parents too, all 0700
            _require_private(key.container_dir, os.lstat(key.container_dir), "journal directory")
            fd = files.open_private(key.lock_path, os.O_RDWR)
        except FileNotFoundError as exc:
            vanished += 1  # the empty container dir was removed between making and opening (DEL, doctor --fix)
            if vanished < 5:
                continue
            raise CniError(IO_FAILURE, "cannot create lock file", f"{key.lock_path}: {exc}") from None
        except OSError as exc:
            raise CniError(IO_FAILURE, "cannot create lock file", f"{key.lock_path}: {exc}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(key.lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder before us removed the file: lock the new one
    try:
        yield True
    finally:
        try:
            if not exists(key):
                remove(key)  # a killed writer's temp file, the lock file and the empty directory
        except (OSError, CniError) as exc:
            log.warning("cannot clean up the container's journal directory", extra={"error": str(exc)})
        finally:
            os.close(fd)


def require_private_state_dir(state_dir: str) -> None:
    """Refuse (code 5, cni.md 32) a stateDir that anyone but root could write, or that sits in a directory anyone but
    root could rename it out of: DEL runs the delegate binaries and configs recorded there, as root. Its parents may
    be root's and, when sticky (/tmp), writable by others; missing parts are created 0700 by `locked`."""
    real = os.path.realpath(state_dir)
    path = real
    while True:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise CniError(IO_FAILURE, "cannot inspect stateDir", f"{path}: {exc}") from None
        if st is not None:
            problem = files.untrusted(st, ancestor=path != real)
            if problem:
                raise CniError(IO_FAILURE, "stateDir is not private to root",
                               f"{path} {problem}; DEL runs the delegates recorded in {state_dir}, so nobody else may "
                               "be able to write there (chown root, chmod go-w)")
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _require_private(path: str, st: os.stat_result, what: str = "journal") -> None:
    problem = files.untrusted(st)
    if problem:
        raise CniError(IO_FAILURE, f"{what} is not private to root",
                       f"{path} {problem}; it is not used, since DEL would run the delegates it names (chown root, "
                       "chmod go-w after checking its content)")


@contextlib.contextmanager
def locked_if_present(key: JournalKey, *, wait: bool = True) -> Iterator[bool]:
    """Take the lock of `key` only when its lock file exists; never creates anything (doctor: looking must leave no
    trace). With `wait` False, a lock someone holds is not waited for.

    Yields True while holding it (no verb is inside its critical section then), False when absent, busy (no `wait`)
    or removed by its holder meanwhile.
    """
    try:
        fd = os.open(key.lock_path, os.O_RDWR)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            acquired = False
        else:
            try:
                acquired = os.fstat(fd).st_ino == os.stat(key.lock_path).st_ino  # not unlinked meanwhile
            except FileNotFoundError:
                acquired = False
        yield acquired
    finally:
        os.close(fd)


def read_listed(path: str) -> JournalRecord:
    """A journal file `list_journals` gave (GC): its body (`load`), else, when it is damaged, its previous version's.
    Raises what the journal itself raised when neither can be used."""
    candidates = [path] if path.endswith(PREVIOUS_SUFFIX) else [path, path + PREVIOUS_SUFFIX]
    first: Exception | None = None
    for candidate in candidates:
        try:
            return load(candidate)
        except (OSError, CniError, CorruptJournal) as exc:
            first = first or exc
    assert first is not None
    raise first


def list_journals(state_dir: str) -> Iterator[tuple[str, str]]:
    """(containerID, journal file path) of every journal in stateDir (GC)."""
    require_private_state_dir(state_dir)
    try:
        containers = os.listdir(state_dir)
    except FileNotFoundError:
        return
    for cid in sorted(containers):
        cdir = os.path.join(state_dir, cid)
        if not os.path.isdir(cdir):
            continue
        names = set(os.listdir(cdir))
        for fname in sorted(names):
            if fname.endswith(".json"):
                yield cid, os.path.join(cdir, fname)
            elif fname.endswith(".json" + PREVIOUS_SUFFIX) and fname[:-len(PREVIOUS_SUFFIX)] not in names:
                yield cid, os.path.join(cdir, fname)  # the journal itself is lost: its previous version stands in


def recorded_under_other_names(key: JournalKey) -> list[JournalKey]:
    """Journals of the same container and CNI_IFNAME in this stateDir kept under another meta network name: what an
    ADD recorded before the configuration's `name` changed (an operator's edit, an upgrade). Read from each body,
    since a file name `<name>-<ifname>.json` cannot be split back when names contain '-'. Unreadable ones are skipped
    (the verb of their own name deals with them)."""
    suffix = f"-{key.ifname}.json"
    found: list[JournalKey] = []
    try:
        names = sorted(os.listdir(key.container_dir))
    except OSError:
        return found
    for fname in names:
        if not fname.endswith(suffix) or fname == os.path.basename(key.path):
            continue
        try:
            with open(os.path.join(key.container_dir, fname), "rb") as fh:
                body = decode(fname, fh.read())
        except (OSError, CorruptJournal):
            continue
        network = body.get("network")
        if (body.get("ifname") == key.ifname and body.get("containerId") == key.container_id
                and isinstance(network, str) and network != key.meta_network
                and fname == f"{network}{suffix}"):
            found.append(key._replace(meta_network=network))
    return found


def warn_dropped(key: JournalKey, attachment: AttachmentRecord, error: Exception) -> None:
    log.error(
        "dropping attachment whose ADD never completed and whose DEL fails; check for leftovers by hand",
        extra={"container": key.container_id, "ifname": attachment.get("ifname"),
               "status_name": attachment.get("network"), "error": str(error)},
    )


def delegate_paths(body: Mapping[str, object]) -> list[str]:
    """Where DEL, CHECK and GC look for the recorded delegates. Entries no file call can use (a NUL byte, written
    before binDir was validated) are left out rather than failing every later DEL (issue 9, defect 3)."""
    paths = body.get("paths")
    return [p for p in paths if isinstance(p, str) and p and not text_problem(p)] if isinstance(paths, list) \
        else []


def delegate_timeout(body: Mapping[str, object]) -> float:
    """The recorded delegateTimeout, or the default when it is not one a delegate call can use (Infinity or 1e21,
    written before the value was bounded): a journal must never make every later DEL fail (issue 9, defect 3)."""
    value = body.get("timeout")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SECONDS:
        return DEFAULT_DELEGATE_TIMEOUT
    return float(value)


def runtime_conf(body: JournalRecord, attachment: AttachmentRecord, netns: str) -> RuntimeConf:
    """The delegate runtime's view of one recorded attachment (ADD, and DEL/CHECK/GC from the journal alone)."""
    from metaplug.cni.runtime import RuntimeConf

    return RuntimeConf(container_id=body["containerId"], netns=netns, ifname=attachment["ifname"],
                       # R30: each attachment's own CNI_ARGS (a journal written before they were recorded per
                       # attachment has only the runtime's, which every attachment then got)
                       args=list(parse_cni_args(attachment.get("cniArgs", body.get("cniArgs", ""))).items()),
                       capability_args=dict(attachment.get("capabilityArgs") or {}))
