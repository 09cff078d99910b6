"""The few text shapes metaplug checks on every call, without regular expressions.

Importing `re` costs a thin-mode process ~5 ms (re, enum, functools, collections; issue 10.7) and the shapes are
simple: character sets, fixed lengths, separators. Each function here states the pattern it decides, as
`PATTERN` strings callers quote in error messages; tests/unit/test_lexical.py holds every one against `re.fullmatch`
of that pattern. Unlike `re.match(r"...$")`, nothing here accepts a trailing newline.
"""

from __future__ import annotations

_DIGITS = frozenset("0123456789")
_LOWER_HEX = frozenset("0123456789abcdef")
_HEX = _LOWER_HEX | frozenset("ABCDEF")
_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALNUM = _LOWER_ALNUM | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ID_REST = _ALNUM | frozenset("_.-")
_LABEL_REST = _LOWER_ALNUM | frozenset("-")

CONTAINER_ID_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$"  # cni.md 3 (and cni.md 5 for network names)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # R1: Kubernetes object names in annotations and NADs
SEMVER_PATTERN = r"^(\d+)\.(\d+)\.(\d+)$"  # cniVersion, ASCII digits


def container_id(value: str) -> bool:
    """CONTAINER_ID_PATTERN: an ASCII letter or digit, then letters, digits, `_`, `.` or `-`."""
    return bool(value) and value[0] in _ALNUM and set(value) <= _ID_REST


def dns_label(value: str) -> bool:
    """DNS_LABEL_PATTERN: lower-case letters, digits and `-`, starting and ending with a letter or digit."""
    return bool(value) and value[0] in _LOWER_ALNUM and value[-1] in _LOWER_ALNUM and set(value) <= _LABEL_REST


def hex_octets(value: str, count: int) -> bool:
    """`count` colon-separated pairs of hex digits, any case (a MAC address: 6, an InfiniBand GUID: 8)."""
    parts = value.split(":")
    return len(parts) == count and all(len(part) == 2 and set(part) <= _HEX for part in parts)


def lower_hex(value: str, length: int) -> bool:
    """Exactly `length` lower-case hex digits."""
    return len(value) == length and set(value) <= _LOWER_HEX


def ip_version(value: str) -> int | None:
    """4 or 6 when `inet_pton` takes `value` as an address, with an optional decimal `/prefix` that fits it; None
    when it is not decided here: the caller asks `ipaddress` (~1 ms to import), which also takes netmasks, scoped
    IPv6 addresses, and refuses the rest. Every address inet_pton accepts, ipaddress accepts too (dotted quads
    without leading zeros, IPv6 groups of up to four hex digits, an embedded IPv4 tail)."""
    import _socket

    address, slash, prefix = value.partition("/")
    for family, version, bits in ((_socket.AF_INET, 4, 32), (_socket.AF_INET6, 6, 128)):
        try:
            _socket.inet_pton(family, address)
        except (OSError, ValueError):  # ValueError: an embedded NUL
            continue
        if slash and not (prefix.isdigit() and prefix.isascii() and int(prefix) <= bits):
            return None
        return version
    return None


def semver(value: str) -> tuple[int, int, int] | None:
    """SEMVER_PATTERN as (major, minor, patch), or None."""
    parts = value.split(".")
    if len(parts) != 3 or not all(part and set(part) <= _DIGITS for part in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])
