"""Run the planned attachments of one ADD through the delegate runtime (cni.chain), journaling each step.

The cluster network always runs first (R24). The secondary attachments run one after another (R28), or concurrently
with `parallel: true` (BEYOND R28); either way the results come back in plan order, so the output is identical.
Before its delegate ADD gets its configuration (once the delegate's process has started: invoke.exec_plugin's
`before_input`), an attachment is journaled as "adding", so a crash at any point leaves a journal that DEL can act
on; the first of these records is also durable against a power loss by then, and it already lists every planned
attachment; the later ones are not synced (Recorder, journal.py: Durability). An attachment's result ("added") joins
the next write: the next attachment's "adding" or the caller's final record (or the rollback's). No delegate acts in
between (the next one has started, without its configuration), so this saves a write per attachment without widening
what a crash can leak: an attachment recorded as "adding" is deleted by DEL like an "added" one (DEL of what is absent
or half-made succeeds, cni.md 11); one whose delegate never got its configuration stays "planned" (a rollback skips
it, a DEL from the record deletes it, which succeeds).
"""

from __future__ import annotations

import _thread

from metaplug import journal
from metaplug.cni.errors import CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metaplug.cni.documents import Result
    from metaplug.journal import AttachmentRecord, AttachmentState, JournalRecord

MERGE_VERSION = "1.1.0"


class Recorder:
    """The journal records of one ADD (or hot-plug attach) of `body`, and which of them pay for durability.

    Each attachment's "adding" record is written once its first delegate has started and before that delegate is
    given its configuration (invoke.exec_plugin's `before_input`): a delegate without its configuration cannot have
    made anything, and a Go plugin spends ~2 ms starting before it reads it, during which the record is written.
    The first record lists every planned attachment and is durable: put in place, then synced (data, directory and
    stateDir) in that same gap, so its fsyncs no longer add to the ADD. The later records are not synced at all,
    which saves ~3 fsyncs per ADD: a power cut may lose them or leave them empty, so the first later one links the
    durable record as `.prev` and the next ones leave it there; DEL from that record alone deletes every attachment
    (journal.py: Durability)."""

    def __init__(self, key: journal.JournalKey, body: JournalRecord) -> None:
        self.key = key
        self.body = body
        self.on_disk: bool | None = None  # None: nothing written yet; True: the journal is a durable record
        self.pending: journal.PendingRecord | None = None  # the first record, in place, its fsyncs still owed

    def write(self) -> None:
        if self.on_disk is None:
            if journal.exists(self.key):  # hot-plug: the container's record is there, replaced durably at once
                journal.write(self.key, self.body)
            else:
                self.pending = journal.create(self.key, self.body)
            self.on_disk = True
            return
        self.sync()  # never link a record as `.prev` before it is durable
        journal.write(self.key, self.body, durable=False, keep_previous=self.on_disk)
        self.on_disk = False

    def sync(self) -> None:
        """Make the first record durable, when that is still owed (once)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.complete()

    def drop_pending(self) -> None:
        """No delegate got its configuration (its ADD failed before): the first record need not be synced; its fd
        is closed (the rollback rewrites or removes the record)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.abandon()


class _NotDurable(Exception):
    """An attachment's record could not be written (or the first one synced): the delegate waiting for its
    configuration was killed, and the error is the journal's, not that delegate's."""

    def __init__(self, error: CniError) -> None:
        super().__init__(str(error))
        self.error = error


class _Runner:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.key = recorder.key
        self.body = recorder.body
        self.lock = _thread.allocate_lock()

    def _record(self, attachment: AttachmentRecord, state: AttachmentState, result: Result | None = None, *,
                write: bool) -> None:
        with self.lock:
            attachment["state"] = state
            if result is not None:
                attachment["result"] = result
            if write:
                self.recorder.write()

    def run_one(self, index: int) -> Result:
        from metaplug.cni.chain import add_network_list
        from metaplug.cni.convert import convert_result

        attachment = self.body["attachments"][index]

        def journaled() -> None:  # its first delegate has started and has not been given its configuration
            try:
                self._record(attachment, "adding", write=True)
                self.recorder.sync()
            except CniError as err:
                raise _NotDurable(err) from None

        try:
            result = add_network_list(attachment["conflist"].encode(),
                                      journal.runtime_conf(self.body, attachment, self.body["netns"]),
                                      self.body["paths"], timeout=self.body.get("timeout"), before_input=journaled)
        except _NotDurable as failed:
            raise failed.error from None  # the journal's error (code 5), not the delegate's
        except CniError as err:
            # R27 and issue 10.5: the error names the attachment, its network (the NAD) and the plugin that failed;
            # the code stays the delegate's.
            from metaplug.attach.plan import describe

            detail = f"{err.msg}: {err.details}" if err.details else err.msg
            who = describe(attachment["ifname"], attachment["network"], cluster=bool(attachment.get("cluster")))
            where = f" in plugin {err.plugin!r}" if err.plugin else ""
            raise CniError(err.code, f"{who} failed{where}", detail, plugin=err.plugin) from None
        self._record(attachment, "added", result, write=False)  # written with the next record
        return convert_result(result, MERGE_VERSION)


def run_attachments(recorder: Recorder, *, parallel: bool = False, start: int = 0) -> list[Result]:
    """ADD every attachment of `recorder.body` from index `start` (hot-plug: only the new ones; the earlier ones are
    already made); results (1.1.0 shape) in plan order. Stops at the first failure (R27). The caller's final record
    goes through the same `recorder`."""
    runner = _Runner(recorder)
    count = len(recorder.body["attachments"])
    try:
        results = [runner.run_one(start)]
    finally:
        recorder.drop_pending()  # synced by the first delegate's start, unless that never came
    if not parallel or count - start <= 2:
        results.extend(runner.run_one(i) for i in range(start + 1, count))
        return results
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, count - start - 1)) as pool:  # each worker logs with this call's context
        futures = [pool.submit(contextvars.copy_context().run, runner.run_one, i) for i in range(start + 1, count)]
        outcomes: list[Result | BaseException] = []
        for future in futures:
            exc = future.exception()
            outcomes.append(exc if exc is not None else future.result())
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome  # the first failure in plan order, after every concurrent ADD has finished
        results.append(outcome)
    return results
