"""`metaplug state`: what metaplug has recorded on this node, for operators debugging a pod's networking.

Reads the journals in stateDir (never changes them) and prints one line per attachment, or the whole journal of one
container as JSON. Corrupt journals are listed with the reason, so they are easy to find.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from metaplug import journal
from metaplug.config import DEFAULT_STATE_DIR

if TYPE_CHECKING:
    from metaplug.journal import JournalRecord


def add_arguments(sub: Any) -> None:
    parser = sub.add_parser("state", help="show the attachments metaplug recorded (its journal) on this node")
    parser.add_argument("container", nargs="?", help="a container ID: print its journals in full (JSON)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help=f"metaplug's stateDir (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line for every recorded attachment (corrupt journals: one line each)")
    parser.set_defaults(handler=run)


def _rows(state_dir: str, only: str | None) -> list[tuple[str, str, JournalRecord | None, str]]:
    rows = []
    for cid, path in journal.list_journals(state_dir):
        if only is not None and cid != only:
            continue
        try:
            with open(path, "rb") as fh:
                body: JournalRecord | None = journal.decode(path, fh.read())
            problem = ""
        except (OSError, journal.CorruptJournal) as exc:
            body, problem = None, str(exc)
        rows.append((cid, path, body, problem))
    return rows


def attachment_lines(body: JournalRecord, path: str) -> list[dict[str, Any]]:
    """One flat, self-contained record per attachment of a journal (for `--json` and for scripts)."""
    lines = []
    for att in body.get("attachments", []):
        result = att.get("result") or {}
        sandboxed = [i for i in result.get("interfaces", []) if i.get("sandbox")]
        conflist = json.loads(att["conflist"]) if isinstance(att.get("conflist"), str) else {}
        lines.append({
            "container": body.get("containerId"), "metaNetwork": body.get("network"),
            "runtimeIfname": body.get("ifname"), "netns": body.get("netns"), "pod": body.get("pod"),
            "ifname": att.get("ifname"), "network": att.get("network"), "conflist": conflist.get("name"),
            "cluster": bool(att.get("cluster")), "defaultRoute": att.get("defaultRoute") or [],
            "cniArgs": att.get("cniArgs", body.get("cniArgs")),
            "state": att.get("state"), "mac": next((i.get("mac") for i in sandboxed), None),
            "addresses": [ip.get("address") for ip in result.get("ips", [])], "journal": path,
        })
    return lines


def run(args: argparse.Namespace) -> int:
    rows = _rows(args.state_dir, args.container)
    if args.json:
        for cid, path, body, problem in rows:
            records = attachment_lines(body, path) if body is not None else [
                {"container": cid, "journal": path, "problem": problem}]
            for record in records:
                print(json.dumps(record, sort_keys=True))
        return 0 if rows or not args.container else 1
    if args.container:
        if not rows:
            print(f"no journal for container {args.container} in {args.state_dir}", file=sys.stderr)
            return 1
        print(json.dumps([{"path": path, "problem": problem or None, "journal": body}
                          for _, path, body, problem in rows], indent=2))
        return 0
    print(f"{'CONTAINER':<16} {'NETWORK':<14} {'IFNAME':<8} {'ATTACHMENT':<24} {'STATE':<8} ADDRESSES")
    for cid, path, body, problem in rows:
        if body is None:
            print(f"{cid[:16]:<16} {'?':<14} {'?':<8} {'CORRUPT':<24} {'-':<8} {path}: {problem}")
            continue
        for att in body.get("attachments", []):
            result = att.get("result") or {}
            addresses = ",".join(ip.get("address", "?") for ip in result.get("ips", []))
            print(f"{cid[:16]:<16} {body.get('network', '?'):<14} {att.get('ifname', '?'):<8} "
                  f"{att.get('network', '?'):<24} {att.get('state', '?'):<8} {addresses}")
    return 0
