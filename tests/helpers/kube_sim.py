"""An HTTPS Kubernetes API simulator for tests: real TLS, real REST semantics, injectable faults.

Serves on 127.0.0.1 (random port) with a CA and a server certificate it generates (SAN 127.0.0.1, localhost,
kubernetes.default.svc). Authentication: a bearer token (`sim.token`, rotatable) or a client certificate signed by its
CA.
Resources: pods (get, list, watch, delete; the status subresource: GET, PUT with resourceVersion, JSON merge
patch), the NetworkAttachmentDefinitions of k8s.cni.cncf.io/v1 (get, list, watch, create, update, delete), events
(create). Every write increments the resourceVersion; errors are Kubernetes Status objects (401, 404, 409, 410, 415,
422, ...).

Lists and watches, as the real API server serves them: per namespace or across all namespaces, `fieldSelector`
(`spec.nodeName`, `metadata.name`, `metadata.namespace`, `status.phase` with `=`, `==`, `!=`; other fields are 400),
a list's `metadata.resourceVersion`, `?watch=1&resourceVersion=N` streaming every change after N as JSON lines
(ADDED / MODIFIED / DELETED; an object that starts or stops matching the field selector is ADDED or DELETED),
`allowWatchBookmarks` (BOOKMARK events every `bookmark_interval` seconds when that is set), `timeoutSeconds` (the
stream then ends cleanly), and a resourceVersion older than the last `compact()` answered with an ERROR event
carrying a 410 Gone Status ("too old resource version"), as etcd compaction does. `drop_watches()` cuts every open
watch without ending its stream (a dropped connection); `watches_paused = True` holds back every watch event (a
slow watch: the object exists, the watcher has not heard of it yet).

Faults: `latency`, `fail_next(n, status, retry_after)`, `drop_next(n)` (close the connection without answering),
`conflict_next(n)` (a concurrent writer bumps the pod before the next PUTs), `stop()`/`start()` (dead server, same
port),
`merge_patch_supported = False`, `crd_installed = False`.

    with KubeSim() as sim:
        sim.add_pod("default", "web")
        path = sim.kubeconfig(tmp_path / "kubeconfig", mode="token")
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import ipaddress
import json
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

POD_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)(/status)?$")
PODS_RE = re.compile(r"^/api/v1(?:/namespaces/([^/]+))?/pods$")
NAD_RE = re.compile(r"^/apis/k8s\.cni\.cncf\.io/v1(?:/namespaces/([^/]+))?/network-attachment-definitions"
                    r"(?:/([^/]+))?$")
FIELDS = {"pods": ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"),
          "nads": ("metadata.name", "metadata.namespace")}
NAD_API = "k8s.cni.cncf.io/v1"
SUCCESS = {"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}
EVENTS_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "Timeout"}


# -- certificates -----------------------------------------------------------------------------------------------------
@dataclass
class Pki:
    """PEM bytes of a CA, a server certificate signed by it and a client certificate signed by it."""

    ca_cert: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, sans: list[x509.GeneralName] | None = None,
          org: str | None = None) -> x509.Certificate:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attrs)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    return _cert("kube-sim-ca", key, None, key, ca=True), key


def make_pki() -> Pki:
    ca, ca_key = make_ca()
    server_key = _key()
    server = _cert("kube-apiserver", server_key, ca.subject, ca_key, sans=[
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
        x509.DNSName("kubernetes.default.svc")])
    client_key = _key()
    client = _cert("metaplug-node", client_key, ca.subject, ca_key, org="system:nodes")
    pem = serialization.Encoding.PEM
    return Pki(ca.public_bytes(pem), server.public_bytes(pem), _pem_key(server_key), client.public_bytes(pem),
               _pem_key(client_key))


# -- the simulator ----------------------------------------------------------------------------------------------------
@dataclass
class SimRequest:
    """One request as the simulator saw it (secret headers removed)."""

    method: str
    path: str
    headers: dict[str, str]
    auth: str | None  # "token#N" (N-th token issued), "cert:<CN>" or None
    body: bytes
    status: int = 0  # what the simulator answered (0: dropped)
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic)


@dataclass
class _Fault:
    kind: str  # "status" | "drop"
    status: int = 0
    retry_after: str | None = None
    match: str | None = None  # only requests whose path contains this


def status_object(code: int, message: str, reason: str | None = None,
                  details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A Kubernetes metav1.Status for an error."""
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code}
    if details is not None:
        out["details"] = dict(details)
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Change:
    """One write, as a watch delivers it: the object after the write (before a delete) and the one it replaced."""

    rv: int
    resource: str  # "pods" | "nads"
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict[str, Any]
    old: dict[str, Any] | None


Selector = list[tuple[str, bool, str]]  # (field, equal?, value)


def parse_field_selector(resource: str, text: str) -> Selector:
    """`a=b,c!=d` as the API server reads it; an unsupported field is a ValueError (the server's 400)."""
    out: Selector = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        op = next((o for o in ("!=", "==", "=") if o in term), None)
        if op is None:
            raise ValueError(f"invalid selector: {term!r}; can't understand it")
        key, _, value = term.partition(op)
        equal = op != "!="
        if key.strip() not in FIELDS[resource]:
            raise ValueError(f'"{key.strip()}" is not a known field selector: only '
                             f'"{", ".join(FIELDS[resource])}"')
        out.append((key.strip(), equal, value.strip()))
    return out


def _field(obj: Mapping[str, Any], dotted: str) -> str:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def matches(obj: Mapping[str, Any], namespace: str | None, selector: Selector) -> bool:
    if namespace is not None and _field(obj, "metadata.namespace") != namespace:
        return False
    return all((_field(obj, key) == value) == equal for key, equal, value in selector)


def watch_event(change: Change, namespace: str | None, selector: Selector) -> dict[str, Any] | None:
    """What a watch with this scope sees of `change` (None: nothing): an object entering the selection is ADDED,
    one leaving it is DELETED."""
    now = change.type != "DELETED" and matches(change.obj, namespace, selector)
    before = change.old is not None and matches(change.old, namespace, selector)
    if change.type == "DELETED":
        kind = "DELETED" if before else None
    elif now:
        kind = "MODIFIED" if before else "ADDED"
    else:
        kind = "DELETED" if before else None
    return None if kind is None else {"type": kind, "object": copy.deepcopy(change.obj)}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive handlers must not block stop(); stop() shuts their sockets instead

    def __init__(self, sim: KubeSim, port: int) -> None:
        self.sim = sim
        super().__init__(("127.0.0.1", port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the handler thread, so that a slow client cannot block accept().
        request.settimeout(30)
        # Like the real API server (Go's net/http sets TCP_NODELAY on every connection): without it, the body of an
        # answer waits for the client's delayed ACK of the headers (~40 ms per request).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            conn = self.sim.server_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self.sim._track(conn)
        with self.sim.lock:
            self.sim.connections_accepted += 1
        try:
            _Handler(conn, client_address, self)
        except OSError:
            pass
        finally:
            self.sim._untrack(conn)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # buffered: headers and body leave in one write per answer, as from the real API server
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _dispatch(self) -> None:
        sim = self.server.sim
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = SimRequest(self.command, self.path,
                         {k: v for k, v in self.headers.items() if k.lower() not in SECRET_HEADERS},
                         self._auth(), body)
        with sim.lock:
            sim.requests.append(req)
        if sim.latency and sim._stopping.wait(sim.latency):
            self.close_connection = True
            return
        fault = sim._take_fault(self.path)
        if fault is not None and fault.kind == "drop":
            self.close_connection = True  # answer nothing: the client sees the connection closed
            return
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._reply(req, fault.status, status_object(fault.status, f"injected {fault.status}"), headers)
            return
        if req.auth is None:
            self._reply(req, 401, status_object(401, "Unauthorized"))
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if self.command == "GET" and query.get("watch") in ("1", "true"):
            self._watch(req, url.path, query)
            return
        code, obj = sim._handle(self.command, url.path, body, self.headers.get("Content-Type", ""), query)
        self._reply(req, code, obj)

    # -- watch ----------------------------------------------------------------------------------------------------
    def _watch(self, req: SimRequest, path: str, query: Mapping[str, str]) -> None:
        sim = self.server.sim
        scope = sim._collection(path)
        if scope is None:
            self._reply(req, 404, status_object(404, "the server could not find the requested resource"))
            return
        resource, namespace = scope
        try:
            selector = parse_field_selector(resource, query.get("fieldSelector", ""))
        except ValueError as e:
            self._reply(req, 400, status_object(400, str(e)))
            return
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
        timeout = float(query.get("timeoutSeconds") or sim.watch_timeout)
        since = query.get("resourceVersion", "")
        with sim.lock:
            epoch = sim._watch_epoch
            gone = since not in ("", "0") and int(since) < sim.compacted_rv
            if since in ("", "0"):  # "any version": the current objects first, as ADDED
                initial = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for o in sim._objects(resource) if matches(o, namespace, selector)]
                cursor = sim.resource_version
            else:
                initial, cursor = [], int(since)
            sim.watches_open += 1
        try:
            req.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()  # a watch's headers leave at once, before any event (as from the real API server)
            if gone:
                self._chunk({"type": "ERROR", "object": status_object(
                    410, f"too old resource version: {since} ({sim.compacted_rv})", reason="Expired")})
                self._chunk(None)
                return
            for event in initial:
                self._chunk(event)
            ends = time.monotonic() + timeout
            next_bookmark = time.monotonic() + (sim.bookmark_interval or 0)
            while True:
                with sim.lock:
                    changes = [c for c in sim.history if c.rv > cursor and c.resource == resource]
                    if (not changes or sim.watches_paused) and epoch == sim._watch_epoch:
                        sim._changed.wait(0.1)
                        changes = [c for c in sim.history if c.rv > cursor and c.resource == resource]
                    dropped = epoch != sim._watch_epoch or sim._stopping.is_set()
                    latest = sim.resource_version
                    if sim.watches_paused:
                        changes, latest = [], cursor
                if dropped:
                    self.close_connection = True  # no final chunk: the client sees the connection cut
                    return
                for change in changes:
                    seen = watch_event(change, namespace, selector)
                    if seen is not None:
                        self._chunk(seen)
                cursor = max(cursor, latest)
                now = time.monotonic()
                if bookmarks and sim.bookmark_interval and now >= next_bookmark and not sim.watches_paused:
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": "Pod" if resource == "pods" else "NetworkAttachmentDefinition",
                        "apiVersion": "v1" if resource == "pods" else NAD_API,
                        "metadata": {"resourceVersion": str(cursor)}}})
                    next_bookmark = now + sim.bookmark_interval
                if now >= ends:
                    self._chunk(None)
                    return
        finally:
            with sim.lock:
                sim.watches_open -= 1

    def _chunk(self, event: Mapping[str, Any] | None) -> None:
        """One JSON line of a watch as one HTTP chunk; None ends the stream."""
        data = b"" if event is None else json.dumps(event).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _auth(self) -> str | None:
        sim = self.server.sim
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return sim._token_label(header[len("Bearer "):].strip())
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if cert:  # only presented AND verified against the CA gets here (CERT_OPTIONAL)
            subject: Any = cert.get("subject", ())
            for rdn in subject:
                for key, value in rdn:
                    if key == "commonName":
                        return f"cert:{value}"
        return None

    def _reply(self, req: SimRequest, code: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        req.status = code
        chunked = self.server.sim.chunked_replies
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not chunked:
            self.wfile.write(data)
            return
        third = max(1, len(data) // 3)
        pieces = [data[:third], data[third:2 * third], data[2 * third:]]
        for i, piece in enumerate(p for p in pieces if p):
            extension = ";sim=1" if i == 1 else ""
            self.wfile.write(f"{len(piece):x}{extension}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\nX-Sim-Trailer: yes\r\n\r\n")


class KubeSim:
    """The simulated API server. A context manager: starts on enter, stops on exit."""

    def __init__(self) -> None:
        self.pki = make_pki()
        self.lock = threading.RLock()
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.nads: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[SimRequest] = []
        self.latency = 0.0
        self.chunked_replies = False  # answers in chunked transfer coding (three chunks, an extension, a trailer)
        self.connections_accepted = 0  # TLS connections set up (keep-alive reuse shows as fewer than requests)
        self.merge_patch_supported = True
        self.crd_installed = True
        self.resource_version = 100
        self.history: list[Change] = []  # every write since the last compact(), for watches
        self.compacted_rv = 0  # a watch from an older resourceVersion gets 410 Gone
        self.watch_timeout = 1800.0  # seconds a watch lasts when the client gives no timeoutSeconds
        self.bookmark_interval: float | None = None  # seconds between BOOKMARKs (allowWatchBookmarks); None: never
        self.watches_open = 0
        self.watches_paused = False
        self._watch_epoch = 0
        self._changed = threading.Condition(self.lock)
        self.port = 0
        self._tokens: list[str] = [secrets.token_urlsafe(24)]
        self._valid_tokens = {self._tokens[0]}
        self._token_files: list[Path] = []
        self._faults: list[_Fault] = []
        self._conflicts = 0
        self._conns: set[ssl.SSLSocket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context = ctx
        self._load_server_certs(ctx)

    # -- life cycle ---------------------------------------------------------------------------------------------------
    def _load_server_certs(self, ctx: ssl.SSLContext) -> None:
        import os
        import tempfile
        fd, path = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(self.pki.server_cert + self.pki.server_key)
            ctx.load_cert_chain(path)
        finally:
            os.unlink(path)
        ctx.load_verify_locations(cadata=self.pki.ca_cert.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL  # client certificates are optional, verified when presented

    def start(self) -> KubeSim:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(self, self.port)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kube-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: the port refuses connections, open connections are closed. start() resumes."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close_connections(self) -> None:
        """Close every open connection (idle keep-alive ones included) without a word, as a server restarting or
        timing out idle clients does; the port keeps accepting."""
        with self.lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> KubeSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: ssl.SSLSocket) -> None:
        with self.lock:
            self._conns.add(conn)

    def _untrack(self, conn: ssl.SSLSocket) -> None:
        with self.lock:
            self._conns.discard(conn)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- credentials --------------------------------------------------------------------------------------------------
    @property
    def token(self) -> str:
        """The newest valid bearer token."""
        return self._tokens[-1]

    def _token_label(self, token: str) -> str | None:
        with self.lock:
            if token in self._valid_tokens:
                return f"token#{self._tokens.index(token) + 1}"
        return None

    def rotate_token(self, *, keep_old: bool = False) -> str:
        """Issue a new token (the old one stops working unless keep_old) and rewrite every token file written."""
        new = secrets.token_urlsafe(24)
        with self.lock:
            if not keep_old:
                self._valid_tokens.clear()
            self._tokens.append(new)
            self._valid_tokens.add(new)
        for path in self._token_files:
            path.write_text(new)
        return new

    def _write(self, path: Path, data: bytes | str, mode: int = 0o600) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def kubeconfig(self, path: str | Path, mode: str = "token", *, fmt: str = "yaml", server: str | None = None,
                   tls_server_name: str | None = None) -> str:
        """Write a kubeconfig for this server (and the files it refers to, next to it); return its path.

        mode: "token" (inline token, CA data), "tokenFile" (relative tokenFile and CA file), "cert" (client certificate
        and key files, CA data), "cert-data" (inline certificate and key), "ca-file" (token, absolute CA file),
        "ca-data" (token, CA data), "insecure" (token, insecure-skip-tls-verify). fmt: "yaml" or "json".
        """
        path = Path(path)
        d = path.parent
        b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
        cluster: dict[str, Any] = {"server": server or self.server}
        user: dict[str, Any] = {}
        if mode in ("token", "cert", "cert-data", "ca-data"):
            cluster["certificate-authority-data"] = b64(self.pki.ca_cert)
        elif mode == "tokenFile":
            self._write(d / "ca.crt", self.pki.ca_cert, 0o644)
            cluster["certificate-authority"] = "ca.crt"  # relative to the kubeconfig's directory
        elif mode == "ca-file":
            cluster["certificate-authority"] = str(self._write(d / "ca.crt", self.pki.ca_cert, 0o644))
        elif mode == "insecure":
            cluster["insecure-skip-tls-verify"] = True
        else:
            raise ValueError(f"unknown kubeconfig mode {mode!r}")
        if tls_server_name:
            cluster["tls-server-name"] = tls_server_name
        if mode == "tokenFile":
            token_file = self._write(d / "token", self.token)
            self._token_files.append(token_file)
            user["tokenFile"] = "token"
        elif mode == "cert":
            user["client-certificate"] = str(self._write(d / "client.crt", self.pki.client_cert, 0o644))
            user["client-key"] = str(self._write(d / "client.key", self.pki.client_key))
        elif mode == "cert-data":
            user["client-certificate-data"] = b64(self.pki.client_cert)
            user["client-key-data"] = b64(self.pki.client_key)
        else:
            user["token"] = self.token
        doc = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "sim", "cluster": cluster}],
            "users": [{"name": "metaplug", "user": user}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "metaplug", "namespace": "default"}}],
            "current-context": "sim",
        }
        if fmt == "json":
            text = json.dumps(doc, indent=2)
        else:
            import yaml
            text = yaml.safe_dump(doc, sort_keys=False)
        self._write(path, text)
        return str(path)

    def service_account(self, sa_dir: str | Path) -> dict[str, str]:
        """Write a service-account dir (token, ca.crt, namespace); return the KUBERNETES_SERVICE_* environment."""
        sa = Path(sa_dir)
        self._token_files.append(self._write(sa / "token", self.token))
        self._write(sa / "ca.crt", self.pki.ca_cert, 0o644)
        self._write(sa / "namespace", "kube-system", 0o644)
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    # -- objects ------------------------------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def _record(self, resource: str, type: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Remember a write for the watches (caller holds the lock; the object's resourceVersion is the new one)."""
        self.history.append(Change(int(obj["metadata"]["resourceVersion"]), resource, type, copy.deepcopy(obj),
                                   copy.deepcopy(old)))
        self._changed.notify_all()

    def _store(self, resource: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.pods if resource == "pods" else self.nads

    def _put(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (new resourceVersion), recorded for the watches."""
        with self.lock:
            meta = obj["metadata"]
            key = (meta["namespace"], meta["name"])
            old = self._store(resource).get(key)
            meta["resourceVersion"] = self._next_rv()
            self._store(resource)[key] = obj
            self._record(resource, "ADDED" if old is None else "MODIFIED", obj, old)
            return obj

    def _remove(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            old = self._store(resource).pop((namespace, name), None)
            if old is not None:
                gone = copy.deepcopy(old)
                gone["metadata"]["resourceVersion"] = self._next_rv()
                self._record(resource, "DELETED", gone, old)
            return old

    def _objects(self, resource: str) -> list[dict[str, Any]]:
        return [v for _, v in sorted(self._store(resource).items())]

    def add_pod(self, namespace: str, name: str, annotations: Mapping[str, str] | None = None,
                uid: str | None = None, node: str = "node-1") -> dict[str, Any]:
        """Create (or replace) a pod bound to `node`."""
        return self._put("pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
                         "annotations": dict(annotations or {}), "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}], "nodeName": node},
            "status": {"phase": "Pending"},
        })

    def delete_pod(self, namespace: str, name: str) -> None:
        self._remove("pods", namespace, name)

    def add_nad(self, namespace: str, name: str, config: str, annotations: Mapping[str, str] | None = None
                ) -> dict[str, Any]:
        """Create (or replace) a NetworkAttachmentDefinition."""
        with self.lock:
            old = self.nads.get((namespace, name))
            return self._put("nads", {
                "apiVersion": NAD_API, "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": namespace,
                             "uid": old["metadata"]["uid"] if old else str(uuid.uuid4()),
                             "annotations": dict(annotations or {})},
                "spec": {"config": config},
            })

    def delete_nad(self, namespace: str, name: str) -> None:
        self._remove("nads", namespace, name)

    # -- watch faults ---------------------------------------------------------------------------------------------
    def compact(self) -> None:
        """Forget the history (etcd compaction): a watch resuming from an older resourceVersion gets 410 Gone."""
        with self.lock:
            self.compacted_rv = self.resource_version
            self.history.clear()

    def drop_watches(self) -> None:
        """Cut every open watch connection, without the end of its stream."""
        with self.lock:
            self._watch_epoch += 1
            self._changed.notify_all()

    def watch_requests(self, resource: str) -> list[SimRequest]:
        """The watch requests of `resource` ("pods" or "network-attachment-definitions") so far."""
        with self.lock:
            return [r for r in self.requests if f"/{resource}?" in r.path and "watch=" in r.path]

    def wait_watching(self, n: int, timeout: float = 10.0) -> None:
        """Wait until `n` watches are open."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.watches_open < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.watches_open} watches open, expected {n}")
                self._changed.wait(min(left, 0.1))

    def annotations(self, namespace: str, name: str) -> dict[str, str]:
        with self.lock:
            return dict(self.pods[(namespace, name)]["metadata"].get("annotations") or {})

    # -- faults -------------------------------------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 503, retry_after: float | str | None = None,
                  match: str | None = None) -> None:
        """Answer the next n requests (whose path contains `match`, if given) with `status` and a Status object."""
        ra = None if retry_after is None else str(retry_after)
        with self.lock:
            self._faults.extend(_Fault("status", status, ra, match) for _ in range(n))

    def drop_next(self, n: int, match: str | None = None) -> None:
        """Close the connection of the next n requests without answering."""
        with self.lock:
            self._faults.extend(_Fault("drop", match=match) for _ in range(n))

    def conflict_next(self, n: int) -> None:
        """Before each of the next n PUTs, a concurrent writer updates the pod (its resourceVersion moves on)."""
        with self.lock:
            self._conflicts += n

    def _take_fault(self, path: str) -> _Fault | None:
        with self.lock:
            for i, fault in enumerate(self._faults):
                if fault.match is None or fault.match in path:
                    return self._faults.pop(i)
        return None

    # -- REST ---------------------------------------------------------------------------------------------------------
    def _collection(self, path: str) -> tuple[str, str | None] | None:
        """(resource, namespace or None for all) of a list or watch path, or None."""
        m = PODS_RE.match(path)
        if m:
            return "pods", unquote(m[1]) if m[1] else None
        m = NAD_RE.match(path)
        if m and self.crd_installed and not m[2]:
            return "nads", unquote(m[1]) if m[1] else None
        return None

    def _list(self, resource: str, namespace: str | None, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            selector = parse_field_selector(resource, query.get("fieldSelector", ""))
        except ValueError as e:
            return 400, status_object(400, str(e))
        items = [copy.deepcopy(o) for o in self._objects(resource) if matches(o, namespace, selector)]
        if resource == "pods":  # built-in types' list items carry no apiVersion and kind (custom resources' do)
            items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")} for o in items]
        api, kind = ("v1", "PodList") if resource == "pods" else (NAD_API, "NetworkAttachmentDefinitionList")
        return 200, {"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": str(self.resource_version)},
                     "items": items}

    def _handle(self, method: str, path: str, body: bytes, content_type: str,
                query: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            scope = self._collection(path)
            if scope is not None and method == "GET":
                return self._list(*scope, query or {})
            m = POD_RE.match(path)
            if m and method == "DELETE" and not m[3]:
                if self._remove("pods", unquote(m[1]), unquote(m[2])) is None:
                    return 404, status_object(404, f'pods "{unquote(m[2])}" not found',
                                              details={"name": unquote(m[2]), "kind": "pods"})
                return 200, SUCCESS
            if m:
                return self._pod(method, unquote(m[1]), unquote(m[2]), bool(m[3]), body, content_type)
            m = NAD_RE.match(path)
            if m and self.crd_installed and m[1]:
                return self._nad(method, unquote(m[1]), unquote(m[2]) if m[2] else None, body)
            m = EVENTS_RE.match(path)
            if m:
                return self._event(method, unquote(m[1]), body)
        return 404, status_object(404, "the server could not find the requested resource", details={})

    def _pod(self, method: str, ns: str, name: str, status_sub: bool, body: bytes, content_type: str
             ) -> tuple[int, dict[str, Any]]:
        pod = self.pods.get((ns, name))
        not_found = (404, status_object(404, f'pods "{name}" not found',
                                        details={"name": name, "kind": "pods"}))
        if method == "GET":
            return (200, copy.deepcopy(pod)) if pod else not_found
        if method not in ("PATCH", "PUT"):
            return 405, status_object(405, "the server does not allow this method on the requested resource")
        try:
            new = json.loads(body or b"null")
        except ValueError as e:
            return 400, status_object(400, f"invalid JSON: {e}")
        if not isinstance(new, dict):
            return 400, status_object(400, "the body must be a JSON object")
        if method == "PATCH":
            media = content_type.split(";")[0].strip().lower()
            if media != "application/merge-patch+json" or not self.merge_patch_supported:
                return 415, status_object(415, f"the body of the request was in an unknown format - accepted media "
                                               f"types include: application/merge-patch+json ({media!r} given)")
            if pod is None:
                return not_found
            want_rv = (new.get("metadata") or {}).get("resourceVersion")
            if want_rv is not None and want_rv != pod["metadata"]["resourceVersion"]:
                return self._conflict(name)
            candidate = merge_patch(pod, new)
        else:
            if pod is None:
                return not_found
            if self._conflicts:
                self._conflicts -= 1
                pod["metadata"]["resourceVersion"] = self._next_rv()
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if not rv:
                return 422, status_object(422, f'Pod "{name}" is invalid: metadata.resourceVersion: Invalid value: '
                                               f'0: must be specified for an update')
            if (new.get("metadata") or {}).get("name") != name:
                return 400, status_object(400, "the name of the object does not match the name on the URL")
            if rv != pod["metadata"]["resourceVersion"]:
                return self._conflict(name)
            candidate = new
        updated = copy.deepcopy(pod)
        if status_sub:  # the status subresource writes status and metadata (annotations, labels), never spec
            updated["status"] = copy.deepcopy(candidate.get("status", pod.get("status")))
            for key in ("annotations", "labels"):
                value = (candidate.get("metadata") or {}).get(key)
                if value is None:
                    updated["metadata"].pop(key, None)
                else:
                    updated["metadata"][key] = copy.deepcopy(value)
        else:
            updated["spec"] = copy.deepcopy(candidate.get("spec", pod.get("spec")))
            for key in ("annotations", "labels"):
                if key in (candidate.get("metadata") or {}):
                    updated["metadata"][key] = copy.deepcopy(candidate["metadata"][key])
        annotations = updated["metadata"].get("annotations") or {}
        if not all(isinstance(v, str) for v in annotations.values()):
            return 422, status_object(422, f'Pod "{name}" is invalid: metadata.annotations: values must be strings')
        updated["metadata"]["resourceVersion"] = self._next_rv()
        self.pods[(ns, name)] = updated
        self._record("pods", "MODIFIED", updated, pod)
        return 200, copy.deepcopy(updated)

    @staticmethod
    def _conflict(name: str) -> tuple[int, dict[str, Any]]:
        return 409, status_object(409, f'Operation cannot be fulfilled on pods "{name}": the object has been '
                                       f"modified; please apply your changes to the latest version and try again",
                                  details={"name": name, "kind": "pods"})

    def _nad(self, method: str, ns: str, name: str | None, body: bytes = b"") -> tuple[int, dict[str, Any]]:
        """GET, PUT (update, resourceVersion checked when given), DELETE of one NAD; POST (create) on the collection."""
        if (name is None) != (method == "POST") or method not in ("GET", "PUT", "DELETE", "POST"):
            return 405, status_object(405, "the server does not allow this method on the requested resource")
        nad = self.nads.get((ns, name or ""))
        missing = 404, status_object(
            404, f'network-attachment-definitions.k8s.cni.cncf.io "{name}" not found',
            details={"name": name, "group": "k8s.cni.cncf.io", "kind": "network-attachment-definitions"})
        if method == "GET":
            return (200, copy.deepcopy(nad)) if nad else missing
        if method == "DELETE":
            if self._remove("nads", ns, name or "") is None:
                return missing
            return 200, SUCCESS
        try:
            new = json.loads(body)
        except ValueError as e:
            return 400, status_object(400, f"invalid JSON: {e}")
        meta = new.get("metadata") if isinstance(new, dict) else None
        if not isinstance(meta, dict) or not meta.get("name") or meta.get("namespace", ns) != ns:
            return 400, status_object(400, "the object needs metadata.name, in the namespace of the URL")
        meta["namespace"] = ns
        if method == "POST":
            if (ns, meta["name"]) in self.nads:
                return 409, status_object(409, f'network-attachment-definitions.k8s.cni.cncf.io "{meta["name"]}" '
                                               "already exists", reason="AlreadyExists")
            meta["uid"] = str(uuid.uuid4())
            return 201, copy.deepcopy(self._put("nads", new))
        if nad is None or meta["name"] != name:
            return missing
        if meta.get("resourceVersion") not in (None, nad["metadata"]["resourceVersion"]):
            return self._conflict(name or "")
        meta["uid"] = nad["metadata"]["uid"]
        return 200, copy.deepcopy(self._put("nads", new))

    def _event(self, method: str, ns: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method != "POST":
            return 405, status_object(405, "the server does not allow this method on the requested resource")
        try:
            event = json.loads(body)
        except ValueError as e:
            return 400, status_object(400, f"invalid JSON: {e}")
        meta = event.get("metadata") or {}
        if not meta.get("name"):
            return 422, status_object(422, "Event is invalid: metadata.name: Required value")
        if meta.get("namespace", ns) != ns:
            return 400, status_object(400, "the namespace of the object does not match the namespace on the URL")
        if any(e["metadata"]["name"] == meta["name"] for e in self.events):
            return 409, status_object(409, f'events "{meta["name"]}" already exists', reason="AlreadyExists")
        meta["resourceVersion"] = self._next_rv()
        meta["namespace"] = ns
        event["metadata"] = meta
        self.events.append(event)
        return 201, copy.deepcopy(event)
