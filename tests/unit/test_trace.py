"""cni.trace: the trace context (TRACEPARENT, TRACESTATE, BAGGAGE) a runtime passes to every delegate call."""

from __future__ import annotations

import contextvars
import threading

import pytest

from metaplug.cni import invoke, trace

GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(("value", "expected"), [
    (GOOD, "4bf92f3577b34da6a3ce929d0e0e4736"),
    (f" {GOOD} ", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "4bf92f3577b34da6a3ce929d0e0e4736"),
    (None, None),
    ("", None),
    ("garbage", None),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),  # upper case is invalid
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # all-zero trace id
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),  # all-zero parent id
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),  # version ff
    (f"{GOOD}-extra", None),  # version 00 has exactly four fields
    ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),  # short trace id
])
def test_trace_id_is_parsed_and_bad_values_ignored(value: str | None, expected: str | None) -> None:
    assert trace.trace_id(value) == expected


def test_build_env_carries_the_calls_trace_context_and_drops_stale_ones() -> None:
    """The trace variables come from the call (trace.use), never from an inherited base environment."""
    base = {"PATH": "/bin", "TRACEPARENT": "stale", "BAGGAGE": "stale=1"}

    def one_call() -> dict[str, str]:
        trace.use({"TRACEPARENT": GOOD, "TRACESTATE": "vendor=x", "CNI_COMMAND": "ADD"})
        return invoke.build_env("ADD", container_id="c", base=base)

    env = contextvars.copy_context().run(one_call)
    assert env["TRACEPARENT"] == GOOD and env["TRACESTATE"] == "vendor=x"
    assert "BAGGAGE" not in env  # the call had none: the stale inherited value is not passed on
    assert env["PATH"] == "/bin" and env["CNI_COMMAND"] == "ADD"


def test_explicit_trace_context_wins() -> None:
    env = invoke.build_env("DEL", base={}, trace_context={"BAGGAGE": "k=v", "OTHER": "x"})
    assert env["BAGGAGE"] == "k=v" and "OTHER" not in env


def test_concurrent_calls_keep_their_own_trace_context() -> None:
    """A long-running process (the daemon) serves calls in threads: each delegate env has its own call's trace."""
    seen: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def call(tid: str) -> None:
        trace.use({"TRACEPARENT": f"00-{tid}-00f067aa0ba902b7-01"})
        barrier.wait()
        seen[tid] = invoke.build_env("ADD", base={})["TRACEPARENT"]

    tids = ["1" * 32, "2" * 32]
    threads = [threading.Thread(target=call, args=(t,)) for t in tids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {t: f"00-{t}-00f067aa0ba902b7-01" for t in tids}
