"""host-local / mp-host-local reservations that no journal accounts for.

Which stores: only `<ipam.dataDir>/<network name>` of the delegate configs the journals record (the layout both
plugins share, delegates/_store.py); files there named by an address hold "containerID\\r\\nifname". A reservation
is accounted for when a journal records that container and ifname. One that is not is released by `--fix` only when
- the store's own lock (the flock both plugins hold for every operation) is held while re-checking and unlinking,
- the file still names the same owner and no journal of that container appeared meanwhile, and
- the address is configured in no network namespace this node can see (named ones and every process's), so an
  address still on a live pod whose journal was lost is reported but never handed out twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
from collections.abc import Callable, Iterable
from typing import NamedTuple

from metaplug.doctor import namespaces
from metaplug.doctor.findings import Finding
from metaplug.doctor.state import Recorded

HOST_LOCAL_TYPES = ("host-local", "mp-host-local")
DEFAULT_DATA_DIR = "/var/lib/cni/networks"  # both plugins' default
STORE_LOCK = "lock"


class Reservation(NamedTuple):
    path: str
    store: str  # <dataDir>/<network name>
    address: str
    container_id: str
    ifname: str  # "" in the single-field files of old host-local versions


def stores(recorded: Iterable[Recorded]) -> set[str]:
    """The reservation directories the recorded delegate configs name."""
    out: set[str] = set()
    for rec in recorded:
        for attachment in rec.body.get("attachments", []):
            try:
                conflist = json.loads(attachment["conflist"])
            except (KeyError, TypeError, ValueError):
                continue
            for plugin in conflist.get("plugins", []):
                ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
                if isinstance(ipam, dict) and ipam.get("type") in HOST_LOCAL_TYPES:
                    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
                    if isinstance(data_dir, str) and isinstance(conflist.get("name"), str):
                        out.add(os.path.join(data_dir, conflist["name"]))
    return out


def _owner(path: str) -> tuple[str, str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            fields = fh.read().split()
    except OSError:
        return None
    return (fields[0] if fields else "", fields[1] if len(fields) > 1 else "")


def reservations(store: str) -> list[Reservation]:
    try:
        names = sorted(os.listdir(store))
    except OSError:
        return []
    out = []
    for name in names:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            continue  # lock, last_reserved_ip.N
        owner = _owner(os.path.join(store, name))
        if owner is not None:
            out.append(Reservation(os.path.join(store, name), store, name, *owner))
    return out


def addresses_in_use() -> tuple[dict[str, str], list[str]]:
    """{address: where} over every network namespace visible from here (named ones and those of every process),
    each namespace read once; and the namespaces that could not be read."""
    from metaplug import netns
    from metaplug.cni.errors import CniError

    used: dict[str, str] = {}
    unreadable: list[str] = []
    for path in namespaces.visible():
        try:
            interfaces = netns.inspect_interfaces(path)
        except (CniError, OSError) as exc:
            if os.path.exists(path):
                unreadable.append(f"{path}: {exc}")
            continue
        for ifname, info in interfaces.items():
            for cidr in info["addresses"]:
                used.setdefault(str(ipaddress.ip_interface(cidr).ip), f"{ifname} in {path}")
    return used, unreadable


def orphans(recorded: list[Recorded], unreadable_containers: set[str],
            still_orphan: Callable[[Reservation], bool]) -> tuple[list[Finding], list[str]]:
    """Findings for the reservations no journal accounts for; and what could not be checked."""
    held = {(rec.key.container_id, a.get("ifname")) for rec in recorded for a in rec.body.get("attachments", [])}
    containers = {rec.key.container_id for rec in recorded}
    candidates = []
    for store in sorted(stores(recorded)):
        for res in reservations(store):
            if res.container_id in unreadable_containers:
                continue  # its journal cannot be read: nothing is known about what it holds
            if (res.container_id, res.ifname) in held or (not res.ifname and res.container_id in containers):
                continue
            candidates.append(res)
    # journals were read after the stores were listed: a DEL that finished in between released its address
    candidates = [res for res in candidates if os.path.exists(res.path) and still_orphan(res)]
    if not candidates:
        return [], []
    used, unreadable = addresses_in_use()
    findings = []
    for res in candidates:
        owner = f"container {res.container_id}" + (f" ifname {res.ifname}" if res.ifname else "")
        where = used.get(res.address)
        if where is not None:
            findings.append(Finding(
                "reservation-in-use", res.path,
                f"{res.address} is reserved for {owner}, which no journal records, and is still configured on {where}",
                "a pod whose journal was lost still uses it: delete that pod through the runtime (or its netns), then "
                "run doctor --fix again to release the address"))
        elif unreadable:
            findings.append(Finding(
                "orphan-reservation", res.path, f"{res.address} is reserved for {owner}, which no journal records",
                "some namespaces could not be read, so doctor cannot prove the address unused: check them, then "
                f"`rm {res.path}`"))
        else:
            findings.append(Finding(
                "orphan-reservation", res.path,
                f"{res.address} is reserved for {owner}, which no journal records, and no namespace on this node "
                "has that address", "doctor --fix releases it",
                repair=_releaser(res, still_orphan)))
    return findings, unreadable


def _releaser(res: Reservation, still_orphan: Callable[[Reservation], bool]) -> Callable[[], str]:
    return lambda: release(res, still_orphan)


def release(res: Reservation, still_orphan: Callable[[Reservation], bool]) -> str:
    """Unlink the reservation under the store's lock, after checking again that nobody holds it."""
    fd = os.open(os.path.join(res.store, STORE_LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _owner(res.path) != (res.container_id, res.ifname):
            return f"kept {res.path}: it changed meanwhile"
        if not still_orphan(res):
            return f"kept {res.path}: a journal of {res.container_id} appeared meanwhile"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(res.path)
        return f"released {res.address} ({res.path}, reserved for {res.container_id})"
    finally:
        os.close(fd)
