"""invoke.py: finding and executing a delegate (cni.md duties 7, 18, 24, 25, 26).

The fake delegate creates nothing, so it runs here directly in temp dirs (no namespaces needed).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from metaplug.cni import invoke
from metaplug.cni.errors import DELEGATE_FAILED, DELEGATE_NOT_FOUND, DELEGATE_TIMEOUT, INVALID_NETWORK_CONFIG, CniError
from tests.helpers.fake_delegate import install, read_log


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    return d


def stdin_for(log: Path, **fake: Any) -> bytes:
    return json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "fake", "fake": {"log": str(log), **fake}}).encode()


def env_for(command: str = "ADD") -> dict[str, str]:
    return invoke.build_env(command, container_id="c1", netns="/x", ifname="eth0", base={"PATH": "/usr/bin:/bin"})


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


# --- duty 7: find_plugin ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ptype", ["../bridge", "/usr/lib/cni/bridge", "a/b", ""])
def test_duty7_type_with_path_separator_or_empty_is_invalid_config(bin_dir: Path, ptype: str) -> None:
    with pytest.raises(CniError) as exc:
        invoke.find_plugin(ptype, [str(bin_dir)])
    assert exc.value.code == INVALID_NETWORK_CONFIG


def test_duty7_not_found_names_type_and_dirs(bin_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with pytest.raises(CniError) as exc:
        invoke.find_plugin("nosuch", [str(bin_dir), str(other)])
    assert exc.value.code == DELEGATE_NOT_FOUND
    assert "nosuch" in str(exc.value) and str(bin_dir) in str(exc.value) and str(other) in str(exc.value)


def test_duty7_directory_and_non_executable_file_are_not_plugins(bin_dir: Path) -> None:
    (bin_dir / "adir").mkdir()
    (bin_dir / "noexec").write_text("#!/bin/sh\n")
    (bin_dir / "noexec").chmod(0o644)
    with pytest.raises(CniError) as exc:
        invoke.find_plugin("adir", [str(bin_dir)])
    assert exc.value.code == DELEGATE_NOT_FOUND
    with pytest.raises(CniError) as exc:
        invoke.find_plugin("noexec", [str(bin_dir)])
    assert exc.value.code == DELEGATE_NOT_FOUND and "not executable" in exc.value.details


def test_duty7_first_directory_with_an_executable_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (first / "fake").write_text("not executable")
    install(second, "fake")
    third = install(tmp_path / "c", "fake")
    assert invoke.find_plugin("fake", ["", str(first), str(second), str(tmp_path / "c")]) == str(second / "fake")
    assert invoke.find_plugin("fake", [str(tmp_path / "c")]) == third


# --- duty 18: environment --------------------------------------------------------------------------------------------


def test_duty18_all_six_cni_variables_set_explicitly_over_base() -> None:
    base = {"PATH": "/bin", "CNI_NETNS": "/inherited", "CNI_ARGS": "LEAK=1", "OTHER": "kept"}
    env = invoke.build_env("DEL", container_id="c1", ifname="net1", paths=["/a", "", "/b"], base=base)
    assert env == {
        "PATH": "/bin", "OTHER": "kept", "CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c1", "CNI_NETNS": "",
        "CNI_IFNAME": "net1", "CNI_ARGS": "", "CNI_PATH": "/a:/b",
    }
    assert base["CNI_NETNS"] == "/inherited"  # base not modified


def test_duty18_default_base_is_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_TEST_INHERITED", "yes")
    monkeypatch.setenv("CNI_IFNAME", "leak0")
    env = invoke.build_env("ADD", ifname="eth0")
    assert env["MP_TEST_INHERITED"] == "yes" and env["CNI_IFNAME"] == "eth0"


def test_duty18_delegate_gets_exactly_the_given_env(bin_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = install(bin_dir, "fake")
    log = tmp_path / "log"
    monkeypatch.setenv("CNI_LEAKED", "from-parent")
    env = env_for()
    env["CNI_EXTRA"] = "given"
    invoke.exec_plugin(path, stdin_for(log), env)
    (call,) = read_log(log)
    assert call["env"] == {k: v for k, v in env.items() if k.startswith("CNI_")}
    assert "CNI_LEAKED" not in call["env"]


# --- duty 24: executing and failure parsing --------------------------------------------------------------------------


def test_exit0_result_is_parsed_and_runs_in_own_process_group(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    log = tmp_path / "log"
    result = invoke.exec_plugin(path, stdin_for(log, result={"ips": [], "cniVersion": "1.0.0"}), env_for())
    assert result == {"ips": [], "cniVersion": "1.0.0"}
    (call,) = read_log(log)
    assert call["pgid"] == call["pid"] != os.getpgid(0)


def test_duty25_result_without_cniversion_is_returned_unfilled(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    result = invoke.exec_plugin(path, stdin_for(tmp_path / "log", mode="no-version"), env_for())
    assert result is not None and "cniVersion" not in result


def test_exit0_empty_stdout_is_none(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    assert invoke.exec_plugin(path, stdin_for(tmp_path / "log"), env_for("DEL")) is None
    assert invoke.exec_plugin(path, stdin_for(tmp_path / "log", mode="empty"), env_for("ADD")) is None


def test_exit0_garbage_is_delegate_failed_with_snippet(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(tmp_path / "log", mode="garbage"), env_for())
    assert exc.value.code == DELEGATE_FAILED and "this is not JSON" in exc.value.details


def test_duty24_json_error_on_stdout_is_the_delegate_error(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    fake = {"mode": "error-json", "error": {"code": 7, "msg": "bad bridge", "details": "no such master"}}
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(tmp_path / "log", **fake), env_for())
    assert (exc.value.code, exc.value.msg, exc.value.details) == (7, "bad bridge", "no such master")


def test_duty24_without_json_stderr_and_exit_status_make_the_error(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(tmp_path / "log", mode="error-nojson", exit=3), env_for("DEL"))
    assert exc.value.code == DELEGATE_FAILED
    assert "exit status 3" in exc.value.details and "DEL failed without a JSON error" in exc.value.details


def test_duty24_undecodable_stdout_on_failure(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(tmp_path / "log", mode="garbage-error"), env_for())
    assert exc.value.code == DELEGATE_FAILED and "not JSON either" in exc.value.details


def test_duty24_crash_and_signal(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(tmp_path / "log", mode="crash"), env_for())
    assert exc.value.code == DELEGATE_FAILED and "exit status 2" in exc.value.details
    assert "simulated crash" in exc.value.details
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(tmp_path / "log", mode="signal"), env_for())
    assert "killed by signal SIGKILL" in exc.value.details


def test_duty24_delegate_stderr_goes_to_our_log(bin_dir: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    path = install(bin_dir, "fake")
    with caplog.at_level(logging.DEBUG, logger="metaplug.cni.invoke"):
        invoke.exec_plugin(path, stdin_for(tmp_path / "log", stderr="hello from the delegate"), env_for())
    assert any("hello from the delegate" in r.getMessage() for r in caplog.records)


def test_missing_binary_at_exec_time_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(str(tmp_path / "gone"), b"{}", env_for())
    assert exc.value.code == DELEGATE_NOT_FOUND


def test_timeout_kills_the_whole_process_group(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    log = tmp_path / "log"
    start = time.monotonic()
    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(log, mode="hang"), env_for(), timeout=0.7)
    elapsed = time.monotonic() - start
    assert exc.value.code == DELEGATE_TIMEOUT and "timed out after 0.7 s" in exc.value.msg
    assert elapsed < 5
    (call,) = read_log(log)
    deadline = time.monotonic() + 3
    while pid_alive(call["child_pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(call["pid"]), "the delegate survived its timeout"
    assert not pid_alive(call["child_pid"]), "the delegate's child survived: the group was not killed"


def _children() -> list[str]:
    return Path(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children").read_text().split()


def test_before_input_runs_once_the_delegate_started_and_before_its_stdin(bin_dir: Path, tmp_path: Path) -> None:
    """metaplug syncs the first journal record here, while the delegate starts up (runner.Recorder)."""
    path = install(bin_dir, "fake")
    log = tmp_path / "log"
    seen: list[tuple[int, bool]] = []
    result = invoke.exec_plugin(path, stdin_for(log, result={"ips": [], "cniVersion": "1.0.0"}), env_for(),
                                before_input=lambda: seen.append((len(_children()), log.exists())))
    assert seen == [(1, False)]  # started, and not called yet: it has no configuration
    assert result == {"ips": [], "cniVersion": "1.0.0"} and len(read_log(log)) == 1


def test_a_failing_before_input_kills_the_delegate_that_never_got_its_stdin(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    log = tmp_path / "log"

    def fail() -> None:
        raise CniError(5, "cannot write journal", "sync: EIO")

    with pytest.raises(CniError) as exc:
        invoke.exec_plugin(path, stdin_for(log), env_for(), before_input=fail)
    assert exc.value.msg == "cannot write journal"
    assert not log.exists() and _children() == []  # it did nothing and was reaped


def test_duty24_retries_exec_on_text_file_busy(bin_dir: Path, tmp_path: Path) -> None:
    path = install(bin_dir, "fake")
    fd = os.open(path, os.O_WRONLY)  # an open writer makes exec fail with ETXTBSY
    timer = threading.Timer(0.2, os.close, args=(fd,))
    timer.start()
    try:
        result = invoke.exec_plugin(path, stdin_for(tmp_path / "log"), env_for())
    finally:
        timer.join()
    assert result is not None and result["cniVersion"] == "1.0.0"


def test_duty24_text_file_busy_gives_up_after_retries(bin_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = install(bin_dir, "fake")
    monkeypatch.setattr(invoke, "ETXTBSY_RETRIES", 1)
    fd = os.open(path, os.O_WRONLY)
    try:
        with pytest.raises(CniError) as exc:
            invoke.exec_plugin(path, stdin_for(tmp_path / "log"), env_for())
    finally:
        os.close(fd)
    assert exc.value.code == DELEGATE_FAILED and "busy" in exc.value.details.lower()


# --- duty 26: VERSION probing ----------------------------------------------------------------------------------------


def test_duty26_probe_sends_1_1_0_and_reads_supported_versions(bin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    path = install(bin_dir, "fake", {"log": str(log), "versions": ["0.4.0", "1.0.0"]})
    assert invoke.probe_version(path, base={"PATH": "/usr/bin:/bin"}) == ["0.4.0", "1.0.0"]
    (call,) = read_log(log)
    assert call["command"] == "VERSION" and call["stdin"] == {"cniVersion": "1.1.0"}


def test_duty26_reply_0_2_0_without_supported_versions(bin_dir: Path) -> None:
    path = install(bin_dir, "old", {"mode": "old-version"})
    assert invoke.probe_version(path) == ["0.1.0", "0.2.0"]


def test_duty26_unknown_command_version_means_0_1_0(bin_dir: Path) -> None:
    path = install(bin_dir, "ancient", {"mode": "unknown-version"})
    assert invoke.probe_version(path) == ["0.1.0"]


def test_duty26_other_failures_and_bad_replies_raise(bin_dir: Path) -> None:
    crash = install(bin_dir, "crash", {"mode": "crash"})
    with pytest.raises(CniError) as exc:
        invoke.probe_version(crash)
    assert exc.value.code == DELEGATE_FAILED
    bad = install(bin_dir, "bad", {"result": {}, "versions": [], "mode": "ok"})
    # an empty supportedVersions from a plugin that claims 1.1.0 is not a valid reply
    with pytest.raises(CniError) as exc:
        invoke.probe_version(bad)
    assert exc.value.code == DELEGATE_FAILED
