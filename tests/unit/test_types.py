"""Pydantic models of CNI configs and results (cni.md duties 5, 9, 15-17, 25, 27-29, 31, 32)."""

from __future__ import annotations

from typing import Any

import pytest

from metaplug.cni.errors import CniError
from metaplug.cni.types import (
    ErrorResult,
    IPConfigV1,
    NetworkConfigList,
    PluginConfig,
    ResultV02,
    ResultV04,
    ResultV1,
    VersionResult,
    dump_result,
    parse_config_list,
    parse_result,
)

RESULT_11: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "eth0", "mac": "0a:58:0a:01:02:03", "sandbox": "/var/run/netns/p", "mtu": 1450,
         "socketPath": "/run/s.sock", "pciID": "0000:00:1f.6"},
        {"name": "net1", "sandbox": "/var/run/netns/p"},
    ],
    "ips": [
        {"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0},
        {"address": "2001:db8::3/64", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1", "mtu": 1400, "advmss": 1360, "priority": 1, "table": 10,
                "scope": 253}],
    "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local", "search": ["svc"], "options": ["ndots:5"]},
}
RESULT_04: dict[str, Any] = {
    "cniVersion": "0.4.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:02:03", "sandbox": "/var/run/netns/p"}],
    "ips": [{"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {},
}
RESULT_02: dict[str, Any] = {
    "cniVersion": "0.2.0",
    "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}]},
    "ip6": {"ip": "2001:db8::3/64"},
    "dns": {"nameservers": ["10.0.0.53"]},
}


@pytest.mark.parametrize(
    ("data", "model"),
    [
        (RESULT_11, ResultV1),
        ({**RESULT_11, "cniVersion": "1.0.0"}, ResultV1),
        (RESULT_04, ResultV04),
        ({**RESULT_04, "cniVersion": "0.3.0"}, ResultV04),
        ({**RESULT_04, "cniVersion": "0.3.1"}, ResultV04),
        (RESULT_02, ResultV02),
        ({**RESULT_02, "cniVersion": "0.1.0"}, ResultV02),
    ],
)
def test_duty27_29_round_trip_each_version(data: dict[str, Any], model: type) -> None:
    parsed = parse_result(data)
    assert type(parsed) is model
    assert dump_result(parsed) == data


def test_duty27_snake_case_attributes_and_wire_aliases() -> None:
    parsed = parse_result(RESULT_11)
    assert isinstance(parsed, ResultV1)
    assert parsed.cni_version == "1.1.0"
    assert parsed.interfaces is not None and parsed.interfaces[0].pci_id == "0000:00:1f.6"
    assert parsed.interfaces[0].socket_path == "/run/s.sock"
    out = dump_result(parsed)
    assert "pciID" in out["interfaces"][0] and "socketPath" in out["interfaces"][0]
    # models can be built from Python names too
    built = ResultV1.model_validate({"cni_version": "1.0.0", "ips": [IPConfigV1(address="10.0.0.1/8", interface=0)]})
    assert dump_result(built) == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": 0}]}


def test_duty27_interface_index_0_written_none_left_out() -> None:
    parsed = parse_result({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": 0, "gateway": None}]})
    assert dump_result(parsed) == {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": 0}]}


@pytest.mark.parametrize("addr", ["10.1.2.3/24", "10.1.2.0/24", "2001:DB8::1/64", "fe80::1/64"])
def test_duty27_address_kept_as_written_host_bits_too(addr: str) -> None:
    out = dump_result(parse_result({"cniVersion": "1.1.0", "ips": [{"address": addr}]}))
    assert out["ips"][0]["address"] == addr


@pytest.mark.parametrize(
    "data",
    [
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.300/24"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/33"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/255.255.255.0"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "::1/129"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "gateway": "10.0.0.1/8"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": -1}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": "0"}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": True}]},
        {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "mtu": "1500"}]},
        {"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]},
        {"cniVersion": "1.0.0", "routes": [{"dst": "default"}]},
        {"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "gateway"}]},
        {"cniVersion": "1.0.0", "interfaces": [{"mac": "aa:bb:cc:dd:ee:ff"}]},
        {"cniVersion": "1.0.0", "ips": "10.0.0.1/8"},
        {"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.1/8"}]},
        {"cniVersion": "0.4.0", "ips": [{"version": "5", "address": "10.0.0.1/8"}]},
        {"cniVersion": "0.2.0", "ip4": {"ip": "2001:db8::1/64"}},
        {"cniVersion": "0.2.0", "ip6": {"ip": "10.0.0.1/8"}},
        {"cniVersion": "0.2.0", "ip4": {"gateway": "10.0.0.1"}},
        {"cniVersion": "1.1.0", "dns": {"nameservers": "10.0.0.53"}},
    ],
)
def test_duty27_29_invalid_results_are_code_6(data: dict[str, Any]) -> None:
    with pytest.raises(CniError) as exc:
        parse_result(data)
    assert exc.value.code == 6
    assert exc.value.details  # names the field


def test_duty32_decode_failure_names_the_field() -> None:
    with pytest.raises(CniError) as exc:
        parse_result({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8"}, {"address": "bad"}]})
    assert "ips.1.address" in exc.value.details
    assert "'bad'" in exc.value.details


@pytest.mark.parametrize("ver", ["0.5.0", "2.0.0", "1.2.0"])
def test_duty8_unknown_result_version_is_code_1(ver: str) -> None:
    with pytest.raises(CniError) as exc:
        parse_result({"cniVersion": ver})
    assert exc.value.code == 1


@pytest.mark.parametrize("ver", ["1.0", "v1.0.0", 100])
def test_duty8_malformed_result_version_is_code_6(ver: Any) -> None:
    with pytest.raises(CniError) as exc:
        parse_result({"cniVersion": ver})
    assert exc.value.code == 6


def test_duty25_missing_cniversion_takes_the_given_version() -> None:
    parsed = parse_result({"ips": [{"version": "4", "address": "10.0.0.1/8"}]}, "0.4.0")
    assert isinstance(parsed, ResultV04)
    assert dump_result(parsed)["cniVersion"] == "0.4.0"
    # the result's own version wins over the default
    assert isinstance(parse_result({"cniVersion": "0.2.0"}, "1.0.0"), ResultV02)
    with pytest.raises(CniError) as exc:
        parse_result({"ips": []})
    assert exc.value.code == 6


def test_parse_result_rejects_non_objects() -> None:
    with pytest.raises(CniError) as exc:
        parse_result(["not", "a", "dict"])  # type: ignore[arg-type]
    assert exc.value.code == 6


def test_duty31_dns_empty_or_absent() -> None:
    assert dump_result(parse_result({"cniVersion": "1.0.0", "dns": {}})) == {"cniVersion": "1.0.0", "dns": {}}
    assert dump_result(parse_result({"cniVersion": "1.0.0"})) == {"cniVersion": "1.0.0"}


def test_duty17_unknown_result_fields_kept() -> None:
    data = {"cniVersion": "1.0.0", "x-vendor": {"a": [1, 2]}, "ips": [{"address": "10.0.0.1/8", "x": 1}]}
    assert dump_result(parse_result(data)) == data


def test_duty32_error_and_version_objects() -> None:
    err = parse_result({"cniVersion": "1.0.0", "code": 7, "msg": "bad config", "details": "name"})
    assert isinstance(err, ErrorResult) and err.code == 7 and err.msg == "bad config"
    bare = parse_result({"code": 11, "msg": "later"})
    assert isinstance(bare, ErrorResult)
    assert dump_result(bare) == {"code": 11, "msg": "later"}
    with pytest.raises(CniError) as exc:
        parse_result({"code": "eleven", "msg": "x"})
    assert exc.value.code == 6
    ver = parse_result({"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]})
    assert isinstance(ver, VersionResult) and ver.supported_versions == ["1.0.0", "1.1.0"]
    assert VersionResult.model_validate({"cniVersion": "0.2.0"}).supported_versions is None  # duty 26: old plugins


# ---- configuration (duties 5, 9, 16, 17) ----

LIST: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "net-a",
    "plugins": [
        {"type": "bridge", "bridge": "br0", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/16"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": None},
    ],
}


def test_duty16_17_list_round_trip_keeps_unknown_fields() -> None:
    conf = parse_config_list(LIST)
    assert conf.name == "net-a" and conf.plugins[1].capabilities == {"portMappings": True}
    assert conf.disable_check is False and conf.disable_gc is False
    assert conf.model_dump(by_alias=True, exclude_unset=True) == LIST


@pytest.mark.parametrize(("raw", "value"), [(True, True), (False, False), ("true", True), ("false", False)])
@pytest.mark.parametrize("key", ["disableCheck", "disableGC", "loadOnlyInlinedPlugins"])
def test_duty16_flags_accept_booleans_and_strings(key: str, raw: Any, value: bool) -> None:
    conf = parse_config_list({**LIST, key: raw})
    assert conf.model_dump(by_alias=True)[key] is value


@pytest.mark.parametrize("raw", ["yes", "maybe", 2, None, ""])
def test_duty16_flags_reject_other_values(raw: Any) -> None:
    with pytest.raises(CniError) as exc:
        parse_config_list({**LIST, "disableCheck": raw})
    assert exc.value.code == 7
    assert "disableCheck" in exc.value.details


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"plugins": []}, "plugins"),
        ({"plugins": None}, "plugins"),
        ({"plugins": [{"bridge": "br0"}]}, "plugins.0.type"),
        ({"plugins": [{"type": ""}]}, "plugins.0.type"),
        ({"plugins": [{"type": "x", "capabilities": {"ips": "yes"}}]}, "plugins.0.capabilities"),
        ({"name": "bad name"}, "name"),
        ({"name": "net\n"}, "name"),
        ({"name": "-lead"}, "name"),
        ({"cniVersion": "1.0"}, "cniVersion"),
        ({"cniVersions": ["1.0.0", "one"]}, "cniVersions"),
    ],
)
def test_duty5_16_invalid_lists_are_code_7(change: dict[str, Any], field: str) -> None:
    data = {**LIST, **change}
    with pytest.raises(CniError) as exc:
        parse_config_list(data)
    assert exc.value.code == 7
    assert field in exc.value.details


def test_duty16_missing_name_is_code_7() -> None:
    data = {k: v for k, v in LIST.items() if k != "name"}
    with pytest.raises(CniError) as exc:
        parse_config_list(data)
    assert exc.value.code == 7 and "name" in exc.value.details


def test_duty16_effective_version_highest_supported_of_the_union() -> None:
    conf = NetworkConfigList.model_validate({**LIST, "cniVersion": "0.4.0", "cniVersions": ["1.0.0", "9.0.0"]})
    assert conf.effective_version() == "1.0.0"
    assert conf.effective_version(("0.3.1", "0.4.0")) == "0.4.0"
    conf2 = NetworkConfigList.model_validate({**LIST, "cniVersion": "9.9.9", "cniVersions": ["8.0.0"]})
    with pytest.raises(CniError) as exc:
        conf2.effective_version()
    assert exc.value.code == 1
    assert "9.9.9" in exc.value.details


def test_duty9_list_without_any_version_is_0_1_0() -> None:
    conf = NetworkConfigList.model_validate({k: v for k, v in LIST.items() if k != "cniVersion"})
    assert conf.effective_version() == "0.1.0"


def test_duty17_plugin_config_reserved_and_unknown_keys() -> None:
    raw = {
        "type": "macvlan",
        "cniVersion": "1.1.0",
        "name": "n",
        "master": "eth1",
        "runtimeConfig": {"mac": "aa:bb:cc:dd:ee:ff"},
        "args": {"cni": {"ips": ["10.0.0.9/24"]}},
        "prevResult": {"cniVersion": "1.1.0", "ips": []},
        "cni.dev/x": {"y": 1},
        "dns": {"nameservers": ["1.1.1.1"]},
    }
    plugin = PluginConfig.model_validate(raw)
    assert plugin.runtime_config == {"mac": "aa:bb:cc:dd:ee:ff"}
    assert plugin.prev_result == {"cniVersion": "1.1.0", "ips": []}
    assert plugin.dns is not None and plugin.dns.nameservers == ["1.1.1.1"]
    assert plugin.model_dump(by_alias=True, exclude_unset=True) == raw
