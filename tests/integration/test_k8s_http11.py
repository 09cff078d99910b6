"""Thin mode's own HTTP/1.1 transport (metaplug/k8s/http11.py) under KubeClient, against the HTTPS API simulator and a
few raw sockets that misbehave, over loopback only.

What tests/integration/test_k8s_client.py proves for every transport is not repeated; here: chunked answers, keep-alive
reuse and reconnection, TLS failures as code 110, bounded timeouts, garbage from the server as a transient failure,
the proxy fallback to httpx, and that a thin-mode API call imports no httpx.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metaplug.cni.errors import KUBERNETES_API, TRY_AGAIN_LATER, CniError
from metaplug.k8s.client import KubeClient
from metaplug.k8s.http11 import Http11Transport, split_server
from metaplug.k8s.kubeconfig import Credentials, load_kubeconfig
from metaplug.k8s.transport import HttpxTransport, TransportError
from tests.helpers.kube_sim import KubeSim, make_ca

NS, POD = "default", "web"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim() -> Iterator[KubeSim]:
    with KubeSim() as s:
        s.add_pod(NS, POD, annotations={"keep": "me"}, uid="uid-1")
        yield s


def client_for(sim: KubeSim, tmp_path: Path, *, deadline: float = 3.0, mode: str = "token") -> KubeClient:
    return KubeClient(load_kubeconfig(sim.kubeconfig(tmp_path / "kubeconfig", mode)), deadline=deadline)


def test_thin_mode_uses_the_stdlib_transport_and_httpx_only_for_a_proxy(sim: KubeSim, tmp_path: Path) -> None:
    creds = load_kubeconfig(sim.kubeconfig(tmp_path / "kubeconfig"))
    with KubeClient(creds) as kube:
        assert isinstance(kube.transport, Http11Transport)
    with KubeClient(creds._replace(proxy_url="http://127.0.0.1:1")) as kube:
        assert isinstance(kube.transport, HttpxTransport)


@pytest.mark.parametrize("status", [401, 404, 409, 429, 500, 503])
def test_chunked_answers_and_status_objects(sim: KubeSim, tmp_path: Path, status: int) -> None:
    """An answer in chunked transfer coding (three chunks, a chunk extension, a trailer) is read whole: objects, and
    the message of the Status object of an error."""
    sim.chunked_replies = True
    with client_for(sim, tmp_path, deadline=1.0) as kube:
        assert kube.get_pod(NS, POD)["metadata"]["annotations"] == {"keep": "me"}
        sim.fail_next(1000, status=status)
        with pytest.raises(CniError) as e:
            kube.get_pod(NS, POD)
    transient = status in (429, 500, 503)
    assert e.value.code == (TRY_AGAIN_LATER if transient else KUBERNETES_API)
    assert f"injected {status}" in e.value.details  # the Status object's message, read from the chunks
    if not transient:
        assert [r.status for r in sim.requests] == [200, status]


def test_conflicts_through_chunked_answers(sim: KubeSim, tmp_path: Path) -> None:
    sim.chunked_replies = True
    sim.merge_patch_supported = False
    sim.conflict_next(1)
    status = [{"name": "cluster", "interface": "eth0", "ips": ["10.0.0.5"], "default": True}]
    with client_for(sim, tmp_path) as kube:
        kube.publish_network_status(NS, POD, status)
    assert [(r.method, r.status) for r in sim.requests] == [
        ("PATCH", 415), ("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 200)]
    assert json.loads(sim.annotations(NS, POD)["k8s.v1.cni.cncf.io/network-status"]) == status


def test_one_connection_serves_the_calls_requests(sim: KubeSim, tmp_path: Path) -> None:
    """Keep-alive: an ADD's few requests share one TLS connection (one handshake), chunked or not, errors too."""
    sim.add_nad(NS, "n", "{}")
    with client_for(sim, tmp_path) as kube:
        kube.get_pod(NS, POD)
        kube.get_nad(NS, "n")
        assert kube.get_nad(NS, "absent") is None  # a 404 keeps the connection
        sim.chunked_replies = True
        kube.get_pod(NS, POD)
        kube.post_event(NS, POD, "AddedInterface", "x")
        assert isinstance(kube.transport, Http11Transport) and kube.transport.connections_opened == 1
    assert sim.connections_accepted == 1 and len(sim.requests) == 5


def test_a_connection_the_server_closed_while_idle_is_reopened(sim: KubeSim, tmp_path: Path) -> None:
    """The server drops idle keep-alive connections: the next request goes out on a fresh one, transparently and
    without a retry pause (one request each in the server's log)."""
    with client_for(sim, tmp_path) as kube:
        kube.get_pod(NS, POD)
        sim.close_connections()
        time.sleep(0.05)
        started = time.monotonic()
        kube.get_pod(NS, POD)
        assert time.monotonic() - started < 0.5
        assert isinstance(kube.transport, Http11Transport) and kube.transport.connections_opened == 2
    assert [r.status for r in sim.requests] == [200, 200]


def test_a_request_dropped_on_a_fresh_connection_is_retried_by_the_client(sim: KubeSim, tmp_path: Path) -> None:
    sim.drop_next(1)
    with client_for(sim, tmp_path) as kube:
        kube.get_pod(NS, POD)
    assert [r.status for r in sim.requests] == [0, 200]


def test_tls_verification_failure_is_code_110_at_once(sim: KubeSim, tmp_path: Path) -> None:
    """A server certificate from another CA: KUBERNETES_API (110) naming the certificate problem and the kubeconfig,
    no retry, no request reached the server."""
    from cryptography.hazmat.primitives.serialization import Encoding

    other_ca, _ = make_ca()
    creds = Credentials(server=sim.server, ca_data=other_ca.public_bytes(Encoding.PEM), token=sim.token,
                        source="/etc/cni/net.d/metaplug.d/kubeconfig")
    started = time.monotonic()
    with KubeClient(creds, deadline=3) as kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == KUBERNETES_API and "TLS" in e.value.msg
    assert "certificate verify failed" in e.value.details and creds.source in e.value.details
    assert time.monotonic() - started < 1.0 and sim.requests == []


# -- raw servers that misbehave ----------------------------------------------------------------------------------------
@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """A plain-TCP server on loopback that runs `serve(conn)` for every connection; yields a starter -> server URL."""
    listeners: list[socket.socket] = []

    def start(serve: Callable[[socket.socket], None]) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def loop() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn, contextlib.suppress(OSError):
                    serve(conn)

        threading.Thread(target=loop, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for listener in listeners:
        listener.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("answer", [
    b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP at all
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"short\"",  # body cut short
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
    b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
    b"",  # closes without a word
])
def test_garbage_from_the_server_is_a_transient_failure(raw_server: Callable[..., str], answer: bytes) -> None:
    def serve(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(answer)

    url = raw_server(serve)
    creds = Credentials(server=url, token="raw-server-token")
    with KubeClient(creds, deadline=0.6) as kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == TRY_AGAIN_LATER and "RemoteProtocolError" in e.value.details


def test_answer_until_close_and_interim_1xx(raw_server: Callable[..., str]) -> None:
    """A 100 Continue before the answer is skipped; an answer without length ends with the connection."""
    body = json.dumps({"metadata": {"name": POD, "uid": "u"}}).encode()

    def serve(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\n\r\n" + body)

    url = raw_server(serve)
    with KubeClient(Credentials(server=url, token="raw-server-token"), deadline=2) as kube:
        assert kube.get_pod(NS, POD)["metadata"]["uid"] == "u"
        assert kube.get_pod(NS, POD)["metadata"]["uid"] == "u"  # a new connection: the first one was closed
        assert isinstance(kube.transport, Http11Transport) and kube.transport.connections_opened == 2


def test_a_slow_trickle_is_bounded_as_a_whole(raw_server: Callable[..., str]) -> None:
    """One byte every 0.1 s never trips a per-read timeout; the request's own timeout still ends it."""
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        _read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while not stop.wait(0.1):
            conn.sendall(b" ")

    url = raw_server(serve)
    transport = Http11Transport(url, None)
    started = time.monotonic()
    try:
        with pytest.raises(TransportError) as e:
            transport.request("GET", "/api", None, {}, timeout=0.5)
    finally:
        stop.set()
        transport.close()
    assert e.value.kind == "ReadTimeout" and time.monotonic() - started < 0.9


@pytest.mark.parametrize(("bind", "host"), [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "localhost"),
                                          ("::1", "[::1]")])
def test_address_literals_and_names(bind: str, host: str) -> None:
    """An address literal is connected to directly (no getaddrinfo), a name is resolved; IPv6 in brackets; a path in
    the server URL prefixes every request (a cluster behind a proxy)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    try:
        listener = socket.create_server((bind, 0), family=family)
    except OSError:
        pytest.skip(f"no {bind} here")
    body = b'{"kind": "Status"}'
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            seen.append(_read_request(conn))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    transport = Http11Transport(f"http://{host}:{port}/k8s/clusters/c-x", None)
    try:
        answer = transport.request("GET", "/api", None, {}, timeout=5)
    finally:
        transport.close()
        listener.close()
    assert answer.status_code == 200 and answer.json() == {"kind": "Status"}
    assert seen[0].startswith(f"GET /k8s/clusters/c-x/api HTTP/1.1\r\nHost: {host}:{port}\r\n".encode())


def test_connect_refused_names_it() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    transport = Http11Transport(f"http://127.0.0.1:{port}", None)
    with pytest.raises(TransportError) as e:
        transport.request("GET", "/api", None, {}, timeout=1)
    assert e.value.kind == "ConnectError" and "refused" in str(e.value).lower()


def test_unusable_server_url_or_token_is_a_cni_error(tmp_path: Path) -> None:
    """A server URL with a bad port is the kubeconfig's fault (code 7); a token with a line break never splits the
    request (it becomes a failed attempt, not a second header)."""
    with pytest.raises(CniError) as e:
        KubeClient(Credentials(server="https://api.example:port", token="raw-server-token", source="kc"))
    assert e.value.code == 7 and "kc" in e.value.details and "port" in e.value.details
    token = tmp_path / "token"
    token.write_text("abc\nInjected: yes\n")
    with KubeClient(Credentials(server="http://127.0.0.1:9", token_file=str(token)), deadline=0.3) as kube, \
            pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == TRY_AGAIN_LATER and "line break" in e.value.details


def test_split_server() -> None:
    assert split_server("https://10.0.0.1:6443") == ("https", "10.0.0.1", 6443, "")
    assert split_server("https://api.example") == ("https", "api.example", 443, "")
    assert split_server("http://api.example/") == ("http", "api.example", 80, "")
    assert split_server("https://[fd00::1]:6443") == ("https", "fd00::1", 6443, "")
    assert split_server("https://[fd00::1]") == ("https", "fd00::1", 443, "")
    assert split_server("https://rancher.example/k8s/clusters/c-x/") == ("https", "rancher.example", 443,
                                                                         "/k8s/clusters/c-x")
    for bad in ("https://", "https://host:http", "https://host:70000"):
        with pytest.raises(ValueError):
            split_server(bad)


def test_a_thin_api_call_imports_no_httpx(sim: KubeSim, tmp_path: Path) -> None:
    """Start-up budget (issue 10.7): a kubeconfig's GET of the pod, in a fresh interpreter, loads no httpx/httpcore."""
    kubeconfig = sim.kubeconfig(tmp_path / "kubeconfig", "token", fmt="json")
    code = ("import sys\nfrom metaplug.k8s.client import KubeClient\nfrom metaplug.k8s.kubeconfig import "
            f"load_kubeconfig\nwith KubeClient(load_kubeconfig({kubeconfig!r})) as kube:\n"
            f"    assert kube.get_pod({NS!r}, {POD!r})['metadata']['uid'] == 'uid-1'\n"
            "heavy = ('httpx', 'httpcore', 'h11', 'anyio', 'http.client', 'yaml')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
