"""The plugin skeleton: env + stdin in, one JSON document out (cni.md duties 1-9, 15, 32).

Every executable plugin of this project (metaplug itself and the bundled `mp-*` delegates) runs through `dispatch`, so
env parsing, version checks and error reporting exist once. `dispatch` is pure (no process state touched), so a daemon
can serve the same code; `main` is the thin process wrapper.
"""

from __future__ import annotations

import os
import sys

from metaplug.cni import jsontext, trace
from metaplug.cni import version as cniversion
from metaplug.cni.env import CniEnv, parse_env, parse_stdin, read_stdin
from metaplug.cni.errors import INVALID_ENVIRONMENT, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, NoReturn, TypeAlias

# A verb handler gets the validated env, the decoded config and the raw stdin bytes; it returns the result to print
# (already in the config's cniVersion) or None for verbs without output.
Handler: TypeAlias = "Callable[[CniEnv, dict[str, Any], bytes], dict[str, Any] | None]"

INTERNAL_ERROR = 199  # an unexpected exception inside a plugin of this project (a bug: please report it)


def about_line(name: str, supported: Sequence[str]) -> str:
    """Duty 1: the text printed to stderr when CNI_COMMAND is absent."""
    return f"CNI plugin {name}; supported CNI versions: {', '.join(supported)}"


def version_reply(conf: Mapping[str, Any], supported: Sequence[str]) -> dict[str, Any]:
    """Duty 15: `{"cniVersion": <input or own>, "supportedVersions": [...]}`."""
    requested = conf.get("cniVersion") if conf else None
    return {"cniVersion": requested or cniversion.CURRENT_VERSION, "supportedVersions": list(supported)}


def dispatch(
    environ: Mapping[str, str],
    stdin: bytes | None,
    handlers: Mapping[str, Handler],
    *,
    name: str,
    supported: Sequence[str] = cniversion.SUPPORTED_VERSIONS,
) -> tuple[int, str, str]:
    """Run one CNI call. Returns (exit status, stdout text, stderr text); stdout holds at most one JSON document."""
    if not environ.get("CNI_COMMAND"):
        return 0, "", about_line(name, supported) + "\n"
    trace.use(environ)  # every delegate this call runs gets the call's TRACEPARENT/TRACESTATE/BAGGAGE
    err_version = cniversion.CURRENT_VERSION
    try:
        env = parse_env(environ)
        if env.command == "VERSION":
            conf = parse_stdin(stdin, allow_empty=True, fill_version=False)
            return 0, jsontext.dumps(version_reply(conf, supported)) + "\n", ""
        conf = parse_stdin(stdin, allow_empty=env.command == "STATUS")
        if conf:
            err_version = conf["cniVersion"]
            cniversion.require_supported(conf["cniVersion"], supported)
        handler = handlers.get(env.command)
        if handler is None:
            raise CniError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND: {env.command}")
        result = handler(env, conf, stdin or b"")
    except CniError as err:
        return 1, jsontext.dumps(err.to_dict(err_version)) + "\n", ""
    except Exception as exc:  # a bug must still produce a CNI error on stdout, never a bare traceback there
        import traceback

        bug = CniError(INTERNAL_ERROR, f"internal error in {name}", f"{type(exc).__name__}: {exc}")
        return 1, jsontext.dumps(bug.to_dict(err_version)) + "\n", traceback.format_exc()
    if result is None:
        return 0, "", ""
    return 0, jsontext.dumps(result) + "\n", ""


def main(handlers: Mapping[str, Handler], *, name: str,
         supported: Sequence[str] = cniversion.SUPPORTED_VERSIONS) -> NoReturn:
    """Process entry for a plugin: read stdin only when a verb needs it, print, exit."""
    stdin: bytes | None = None
    status: int
    try:
        if os.environ.get("CNI_COMMAND"):
            stdin = read_stdin(sys.stdin.buffer)
    except CniError as err:
        sys.stdout.write(jsontext.dumps(err.to_dict(cniversion.CURRENT_VERSION)) + "\n")
        sys.stdout.flush()
        os._exit(1)
    status, out, err_text = dispatch(os.environ, stdin, handlers, name=name, supported=supported)
    if err_text:
        sys.stderr.write(err_text)
    if out:
        sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.flush()
    # The process ends here, without the interpreter's teardown (every module freed, a last garbage collection: ~2 ms
    # of each thin-mode call, issue 10.7). Nothing is lost by it: stdout and stderr are flushed above, journal and log
    # writes are unbuffered os.write calls on descriptors the kernel closes, and no thread or child is left running.
    os._exit(status)
