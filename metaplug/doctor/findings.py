"""What doctor reports: one Finding per problem, each saying what to do about it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypedDict

Repair = Callable[[], str]  # re-checks under the right lock, repairs, and says what it did (or why it did not)


class Finding(NamedTuple):
    kind: str  # stale-journal, orphan-reservation, ... (README "Debugging on a node" lists them)
    subject: str  # the file, address or device concerned
    detail: str  # what is wrong, with the facts that show it
    action: str  # what the operator should do
    repair: Repair | None = None  # what `--fix` does; None when nothing is provably orphaned

    def as_dict(self) -> FindingDict:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail, "action": self.action,
                "fixable": self.repair is not None}


class FindingDict(TypedDict):
    kind: str
    subject: str
    detail: str
    action: str
    fixable: bool


class Diagnosis(NamedTuple):
    findings: list[Finding]
    problems: list[str]  # what could not be checked (exit status 2)
