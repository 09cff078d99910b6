"""The shim <-> daemon wire format (one call per connection). Integers are unsigned 32-bit big-endian.

    request:  b"MPQ1" | u32 env length | env (entries `KEY=VALUE\\0`) | u32 stdin length | stdin
    response: b"MPA1" | u32 exit status | u32 stdout length | stdout | u32 stderr length | stderr

The env carries every CNI_* variable of the shim's environment plus TRACEPARENT, TRACESTATE and BAGGAGE when set.
A live-change request (`metaplug attach|detach|set-bandwidth|set-firewall`, live.py) is the same frame with
`METAPLUG_OPERATION` and `CNI_CONTAINERID` in its env and the operation as JSON on stdin; its response's stdout is
the outcome or the CNI error document.
A DEL the shim could not deliver is spooled as its exact request frame (spool.py). metaplug-shim.c implements the
same format in C; tests/unit/test_daemon_protocol.py holds both to it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Mapping
from typing import NamedTuple

from metaplug.cni import trace

REQUEST_MAGIC = b"MPQ1"
RESPONSE_MAGIC = b"MPA1"
MAX_ENV = 1 << 20  # 1 MiB
MAX_STDIN = 16 << 20  # 16 MiB
MAX_OUTPUT = 16 << 20  # each of stdout and stderr in a response
FORWARDED_VARS = trace.TRACE_VARS  # besides CNI_*: the trace context (the shim forwards the same)
_U32 = struct.Struct(">I")


class ProtocolError(Exception):
    """A frame that does not follow the format (bad magic, over a size limit, truncated, bad env entry)."""


class NoRequest(ProtocolError):
    """The peer closed the connection without sending a byte (a liveness probe)."""


class Request(NamedTuple):
    env: dict[str, str]
    stdin: bytes


class Response(NamedTuple):
    status: int
    stdout: bytes
    stderr: bytes


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What a shim forwards of its environment."""
    return {k: v for k, v in environ.items() if k.startswith("CNI_") or k in FORWARDED_VARS}


def _u32(n: int) -> bytes:
    return _U32.pack(n)


def encode_env(env: Mapping[str, str]) -> bytes:
    out = bytearray()
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ProtocolError(f"env entry {key!r} cannot be encoded")
        out += f"{key}={value}".encode() + b"\0"
    return bytes(out)


def decode_env(raw: bytes) -> dict[str, str]:
    if raw and not raw.endswith(b"\0"):
        raise ProtocolError("env does not end with NUL")
    env: dict[str, str] = {}
    for entry in raw.split(b"\0")[:-1]:
        key, sep, value = entry.partition(b"=")
        if not sep or not key:
            raise ProtocolError(f"env entry {entry[:40]!r} is not KEY=VALUE")
        # As os.environ decodes a thin call's env (PEP 383): undecodable bytes become lone surrogates, which
        # cni.env refuses with code 4 naming the variable, instead of U+FFFD, which would pass as a character.
        env[key.decode(errors="surrogateescape")] = value.decode(errors="surrogateescape")
    return env


def encode_request(env: Mapping[str, str], stdin: bytes) -> bytes:
    raw_env = encode_env(env)
    if len(raw_env) > MAX_ENV:
        raise ProtocolError(f"env is {len(raw_env)} bytes, over the limit of {MAX_ENV}")
    if len(stdin) > MAX_STDIN:
        raise ProtocolError(f"stdin is {len(stdin)} bytes, over the limit of {MAX_STDIN}")
    return b"".join((REQUEST_MAGIC, _u32(len(raw_env)), raw_env, _u32(len(stdin)), stdin))


def encode_response(response: Response) -> bytes:
    stdout, stderr = response.stdout[:MAX_OUTPUT], response.stderr[:MAX_OUTPUT]
    return b"".join((RESPONSE_MAGIC, _u32(response.status & 0xFFFFFFFF), _u32(len(stdout)), stdout,
                     _u32(len(stderr)), stderr))


# A reader returns exactly n bytes, or fewer only at end of input.
Reader = Callable[[int], bytes]


def _exact(read: Reader, n: int, what: str) -> bytes:
    data = read(n)
    if len(data) != n:
        raise ProtocolError(f"truncated frame: {what} ({len(data)} of {n} bytes)")
    return data


def _sized(read: Reader, limit: int, what: str) -> bytes:
    (length,) = _U32.unpack(_exact(read, 4, f"{what} length"))
    if length > limit:
        raise ProtocolError(f"{what} is {length} bytes, over the limit of {limit}")
    return _exact(read, length, what)


def read_request(read: Reader) -> Request:
    first = read(1)
    if not first:
        raise NoRequest("connection closed without a request")
    magic = first + _exact(read, 3, "magic")
    if magic != REQUEST_MAGIC:
        raise ProtocolError(f"bad request magic {magic!r}")
    env = decode_env(_sized(read, MAX_ENV, "env"))
    return Request(env, _sized(read, MAX_STDIN, "stdin"))


def read_response(read: Reader) -> Response:
    magic = _exact(read, 4, "magic")
    if magic != RESPONSE_MAGIC:
        raise ProtocolError(f"bad response magic {magic!r}")
    (status,) = _U32.unpack(_exact(read, 4, "exit status"))
    stdout = _sized(read, MAX_OUTPUT, "stdout")
    return Response(status, stdout, _sized(read, MAX_OUTPUT, "stderr"))


def bytes_reader(data: bytes) -> Reader:
    """A Reader over a complete frame (a spool record, a test's bytes)."""
    view = memoryview(data)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = bytes(view[pos:pos + n])
        pos += len(chunk)
        return chunk

    return read


def decode_request(data: bytes) -> Request:
    """A whole request frame, nothing after it."""
    read = bytes_reader(data)
    request = read_request(read)
    if read(1):
        raise ProtocolError("trailing bytes after the request frame")
    return request


def socket_reader(sock: socket.socket) -> Reader:
    """A Reader over a connected socket (recv until n bytes or end of stream). It receives what has arrived, up to
    64 KiB at a time, and serves the small reads of a frame from that: one recv for a whole request instead of two
    per field (each one a poll and a recv under the socket's timeout). Only for a socket whose peer sends nothing
    after its frame (the shim waits for the answer)."""
    buffer = bytearray()

    def read(n: int) -> bytes:
        while len(buffer) < n:
            chunk = sock.recv(max(n - len(buffer), 1 << 16))
            if not chunk:
                break
            buffer.extend(chunk)
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    return read
