"""Trace context for delegate calls: TRACEPARENT, TRACESTATE and BAGGAGE (containernetworking/cni #1173).

libcni's main branch hands the W3C trace context (and OpenTelemetry baggage) to plugins in these three variables; a
runtime that executes delegates should pass on what it was given. `dispatch` (cni.skel) records the call's values with
`use`, and `invoke.build_env` puts exactly those into every delegate's environment, so the delegates of one call see
the call's trace context even in a long-running process serving many calls (a contextvar: each thread and each
`contextvars.copy_context().run` has its own).

`trace_id` reads the trace id out of a TRACEPARENT for log lines; a malformed value gives None, never an error.
"""

from __future__ import annotations

import contextvars
import os

from metaplug.cni import lexical
from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

TRACE_VARS = ("TRACEPARENT", "TRACESTATE", "BAGGAGE")

# W3C Trace Context, section "traceparent Header Field Values": version-traceid-parentid-flags, lower-case hex.
# Version 00 has exactly four fields; a later version may append more after a dash; version ff is invalid.
_TRACEPARENT_FIELDS = (2, 32, 16, 2)  # lengths of version, trace id, parent id, flags
_TRACEPARENT_LENGTH = 55  # the four fields and their dashes

_current: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("cni_trace_context", default=None)


def from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The trace variables present (and non-empty) in `environ`."""
    return {name: environ[name] for name in TRACE_VARS if environ.get(name)}


def use(environ: Mapping[str, str]) -> None:
    """Make `environ`'s trace variables the ones every delegate call of the current context receives."""
    _current.set(from_environ(environ))


def current() -> dict[str, str]:
    """The trace variables for a delegate call now: those `use` recorded, else this process's own."""
    recorded = _current.get()
    return dict(recorded) if recorded is not None else from_environ(os.environ)


def trace_id(traceparent: str | None) -> str | None:
    """The 32-hex trace id of a valid TRACEPARENT, else None (bad values are ignored, as the W3C spec asks)."""
    if not traceparent:
        return None
    value = traceparent.strip()
    fields, rest = value[:_TRACEPARENT_LENGTH].split("-"), value[_TRACEPARENT_LENGTH:]
    if len(fields) != len(_TRACEPARENT_FIELDS) or not all(
            lexical.lower_hex(field, length) for field, length in zip(fields, _TRACEPARENT_FIELDS, strict=True)):
        return None
    if rest and (rest[0] != "-" or "\n" in rest):  # a later version's extra fields follow a dash
        return None
    version, tid, parent, _flags = fields
    if version == "ff" or (version == "00" and rest) or set(tid) == {"0"} or set(parent) == {"0"}:
        return None
    return tid
