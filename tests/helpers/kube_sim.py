"""An HTTPS Kubernetes API simulator for tests: real TLS, real REST semantics, injectable faults.

Serves on 127.0.0.1 (random port) with a CA and a server certificate it generates (SAN 127.0.0.1, localhost,
kubernetes.default.svc). Authentication: a bearer token (`sim.token`, rotatable) or a client certificate signed by its
CA.
Resources: pods (with the status subresource: GET, PUT with resourceVersion, JSON merge patch), the
NetworkAttachmentDefinitions of k8s.cni.cncf.io/v1 (get, list), events (create). Every write increments the
resourceVersion; errors are Kubernetes Status objects (401, 404, 409, 415, 422, ...).

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
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

POD_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)(/status)?$")
NAD_RE = re.compile(r"^/apis/k8s\.cni\.cncf\.io/v1/namespaces/([^/]+)/network-attachment-definitions(?:/([^/]+))?$")
EVENTS_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
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
        code, obj = sim._handle(self.command, urlsplit(self.path).path, body, self.headers.get("Content-Type", ""))
        self._reply(req, code, obj)

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
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


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
        self.merge_patch_supported = True
        self.crd_installed = True
        self.resource_version = 100
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

    def add_pod(self, namespace: str, name: str, annotations: Mapping[str, str] | None = None,
                uid: str | None = None) -> dict[str, Any]:
        with self.lock:
            pod = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()),
                             "resourceVersion": self._next_rv(), "annotations": dict(annotations or {}),
                             "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"containers": [{"name": "main", "image": "busybox"}], "nodeName": "node-1"},
                "status": {"phase": "Pending"},
            }
            self.pods[(namespace, name)] = pod
            return pod

    def add_nad(self, namespace: str, name: str, config: str, annotations: Mapping[str, str] | None = None
                ) -> dict[str, Any]:
        with self.lock:
            nad = {
                "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                             "resourceVersion": self._next_rv(), "annotations": dict(annotations or {})},
                "spec": {"config": config},
            }
            self.nads[(namespace, name)] = nad
            return nad

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
    def _handle(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            m = POD_RE.match(path)
            if m:
                return self._pod(method, unquote(m[1]), unquote(m[2]), bool(m[3]), body, content_type)
            m = NAD_RE.match(path)
            if m and self.crd_installed:
                return self._nad(method, unquote(m[1]), unquote(m[2]) if m[2] else None)
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
        return 200, copy.deepcopy(updated)

    @staticmethod
    def _conflict(name: str) -> tuple[int, dict[str, Any]]:
        return 409, status_object(409, f'Operation cannot be fulfilled on pods "{name}": the object has been '
                                       f"modified; please apply your changes to the latest version and try again",
                                  details={"name": name, "kind": "pods"})

    def _nad(self, method: str, ns: str, name: str | None) -> tuple[int, dict[str, Any]]:
        if method != "GET":
            return 405, status_object(405, "the server does not allow this method on the requested resource")
        if name is None:
            items = [copy.deepcopy(v) for (n, _), v in sorted(self.nads.items()) if n == ns]
            return 200, {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinitionList",
                         "metadata": {"resourceVersion": str(self.resource_version)}, "items": items}
        nad = self.nads.get((ns, name))
        if nad is None:
            return 404, status_object(
                404, f'network-attachment-definitions.k8s.cni.cncf.io "{name}" not found',
                details={"name": name, "group": "k8s.cni.cncf.io", "kind": "network-attachment-definitions"})
        return 200, copy.deepcopy(nad)

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
