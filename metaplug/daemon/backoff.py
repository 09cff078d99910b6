"""When the hot-plug reconciler may try a failed live change again (issue 12.1), pure: no I/O, the clock is given.

A live change (attach of one element, detach of one interface, a bandwidth change) is identified per container by
what it does (`reconciler.change_id`): an element that changes in any field is another change, with no history.
- A change that never failed, or whose backoff has passed, runs when a reconcile is triggered: by a change of the pod's
  networks annotation (or the daemon's first sync). Nothing else triggers one: a relist or a resync that carries the
  same annotation, or a pod update that leaves it as it was, tries nothing again.
- Each failure doubles the wait before the next attempt: 1 s, 2 s, 4 s ... at most 5 min (`INITIAL`, `CEILING`).
- A trigger that arrives while a failed change waits does not run it, but is owed: the reconciler comes back once the
  wait ends and tries it then, once. Without a new trigger it is not tried again, however long it waits.
- Success forgets the change's failures; so does its leaving the pod's request (removed, or changed).
"""

from __future__ import annotations

from typing import NamedTuple

INITIAL = 1.0  # seconds before the first retry
CEILING = 300.0  # the longest wait between two attempts

Container = tuple[str, str, str]  # (pod namespace, pod name, container id)


class Failure(NamedTuple):
    failures: int  # attempts that failed in a row
    not_before: float  # no attempt before this time (the clock's)
    owed: bool  # a trigger came while it waited: one attempt is due at not_before


class Verdict(NamedTuple):
    run: bool
    come_back_at: float | None = None  # not run but owed: when the reconciler must return for it


def wait_after(failures: int, initial: float = INITIAL, ceiling: float = CEILING) -> float:
    """Seconds to wait after `failures` failed attempts in a row (1 -> initial, doubling, bounded)."""
    return min(ceiling, initial * 2.0 ** max(0, failures - 1))


class Backoff:
    def __init__(self, initial: float = INITIAL, ceiling: float = CEILING) -> None:
        self.initial = initial
        self.ceiling = ceiling
        self._failed: dict[Container, dict[str, Failure]] = {}

    def decide(self, container: Container, change: str, now: float, *, triggered: bool) -> Verdict:
        """Whether to run `change` now. `triggered`: the reconcile comes from a change of the annotation (or the first
        sync); else it is a return for owed attempts, which runs only what is owed and due, and what never failed."""
        failure = self._failed.get(container, {}).get(change)
        if failure is None:
            return Verdict(True)
        if failure.not_before <= now and (triggered or failure.owed):
            return Verdict(True)
        if not (triggered or failure.owed):
            return Verdict(False)  # tried since the last trigger: nothing owed
        self._failed[container][change] = failure._replace(owed=True)
        return Verdict(False, come_back_at=failure.not_before)

    def failed(self, container: Container, change: str, now: float) -> Failure:
        before = self._failed.get(container, {}).get(change)
        count = (before.failures if before else 0) + 1
        failure = Failure(count, now + wait_after(count, self.initial, self.ceiling), owed=False)
        self._failed.setdefault(container, {})[change] = failure
        return failure

    def succeeded(self, container: Container, change: str) -> None:
        self._failed.get(container, {}).pop(change, None)

    def keep(self, container: Container, changes: set[str]) -> None:
        """Forget the failures of what the pod no longer asks for (an element removed or changed)."""
        failed = self._failed.get(container)
        if failed is None:
            return
        for change in set(failed) - changes:
            del failed[change]
        if not failed:
            del self._failed[container]

    def forget_pods(self, alive: set[tuple[str, str]]) -> None:
        """Forget the containers of pods no longer on this node (bounded memory)."""
        for container in [c for c in self._failed if c[:2] not in alive]:
            del self._failed[container]

    def failures(self, container: Container) -> dict[str, Failure]:
        return dict(self._failed.get(container, {}))
