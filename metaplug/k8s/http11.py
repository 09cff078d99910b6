"""A minimal HTTP/1.1 client over the standard library's `socket` and `ssl`: what one thin-mode CNI call needs to talk
to the Kubernetes API server (a handful of requests), without importing httpx (issue 10.7: ~30-130 ms per ADD).

- one connection to the server, kept alive for the call's few requests (reopened when the server closed it: a request
  that finds its reused connection dead before any answer byte is sent once more on a fresh one);
- TLS with the caller's SSLContext (the kubeconfig's CA, client certificate), SNI and certificate name = the
  kubeconfig's tls-server-name when set, else the server's host;
- request bodies with Content-Length; answers delimited by Content-Length, chunked transfer coding or the end of the
  connection; 1xx interim answers skipped;
- every request bounded by its `timeout` as a whole (connect + send + read), never per read;
- limits against a broken or hostile server: header block 64 KiB / 100 lines, body MAX_BODY.

Not supported, by design (KubeClient uses httpx for these): proxies, HTTP/2, redirects (never followed anyway), any
content coding (no Accept-Encoding is sent, so the server sends none).
Failures are transport.TransportError with httpx's names (ConnectError, ConnectTimeout, ReadTimeout, WriteTimeout,
RemoteProtocolError), the ssl error chained as the cause.
"""

from __future__ import annotations

import contextlib
import socket
import time

from metaplug.cni.runtime_typing import TYPE_CHECKING
from metaplug.k8s.transport import Answer, TransportError

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
MAX_BODY = 64 * 1024 * 1024  # far above any pod or NAD object
RECV_SIZE = 64 * 1024


def split_server(server: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path prefix) of `https://host[:port][/prefix]` / `http://[v6]:port`; the host without
    IPv6 brackets, the prefix without a trailing slash ("" for none: a server behind a proxy such as Rancher's
    `https://rancher/k8s/clusters/c-x` keeps it in front of every request path, as httpx's base_url does)."""
    scheme, _, rest = server.partition("://")
    hostport, slash, prefix = rest.partition("/")
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    default = 443 if scheme == "https" else 80
    try:
        port = int(port_text) if port_text else default
    except ValueError:
        raise ValueError(f"invalid port in {server!r}") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"invalid server address {server!r}")
    return scheme, host, port, (slash + prefix).rstrip("/").split("?", 1)[0]


class _Connection:
    """One socket (TLS or not) with a read buffer; every read bounded by an absolute deadline (time.monotonic())."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.used = False  # has answered a request (a reused connection may have been closed by the server)
        self.received = 0  # bytes received for the current request

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _left(self, deadline: float, kind: str) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportError(kind, "timed out")
        return left

    def send(self, data: bytes, deadline: float) -> None:
        self.sock.settimeout(self._left(deadline, "WriteTimeout"))
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise TransportError("WriteTimeout", "timed out") from None

    def _fill(self, deadline: float) -> bool:
        """Read more into the buffer; False at the end of the stream."""
        self.sock.settimeout(self._left(deadline, "ReadTimeout"))
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            raise TransportError("ReadTimeout", "timed out") from None
        if not data:
            return False
        self.received += len(data)
        self.buf += data
        return True

    def readline(self, deadline: float, limit: int) -> bytes | None:
        """One line without its CRLF (or LF); None when the stream ends before any byte of it."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return line.removesuffix(b"\r")
            if len(self.buf) > limit:
                raise TransportError("RemoteProtocolError", "header line too long")
            if not self._fill(deadline):
                if self.buf:
                    raise TransportError("RemoteProtocolError", "connection closed in the middle of a line")
                return None

    def read(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise TransportError("RemoteProtocolError", f"connection closed {n - len(self.buf)} bytes short")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_to_end(self, deadline: float) -> bytes:
        while self._fill(deadline):
            if len(self.buf) > MAX_BODY:
                raise TransportError("RemoteProtocolError", "answer too large")
        data = bytes(self.buf)
        self.buf.clear()
        return data


class Http11Transport:
    """Requests to one API server (`https://host:port` or `http://...`); `context` for https."""

    def __init__(self, server: str, context: ssl.SSLContext | None, *, tls_server_name: str | None = None,
                 default_headers: Mapping[str, str] | None = None) -> None:
        self.scheme, self.host, self.port, self.prefix = split_server(server)
        if self.scheme == "https" and context is None:
            raise ValueError("an https server needs an SSL context")
        self.context = context
        self.server_name = tls_server_name or self.host
        default_port = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.default_headers = dict(default_headers or {})
        self._conn: _Connection | None = None
        self.connections_opened = 0  # for tests: keep-alive really reuses

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], *,
                timeout: float) -> Answer:
        deadline = time.monotonic() + timeout
        head = self._head(method, path, body, headers)
        conn = self._conn
        if conn is not None:
            try:
                return self._exchange(conn, method, head, body, deadline)
            except _Stale:
                self.close()  # closed by the server while idle: once more on a fresh connection
        conn = self._connect(deadline)
        try:
            return self._exchange(conn, method, head, body, deadline)
        except _Stale:
            self.close()
            raise TransportError("RemoteProtocolError", "server disconnected without sending a response") from None

    # -- internals --------------------------------------------------------------------------------------------------
    def _head(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1", f"Host: {self.host_header}"]
        merged = {**self.default_headers, **headers}
        for name, value in merged.items():
            # never let a value (a token file's content, say) split the request into two
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise TransportError("LocalProtocolError", f"header {name} holds a line break")
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _connect(self, deadline: float) -> _Connection:
        self.close()
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportError("ConnectTimeout", "timed out")
        try:
            sock = _open_socket(self.host, self.port, left)
        except TimeoutError:
            raise TransportError("ConnectTimeout", "timed out") from None
        except OSError as e:
            raise TransportError("ConnectError", str(e)) from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock = self.context.wrap_socket(sock, server_hostname=self.server_name)
        except TimeoutError:
            sock.close()
            raise TransportError("ConnectTimeout", "timed out during the TLS handshake") from None
        except OSError as e:  # ssl.SSLError is an OSError: the caller finds it as the cause
            sock.close()
            raise TransportError("ConnectError", str(e)) from e
        self.connections_opened += 1
        self._conn = _Connection(sock)
        return self._conn

    def _exchange(self, conn: _Connection, method: str, head: bytes, body: bytes | None,
                  deadline: float) -> Answer:
        """Send and read one answer; _Stale when a reused connection turns out to be closed before any answer byte."""
        reused = conn.used
        conn.received = 0
        try:
            conn.send(head + body if body else head, deadline)
            status_line = conn.readline(deadline, MAX_HEADER_BYTES)
            while True:
                if status_line is None:
                    if reused:
                        raise _Stale
                    raise TransportError("RemoteProtocolError", "server disconnected without sending a response")
                version, code, reason = _status(status_line)
                headers = _headers(conn, deadline)
                if code >= 200 or code == 101:
                    break
                status_line = conn.readline(deadline, MAX_HEADER_BYTES)  # 1xx: the real answer follows
            content, reusable = _body(conn, method, code, version, headers, deadline)
        except TransportError:
            self.close()
            raise
        except OSError as e:  # reset, broken pipe, or an ssl error in the middle of the stream
            self.close()
            if reused and not conn.received:
                raise _Stale from None
            kind = "RemoteProtocolError" if isinstance(e, ConnectionError) else "ReadError"
            raise TransportError(kind, str(e) or type(e).__name__) from e
        conn.used = True
        if not reusable:
            self.close()
        return Answer(code, reason, headers, content)


def _ip_family(host: str) -> int | None:
    """AF_INET / AF_INET6 for an address literal, None for a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to `host`:`port`. An address literal (what in-cluster credentials and `metaplug install` give)
    is connected to directly: getaddrinfo would load the C library's NSS modules first (~1-10 ms of a fresh
    process)."""
    family = _ip_family(host)
    if family is None:
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Stale(Exception):
    """A reused connection was closed by the server before it answered."""


def _status(line: bytes) -> tuple[str, int, str]:
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (len(parts[1]) == 3 and parts[1].isdigit()):
        raise TransportError("RemoteProtocolError", f"not an HTTP/1.1 status line: {line[:80]!r}")
    return parts[0], int(parts[1]), parts[2].strip() if len(parts) > 2 else ""


def _headers(conn: _Connection, deadline: float) -> dict[str, str]:
    headers: dict[str, str] = {}
    size = 0
    for _ in range(MAX_HEADER_LINES + 1):
        line = conn.readline(deadline, MAX_HEADER_BYTES)
        if line is None:
            raise TransportError("RemoteProtocolError", "connection closed in the headers")
        if not line:
            return headers
        size += len(line)
        if size > MAX_HEADER_BYTES:
            break
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise TransportError("RemoteProtocolError", f"malformed header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raise TransportError("RemoteProtocolError", "header block too large")


def _body(conn: _Connection, method: str, code: int, version: str, headers: Mapping[str, str],
          deadline: float) -> tuple[bytes, bool]:
    """(body, connection reusable?) as RFC 9112 section 6.3 delimits it."""
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
        return b"", keep
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.lower().replace(" ", "").split(",")[-1] != "chunked":
            return conn.read_to_end(deadline), False
        return _chunked(conn, deadline), keep
    length = headers.get("content-length")
    if length is not None:
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise TransportError("RemoteProtocolError", f"invalid Content-Length {length!r}")
        n = int(values.pop())
        if n > MAX_BODY:
            raise TransportError("RemoteProtocolError", "answer too large")
        return conn.read(n, deadline), keep
    return conn.read_to_end(deadline), False


def _chunked(conn: _Connection, deadline: float) -> bytes:
    body = bytearray()
    while True:
        line = conn.readline(deadline, 1024)
        if line is None:
            raise TransportError("RemoteProtocolError", "connection closed in a chunked body")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise TransportError("RemoteProtocolError", f"invalid chunk size {line[:40]!r}") from None
        if size < 0 or len(body) + size > MAX_BODY:
            raise TransportError("RemoteProtocolError", "answer too large")
        if size == 0:
            break
        body += conn.read(size, deadline)
        if conn.read(2, deadline) != b"\r\n":
            raise TransportError("RemoteProtocolError", "chunk not followed by CRLF")
    for _ in range(MAX_HEADER_LINES + 1):  # trailers, up to the blank line
        trailer = conn.readline(deadline, MAX_HEADER_BYTES)
        if trailer is None:
            raise TransportError("RemoteProtocolError", "connection closed in the trailers")
        if not trailer:
            return bytes(body)
    raise TransportError("RemoteProtocolError", "too many trailer lines")
