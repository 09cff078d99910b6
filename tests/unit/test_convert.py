"""Result conversion between CNI versions (cni.md duties 25, 27-30), on plain dicts."""

from __future__ import annotations

import copy
import subprocess
import sys
from typing import Any

import pytest

from metaplug.cni.convert import address_family, convert_result, result_version
from metaplug.cni.errors import CniError

ALL = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
V02 = ("0.1.0", "0.2.0")
V04 = ("0.3.0", "0.3.1", "0.4.0")
V1 = ("1.0.0", "1.1.0")

DNS = {
    "nameservers": ["10.96.0.10"],
    "domain": "cluster.local",
    "search": ["ns.svc.cluster.local"],
    "options": ["ndots:5"],
}

# A representative dual-stack 1.1.0 result: two interfaces (index 0 used), a second v4 address, routes of both families,
# every 1.1-only field present. Host bits are set on purpose (10.1.2.3/24).
R11: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "eth0", "mac": "0a:58:0a:01:02:03", "sandbox": "/var/run/netns/pod", "mtu": 1450,
         "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"},
        {"name": "net1", "mac": "0a:58:0a:09:00:05", "sandbox": "/var/run/netns/pod"},
    ],
    "ips": [
        {"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0},
        {"address": "2001:db8::3/64", "gateway": "2001:db8::1", "interface": 0},
        {"address": "10.9.0.5/16", "interface": 1},
    ],
    "routes": [
        {"dst": "0.0.0.0/0", "gw": "10.1.2.1", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 0},
        {"dst": "::/0", "gw": "2001:db8::1", "priority": 5},
        {"dst": "10.9.0.0/16"},
    ],
    "dns": DNS,
}

R10: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "eth0", "mac": "0a:58:0a:01:02:03", "sandbox": "/var/run/netns/pod"},
        {"name": "net1", "mac": "0a:58:0a:09:00:05", "sandbox": "/var/run/netns/pod"},
    ],
    "ips": [
        {"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0},
        {"address": "2001:db8::3/64", "gateway": "2001:db8::1", "interface": 0},
        {"address": "10.9.0.5/16", "interface": 1},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}, {"dst": "::/0", "gw": "2001:db8::1"}, {"dst": "10.9.0.0/16"}],
    "dns": DNS,
}


def _with_version(res: dict[str, Any], ver: str) -> dict[str, Any]:
    out = copy.deepcopy(res)
    out["cniVersion"] = ver
    return out


def _v04(ver: str) -> dict[str, Any]:
    out = _with_version(R10, ver)
    for ip, fam in zip(out["ips"], ("4", "6", "4"), strict=True):
        ip["version"] = fam
    return out


def _v02(ver: str) -> dict[str, Any]:
    return {
        "cniVersion": ver,
        "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1",
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.2.1"}, {"dst": "10.9.0.0/16"}]},
        "ip6": {"ip": "2001:db8::3/64", "gateway": "2001:db8::1", "routes": [{"dst": "::/0", "gw": "2001:db8::1"}]},
        "dns": DNS,
    }


def _from_v02(ver: str) -> dict[str, Any]:
    """What survives of the 0.2.0 form in a newer version: no interfaces, no interface index, routes top-level."""
    out: dict[str, Any] = {
        "cniVersion": ver,
        "ips": [
            {"address": "10.1.2.3/24", "gateway": "10.1.2.1"},
            {"address": "2001:db8::3/64", "gateway": "2001:db8::1"},
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.1.2.1"},
            {"dst": "10.9.0.0/16"},
            {"dst": "::/0", "gw": "2001:db8::1"},
        ],
        "dns": DNS,
    }
    if ver in V04:
        out["ips"][0]["version"] = "4"
        out["ips"][1]["version"] = "6"
    return out


def canonical(ver: str) -> dict[str, Any]:
    """The representative result written natively in `ver`."""
    if ver == "1.1.0":
        return copy.deepcopy(R11)
    if ver == "1.0.0":
        return copy.deepcopy(R10)
    if ver in V04:
        return _v04(ver)
    return _v02(ver)


def expected(src: str, dst: str) -> dict[str, Any]:
    """Duty 30, spelled out per pair."""
    if dst in V02:
        return _v02(dst)
    if src in V02:
        return _from_v02(dst)
    if src == "1.1.0":
        return canonical(dst)
    # From 1.0.0 or 0.3/0.4 nothing 1.1-only exists, so nothing of it can come back.
    return _with_version(R10, dst) if dst in V1 else _v04(dst)


@pytest.mark.parametrize("dst", ALL)
@pytest.mark.parametrize("src", ALL)
def test_duty30_matrix_every_version_pair(src: str, dst: str) -> None:
    source = canonical(src)
    before = copy.deepcopy(source)
    assert convert_result(source, dst) == expected(src, dst)
    assert source == before, "the input must not be modified"


@pytest.mark.parametrize(("a", "b"), [(a, b) for fam in (V02, V04, V1) for a in fam for b in fam if a != b])
def test_duty30_within_family_only_cniversion_changes(a: str, b: str) -> None:
    src = canonical(a)
    src["x-extra"] = {"kept": True}  # unknown keys ride along too
    out = convert_result(src, b)
    if (a, b) == ("1.1.0", "1.0.0"):
        return  # covered by test_duty27_1_1_extras_dropped_going_to_1_0
    assert out == {**src, "cniVersion": b}


def test_duty27_1_1_extras_dropped_going_to_1_0() -> None:
    out = convert_result(R11, "1.0.0")
    assert out == R10
    assert set(out["interfaces"][0]) == {"name", "mac", "sandbox"}
    assert all(set(r) <= {"dst", "gw"} for r in out["routes"])


@pytest.mark.parametrize("dst", [*V04, *V02])
def test_duty27_1_1_extras_dropped_going_below_1_0(dst: str) -> None:
    out = convert_result(R11, dst)
    text = repr(out)
    for field in ("mtu", "socketPath", "pciID", "advmss", "priority", "table", "scope"):
        assert repr(field) not in text


@pytest.mark.parametrize("dst", V1)
def test_duty30_0x_to_1x_drops_ip_version(dst: str) -> None:
    out = convert_result(_v04("0.4.0"), dst)
    assert all("version" not in ip for ip in out["ips"])
    assert [ip["address"] for ip in out["ips"]] == ["10.1.2.3/24", "2001:db8::3/64", "10.9.0.5/16"]


@pytest.mark.parametrize("src", V1)
def test_duty30_1x_to_04_adds_version_from_address(src: str) -> None:
    res = {"cniVersion": src, "ips": [{"address": "fd00::1/128"}, {"address": "192.0.2.1/32"}]}
    out = convert_result(res, "0.4.0")
    assert [ip["version"] for ip in out["ips"]] == ["6", "4"]


@pytest.mark.parametrize("dst", [*V04, *V1])
def test_duty27_interface_index_0_written(dst: str) -> None:
    res = {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}], "ips": [{"address": "10.0.0.2/8", "interface": 0}]}
    out = convert_result(res, dst)
    assert out["ips"][0]["interface"] == 0
    back = convert_result(out, "1.1.0")
    assert back["ips"][0]["interface"] == 0


@pytest.mark.parametrize("dst", ALL)
def test_duty27_host_bits_kept(dst: str) -> None:
    out = convert_result({"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24"}]}, dst)
    addr = out["ip4"]["ip"] if dst in V02 else out["ips"][0]["address"]
    assert addr == "10.1.2.3/24"


# ---- edge cases of the 0.2.0 form (duty 30) ----


@pytest.mark.parametrize("src", [*V04, *V1])
@pytest.mark.parametrize("dst", V02)
def test_duty30_to_02_without_ips_fails(src: str, dst: str) -> None:
    res: dict[str, Any] = {"cniVersion": src, "interfaces": [{"name": "eth0"}], "routes": [{"dst": "0.0.0.0/0"}]}
    for variant in (res, {**res, "ips": []}):
        with pytest.raises(CniError) as exc:
            convert_result(variant, dst)
        assert exc.value.code == 1
        assert exc.value.msg == "cannot convert: no valid IP addresses"


def test_duty30_to_02_keeps_first_of_each_family_only() -> None:
    res = {
        "cniVersion": "1.0.0",
        "ips": [
            {"address": "fd00::5/64"},
            {"address": "10.0.0.5/8", "gateway": "10.0.0.1"},
            {"address": "10.0.0.6/8", "gateway": "10.0.0.254"},
            {"address": "fd00::6/64", "gateway": "fd00::1"},
        ],
    }
    assert convert_result(res, "0.2.0") == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.0.0.5/8", "gateway": "10.0.0.1"},
        "ip6": {"ip": "fd00::5/64"},
    }


def test_duty30_to_02_v6_only_drops_v4_routes() -> None:
    res = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"version": "6", "address": "fd00::5/64", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.0.0.1"}, {"dst": "fd01::/64"}],
    }
    assert convert_result(res, "0.2.0") == {
        "cniVersion": "0.2.0",
        "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "fd01::/64"}]},
    }


def test_duty30_to_02_routes_attached_by_family_of_dst_not_gw_order() -> None:
    res = {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.0.0.5/8"}, {"address": "fd00::5/64"}],
        "routes": [{"dst": "fd02::/64", "gw": "fd00::1", "table": 7}, {"dst": "172.16.0.0/12", "mtu": 9000}],
    }
    out = convert_result(res, "0.1.0")
    assert out["ip4"]["routes"] == [{"dst": "172.16.0.0/12"}]
    assert out["ip6"]["routes"] == [{"dst": "fd02::/64", "gw": "fd00::1"}]


def test_duty31_to_02_dns_empty_object_carried_absent_not_invented() -> None:
    base = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/8"}]}
    assert convert_result({**base, "dns": {}}, "0.2.0")["dns"] == {}
    assert "dns" not in convert_result(base, "0.2.0")
    assert "dns" not in convert_result({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.5/8"}}, "1.0.0")


def test_duty30_from_02_ip4_then_ip6_without_interface() -> None:
    res = {
        "cniVersion": "0.2.0",
        "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
        "ip4": {"ip": "10.0.0.5/8", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "dns": {"nameservers": ["10.0.0.53"]},
    }
    assert convert_result(res, "1.0.0") == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.0.0.5/8", "gateway": "10.0.0.1"}, {"address": "fd00::5/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
        "dns": {"nameservers": ["10.0.0.53"]},
    }
    out04 = convert_result(res, "0.3.1")
    assert [ip["version"] for ip in out04["ips"]] == ["4", "6"]
    assert "interfaces" not in out04


def test_duty30_from_02_without_routes_or_ip6() -> None:
    out = convert_result({"cniVersion": "0.1.0", "ip4": {"ip": "10.0.0.5/8"}}, "1.1.0")
    assert out == {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.5/8"}]}


def test_duty30_02_through_newer_and_back_is_lossless() -> None:
    src = _v02("0.2.0")
    for mid in (*V04, *V1):
        assert convert_result(convert_result(src, mid), "0.2.0") == src


# ---- errors and versions ----


@pytest.mark.parametrize("bad", ["10.1.2.3", "10.1.2.300/24", "10.1.2.3/33", "10.1.2.3/255.255.255.0", "fd00::1/129",
                                 "nonsense/8", "", None, 17])
@pytest.mark.parametrize(("res_of", "dst"), [
    (lambda a: {"cniVersion": "1.0.0", "ips": [{"address": a}]}, "0.4.0"),
    (lambda a: {"cniVersion": "1.0.0", "ips": [{"address": a}]}, "0.2.0"),
    (lambda a: {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8"}], "routes": [{"dst": a}]}, "0.2.0"),
    (lambda a: {"cniVersion": "0.2.0", "ip4": {"ip": a}}, "1.0.0"),
])
def test_duty30_bad_cidr_is_code_6(bad: Any, res_of: Any, dst: str) -> None:
    with pytest.raises(CniError) as exc:
        convert_result(res_of(bad), dst)
    assert (exc.value.code, exc.value.msg) == (6, "invalid address")


@pytest.mark.parametrize("target", ["0.5.0", "2.0.0", "1.0", "", "latest"])
def test_duty30_unknown_target_version_is_code_1(target: str) -> None:
    with pytest.raises(CniError) as exc:
        convert_result(canonical("1.0.0"), target)
    assert exc.value.code == 1
    assert repr(target) in exc.value.details


def test_duty30_unknown_source_version_is_code_1() -> None:
    with pytest.raises(CniError) as exc:
        convert_result({"cniVersion": "0.9.9", "ips": []}, "1.0.0")
    assert exc.value.code == 1


def test_duty25_result_without_cniversion() -> None:
    res: dict[str, Any] = {"ips": [{"address": "10.0.0.5/8"}]}
    with pytest.raises(CniError) as exc:
        convert_result(res, "1.0.0")
    assert exc.value.code == 6
    assert result_version(res, "0.4.0") == "0.4.0"
    assert result_version({"cniVersion": "1.0.0"}, "0.4.0") == "1.0.0"
    assert result_version({"cniVersion": ""}, "0.3.1") == "0.3.1"
    fixed = convert_result({**res, "cniVersion": result_version(res, "0.4.0")}, "1.1.0")
    assert fixed == {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.5/8"}]}


@pytest.mark.parametrize("bad", [{"ips": "10.0.0.1/8"}, {"ips": ["10.0.0.1/8"]}, {"routes": {"dst": "0.0.0.0/0"}}])
def test_duty30_malformed_shapes_are_code_6_not_crashes(bad: dict[str, Any]) -> None:
    with pytest.raises(CniError) as exc:
        convert_result({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1/8"}], **bad}, "0.4.0")
    assert exc.value.code == 6


def test_address_family() -> None:
    assert address_family("10.0.0.1/8") == "4"
    assert address_family("::ffff:10.0.0.1/128") == "6"
    assert address_family("2001:DB8::1/64") == "6"


def test_convert_module_does_not_import_pydantic() -> None:
    """Start-up cost: convert runs in every ADD, it must stay free of pydantic."""
    code = "import sys, metaplug.cni.convert; sys.exit('pydantic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
