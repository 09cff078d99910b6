"""The shim <-> daemon frames (metaplug/daemon/protocol.py), the daemon's config merge, its per-container locks and
the per-call log context under threads."""

from __future__ import annotations

import json
import logging
import struct
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metaplug.daemon import config as dconfig
from metaplug.daemon.protocol import (
    MAX_ENV,
    MAX_STDIN,
    NoRequest,
    ProtocolError,
    Request,
    Response,
    bytes_reader,
    decode_request,
    encode_request,
    encode_response,
    forwarded_env,
    read_request,
    read_response,
)
from metaplug.daemon.server import ContainerLocks

env_keys = st.text(st.characters(min_codepoint=33, max_codepoint=0x7E, exclude_characters="="), min_size=1,
                   max_size=20)
env_values = st.text(st.characters(exclude_characters="\0", exclude_categories=("Cs",)), max_size=40)


@given(st.dictionaries(env_keys, env_values, max_size=8), st.binary(max_size=2000))
def test_request_round_trip(env: dict[str, str], stdin: bytes) -> None:
    assert decode_request(encode_request(env, stdin)) == Request(env, stdin)


@given(st.integers(0, 0xFFFFFFFF), st.binary(max_size=500), st.binary(max_size=500))
def test_response_round_trip(status: int, out: bytes, err: bytes) -> None:
    assert read_response(bytes_reader(encode_response(Response(status, out, err)))) == Response(status, out, err)


def test_request_layout_is_the_fixed_one() -> None:
    frame = encode_request({"CNI_COMMAND": "DEL"}, b"{}")
    assert frame == b"MPQ1" + struct.pack(">I", 16) + b"CNI_COMMAND=DEL\0" + struct.pack(">I", 2) + b"{}"
    reply = encode_response(Response(1, b"out", b"e"))
    assert reply == b"MPA1" + struct.pack(">II", 1, 3) + b"out" + struct.pack(">I", 1) + b"e"


def test_only_cni_and_trace_variables_are_forwarded() -> None:
    environ = {"CNI_COMMAND": "ADD", "CNI_ARGS": "a=b", "TRACEPARENT": "00-x", "TRACESTATE": "s", "BAGGAGE": "k=v",
               "PATH": "/bin", "HOME": "/root", "XCNI_FOO": "no"}
    assert set(forwarded_env(environ)) == {"CNI_COMMAND", "CNI_ARGS", "TRACEPARENT", "TRACESTATE", "BAGGAGE"}


def test_size_limits_are_enforced_on_both_sides() -> None:
    with pytest.raises(ProtocolError, match="stdin"):
        encode_request({}, b"x" * (MAX_STDIN + 1))
    with pytest.raises(ProtocolError, match="env"):
        encode_request({"CNI_ARGS": "x" * MAX_ENV}, b"")
    # a length field over the limit is refused before anything that large is read
    huge = b"MPQ1" + struct.pack(">I", MAX_ENV + 1)
    with pytest.raises(ProtocolError, match="over the limit"):
        decode_request(huge)
    huge_stdin = b"MPQ1" + struct.pack(">I", 0) + struct.pack(">I", MAX_STDIN + 1)
    with pytest.raises(ProtocolError, match="over the limit"):
        decode_request(huge_stdin)


@pytest.mark.parametrize("frame,needle", [
    (b"MPQ2\0\0\0\0\0\0\0\0", "magic"),
    (b"MPQ1\0\0\0\x05ab", "truncated"),
    (b"MPQ1\0\0\0\x03a=b", "NUL"),
    (b"MPQ1\0\0\0\x04abc\0\0\0\0\0", "KEY=VALUE"),
    (encode_request({"A": "1"}, b"x") + b"more", "trailing"),
])
def test_bad_frames_are_protocol_errors(frame: bytes, needle: str) -> None:
    with pytest.raises(ProtocolError, match=needle):
        decode_request(frame)


def test_a_connection_closed_without_a_byte_is_no_request() -> None:
    with pytest.raises(NoRequest):
        read_request(bytes_reader(b""))


# ---------------------------------------------------------------- the daemon's config


def test_config_defaults_and_daemon_keys() -> None:
    cfg = dconfig.from_dict({"stateDir": "/s", "maxConcurrentCalls": 3, "metricsAddress": "[::1]:9100"})
    assert cfg.socket_path == "/run/metaplug/metaplug.sock"
    assert cfg.spool_dir == "/run/metaplug/spool"
    assert (cfg.metrics_host, cfg.metrics_port, cfg.max_concurrent_calls) == ("::1", 9100, 3)
    assert cfg.cni_conf_dir == "/etc/cni/net.d"  # install's --cni-conf-dir default: readiness looks there
    assert cfg.defaults == {"stateDir": "/s"}
    assert dconfig.from_dict({"cniConfDir": "/host/net.d"}).defaults == {}  # a daemon key, never the core's


@pytest.mark.parametrize("raw,needle", [
    ({"socketPath": "relative.sock"}, "socketPath"),
    ({"spoolDir": 5}, "spoolDir"),
    ({"metricsAddress": "nohost"}, "metricsAddress"),
    ({"maxConcurrentCalls": 0}, "maxConcurrentCalls"),
    ({"maxConcurrentCalls": True}, "maxConcurrentCalls"),
    ({"cniConfDir": "etc/cni/net.d"}, "cniConfDir"),
])
def test_config_errors_name_the_key(raw: dict, needle: str) -> None:
    with pytest.raises(dconfig.ConfigError, match=needle):
        dconfig.from_dict(raw)


def test_the_shims_keys_override_the_files_and_daemon_keys_never_reach_the_core() -> None:
    defaults = {"stateDir": "/file", "binDir": "/opt/cni/bin", "logLevel": "info"}
    stdin = json.dumps({"cniVersion": "1.0.0", "name": "mp", "type": "metaplug-shim", "stateDir": "/call",
                        "socketPath": "/run/x.sock", "spoolDir": "/run/sp"}).encode()
    out, merged = dconfig.merged_stdin(defaults, stdin)
    assert json.loads(out) == merged
    assert merged == {"stateDir": "/call", "binDir": "/opt/cni/bin", "logLevel": "info", "cniVersion": "1.0.0",
                      "name": "mp", "type": "metaplug-shim"}


@pytest.mark.parametrize("stdin", [b"not json", b"[1, 2]", b""])
def test_stdin_that_is_no_object_reaches_the_core_unchanged(stdin: bytes) -> None:
    """So the core reports it exactly as thin mode does (cni.md 8)."""
    assert dconfig.merged_stdin({}, stdin) == (stdin, {})
    if stdin.strip():
        assert dconfig.merged_stdin({"stateDir": "/s"}, stdin) == (stdin, {})


# ---------------------------------------------------------------- per-container serialization


def test_container_locks_serialize_one_container_and_not_others() -> None:
    locks = ContainerLocks()
    assert locks.acquire("a", 1)
    assert locks.acquire("b", 1)  # another container is not blocked
    assert not locks.acquire("a", 0.05)  # the same container waits, bounded
    done = threading.Event()

    def second() -> None:
        assert locks.acquire("a", 5)
        done.set()
        locks.release("a")

    worker = threading.Thread(target=second)
    worker.start()
    time.sleep(0.1)
    assert not done.is_set()
    locks.release("a")
    worker.join(5)
    assert done.is_set()
    locks.release("b")
    assert locks._locks == {}  # nothing kept once nobody holds or waits


# ---------------------------------------------------------------- log context per call


def test_concurrent_calls_log_their_own_context(capsys: pytest.CaptureFixture[str]) -> None:
    from metaplug import log as mplog

    barrier = threading.Barrier(8)

    def call(n: int) -> None:
        mplog.configure("info", None, {"verb": "ADD", "container": f"c{n}"})
        barrier.wait()  # every thread has set its context before any logs
        logging.getLogger("metaplug.test").info("hello", extra={"n": n})

    mplog._installed = None  # handlers on this test's captured stderr
    try:
        threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        root = logging.getLogger("metaplug")
        for handler in list(root.handlers):
            root.removeHandler(handler)
        mplog._installed = None
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if '"hello"' in line]
    assert sorted((d["n"], d["container"]) for d in lines) == [(n, f"c{n}") for n in range(8)]
