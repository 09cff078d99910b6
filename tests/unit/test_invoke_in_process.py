"""cni.invoke's in-process plugins (what metaplug daemon uses for the bundled mp-* delegates): answered without exec,
decoded exactly like an executable's answer (duty 24), bounded by the timeout, observed like any call; the bundled
delegates answer in-process what their executables answer."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from metaplug.cni import invoke
from metaplug.cni.errors import DELEGATE_FAILED, DELEGATE_TIMEOUT, CniError
from metaplug.daemon import inprocess
from tests.helpers.netns import VENV_BIN


@pytest.fixture
def plugin_file(tmp_path: Path) -> Iterator[Path]:
    """An executable that must never run (it would print a different answer)."""
    path = tmp_path / "inproc-test"
    path.write_text('#!/bin/sh\necho \'{"cniVersion": "1.0.0", "executed": true}\'\n')
    path.chmod(0o755)
    yield path
    invoke.in_process.pop(path.name, None)


def env(verb: str = "ADD") -> dict[str, str]:
    return invoke.build_env(verb, container_id="c1", netns="/x", ifname="eth0", paths=["/opt/cni/bin"], base={})


def test_served_in_process_instead_of_exec(plugin_file: Path) -> None:
    seen: list[tuple[dict[str, str], bytes]] = []

    def served(environ: Mapping[str, str], stdin: bytes) -> tuple[int, str, str]:
        seen.append((dict(environ), stdin))
        return 0, json.dumps({"cniVersion": "1.0.0", "ips": []}) + "\n", "a note\n"

    invoke.in_process[plugin_file.name] = served
    assert invoke.exec_plugin(str(plugin_file), b'{"x": 1}', env()) == {"cniVersion": "1.0.0", "ips": []}
    assert seen == [(env(), b'{"x": 1}')]
    del invoke.in_process[plugin_file.name]
    assert invoke.exec_plugin(str(plugin_file), b"{}", env())["executed"] is True  # unregistered: exec'd again


@pytest.mark.parametrize("answer,code", [
    ((1, '{"code": 7, "msg": "bad config"}', ""), 7),
    ((2, "", "Traceback ...\n"), DELEGATE_FAILED),
    ((0, "not json", ""), DELEGATE_FAILED),
])
def test_answers_are_decoded_like_an_executables(plugin_file: Path, answer: tuple[int, str, str], code: int) -> None:
    invoke.in_process[plugin_file.name] = lambda _e, _s: answer
    with pytest.raises(CniError) as err:
        invoke.exec_plugin(str(plugin_file), b"{}", env())
    assert err.value.code == code


def test_timeout_is_delegate_timeout(plugin_file: Path) -> None:
    release = threading.Event()

    def hangs(_environ: Mapping[str, str], _stdin: bytes) -> tuple[int, str, str]:
        release.wait(10)
        return 0, "", ""

    invoke.in_process[plugin_file.name] = hangs
    started = time.monotonic()
    with pytest.raises(CniError) as err:
        invoke.exec_plugin(str(plugin_file), b"{}", env(), timeout=0.2)
    release.set()
    assert err.value.code == DELEGATE_TIMEOUT and "in-process" in err.value.details
    assert time.monotonic() - started < 2


def test_observers_see_in_process_calls(plugin_file: Path) -> None:
    calls: list[tuple[str, str]] = []
    invoke.in_process[plugin_file.name] = lambda _e, _s: (0, "", "")
    invoke.call_observers.append(lambda name, verb, _s, _err: calls.append((name, verb)))
    try:
        invoke.exec_plugin(str(plugin_file), b"{}", env("DEL"))
    finally:
        invoke.call_observers.pop()
    assert calls == [(plugin_file.name, "DEL")]


@pytest.mark.skipif(not (VENV_BIN / "mp-static").exists(), reason="bundled delegates not installed")
@pytest.mark.parametrize("stdin", [
    {"cniVersion": "1.0.0", "name": "n", "type": "mp-static", "addresses": [{"address": "10.1.2.3/24"}]},
    {"cniVersion": "0.3.1", "name": "n", "type": "mp-static", "addresses": [{"address": "10.1.2.3/24"}]},
    {"cniVersion": "1.0.0", "name": "n", "type": "mp-static", "addresses": [{"address": "10.1.2.300/24"}]},
    {"cniVersion": "9.9.9", "name": "n", "type": "mp-static"},
])
def test_a_bundled_delegate_answers_in_process_what_its_executable_prints(stdin: dict) -> None:
    """mp-static (IPAM, touches no namespace) through the daemon's registration and through its executable."""
    names = inprocess.register()
    try:
        assert "mp-static" in names
        raw = json.dumps(stdin).encode()
        status, out, _err = invoke.in_process["mp-static"](env(), raw)
        proc = subprocess.run([str(VENV_BIN / "mp-static")], input=raw, env=env(), capture_output=True, timeout=60)
        assert (status, json.loads(out)) == (proc.returncode, json.loads(proc.stdout))
    finally:
        for name in names:
            invoke.in_process.pop(name, None)
