"""libcni-compatible result cache (cni.md duty 35).

`<cacheDir>/results/<network>-<containerID>-<ifname>` holds
`{"kind": "cniCacheV1", "containerId", "ifName", "networkName", "config": base64(list bytes), "netns", "cniArgs",
"capabilityArgs", "result"}`, so runtimes built on libcni (CRI-O reads it for CHECK, cnitool for DEL) and this library
can read each other's entries. Directories are 0700, files 0600, writes are atomic (tmp + fsync + rename).
Reading never raises: a missing or corrupt entry is simply absent (DEL must go on without it, duty 20).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

from metaplug.cni import files, jsonload
from metaplug.cni.errors import INVALID_ENVIRONMENT, IO_FAILURE, CniError

if TYPE_CHECKING:
    from metaplug.cni.runtime import RuntimeConf

CACHE_KIND = "cniCacheV1"
RESULTS_DIR = "results"


def cache_path(cache_dir: str, network_name: str, container_id: str, ifname: str) -> str:
    """The file of one attachment's entry (libcni's naming). Components that could escape the directory: code 4."""
    for what, part in (("network name", network_name), ("container ID", container_id), ("ifname", ifname)):
        if not isinstance(part, str) or not part or os.sep in part or part in (".", ".."):
            raise CniError(INVALID_ENVIRONMENT, "invalid cache key", f"{what} {part!r} cannot name a cache file")
    return os.path.join(cache_dir, RESULTS_DIR, f"{network_name}-{container_id}-{ifname}")


def write_cache(cache_dir: str, config: bytes | dict[str, Any], rt: RuntimeConf, result: dict[str, Any]) -> str:
    """Store the final ADD result of `config` (a list's bytes or dict) for `rt`; returns the file written.

    Failure to write is code 5 (libcni fails the ADD too: a later DEL/CHECK would lack its prevResult).
    """
    if isinstance(config, bytes | bytearray):
        raw = bytes(config)
        name = _name_of(raw)
    else:
        raw = json.dumps(config, separators=(",", ":")).encode()
        name = config.get("name")
    if not isinstance(name, str):
        raise CniError(INVALID_ENVIRONMENT, "invalid cache key", "the network configuration has no name")
    entry: dict[str, Any] = {
        "kind": CACHE_KIND,
        "containerId": rt.container_id,
        "config": base64.b64encode(raw).decode(),
        "ifName": rt.ifname,
        "networkName": name,
    }
    if rt.netns:
        entry["netns"] = rt.netns
    if rt.args:
        entry["cniArgs"] = [[k, v] for k, v in rt.args]
    if rt.capability_args:
        entry["capabilityArgs"] = rt.capability_args
    entry["result"] = result
    path = cache_path(cache_dir, name, rt.container_id, rt.ifname)
    try:
        files.make_dirs(os.path.dirname(path))  # 0700 each (cni.md 35)
        files.atomic_write(path, json.dumps(entry).encode())
    except OSError as exc:
        raise CniError(IO_FAILURE, "failed to write the result cache", f"{path}: {exc}") from None
    return path


def read_cache_entry(cache_dir: str, network_name: str, container_id: str, ifname: str) -> dict[str, Any] | None:
    """The whole entry (see module doc), or None when missing or corrupt.

    A legacy entry (libcni before cniCacheV1 stored the bare result) comes back as `{"result": <it>}`.
    """
    try:
        path = cache_path(cache_dir, network_name, container_id, ifname)
        data = jsonload.loads(files.read_file(path))
    except (OSError, ValueError, CniError):
        return None
    return _entry_of(data)


def read_cache(cache_dir: str, network_name: str, container_id: str, ifname: str) -> dict[str, Any] | None:
    """The cached ADD result of one attachment, or None when missing or corrupt. Never raises."""
    entry = read_cache_entry(cache_dir, network_name, container_id, ifname)
    return None if entry is None else entry["result"]


def entry_config(entry: dict[str, Any]) -> bytes | None:
    """The network configuration bytes stored in an entry, or None when absent/undecodable."""
    raw = entry.get("config")
    if not isinstance(raw, str):
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return None


def delete_cache(cache_dir: str, network_name: str, container_id: str, ifname: str) -> None:
    """Remove one entry; an absent entry is fine (DEL is idempotent, duty 11)."""
    try:
        path = cache_path(cache_dir, network_name, container_id, ifname)
    except CniError:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def list_cache(cache_dir: str, network_name: str | None = None) -> list[dict[str, Any]]:
    """Every readable cniCacheV1 entry (optionally of one network), sorted by file name; corrupt files are skipped.

    Used by GC to find stale attachments, as libcni's GetCachedAttachments does.
    """
    base = os.path.join(cache_dir, RESULTS_DIR)
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    out: list[dict[str, Any]] = []
    for fname in names:
        if fname.startswith("."):
            continue  # our temp files
        try:
            data = jsonload.loads(files.read_file(os.path.join(base, fname)))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("kind") != CACHE_KIND:
            continue
        entry = _entry_of(data)
        if entry is None or not isinstance(entry.get("containerId"), str) or not isinstance(entry.get("ifName"), str):
            continue
        if network_name is not None and entry.get("networkName") != network_name:
            continue
        out.append(entry)
    return out


# --- internals -------------------------------------------------------------------------------------------------------


def _entry_of(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        return None
    if data.get("kind") == CACHE_KIND:
        return data if isinstance(data.get("result"), dict) else None
    if "kind" not in data and isinstance(data.get("cniVersion"), str):
        return {"result": data}  # legacy: the file is the result
    return None


def _name_of(raw: bytes) -> Any:
    try:
        data = jsonload.loads(raw)
    except ValueError:
        return None
    return data.get("name") if isinstance(data, dict) else None
