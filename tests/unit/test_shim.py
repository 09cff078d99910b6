"""metaplug-shim (metaplug/shim/metaplug-shim.c), the built static binary, against a Python peer on a unix socket in a
temp dir: the frame it sends is protocol.py's, the answer comes back verbatim, VERSION is local (cni.md 15), and when
the daemon is unreachable ADD/CHECK/STATUS/GC fail with 11 at once while DEL is spooled durably."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metaplug.cni import skel
from metaplug.cni.version import SUPPORTED_VERSIONS
from metaplug.daemon.protocol import (
    MAX_STDIN,
    Request,
    Response,
    decode_request,
    encode_response,
    read_request,
    socket_reader,
)
from tests.helpers.netns import VENV_BIN

SHIM = VENV_BIN / "metaplug-shim"
pytestmark = pytest.mark.skipif(not SHIM.exists(), reason="metaplug-shim not built (bash .ci/setup)")
BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
            "CNI_NETNS": "/var/run/netns/x", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": "K8S_POD_NAME=p"}


def shim(verb: str | None, stdin: bytes, **env: str) -> subprocess.CompletedProcess[bytes]:
    environ = dict(BASE_ENV, **env)
    if verb is not None:
        environ["CNI_COMMAND"] = verb
    return subprocess.run([str(SHIM)], input=stdin, capture_output=True, env=environ, timeout=20)


def conf(socket_path: Path | str, **extra: object) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "mp", "type": "metaplug-shim",
                       "socketPath": str(socket_path), **extra}).encode()


class Peer:
    """A daemon stand-in: accepts one connection, records the request, answers with `answer(request)` (or hangs up
    when it returns None)."""

    def __init__(self, path: Path, answer: Callable[[Request], Response | None]) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.answer = answer
        self.requests: list[Request] = []
        self.raw: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            chunks = []
            read = socket_reader(conn)

            def recording(n: int) -> bytes:
                data = read(n)
                chunks.append(data)
                return data

            request = read_request(recording)
            self.requests.append(request)
            self.raw.append(b"".join(chunks))
            response = self.answer(request)
            if response is not None:
                conn.sendall(encode_response(response))

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "run" / "mp.sock"


@pytest.fixture
def peer_dir(sock: Path) -> Path:
    sock.parent.mkdir(parents=True, exist_ok=True)
    return sock.parent


def test_the_shim_is_static() -> None:
    out = subprocess.run(["ldd", str(SHIM)], capture_output=True, text=True)
    assert "not a dynamic executable" in out.stdout + out.stderr


@pytest.mark.parametrize("stdin,expected_version", [
    (b'{"cniVersion": "0.4.0", "name": "mp"}', "0.4.0"),
    (b"", "1.1.0"),
    (b'{"name": "mp"}', "1.1.0"),
])
def test_version_is_answered_locally_like_the_core(stdin: bytes, expected_version: str, sock: Path) -> None:
    """cni.md 15: no daemon is needed; the reply equals what metaplug itself answers."""
    out = shim("VERSION", stdin)
    assert out.returncode == 0 and out.stderr == b""
    reply = json.loads(out.stdout)
    assert reply == {"cniVersion": expected_version, "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert reply == skel.version_reply(json.loads(stdin) if stdin else {}, SUPPORTED_VERSIONS)


def test_without_cni_command_it_describes_itself() -> None:
    out = shim(None, b"")
    assert out.returncode == 0 and out.stdout == b""
    assert b"metaplug-shim" in out.stderr and b"1.1.0" in out.stderr


def test_forwards_exactly_the_frame_and_prints_the_answer_verbatim(peer_dir: Path, sock: Path) -> None:
    peer = Peer(sock, lambda _req: Response(7, b'{"code": 7}\n', b"a log line\n"))
    stdin = conf(sock, prevResult={"socketPath": "/decoy"})
    out = shim("ADD", stdin, TRACEPARENT="00-abc-def-01", BAGGAGE="k=v")
    peer.close()
    assert (out.returncode, out.stdout, out.stderr) == (7, b'{"code": 7}\n', b"a log line\n")
    request = peer.requests[0]
    assert request.stdin == stdin
    assert request.env == {k: v for k, v in BASE_ENV.items() if k.startswith("CNI_")} | {
        "CNI_COMMAND": "ADD", "TRACEPARENT": "00-abc-def-01", "BAGGAGE": "k=v"}
    assert decode_request(peer.raw[0]) == request


def test_socket_path_is_found_through_json_escapes(peer_dir: Path, sock: Path) -> None:
    """The minimal scanner decodes escapes, skips nested members and strings holding braces."""
    escaped = str(sock).replace("/", "\\/").replace("mp.sock", "m\\u0070.sock")
    stdin = ('{"cniVersion": "1.0.0", "args": {"socketPath": "/nested", "x": ["}", "\\"{"]}, '
             f'"note": "a \\"quoted\\" }} brace", "socket\\u0050ath": "{escaped}"}}').encode()
    json.loads(stdin)  # still valid JSON
    peer = Peer(sock, lambda _req: Response(0, b"", b""))
    out = shim("DEL", stdin)
    peer.close()
    assert out.returncode == 0, out
    assert peer.requests[0].env["CNI_COMMAND"] == "DEL"


@pytest.mark.parametrize("verb", ["ADD", "CHECK", "STATUS", "GC"])
def test_unreachable_daemon_fails_at_once_with_11_naming_the_socket(verb: str, sock: Path) -> None:
    started = time.monotonic()
    out = shim(verb, conf(sock))
    assert time.monotonic() - started < 1.0
    assert out.returncode == 1
    err = json.loads(out.stdout)
    assert err["code"] == 11 and err["cniVersion"] == "1.0.0"
    assert str(sock) in err["details"]
    assert not sock.parent.exists()  # nothing spooled for these verbs


def test_unreachable_daemon_spools_del_durably(sock: Path) -> None:
    """The record is the exact request frame, mode 0600, in <dir of socketPath>/spool (created 0700)."""
    stdin = conf(sock)
    out = shim("DEL", stdin)
    assert out.returncode == 0 and out.stdout == b"", out
    spool = sock.parent / "spool"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    records = list(spool.iterdir())
    assert len(records) == 1 and records[0].suffix == ".del"
    stamp, pid = records[0].stem.split("-")
    assert abs(int(stamp) / 1e9 - time.time()) < 60 and pid.isdigit()
    assert stat.S_IMODE(records[0].stat().st_mode) == 0o600
    request = decode_request(records[0].read_bytes())
    assert request.stdin == stdin and request.env["CNI_COMMAND"] == "DEL"
    assert request.env["CNI_CONTAINERID"] == "c1"
    assert str(records[0]) in out.stderr.decode()


def test_spool_dir_from_the_conflist(sock: Path, tmp_path: Path) -> None:
    out = shim("DEL", conf(sock, spoolDir=str(tmp_path / "elsewhere" / "spool")))
    assert out.returncode == 0
    assert [p.suffix for p in (tmp_path / "elsewhere" / "spool").iterdir()] == [".del"]


def test_a_del_that_cannot_be_spooled_fails(sock: Path, tmp_path: Path) -> None:
    """Never lose a DEL: when the spool cannot be written either, DEL fails so the runtime retries it."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = shim("DEL", conf(sock, spoolDir=str(blocker / "spool")))
    assert out.returncode == 1
    err = json.loads(out.stdout)
    assert err["code"] == 5 and str(blocker) in err["details"]


@pytest.mark.parametrize("verb,code", [("ADD", 1), ("DEL", 0)])
def test_connection_closed_before_an_answer(verb: str, code: int, peer_dir: Path, sock: Path) -> None:
    peer = Peer(sock, lambda _req: None)  # reads the call, hangs up
    out = shim(verb, conf(sock))
    peer.close()
    assert out.returncode == code
    if verb == "ADD":
        assert json.loads(out.stdout)["code"] == 11 and "before an answer" in json.loads(out.stdout)["details"]
    else:
        assert len(list((peer_dir / "spool").iterdir())) == 1


@pytest.mark.parametrize("stdin,needle", [
    (b'{"cniVersion": "1.0.0", "socketPath": "relative.sock"}', "socketPath"),
    (b'{"cniVersion": "1.0.0", "spoolDir": "spool"}', "spoolDir"),
    (json.dumps({"socketPath": "/" + "x" * 120}).encode(), "107"),
])
def test_bad_shim_config_is_code_7(stdin: bytes, needle: str) -> None:
    out = shim("DEL", stdin)
    assert out.returncode == 1
    err = json.loads(out.stdout)
    assert err["code"] == 7 and needle in err["details"]


def test_stdin_over_the_limit_is_refused(sock: Path) -> None:
    out = shim("ADD", b" " * (MAX_STDIN + 1))
    assert out.returncode == 1 and json.loads(out.stdout)["code"] == 5
    assert not os.path.exists(sock.parent)
