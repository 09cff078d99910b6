"""chain.py, configuration side: loading lists (duties 5, 9, 16, 17) and building each delegate's stdin (18, 34)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metaplug.cni.chain import RuntimeConf, load_conflist, normalize_capability, plugin_stdin
from metaplug.cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG, CniError


def conflist(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"cniVersion": "1.0.0", "name": "net1", "plugins": [{"type": "bridge"}]}
    base.update(over)
    return base


def code_of(data: Any) -> int:
    with pytest.raises(CniError) as exc:
        load_conflist(data)
    return exc.value.code


# --- duty 16: list keys ----------------------------------------------------------------------------------------------


def test_duty16_single_plugin_conf_is_wrapped_like_libcni() -> None:
    conf = {"cniVersion": "0.4.0", "name": "single", "type": "bridge", "bridge": "br0", "ipam": {"type": "host-local"}}
    out = load_conflist(json.dumps(conf).encode())
    assert out["cniVersion"] == "0.4.0" and out["name"] == "single"
    assert out["plugins"] == [conf]  # the conf keeps all its own keys, name and cniVersion included


def test_duty16_conflist_bytes_and_dict_give_the_same_normalised_dict() -> None:
    data = conflist(disableCheck="true", extraKey={"kept": 1})
    out = load_conflist(json.dumps(data).encode())
    assert out == load_conflist(data)
    assert out["extraKey"] == {"kept": 1} and out["disableCheck"] is True
    assert out["disableGC"] is False and out["loadOnlyInlinedPlugins"] is False
    assert data["disableCheck"] == "true"  # the input is not modified
    assert load_conflist(out) == out  # normalising twice changes nothing


@pytest.mark.parametrize(("cni_version", "versions", "expected"), [
    ("0.4.0", ["1.0.0", "0.3.1"], "1.0.0"),
    ("1.1.0", ["1.0.0"], "1.1.0"),
    (None, ["0.3.1", "9.9.9", "1.0.0"], "1.0.0"),  # versions beyond ours are skipped
    ("1.0.0", [], "1.0.0"),
])
def test_duty16_cniversions_pick_the_highest_supported_of_the_union(cni_version: str | None, versions: list[str],
                                                                    expected: str) -> None:
    data = conflist(cniVersions=versions)
    if cni_version is None:
        del data["cniVersion"]
    else:
        data["cniVersion"] = cni_version
    assert load_conflist(data)["cniVersion"] == expected


def test_duty16_no_supported_version_is_incompatible() -> None:
    assert code_of(conflist(cniVersion="2.0.0")) == INCOMPATIBLE_VERSION
    data = conflist(cniVersions=["3.0.0", "9.9.9"])
    del data["cniVersion"]
    assert code_of(data) == INCOMPATIBLE_VERSION


@pytest.mark.parametrize("bad", [{"cniVersion": "1.0"}, {"cniVersion": 1}, {"cniVersions": "1.0.0"},
                                 {"cniVersions": ["1.0.0", "x"]}])
def test_duty16_malformed_versions_are_invalid_config(bad: dict[str, Any]) -> None:
    assert code_of(conflist(**bad)) == INVALID_NETWORK_CONFIG


def test_duty9_missing_cniversion_means_0_1_0() -> None:
    data = conflist()
    del data["cniVersion"]
    assert load_conflist(data)["cniVersion"] == "0.1.0"


@pytest.mark.parametrize("key", ["disableCheck", "disableGC"])
@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True), ("false", False),
                                                 ("TRUE", True), ("False", False)])
def test_duty16_disable_flags_accept_bools_and_strings(key: str, value: Any, expected: bool) -> None:
    assert load_conflist(conflist(**{key: value}))[key] is expected


@pytest.mark.parametrize("value", ["yes", "1", 1, None, [], ""])
def test_duty16_disable_flags_reject_other_values(value: Any) -> None:
    assert code_of(conflist(disableCheck=value)) == INVALID_NETWORK_CONFIG
    assert code_of(conflist(disableGC=value)) == INVALID_NETWORK_CONFIG


@pytest.mark.parametrize(("plugins", "needle"), [
    ([], "non-empty list"),
    ("bridge", "non-empty list"),
    (["bridge"], "plugins[0] must be an object"),
    ([{"type": "bridge"}, {"bridge": "br0"}], "plugins[1] needs a non-empty string 'type'"),
    ([{"type": ""}], "plugins[0] needs"),
    ([{"type": 5}], "plugins[0] needs"),
    ([{"type": "../bin/evil"}], "path separator"),
    ([{"type": "portmap", "capabilities": ["portMappings"]}], "capabilities"),
    ([{"type": "portmap", "capabilities": {"portMappings": "yes"}}], "capabilities"),
])
def test_duty16_17_plugins_must_be_objects_with_a_type(plugins: Any, needle: str) -> None:
    with pytest.raises(CniError) as exc:
        load_conflist(conflist(plugins=plugins))
    assert exc.value.code == INVALID_NETWORK_CONFIG and needle in str(exc.value)


def test_duty16_neither_list_nor_conf_is_invalid() -> None:
    assert code_of({"cniVersion": "1.0.0", "name": "x"}) == INVALID_NETWORK_CONFIG


@pytest.mark.parametrize("name", [None, "", "-leading-dash", "has space", "a/b", 42])
def test_duty5_network_name_is_validated(name: Any) -> None:
    data = conflist(name=name)
    if name is None:
        del data["name"]
    assert code_of(data) == INVALID_NETWORK_CONFIG


def test_undecodable_or_non_object_config() -> None:
    assert code_of(b"{not json") == DECODE_FAILURE
    assert code_of(b"[1, 2]") == INVALID_NETWORK_CONFIG


# --- duty 18: stdin of a delegate ------------------------------------------------------------------------------------


def stdin_of(plugin: dict[str, Any], rt: RuntimeConf, prev: dict[str, Any] | None = None,
             **list_over: Any) -> dict[str, Any]:
    conf = load_conflist(conflist(plugins=[plugin], **list_over))
    data = plugin_stdin(conf, conf["plugins"][0], rt, prev)
    assert b"\n" not in data and b", " not in data  # compact JSON
    decoded: dict[str, Any] = json.loads(data)
    return decoded


def rt_with(**caps: Any) -> RuntimeConf:
    return RuntimeConf("c1", "/var/run/netns/p", "eth0", capability_args=caps)


def test_duty18_list_cniversion_and_name_are_injected_over_the_plugin_s() -> None:
    out = stdin_of({"type": "bridge", "cniVersion": "0.3.1", "name": "other", "bridge": "br0"}, rt_with())
    assert out == {"type": "bridge", "cniVersion": "1.0.0", "name": "net1", "bridge": "br0"}


@pytest.mark.parametrize(("capabilities", "cap_args", "expected"), [
    ({"portMappings": True}, {"portMappings": [], "mac": "x"}, {"portMappings": []}),
    ({"portMappings": True, "mac": True}, {"mac": "c2:00:00:00:00:01"}, {"mac": "c2:00:00:00:00:01"}),
    ({"portMappings": False}, {"portMappings": [{"hostPort": 1}]}, None),
    ({}, {"portMappings": [{"hostPort": 1}]}, None),
    (None, {"portMappings": [{"hostPort": 1}]}, None),
    ({"portMappings": True}, {}, None),
    ({"portMappings": True}, {"PortMappings": [{"hostPort": 1}]}, None),  # capability names match exactly
    ({"io.kubernetes.cri.pod-annotations": True}, {"io.kubernetes.cri.pod-annotations": {"Ann": "V"}},
     {"io.kubernetes.cri.pod-annotations": {"Ann": "V"}}),
])
def test_duty18_runtime_config_only_declared_capabilities_with_a_value(
        capabilities: dict[str, bool] | None, cap_args: dict[str, Any], expected: dict[str, Any] | None) -> None:
    plugin: dict[str, Any] = {"type": "portmap"}
    if capabilities is not None:
        plugin["capabilities"] = capabilities
    out = stdin_of(plugin, rt_with(**cap_args))
    if expected is None:
        assert "runtimeConfig" not in out
    else:
        assert out["runtimeConfig"] == expected


def test_duty18_existing_runtime_config_is_merged_capability_values_win() -> None:
    plugin = {"type": "tuning", "capabilities": {"mac": True},
              "runtimeConfig": {"mac": "old", "keep": 1}}
    assert stdin_of(plugin, rt_with(mac="new"))["runtimeConfig"] == {"mac": "new", "keep": 1}
    assert stdin_of(plugin, rt_with())["runtimeConfig"] == {"mac": "old", "keep": 1}


def test_duty18_prev_result_only_when_given() -> None:
    prev = {"cniVersion": "1.0.0", "ips": []}
    assert stdin_of({"type": "x"}, rt_with(), prev)["prevResult"] == prev
    assert "prevResult" not in stdin_of({"type": "x"}, rt_with())


def test_duty18_injection_does_not_modify_the_list_or_the_runtime_args() -> None:
    conf = load_conflist(conflist(plugins=[{"type": "portmap", "capabilities": {"portMappings": True}}]))
    caps = {"portMappings": [{"HostPort": 80}]}
    before = json.dumps(conf)
    plugin_stdin(conf, conf["plugins"][0], rt_with(**caps), {"cniVersion": "1.0.0"})
    assert json.dumps(conf) == before and caps == {"portMappings": [{"HostPort": 80}]}


# --- duty 34: capitalised keys inside capability values (containerd) ------------------------------------------------


@pytest.mark.parametrize(("cap", "value", "expected"), [
    ("portMappings",
     [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "10.0.0.1"}, {"hostport": 53}],
     [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "10.0.0.1"}, {"hostPort": 53}]),
    ("bandwidth", {"IngressRate": 1, "IngressBurst": 2, "EgressRate": 3, "EGRESSBURST": 4},
     {"ingressRate": 1, "ingressBurst": 2, "egressRate": 3, "egressBurst": 4}),
    ("dns", {"Servers": ["10.0.0.10"], "Searches": ["svc.local"], "Options": ["ndots:5"]},
     {"servers": ["10.0.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]}),
    ("ipRanges", [[{"Subnet": "10.1.0.0/16", "RangeStart": "10.1.0.10", "RangeEnd": "10.1.0.20",
                    "Gateway": "10.1.0.1"}]],
     [[{"subnet": "10.1.0.0/16", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20", "gateway": "10.1.0.1"}]]),
    ("portMappings", [{"HostPort": 1, "Unknown": "kept"}], [{"hostPort": 1, "Unknown": "kept"}]),
    ("io.kubernetes.cri.pod-annotations", {"HostPort": "an annotation"}, {"HostPort": "an annotation"}),
    ("mac", "C2:00:00:00:00:01", "C2:00:00:00:00:01"),
])
def test_duty34_capability_value_keys_are_normalised_case_insensitively(cap: str, value: Any, expected: Any) -> None:
    assert normalize_capability(cap, value) == expected
    out = stdin_of({"type": "p", "capabilities": {cap: True}}, rt_with(**{cap: value}))
    assert out["runtimeConfig"][cap] == expected


@pytest.mark.parametrize("pair", [
    [("HostPort", 1), ("hostPort", 2)],
    [("hostPort", 2), ("HostPort", 1)],
])
def test_duty34_correctly_spelled_key_wins(pair: list[tuple[str, int]]) -> None:
    assert normalize_capability("portMappings", [dict(pair)]) == [{"hostPort": 2}]
