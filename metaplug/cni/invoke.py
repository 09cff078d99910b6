"""Find and execute a delegate plugin binary (cni.md duties 7, 18, 24-26).

The runtime side of one plugin call, on plain bytes and dicts: which file to run, with which environment, and how its
answer (a result, nothing, or an error in any of the shapes real plugins produce) becomes a dict or a CniError.
Only the standard library is used; this runs once per delegate call.
"""

from __future__ import annotations

import contextvars
import errno
import os
import stat
import time

from metaplug.cni import jsonload, jsontext, spawn, trace
from metaplug.cni.errors import (
    DELEGATE_FAILED,
    DELEGATE_NOT_FOUND,
    DELEGATE_TIMEOUT,
    INVALID_NETWORK_CONFIG,
    CniError,
)
from metaplug.cni.lazylog import LazyLogger
from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, TypeAlias

log = LazyLogger("metaplug.cni.invoke")

ETXTBSY_RETRIES = 5  # duty 24: "text file busy" happens while a binary is being installed; retry a few times
ETXTBSY_FIRST_DELAY = 0.05  # seconds, doubled each retry (0.05 .. 0.8, about 1.5 s in all)
SNIPPET = 400  # characters of a delegate's output quoted in an error
PROBE_VERSION = "1.1.0"  # duty 26: the version sent on stdin when probing
_UNKNOWN_VERSION_CMD = "unknown CNI_COMMAND: VERSION"

# Whoever wants to watch delegate calls (the daemon's metrics) appends here: (plugin name, CNI_COMMAND, seconds, the
# CniError of a failed call or None). Nothing is measured while the list is empty (thin mode).
CallObserver: TypeAlias = "Callable[[str, str, float, CniError | None], None]"
call_observers: list[CallObserver] = []

# Plugins served without exec: executable name -> a function of (env, stdin) returning (exit status, stdout, stderr),
# exactly what that executable prints and exits with (metaplug daemon registers the bundled mp-* delegates; thin mode
# registers nothing). Their answers are decoded like an executable's.
InProcessPlugin: TypeAlias = "Callable[[Mapping[str, str], bytes], tuple[int, str, str]]"
in_process: dict[str, InProcessPlugin] = {}


def find_plugin(plugin_type: str, paths: Sequence[str]) -> str:
    """The path of the executable for `plugin_type`, searched in `paths` in order (duty 7).

    A type that is empty or contains a path separator is an invalid config (code 7). A type found nowhere as a regular
    executable file is DELEGATE_NOT_FOUND (102), naming the type and the directories searched.
    """
    if not isinstance(plugin_type, str) or not plugin_type:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid plugin type", "a plugin's type must be a non-empty string")
    if os.sep in plugin_type or (os.altsep and os.altsep in plugin_type) or "\0" in plugin_type:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid plugin type",
                       f"{plugin_type!r} contains a path separator; a type names a binary in CNI_PATH")
    dirs = [d for d in paths if d]
    not_executable: list[str] = []
    for d in dirs:
        candidate = os.path.join(d, plugin_type)
        try:
            st = os.stat(candidate)
        except (OSError, ValueError):
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if not os.access(candidate, os.X_OK):
            not_executable.append(candidate)
            continue
        return candidate
    details = f"no executable {plugin_type!r} in {dirs if dirs else 'an empty CNI_PATH'}"
    if not_executable:
        details += f" ({', '.join(not_executable)} exists but is not executable)"
    raise CniError(DELEGATE_NOT_FOUND, f"failed to find plugin {plugin_type!r}", details)


def build_env(
    command: str,
    *,
    container_id: str = "",
    netns: str = "",
    ifname: str = "",
    args: str = "",
    paths: Sequence[str] = (),
    base: Mapping[str, str] | None = None,
    trace_context: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one delegate call (duty 18).

    The six CNI_* variables are always set explicitly (empty allowed, as libcni does), on top of `base` (default: our
    own environment), so an inherited CNI_* value can never leak into a delegate call. The same holds for the trace
    context (TRACEPARENT, TRACESTATE, BAGGAGE): `trace_context`, by default the current call's (cni.trace), replaces
    whatever `base` carries, so a delegate sees the trace of the call it serves, never a stale one.
    """
    env = dict(os.environ if base is None else base)
    for name in trace.TRACE_VARS:
        env.pop(name, None)
    env.update(trace.current() if trace_context is None else trace.from_environ(trace_context))
    env.update({
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": args,
        "CNI_PATH": ":".join(p for p in paths if p),
    })
    return env


def exec_plugin(
    plugin_path: str,
    stdin: bytes,
    env: Mapping[str, str],
    *,
    timeout: float | None = None,
    before_input: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    """Run one delegate and decode its answer (duty 24).

    The delegate runs in its own process group with exactly `env`. Exit 0: its stdout JSON object (None when stdout is
    empty). Non-zero exit: a CniError built from its JSON error on stdout, else from its stderr and exit status (101).
    Timeout: the whole process group is killed and DELEGATE_TIMEOUT (100) raised. A result without cniVersion is
    returned as is; the caller fills it in (duty 25).

    `before_input` runs once the delegate's process has started and before it is given its stdin, while the
    delegate starts up (a Go plugin spends ~2 ms before it reads its configuration): what the caller must have
    finished before any delegate can act (metaplug: the first journal record's fsyncs). When it raises, the delegate,
    which never got its configuration, is killed and reaped, and the exception propagates. The timeout counts from
    its end.
    """
    if not call_observers:
        return _exec(plugin_path, stdin, env, timeout, before_input)
    started = time.monotonic()
    failure: CniError | None = None
    try:
        return _exec(plugin_path, stdin, env, timeout, before_input)
    except CniError as err:
        failure = err
        raise
    finally:
        seconds = time.monotonic() - started
        for observe in call_observers:
            observe(os.path.basename(plugin_path), env.get("CNI_COMMAND", "?"), seconds, failure)


def _exec(plugin_path: str, stdin: bytes, env: Mapping[str, str], timeout: float | None,
          before_input: Callable[[], None] | None) -> dict[str, Any] | None:
    name = os.path.basename(plugin_path)
    command = env.get("CNI_COMMAND", "?")
    served = in_process.get(name)
    if served is not None:
        if before_input is not None:
            before_input()  # nothing started yet: nothing to overlap with
        status, text, err_text = _serve(served, name, command, stdin, env, timeout)
        out, err = text.encode(), err_text.encode()
        if err:
            log.debug("%s %s stderr: %s", name, command, err_text.rstrip())
        if status == 0:
            return _decode_success(name, command, out)
        raise _failure(name, command, status, out, err)
    child = _spawn(plugin_path, env)
    if before_input is not None:
        try:
            before_input()
        except BaseException:
            child.abandon()
            raise
    try:
        status, out, err = child.communicate(stdin, timeout)
    except spawn.Timeout:
        raise CniError(DELEGATE_TIMEOUT, f"{name} timed out after {_seconds(timeout)} s",
                       f"{command} of {plugin_path} did not finish; its process group was killed") from None
    if err:
        log.debug("%s %s stderr: %s", name, command, err.decode(errors="replace").rstrip())
    if status == 0:
        return _decode_success(name, command, out)
    raise _failure(name, command, status, out, err)


_served_pool: Any = None


def _serve(served: InProcessPlugin, name: str, command: str, stdin: bytes, env: Mapping[str, str],
           timeout: float | None) -> tuple[int, str, str]:
    """Run an in-process plugin in a thread of its own (a reused one, cni.workers; with the caller's log context),
    bounded by `timeout`."""
    global _served_pool
    from metaplug.cni import workers

    if _served_pool is None:
        _served_pool = workers.Pool("cni-plugin")
    context = contextvars.copy_context()
    job = _served_pool.submit(lambda: context.run(served, env, stdin))
    if not job.wait(timeout):
        raise CniError(DELEGATE_TIMEOUT, f"{name} timed out after {_seconds(timeout)} s",
                       f"{command} of {name} (served in-process) did not finish; it cannot be killed and runs on")
    answer: tuple[int, str, str] = job.result()
    return answer


def probe_version(
    plugin_path: str,
    *,
    base: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """The versions a delegate supports, asked the way libcni asks (duty 26).

    A reply with cniVersion 0.2.0 and no supportedVersions means [0.1.0, 0.2.0]; the error `unknown CNI_COMMAND:
    VERSION` means the plugin predates VERSION: [0.1.0].
    """
    # Plugins built on old skeletons insist on these variables even for VERSION; libcni sends dummies.
    env = build_env("VERSION", netns="dummy", ifname="dummy", paths=("dummy",), base=base)
    stdin = jsontext.dumps({"cniVersion": PROBE_VERSION}).encode()
    try:
        reply = exec_plugin(plugin_path, stdin, env, timeout=timeout)
    except CniError as exc:
        if _UNKNOWN_VERSION_CMD in str(exc):  # as JSON error msg, or as stderr text of a crude plugin
            return ["0.1.0"]
        raise
    name = os.path.basename(plugin_path)
    if reply is None:
        raise CniError(DELEGATE_FAILED, f"{name} gave no VERSION reply", "expected {cniVersion, supportedVersions}")
    supported = reply.get("supportedVersions")
    if isinstance(supported, list) and supported and all(isinstance(v, str) for v in supported):
        return list(supported)
    if supported in (None, []) and reply.get("cniVersion") == "0.2.0":
        return ["0.1.0", "0.2.0"]
    raise CniError(DELEGATE_FAILED, f"{name} gave an invalid VERSION reply",
                   f"missing or invalid supportedVersions: {_snippet(jsontext.dumps(reply))}")


# --- internals -------------------------------------------------------------------------------------------------------


def _spawn(plugin_path: str, env: Mapping[str, str]) -> spawn.Child:
    """Start the delegate in a process group of its own (a timeout kills it and all it spawned); retry on ETXTBSY
    (duty 24); a missing/unrunnable file is a CniError."""
    delay = ETXTBSY_FIRST_DELAY
    attempt = 0
    while True:
        try:
            return spawn.Child(plugin_path, env)
        except OSError as exc:
            if exc.errno == errno.ETXTBSY and attempt < ETXTBSY_RETRIES:
                attempt += 1
                log.debug("%s: text file busy, retry %d in %.2f s", plugin_path, attempt, delay)
                time.sleep(delay)
                delay *= 2
                continue
            code = DELEGATE_NOT_FOUND if exc.errno in (errno.ENOENT, errno.EACCES) else DELEGATE_FAILED
            raise CniError(code, f"failed to execute {os.path.basename(plugin_path)}",
                           f"{plugin_path}: {exc.strerror or exc}") from None


def _decode_success(name: str, command: str, out: bytes) -> dict[str, Any] | None:
    if not out.strip():
        return None
    try:
        data = jsonload.loads(out)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise CniError(DELEGATE_FAILED, f"{name} {command} returned an undecodable result",
                       f"stdout is not a JSON object: {_snippet(out)}")
    return data


def _failure(name: str, command: str, status: int, out: bytes, err: bytes) -> CniError:
    """Duty 24: a JSON error on stdout wins; else stderr text and the exit status."""
    if out.strip():
        try:
            data = jsonload.loads(out)
        except ValueError:
            data = None
        if isinstance(data, dict):
            exc = CniError.from_dict(data)
            if not exc.msg:
                exc = CniError(exc.code, f"{name} {command} failed ({_status_text(status)})", exc.details)
            return exc
    parts = [_status_text(status)]
    if err.strip():
        parts.append(f"stderr: {_snippet(err)}")
    if out.strip():
        parts.append(f"undecodable stdout: {_snippet(out)}")
    if len(parts) == 1:
        parts.append("no error message")
    return CniError(DELEGATE_FAILED, f"{name} {command} failed", "; ".join(parts))


def _status_text(status: int) -> str:
    if status < 0:
        import signal  # only for a delegate killed by a signal: its enum of names costs start-up time

        try:
            signame = signal.Signals(-status).name
        except ValueError:
            signame = str(-status)
        return f"killed by signal {signame}"
    return f"exit status {status}"


def _snippet(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    text = text.strip()
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "..."


def _seconds(timeout: float | None) -> str:
    return "?" if timeout is None else f"{timeout:g}"
