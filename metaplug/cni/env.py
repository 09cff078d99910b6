"""The plugin side of the CNI protocol: CNI_* environment, CNI_ARGS and stdin (cni.md duties 1-9).

Pure functions over a mapping and bytes, so that a daemon can serve the same code as the per-call process.
"""

from __future__ import annotations

from metaplug.cni import jsonload, lexical
from metaplug.cni import version as cniversion
from metaplug.cni.errors import (
    DECODE_FAILURE,
    INVALID_ENVIRONMENT,
    INVALID_NETWORK_CONFIG,
    IO_FAILURE,
    UNKNOWN_CONTAINER,
    CniError,
)
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping
    from typing import Any

COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Duty 2: the variables each verb needs. CNI_PATH is needed "in practice" for ADD/CHECK (delegates must be found).
REQUIRED_VARS: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
    "VERSION": (),
}

CNI_VARS = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
MAX_IFNAME_BYTES = 15


class CniEnv(NamedTuple):
    """The validated CNI_* variables of one call (a NamedTuple: dataclasses cost start-up time)."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""
    path: tuple[str, ...] = ()


def validate_ifname(name: str, what: str = "CNI_IFNAME") -> None:
    """Duty 4: non-empty, <= 15 bytes, not '.'/'..', no '/', ':' or whitespace. Raises code 4."""
    problem = ifname_problem(name)
    if problem:
        raise CniError(INVALID_ENVIRONMENT, f"invalid {what}", f"{name!r}: {problem}")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be a path, name or argument: a NUL byte (the C calls would cut it there) or characters that
    are not UTF-8 text (an environment value with undecodable bytes reaches Python as lone surrogates, PEP 383).
    None when it can."""
    if "\0" in value:
        return "contains a NUL byte"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    return None


def ifname_problem(name: str) -> str | None:
    """Why `name` is not a valid interface name, or None when it is (duty 4)."""
    if not name:
        return "interface name is empty"
    problem = text_problem(name)
    if problem:
        return f"interface name {problem}"
    if len(name.encode()) > MAX_IFNAME_BYTES:
        return f"interface name is longer than {MAX_IFNAME_BYTES} bytes"
    if name in (".", ".."):
        return "interface name may not be '.' or '..'"
    for ch in name:
        if ch in "/:" or ch.isspace() or not ch.isprintable():
            return f"interface name may not contain {ch!r}"
    return None


def validate_container_id(cid: str) -> None:
    """Duty 3: empty -> code 3 'missing containerID'; bad characters -> code 4."""
    if not cid:
        raise CniError(UNKNOWN_CONTAINER, "missing containerID")
    if not lexical.container_id(cid):
        raise CniError(
            INVALID_ENVIRONMENT,
            "invalid characters in containerID",
            f"{cid!r} must match {lexical.CONTAINER_ID_PATTERN}",
        )


def validate_network_name(name: Any) -> None:
    """Duty 5: a network name uses the container-ID charset (code 7)."""
    if not isinstance(name, str) or not lexical.container_id(name):
        raise CniError(
            INVALID_NETWORK_CONFIG,
            "invalid network name",
            f"{name!r} must match {lexical.CONTAINER_ID_PATTERN}",
        )


def parse_env(environ: Mapping[str, str]) -> CniEnv:
    """Validate the CNI_* variables for the verb in CNI_COMMAND (duties 1-4, 7).

    The caller handles the no-CNI_COMMAND case (the "about" line) before calling this.
    """
    command = environ.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {command}")
    bad = [f"{var}={environ[var]!r} {problem}" for var in CNI_VARS if (problem := text_problem(environ.get(var, "")))]
    if bad:
        raise CniError(INVALID_ENVIRONMENT, "invalid env variables", "; ".join(bad))
    missing = [var for var in REQUIRED_VARS[command] if var not in environ or environ[var] == ""]
    # Duty 3: an empty container ID has its own code; report it before the generic list when it is the only gap.
    if "CNI_CONTAINERID" in missing and missing == ["CNI_CONTAINERID"]:
        raise CniError(UNKNOWN_CONTAINER, "missing containerID")
    if missing:
        raise CniError(INVALID_ENVIRONMENT, "required env variables missing", ", ".join(missing))
    cid = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    if cid or command in ("ADD", "CHECK", "DEL"):
        validate_container_id(cid)
    if ifname or command in ("ADD", "CHECK", "DEL"):
        validate_ifname(ifname)
    path = tuple(p for p in environ.get("CNI_PATH", "").split(":") if p)
    return CniEnv(
        command=command,
        container_id=cid,
        netns=environ.get("CNI_NETNS", ""),
        ifname=ifname,
        args=environ.get("CNI_ARGS", ""),
        path=path,
    )


def parse_cni_args(raw: str, known: Collection[str] | None = None) -> dict[str, str]:
    """Parse CNI_ARGS `K=V;K=V` (duty 6).

    A pair without exactly one '=' is an error (code 4). When `known` is given, keys outside it are an error unless
    IgnoreUnknown is 1/true/True. The IgnoreUnknown key itself is kept in the result.
    """
    out: dict[str, str] = {}
    if not raw:
        return out
    for pair in raw.split(";"):
        if pair == "":
            continue
        parts = pair.split("=")
        if len(parts) != 2:
            raise CniError(INVALID_ENVIRONMENT, "invalid CNI_ARGS pair", f"{pair!r} must be KEY=VALUE")
        out[parts[0]] = parts[1]
    if known is not None:
        ignore = out.get("IgnoreUnknown", "") in ("1", "true", "True")
        unknown = [k for k in out if k not in known and k != "IgnoreUnknown"]
        if unknown and not ignore:
            raise CniError(
                INVALID_ENVIRONMENT,
                "unknown CNI_ARGS keys",
                f"{', '.join(unknown)} (set IgnoreUnknown=1 to tolerate them)",
            )
    return out


def parse_stdin(data: bytes | None, *, allow_empty: bool = False, fill_version: bool = True) -> dict[str, Any]:
    """Decode the network configuration on stdin (duties 8, 9).

    Unreadable stdin is the caller's code 5 (`read_stdin`); undecodable JSON or a non-object: code 6; a bad cniVersion
    string: code 6. A missing cniVersion is filled in as 0.1.0 (unless `fill_version` is False: VERSION answers with its
    own version then, duty 15). Empty stdin gives `{}` when `allow_empty` (VERSION).
    """
    if data is None or data.strip() == b"":
        if allow_empty:
            return {}
        raise CniError(DECODE_FAILURE, "empty network configuration on stdin")
    try:
        conf = jsonload.loads(data)
    except ValueError as exc:  # UnicodeDecodeError and jsonload.TooDeep too
        raise CniError(DECODE_FAILURE, "failed to decode network configuration", str(exc)) from None
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "failed to decode network configuration", "stdin must be one JSON object")
    if "cniVersion" not in conf:
        if not fill_version:
            return conf
        conf["cniVersion"] = cniversion.DEFAULT_CONFIG_VERSION
    cniversion.parse(conf["cniVersion"])
    return conf


VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"  # duty 14
LEGACY_ATTACHMENTS_KEY = "cni.dev/attachments"  # the spec's first spelling; libcni sends both


def valid_attachments(conf: Mapping[str, Any]) -> set[tuple[str, str]] | None:
    """GC input (duty 14): the (containerID, ifname) pairs to keep, from `cni.dev/valid-attachments` or else the older
    `cni.dev/attachments`. None when neither key is there: an absent list is not an empty one, so the caller then
    removes nothing. Anything but a list of {"containerID": str, "ifname": str} objects is code 7."""
    items = conf.get(VALID_ATTACHMENTS_KEY)
    if items is None:
        items = conf.get(LEGACY_ATTACHMENTS_KEY)
    if items is None:
        return None
    return attachment_pairs(items)


def attachment_pairs(items: Any) -> set[tuple[str, str]]:
    """A valid-attachments list as (containerID, ifname) pairs; code 7 naming the first bad entry."""
    if not isinstance(items, list):
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {VALID_ATTACHMENTS_KEY}", "must be a list of objects")
    keep: set[tuple[str, str]] = set()
    for i, item in enumerate(items):
        cid = item.get("containerID") if isinstance(item, dict) else None
        ifname = item.get("ifname") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not isinstance(ifname, str):
            raise CniError(INVALID_NETWORK_CONFIG, f"invalid {VALID_ATTACHMENTS_KEY}",
                           f"entry {i} must be {{\"containerID\": string, \"ifname\": string}}, not {item!r:.200}")
        keep.add((cid, ifname))
    return keep


def read_stdin(stream: Any) -> bytes:
    """Read all of stdin as bytes; any OS error is code 5 (duty 8)."""
    try:
        data = stream.read()
    except OSError as exc:
        raise CniError(IO_FAILURE, "failed to read network configuration from stdin", str(exc)) from None
    return data if isinstance(data, bytes) else str(data).encode()
