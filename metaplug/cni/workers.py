"""Reused daemon threads: run a function in another thread without starting a thread per call.

`ns.run_in` (a netlink socket made inside a pod's namespace) and in-process delegates (`invoke`, bounded by their
timeout) each need "this function, in a thread of its own". A new thread per call costs its start (~0.1 ms on an idle
machine, a few ms when the cores are busy: the caller waits until the new thread has been scheduled) and a daemon
answering a pod makes ~15 of them. Here an idle thread is taken from a free list instead (a new one only when none is
idle); it puts itself back when its job is done, also after the caller stopped waiting (a timed-out job runs on in
it). Threads are daemon threads, as the short-lived ones were: a job that never returns does not keep the process
alive. A job may `retire()` its thread (ns.run_in does when it cannot restore the thread's namespace): the thread
then ends after that job instead of serving another.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue

from metaplug.cni.runtime_typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

T = TypeVar("T")
_local = threading.local()


class Job(Generic[T]):
    """One function run in a pooled thread; `wait` for its outcome."""

    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def wait(self, timeout: float | None = None) -> bool:
        """True when the job finished within `timeout` (None: wait for it)."""
        return self.done.wait(timeout)

    def result(self) -> T:
        """The function's return value, or its exception raised here (call after `wait` returned True)."""
        if self.error is not None:
            raise self.error
        value: T = self.value
        return value


class Pool:
    def __init__(self, name: str) -> None:
        self.name = name
        self._idle: list[SimpleQueue[Job[Any]]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], T]) -> Job[T]:
        job: Job[T] = Job(fn)
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = SimpleQueue()
            threading.Thread(target=self._serve, args=(inbox,), name=self.name, daemon=True).start()
        inbox.put(job)
        return job

    def run(self, fn: Callable[[], T]) -> T:
        """`fn()` in a pooled thread, waited for; its exception is raised here."""
        job = self.submit(fn)
        job.wait()
        return job.result()

    def _serve(self, inbox: SimpleQueue[Job[Any]]) -> None:
        _local.retire = False
        while True:
            job = inbox.get()
            try:
                job.value = job.fn()
            except BaseException as exc:  # handed to the caller's thread
                job.error = exc
            finally:
                job.fn = _done  # drop the references the function holds
            if _local.retire:
                job.done.set()
                return
            with self._lock:  # idle again before the caller wakes: its next call may reuse this thread
                self._idle.append(inbox)
            job.done.set()


def _done() -> None:
    return None


def thread_state() -> dict[str, Any]:
    """Data kept by the calling (pooled) thread across its jobs (ns.run_in: the fd of its own namespace)."""
    state: dict[str, Any] = _local.__dict__
    return state


def retire() -> None:
    """Called from a job: its thread ends after this job instead of serving another."""
    _local.retire = True
