"""metaplug's own plugin configuration (the entry for `"type": "metaplug"` in the runtime's conflist).

Two views of the same JSON object:
- `Settings` (a NamedTuple, no pydantic): the few paths and knobs every verb needs (stateDir, binDir, logging,
  timeouts). DEL, CHECK and GC run from the journal and need nothing else, so they never pay for pydantic.
- `MetaplugConfig` (config_model.py, validated by pydantic-core, on ADD and STATUS only): every key validated,
  Multus spellings accepted as aliases (`cniDir`, `readinessindicatorfile`, `multusNamespace`, `loglevel`).
  A bad value is CNI error 7 naming the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from metaplug.cni.env import validate_network_name
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError

if TYPE_CHECKING:
    from metaplug.config_model import MetaplugConfig

DEFAULT_CONF_DIR = "/etc/cni/metaplug/net.d"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_STATE_DIR = "/var/lib/cni/metaplug"
DEFAULT_DELEGATE_TIMEOUT = 60.0

# Capabilities metaplug declares for itself (cni.md 34): every well-known one, so the runtime hands them all over and
# metaplug passes each to the cluster network's plugins that declare it (R30).
OWN_CAPABILITIES = (
    "portMappings", "ipRanges", "bandwidth", "dns", "ips", "mac", "infinibandGUID", "deviceID", "aliases",
    "cgroupPath", "io.kubernetes.cri.pod-annotations",
)


def _number(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid metaplug configuration", f"{key}: must be a positive number")
    return float(value)


def _string(raw: dict[str, Any], keys: tuple[str, ...], default: str) -> str:
    for key in keys:
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or not value:
                raise CniError(INVALID_NETWORK_CONFIG, "invalid metaplug configuration",
                               f"{key}: must be a non-empty string")
            return value
    return default


class Settings(NamedTuple):
    """What every verb needs, read without pydantic."""

    name: str
    state_dir: str
    bin_dir: str
    log_level: str
    log_file: str | None
    delegate_timeout: float

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Settings:
        # cni.md 5: the name also names the journal files, so it must never carry a path separator.
        validate_network_name(raw.get("name"))
        log_file = raw.get("logFile")
        return cls(
            name=raw["name"],
            state_dir=_string(raw, ("stateDir",), DEFAULT_STATE_DIR),
            bin_dir=_string(raw, ("binDir",), DEFAULT_BIN_DIR),
            log_level=_string(raw, ("logLevel", "loglevel"), "warning").lower(),
            log_file=log_file if isinstance(log_file, str) and log_file else None,
            delegate_timeout=_number(raw, "delegateTimeout", DEFAULT_DELEGATE_TIMEOUT),
        )


def load_config(raw: dict[str, Any]) -> MetaplugConfig:
    """Validate the whole configuration (ADD, STATUS). Errors name the key as written (code 7)."""
    from pydantic_core import ValidationError

    from metaplug.config_model import MetaplugConfig

    try:
        return MetaplugConfig.validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(config)"
            problems.append(f"{key}: {err['msg']}")
        raise CniError(INVALID_NETWORK_CONFIG, "invalid metaplug configuration", "; ".join(problems)) from None
