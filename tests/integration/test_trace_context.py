"""Trace context (containernetworking/cni #1173): TRACEPARENT, TRACESTATE and BAGGAGE that metaplug is called with
reach every delegate call of every verb, and metaplug's own JSON log lines carry the trace id."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import fake_delegate
from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns

TRACE = {"TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
         "TRACESTATE": "congo=t61rcWkgMzE", "BAGGAGE": "userId=alice,serverNode=DF%2028"}


def call(world: MetaplugWorld, verb: str, conf: dict, pod: Netns, extra: dict[str, str]) -> int:
    """A runtime's call (thin: metaplug; daemon: the shim, which forwards the trace variables) with `extra` env."""
    argv, stdio = world.command(verb, conf, pod=pod, container_id="ctrace")
    stdio["env"] = {**stdio["env"], **extra}
    return world.node.exec(argv, check=False, **stdio).returncode


def log_lines(world: MetaplugWorld) -> list[dict]:
    """metaplug's JSON log lines of the calls (thin: the logFile; daemon: the daemon's log, lines of a call only)."""
    if world.daemon is None:
        return [json.loads(line) for line in (world.tmp / "metaplug.log").read_text().splitlines()]
    lines = [json.loads(line) for line in world.daemon.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("container") == "ctrace"]


def fake_world(world: MetaplugWorld) -> tuple[dict, Path]:
    bin_dir = world.tmp / "fakebin"
    fake_delegate.install(bin_dir, "fake")
    world.cni_path = f"{bin_dir}:{world.cni_path}"
    log = world.tmp / "calls.jsonl"
    net = {"cniVersion": "1.0.0", "name": "fakesec", "plugins": [
        {"type": "fake", "fake": {"log": str(log)}}, {"type": "fake", "fake": {"log": str(log)}}]}
    world.add_nad("fakesec", net)
    conf = world.metaplug_conf({"cniVersion": "1.0.0", "name": "fakecluster",
                                "plugins": [{"type": "fake", "fake": {"log": str(log)}}]})
    return world.annotated(conf, "fakesec"), log


def test_trace_variables_reach_every_delegate_call(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    conf, log = fake_world(world)
    assert call(world, "ADD", conf, pod, TRACE) == 0
    call(world, "CHECK", conf, pod, TRACE)  # the fake creates no interface: CHECK's own comparison fails, fine
    assert call(world, "DEL", conf, pod, TRACE) == 0
    calls = fake_delegate.read_log(log)
    assert [c["command"] for c in calls] == ["ADD"] * 3 + ["CHECK"] * 3 + ["DEL"] * 3
    for c in calls:
        assert {k: c["env"].get(k) for k in TRACE} == TRACE, c
    lines = log_lines(world)
    assert lines and all(line.get("trace_id") == "0af7651916cd43dd8448eb211c80319c" for line in lines)


def test_no_or_bad_trace_context_is_not_an_error(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """A malformed TRACEPARENT is passed on untouched but never logged as a trace id; none at all adds nothing."""
    conf, log = fake_world(world)
    assert call(world, "ADD", conf, pod, {"TRACEPARENT": "not-a-traceparent"}) == 0
    assert call(world, "DEL", conf, pod, {}) == 0
    calls = fake_delegate.read_log(log)
    assert [c["env"].get("TRACEPARENT") for c in calls] == ["not-a-traceparent"] * 3 + [None] * 3
    assert not any(k in c["env"] for c in calls for k in ("TRACESTATE", "BAGGAGE"))
    lines = log_lines(world)
    assert lines and not any("trace_id" in line for line in lines)
