"""CNI versions: which are supported, parsing and comparison (duties 8, 9, 15, 16, 26)."""

from __future__ import annotations

from metaplug.cni import lexical
from metaplug.cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"
DEFAULT_CONFIG_VERSION = "0.1.0"  # duty 9: a config without cniVersion is 0.1.0


def parse(version: str) -> tuple[int, int, int]:
    """`"1.0.0"` -> (1, 0, 0); anything else is a decode failure (duty 8, code 6)."""
    if not isinstance(version, str):
        raise CniError(DECODE_FAILURE, "invalid cniVersion", f"cniVersion must be a string, got {version!r}")
    parsed = lexical.semver(version)
    if parsed is None:
        raise CniError(DECODE_FAILURE, "invalid cniVersion", f"{version!r} is not a version of the form X.Y.Z")
    return parsed


def at_least(version: str, minimum: str) -> bool:
    """True when `version` >= `minimum`."""
    return parse(version) >= parse(minimum)


def require_supported(version: str, supported: Iterable[str] = SUPPORTED_VERSIONS) -> str:
    """Return the version when it is supported, else code 1 naming the config version and the list (duty 8)."""
    parse(version)
    allowed = list(supported)
    if version not in allowed:
        raise CniError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {allowed}",
        )
    return version


def highest_supported(candidates: Iterable[str], supported: Iterable[str] = SUPPORTED_VERSIONS) -> str | None:
    """The highest version of `candidates` that is also supported (duty 16, cniVersions); None when none is."""
    allowed = set(supported)
    best: tuple[int, int, int] | None = None
    best_str: str | None = None
    for cand in candidates:
        try:
            key = parse(cand)
        except CniError:
            continue
        if cand in allowed and (best is None or key > best):
            best, best_str = key, cand
    return best_str
