"""What every bundled delegate does the same way: version gates, prevResult, the final conversion, GC input.

Thin glue over `metaplug.cni` (no second copy of the spec): results are built as 1.1.0 dicts and converted here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from metaplug_delegates import SUPPORTED_VERSIONS

from metaplug.cni import skel
from metaplug.cni import version as cniversion
from metaplug.cni.convert import convert_result, result_version
from metaplug.cni.env import CniEnv
from metaplug.cni.errors import INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.skel import Handler

INTERNAL_VERSION = "1.1.0"  # the shape every delegate builds its results in


def require_version(conf: dict[str, Any], minimum: str, verb: str) -> None:
    """CHECK needs a 0.4.0+ config, STATUS and GC a 1.1.0 one (cni.md 12-14); older: code 1."""
    if not cniversion.at_least(conf["cniVersion"], minimum):
        raise CniError(INCOMPATIBLE_VERSION, f"config version does not allow {verb}",
                       f"config is {conf['cniVersion']}, {verb} needs {minimum} or later")


def to_internal(result: dict[str, Any], conf_version: str) -> dict[str, Any]:
    """A result of any version as a 1.1.0 dict; a result without cniVersion takes the config's (cni.md 25)."""
    src = dict(result)
    src["cniVersion"] = result_version(result, conf_version)
    return convert_result(src, INTERNAL_VERSION)


def prev_result(conf: dict[str, Any], verb: str) -> dict[str, Any]:
    """The config's prevResult as a 1.1.0 dict; CHECK without one is an invalid config (code 7)."""
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        raise CniError(INVALID_NETWORK_CONFIG, f"required prevResult missing for {verb}",
                       "the runtime must pass the cached ADD result as prevResult")
    return to_internal(prev, conf["cniVersion"])


def finish(result: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """A 1.1.0-shaped result, converted to the request's cniVersion (cni.md 10, 30)."""
    out = dict(result)
    out["cniVersion"] = INTERNAL_VERSION
    return convert_result(out, conf["cniVersion"])


def flag(conf: dict[str, Any], key: str, default: bool = False) -> bool:
    """A boolean config field; the strings "true"/"false" too (as cni.md 16 allows for the list's flags)."""
    value = conf.get(key, default)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise CniError(INVALID_NETWORK_CONFIG, f"invalid {key}", f"{key} must be a boolean, got {value!r}")


def positive_int(conf: dict[str, Any], key: str) -> int | None:
    """An optional positive integer field (mtu); absent or 0 means "not set"."""
    value = conf.get(key)
    if value is None or value == 0:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {key}", f"{key} must be a positive integer, got {value!r}")
    return value


def version_only(verb: str) -> Handler:
    """A STATUS or GC handler for a plugin that keeps nothing outside the namespace and needs nothing external:
    it only checks that the config's version has the verb (cni.md 13, 14)."""

    def handler(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
        require_version(conf, "1.1.0", verb)
        return None

    return handler


def serve(name: str, handlers: dict[str, Handler]) -> None:
    """The process entry of every mp-* plugin."""
    skel.main(handlers, name=name, supported=SUPPORTED_VERSIONS)


def answer(name: str, handlers: dict[str, Handler], environ: Mapping[str, str], stdin: bytes) -> tuple[int, str, str]:
    """One call in-process (metaplug daemon): what `serve` prints and exits with, as (status, stdout, stderr)."""
    return skel.dispatch(environ, stdin, handlers, name=name, supported=SUPPORTED_VERSIONS)
