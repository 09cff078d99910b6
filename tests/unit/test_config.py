"""metaplug's configuration: defaults, Multus aliases, errors that name the key (issue: configuration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaplug.cni.errors import CniError
from metaplug.config import DEFAULT_STATE_DIR, FIELDS, Settings, load_config


def test_defaults() -> None:
    cfg = load_config({"name": "mp"})
    assert cfg.conf_dir == "/etc/cni/metaplug/net.d" and cfg.bin_dir == "/opt/cni/bin"
    assert cfg.state_dir == DEFAULT_STATE_DIR and cfg.system_namespaces == ["kube-system"]
    assert cfg.result == "merged" and cfg.parallel is False and cfg.network_namespace == "kube-system"
    assert cfg.delegates == [] and cfg.global_namespaces == ["default"]  # Multus: `default` is global when unset
    assert cfg.multus_cache_dir == "/var/lib/cni/multus" and cfg.log_to_stderr is True


def test_multus_spellings_are_aliases() -> None:
    cfg = load_config({"name": "mp", "readinessindicatorfile": "/r", "multusNamespace": "ns1",
                       "loglevel": "DEBUG", "globalNamespaces": "a, b,,c"})
    assert (cfg.readiness_indicator_file, cfg.network_namespace) == ("/r", "ns1")
    assert cfg.log_level == "debug" and cfg.global_namespaces == ["a", "b", "c"]


def test_cni_dir_is_multus_cache_dir_not_conf_dir() -> None:
    """Multus's cniDir is its data directory (/var/lib/cni/multus), a key of its own, never the confDir."""
    cfg = load_config({"name": "mp", "confDir": "/a", "cniDir": "/b"})
    assert (cfg.conf_dir, cfg.multus_cache_dir) == ("/a", "/b")
    assert load_config({"name": "mp", "cniDir": "/b"}).conf_dir == "/etc/cni/metaplug/net.d"


@pytest.mark.parametrize("value,expected", [
    (None, ["default"]), ("", ["default"]), ([], ["default"]), ("a,b", ["a", "b"]), (["x"], ["x"]),
])
def test_global_namespaces_as_multus(value: object, expected: list[str]) -> None:
    """R29, Multus k8sclient: without globalNamespaces, `default` is usable from every namespace; a given list
    replaces it (so `default` must be listed to stay global)."""
    raw: dict = {"name": "mp"} if value is None else {"name": "mp", "globalNamespaces": value}
    assert load_config(raw).global_namespaces == expected


def test_log_options_and_stderr() -> None:
    raw = {"name": "mp", "logToStderr": False, "logOptions": {"maxAge": 1, "maxSize": 2, "maxBackups": 3,
                                                              "compress": False, "unknown": "ignored"}}
    cfg = load_config(raw)
    for settings in (cfg.settings, Settings.from_raw(raw)):  # ADD's and DEL's view agree
        assert settings.log_to_stderr is False
        assert settings.log_rotation == (2, 3, 1, False)
    defaults = Settings.from_raw({"name": "mp"})
    assert defaults.log_to_stderr is True and defaults.log_rotation == (100, 5, 5, True)  # Multus's defaults
    partial = Settings.from_raw({"name": "mp", "logOptions": {"maxSize": 7}})
    assert partial.log_rotation == (7, 5, 5, True)


@pytest.mark.parametrize("raw,notes", [
    ({}, ()),
    ({"retryDeleteOnError": True}, ()),
    ({"retryDeleteOnError": False}, ("retryDeleteOnError",)),
    ({"auxiliaryCNIChainName": "chain", "retryDeleteOnError": False}, ("retryDeleteOnError",)),
])
def test_multus_differences_are_named(raw: dict, notes: tuple[str, ...]) -> None:
    got = Settings.from_raw({"name": "mp", **raw}).multus_differences
    assert tuple(n.split(" ")[0].split("=")[0] for n in got) == notes
    assert load_config({"name": "mp", **raw}).settings.multus_differences == got


def test_conflist_instead_of_plugin_config_says_so() -> None:
    conflist = {"cniVersion": "1.0.0", "name": "mp", "plugins": [{"type": "metaplug"}]}
    for reader in (load_config, Settings.from_raw):
        with pytest.raises(CniError) as info:
            reader(conflist)  # type: ignore[operator]
        assert info.value.code == 7 and "network configuration list" in info.value.msg


@pytest.mark.parametrize("key,value", [
    ("result", "all"), ("parallel", "maybe"), ("delegateTimeout", 0), ("readinessTimeout", -1),
    ("logLevel", "loud"), ("delegates", "bridge"), ("defaultNetworks", "red"), ("stateDir", ""),
    ("capabilities", {"ips": "perhaps"}), ("kubeDeadline", "soon"), ("logToStderr", "perhaps"),
    ("logOptions", {"maxSize": "big"}), ("logOptions", {"compress": "yes"}), ("logOptions", {"maxAge": -1}),
    ("retryDeleteOnError", "sometimes"), ("auxiliaryCNIChainName", 3), ("cniDir", ""),
])
def test_bad_value_is_code_7_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(CniError) as info:
        load_config({"name": "mp", key: value})
    assert info.value.code == 7 and info.value.details.startswith(key)


def test_name_is_required() -> None:
    with pytest.raises(CniError) as info:
        load_config({})
    assert info.value.code == 7 and "name" in info.value.details


def test_every_field_has_a_distinct_wire_name() -> None:
    names = [n for f in FIELDS for n in f.names]
    assert len(names) == len(set(names))


def test_settings_without_pydantic() -> None:
    s = Settings.from_raw({"name": "mp", "stateDir": "/s", "logLevel": "INFO", "delegateTimeout": 3})
    assert (s.state_dir, s.log_level, s.delegate_timeout, s.bin_dir) == ("/s", "info", 3.0, "/opt/cni/bin")
    with pytest.raises(CniError) as info:
        Settings.from_raw({"name": "mp", "delegateTimeout": -2})
    assert info.value.code == 7 and "delegateTimeout" in info.value.details


@pytest.mark.parametrize("name", ["../evil", "a/b", "", None, ".hidden"])
def test_duty5_network_name_is_validated_before_it_names_files(name: object) -> None:
    with pytest.raises(CniError) as info:
        Settings.from_raw({"name": name})
    assert info.value.code == 7


def test_del_path_imports_no_pydantic_httpx_or_pyroute2() -> None:
    """Start-up budget: DEL runs from the journal and may not import pydantic, httpx, pyroute2 or dataclasses."""
    code = (
        "import sys, json, io, os\n"
        "from metaplug.plugin import run\n"
        "env = {'CNI_COMMAND': 'DEL', 'CNI_CONTAINERID': 'c', 'CNI_IFNAME': 'eth0'}\n"
        "st = run(env, json.dumps({'cniVersion': '1.0.0', 'name': 'n', 'stateDir': '/nonexistent/x'}).encode())\n"
        "assert st[0] == 0, st\n"
        "heavy = [m for m in ('pydantic', 'pydantic_core', 'httpx', 'pyroute2', 'dataclasses') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# Issue 9, defect 3: values that passed validation once and exploded later (OverflowError in the delegate call,
# ValueError in every file call), in ADD's rollback and in every later DEL.
BAD_DURATIONS = [float("inf"), float("-inf"), float("nan"), 2**70, 3601, 1e21]


@pytest.mark.parametrize("key", ["delegateTimeout", "readinessTimeout", "kubeDeadline"])
@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_durations_must_be_finite_and_bounded(key: str, value: float) -> None:
    with pytest.raises(CniError) as info:
        load_config({"name": "mp", key: value})
    assert info.value.code == 7 and info.value.details.startswith(key) and "3600" in info.value.details


@pytest.mark.parametrize("value", BAD_DURATIONS)
def test_del_refuses_an_unusable_delegate_timeout_too(value: float) -> None:
    with pytest.raises(CniError) as info:
        Settings.from_raw({"name": "mp", "delegateTimeout": value})
    assert info.value.code == 7 and "delegateTimeout" in info.value.details


@pytest.mark.parametrize("key", ["stateDir", "binDir", "confDir", "logFile", "kubeconfig"])
def test_paths_with_a_nul_byte_are_code_7(key: str) -> None:
    with pytest.raises(CniError) as info:
        load_config({"name": "mp", key: "/var/lib\0/x"})
    assert info.value.code == 7 and info.value.details.startswith(key) and "NUL" in info.value.details
    if key in ("stateDir", "binDir"):
        with pytest.raises(CniError) as lean:
            Settings.from_raw({"name": "mp", key: "/var/lib\0/x"})
        assert lean.value.code == 7 and key in lean.value.details


@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
@pytest.mark.parametrize("literal", ['"delegateTimeout": 1e999', '"delegateTimeout": Infinity',
                                     '"delegateTimeout": 1180591620717411303424', '"stateDir": "/s\\u0000x"',
                                     '"binDir": "/b\\u0000"'])
def test_every_verb_answers_code_7_not_199(tmp_path: Path, verb: str, literal: str) -> None:
    """The same values as they arrive on stdin (Python's json reads 1e999 and Infinity as inf)."""
    from metaplug.plugin import run

    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nonexistent"}
    head = json.dumps({"cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "stateDir": str(tmp_path)})
    stdin = f"{head[:-1]}, {literal}}}".encode()  # a repeated key: the last one counts
    status, out, _ = run(env, stdin)
    error = json.loads(out)
    assert status == 1 and error["code"] == 7 and error["details"].startswith(literal[1:].split('"')[0]), out
