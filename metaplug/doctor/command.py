"""`metaplug doctor [--state-dir DIR]... [--json] [--fix]`: the report and the repairs.

Exit status: 0 nothing found, 1 findings (after `--fix`: findings left), 2 something could not be checked.
`--fix` repairs only what is provably orphaned, and is safe while the runtime calls metaplug: every repair takes the
lock the verbs take for that container (or the IPAM store's own lock) and checks its facts again under it.
- a journal whose network namespace is gone: the runtime's DEL from the journal (plugin.delete_journaled), which
  releases its addresses and removes its host-side devices;
- a reservation no journal holds and no namespace uses: released;
- a temp file of a dead writer, a lock file without a journal that nobody holds: removed.
Everything else is reported with what to do, and left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from metaplug import journal
from metaplug.config import DEFAULT_STATE_DIR, MULTUS_CACHE_DIR
from metaplug.doctor import devices, reservations, state
from metaplug.doctor.findings import Diagnosis, Finding
from metaplug.doctor.multus import MultusCache


def add_arguments(sub: Any) -> None:
    parser = sub.add_parser("doctor", help="cross-check metaplug's journals against this node: leaked pods, IPs, "
                                           "devices, stray files (exit 0 clean, 1 findings, 2 could not check)")
    parser.add_argument("--state-dir", action="append", dest="state_dirs", metavar="DIR",
                        help=f"a stateDir of metaplug (default {DEFAULT_STATE_DIR}); repeat it for every metaplug "
                             "network with its own stateDir, so that none of them looks leaked to the other")
    parser.add_argument("--multus-cache-dir", default=MULTUS_CACHE_DIR, metavar="DIR",
                        help=f"Multus's cniDir (default {MULTUS_CACHE_DIR}): what the pods Multus attached before the "
                             "switch to metaplug hold is accounted for, not reported; '' to ignore it")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--fix", action="store_true", help="repair what is provably orphaned and print what was done")
    parser.set_defaults(handler=run)


def _stale(rec: state.Recorded) -> Finding:
    attachments = ", ".join(f"{a.get('ifname')} ({a.get('network')})" for a in rec.body.get("attachments", []))
    from metaplug import plugin

    def repair() -> str:
        if plugin.delete_journaled(rec.key, reason="doctor --fix: netns gone", only_if_netns_gone=True):
            return f"ran DEL from {rec.key.path} ({attachments})"
        return f"kept {rec.key.path}: it changed meanwhile (its netns exists, or it is gone)"

    return Finding(
        "stale-journal", rec.key.path,
        f"container {rec.key.container_id}: its netns {rec.body.get('netns')} no longer exists, but DEL never came "
        f"for {attachments or 'its attachments'}",
        "doctor --fix runs DEL from the journal (as the runtime's DEL would): addresses released, host-side devices "
        "removed", repair=repair)


def _incomplete(rec: state.Recorded) -> Finding:
    states = ", ".join(f"{a.get('ifname')} {a.get('state')}" for a in rec.body.get("attachments", []))
    return Finding(
        "incomplete-journal", rec.key.path,
        f"container {rec.key.container_id}: an ADD did not finish ({states}) and nobody is working on it",
        "the runtime should DEL this container after the failed ADD; if the pod is gone, delete its netns and run "
        "doctor --fix")


def _judge(key: journal.JournalKey) -> Finding | None:
    """One journal, read again under its lock (a verb in progress finishes first, as with CHECK): is its netns gone,
    did its ADD not finish, do its interfaces differ?"""
    with journal.locked_if_present(key) as exists:
        try:
            body = journal.read(key) if exists else None
        except journal.CorruptJournal:
            return None  # reported by the scan
        if body is None:
            return None  # deleted meanwhile
        rec = state.Recorded(key, body)
        if not devices.live(rec):
            return _stale(rec)
        if body.get("result") is None or any(a.get("state") != "added" for a in body.get("attachments", [])):
            return _incomplete(rec)
        return devices.check_interfaces(rec)


NO_MULTUS = MultusCache("")


def diagnose(state_dirs: list[str], multus: MultusCache = NO_MULTUS) -> Diagnosis:
    findings: list[Finding] = []
    problems: list[str] = []
    recorded: list[state.Recorded] = []
    unreadable: set[str] = set()
    for state_dir in state_dirs:
        scan = state.scan_state(state_dir)
        findings += scan.findings
        problems += scan.problems
        recorded += scan.recorded
        unreadable |= scan.unreadable_containers
    for rec in recorded:
        try:
            verdict = _judge(rec.key)
        except Exception as exc:  # a namespace we cannot enter: "could not check", not a crash
            problems.append(f"cannot check {rec.body.get('netns')}: {exc}")
            continue
        if verdict is not None:
            findings.append(verdict)
    # still_orphan re-reads the container's journals: a reservation is judged on journals read after it was listed
    orphans, unchecked = reservations.orphans(
        recorded, unreadable, lambda res: not state.container_accounts_for(state_dirs, res.container_id, res.ifname)
        and not multus.accounts_for(res.container_id, res.ifname))
    findings += orphans
    problems += [f"cannot read namespace {u}" for u in unchecked]
    veths, unchecked = devices.unaccounted_veths(
        lambda: [rec for state_dir in state_dirs for rec in state.scan_state(state_dir).recorded],
        multus.host_side_names)
    findings += veths
    problems += unchecked
    return Diagnosis(findings, problems)


def _exit_status(diagnosis: Diagnosis) -> int:
    if diagnosis.problems:
        return 2
    return 1 if diagnosis.findings else 0


def _print_human(diagnosis: Diagnosis, fixed: list[str], before: int | None) -> None:
    for line in fixed:
        print(f"fixed: {line}")
    if before is not None:
        print(f"{before} finding(s) before --fix; now:" if fixed or before else "nothing to fix")
    for f in diagnosis.findings:
        print(f"[{f.kind}] {f.subject}\n    {f.detail}\n    do: {f.action}")
    for problem in diagnosis.problems:
        print(f"[could-not-check] {problem}")
    if not diagnosis.findings and not diagnosis.problems:
        print("clean: every journal matches this node, and nothing is left that no journal accounts for")


def run(args: argparse.Namespace) -> int:
    state_dirs = args.state_dirs or [DEFAULT_STATE_DIR]
    multus = MultusCache(args.multus_cache_dir)
    diagnosis = diagnose(state_dirs, multus)
    fixed: list[str] = []
    before: int | None = None
    if args.fix:
        before = len(diagnosis.findings)
        for finding in diagnosis.findings:
            if finding.repair is None:
                continue
            try:
                fixed.append(finding.repair())
            except Exception as exc:  # report each failed repair, go on with the others
                fixed.append(f"FAILED to repair {finding.subject}: {exc}")
        diagnosis = diagnose(state_dirs, multus)
    if args.json:
        print(json.dumps({"stateDirs": state_dirs, "status": ["clean", "findings", "could-not-check"][
            _exit_status(diagnosis)], "fixed": fixed, "findings": [f.as_dict() for f in diagnosis.findings],
                          "problems": diagnosis.problems}, indent=2))
    else:
        _print_human(diagnosis, fixed, before)
    sys.stdout.flush()
    return _exit_status(diagnosis)
