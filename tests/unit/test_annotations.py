"""Unit tests for metaplug.attach.annotations (attachments.md R1, R4-R16)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metaplug.attach.annotations import (
    DEFAULT_NETWORK_ANNOTATION,
    NETWORKS_ANNOTATION,
    SelectionElement,
    parse_default_network_annotation,
    parse_networks_annotation,
    validate_default_route_owner,
)
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError

NS = "pods"


def parse(value: str) -> list[SelectionElement]:
    return parse_networks_annotation(value, NS)


def parse_json(*elements: Any) -> list[SelectionElement]:
    return parse(json.dumps(list(elements)))


def error_of(value: str) -> CniError:
    with pytest.raises(CniError) as info:
        parse(value)
    assert info.value.code == INVALID_NETWORK_CONFIG
    return info.value


# ---------------------------------------------------------------- comma-separated format (R4, R9)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("net-a", [("pods", "net-a", None)]),
        ("other/net-a", [("other", "net-a", None)]),
        ("other/net-a@data0", [("other", "net-a", "data0")]),
        ("net-a@data0", [("pods", "net-a", "data0")]),
        (
            "net-a,other/net-b@eth9,net-c",
            [("pods", "net-a", None), ("other", "net-b", "eth9"), ("pods", "net-c", None)],
        ),
        # whitespace around items is ignored
        (
            "  net-a ,\tother/net-b@x1 \n, net-c  ",
            [("pods", "net-a", None), ("other", "net-b", "x1"), ("pods", "net-c", None)],
        ),
        ("", []),
        ("   ", []),
    ],
)
def test_r4_comma_format(value: str, expected: list[tuple[str, str, str | None]]) -> None:
    got = parse(value)
    assert [(e.namespace, e.name, e.interface) for e in got] == expected
    assert [e.index for e in got] == list(range(len(expected)))


def test_r16_same_nad_twice_gives_two_elements_comma() -> None:
    got = parse("net-a, net-a")
    assert len(got) == 2
    assert [(e.name, e.index) for e in got] == [("net-a", 0), ("net-a", 1)]


def test_r16_same_nad_twice_gives_two_elements_json() -> None:
    got = parse_json({"name": "net-a"}, {"name": "net-a", "interface": "x2"})
    assert [(e.name, e.interface, e.index) for e in got] == [("net-a", None, 0), ("net-a", "x2", 1)]


@pytest.mark.parametrize(
    ("value", "index", "fragment", "field"),
    [
        ("net-a,,net-b", 1, None, "(element)"),
        ("net-a,", 1, None, "(element)"),
        ("Net_A", 0, "Net_A", "name"),
        ("net-a-", 0, "net-a-", "name"),
        ("net-a, Bad/net-b", 1, "Bad/net-b", "namespace"),
        ("/net-b", 0, "/net-b", "namespace"),
        ("ns/", 0, "ns/", "name"),
        ("a/b/c", 0, "a/b/c", "name"),
        ("net-a@", 0, "net-a", "interface"),
        ("net-a@eth:0", 0, "net-a", "interface"),
        ("net-a@averyverylongname", 0, "net-a", "interface"),
        ("net-a@x@y", 0, "net-a@x@y", "interface"),
        ("ns/net a", 0, "ns/net a", "name"),
        ("x" * 254, 0, None, "name"),
        ("n" * 64 + "/net", 0, None, "namespace"),
    ],
)
def test_r4_r9_comma_errors_name_element_and_field(value: str, index: int, fragment: str | None, field: str) -> None:
    err = error_of(value)
    text = str(err)
    assert NETWORKS_ANNOTATION in err.msg
    assert f"element {index}" in text
    assert f"field {field!r}" in text
    if fragment:
        assert repr(fragment) in text


def test_r1_name_length_limits() -> None:
    assert parse("n" * 63 + "/" + "x" * 253)[0].name == "x" * 253


# ---------------------------------------------------------------- JSON format (R4-R15)


def test_r4_json_full_element() -> None:
    (el,) = parse_json(
        {
            "name": "sriov-a",
            "namespace": "infra",
            "interface": "data0",
            "ips": ["10.1.2.3/24", "fd00::3/64", "192.168.0.9"],
            "mac": "02:00:00:AA:bb:01",
            "infiniband-guid": "c2:11:22:33:44:55:66:77",
            "default-route": ["10.1.2.1", "fd00::1"],
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80},
                {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "192.0.2.1"},
                {"hostPort": 3868, "containerPort": 3868, "protocol": "Sctp", "extra": 1},
            ],
            "bandwidth": {"ingressRate": 1000, "ingressBurst": 0, "egressRate": 2000, "egressBurst": 50, "junk": 1},
            "cni-args": {"foo": "bar", "n": 1},
            "deviceID": "0000:03:00.1",
            "some-future-key": {"tolerated": True},
        }
    )
    assert el == SelectionElement(
        name="sriov-a",
        namespace="infra",
        interface="data0",
        ips=("10.1.2.3/24", "fd00::3/64", "192.168.0.9"),
        mac="02:00:00:AA:bb:01",
        infiniband_guid="c2:11:22:33:44:55:66:77",
        default_route=("10.1.2.1", "fd00::1"),
        port_mappings=(
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.1"},
            {"hostPort": 3868, "containerPort": 3868, "protocol": "sctp"},
        ),
        bandwidth={"ingressRate": 1000, "ingressBurst": 0, "egressRate": 2000, "egressBurst": 50},
        cni_args={"foo": "bar", "n": 1},
        device_id="0000:03:00.1",
        index=0,
    )


def test_r7_r8_r11_r12_r14_runtime_config() -> None:
    (el,) = parse_json(
        {
            "name": "n",
            "ips": ["10.1.2.3/24"],
            "mac": "02:00:00:00:00:01",
            "infiniband-guid": "00:11:22:33:44:55:66:77",
            "portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "TCP"}],
            "bandwidth": {"egressRate": 10, "egressBurst": 20},
            "deviceID": "dev0",
            "cni-args": {"x": "y"},
            "default-route": ["10.1.2.1"],
        }
    )
    rc = el.runtime_config()
    assert rc == {
        "ips": ["10.1.2.3/24"],
        "mac": "02:00:00:00:00:01",
        "portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}],
        "bandwidth": {"egressRate": 10, "egressBurst": 20},
        "infinibandGUID": "00:11:22:33:44:55:66:77",
        "deviceID": "dev0",
    }
    # a fresh copy: mutating it does not change the element
    rc["ips"].append("x")
    rc["portMappings"][0]["hostPort"] = 9
    assert el.runtime_config()["ips"] == ["10.1.2.3/24"]
    assert el.runtime_config()["portMappings"][0]["hostPort"] == 1


def test_r30_plain_element_asks_for_no_runtime_config() -> None:
    assert parse("net-a")[0].runtime_config() == {}
    assert parse_json({"name": "n", "ips": [], "portMappings": []})[0].runtime_config() == {}


def test_r4_json_defaults_namespace_and_nulls_are_absent() -> None:
    (el,) = parse_json({"name": "n", "namespace": None, "mac": None, "ips": None})
    assert (el.namespace, el.mac, el.ips) == (NS, None, ())


@pytest.mark.parametrize("value", ['{"name": "net-a"}', '  \n {"name": "net-a"}  '])
def test_r4_single_json_object_is_one_element(value: str) -> None:
    got = parse(value)
    assert [(e.namespace, e.name, e.index) for e in got] == [(NS, "net-a", 0)]


def test_r4_json_detected_after_whitespace() -> None:
    got = parse('\n\t [ {"name": "a"}, {"name": "b", "namespace": "c"} ] ')
    assert [(e.namespace, e.name) for e in got] == [(NS, "a"), ("c", "b")]


def test_r4_empty_json_list() -> None:
    assert parse("[]") == []


@pytest.mark.parametrize("value", ['[{"name": "a"', "{name: a}", "[1,]"])
def test_r4_bad_json_names_annotation(value: str) -> None:
    err = error_of(value)
    assert NETWORKS_ANNOTATION in err.msg
    assert "JSON" in err.details


# (element as JSON, field expected in the message, text expected in the message)
JSON_ERRORS: list[tuple[Any, str, str]] = [
    ("net-a", "(element)", "object"),
    ({"namespace": "x"}, "name", "required"),
    ({"name": 5}, "name", "string"),
    ({"name": ""}, "name", "empty"),
    ({"name": "Bad_Name"}, "name", "Bad_Name"),
    ({"name": "n" * 254}, "name", "253"),
    ({"name": "n", "namespace": "Bad"}, "namespace", "'Bad'"),
    ({"name": "n", "namespace": "n" * 64}, "namespace", "63"),
    ({"name": "n", "namespace": ""}, "namespace", "empty"),
    ({"name": "n", "interface": "eth 0"}, "interface", "'eth 0'"),
    ({"name": "n", "interface": ""}, "interface", "empty"),
    ({"name": "n", "interface": "a" * 16}, "interface", "15"),
    ({"name": "n", "interface": ".."}, "interface", "'..'"),
    ({"name": "n", "interface": 3}, "interface", "string"),
    ({"name": "n", "ips": "10.1.2.3/24"}, "ips", "list"),
    ({"name": "n", "ips": ["10.1.2.3/24", "10.1.2.300/24"]}, "ips[1]", "'10.1.2.300/24'"),
    ({"name": "n", "ips": ["10.1.2.3/33"]}, "ips[0]", "'10.1.2.3/33'"),
    ({"name": "n", "ips": [7]}, "ips[0]", "string"),
    ({"name": "n", "mac": "02:00:00:00:00"}, "mac", "'02:00:00:00:00'"),
    ({"name": "n", "mac": "02:00:00:00:00:0g"}, "mac", "MAC"),
    ({"name": "n", "mac": "02-00-00-00-00-01"}, "mac", "MAC"),
    ({"name": "n", "mac": 12}, "mac", "string"),
    ({"name": "n", "infiniband-guid": "02:00:00:00:00:01"}, "infiniband-guid", "GUID"),
    ({"name": "n", "infiniband-guid": ["x"]}, "infiniband-guid", "string"),
    ({"name": "n", "default-route": "10.0.0.1"}, "default-route", "list"),
    ({"name": "n", "default-route": ["10.0.0.0/24"]}, "default-route[0]", "'10.0.0.0/24'"),
    ({"name": "n", "portMappings": {"hostPort": 1}}, "portMappings", "list"),
    ({"name": "n", "portMappings": ["80:80"]}, "portMappings[0]", "object"),
    ({"name": "n", "portMappings": [{"containerPort": 80}]}, "portMappings[0].hostPort", "required"),
    ({"name": "n", "portMappings": [{"hostPort": 80}]}, "portMappings[0].containerPort", "required"),
    ({"name": "n", "portMappings": [{"hostPort": 0, "containerPort": 80}]}, "portMappings[0].hostPort", "1-65535"),
    (
        {"name": "n", "portMappings": [{"hostPort": 1, "containerPort": 2}, {"hostPort": 1, "containerPort": 65536}]},
        "portMappings[1].containerPort",
        "65536",
    ),
    ({"name": "n", "portMappings": [{"hostPort": "80", "containerPort": 80}]}, "portMappings[0].hostPort", "integer"),
    ({"name": "n", "portMappings": [{"hostPort": True, "containerPort": 80}]}, "portMappings[0].hostPort", "integer"),
    ({"name": "n", "portMappings": [{"hostPort": 8.5, "containerPort": 80}]}, "portMappings[0].hostPort", "integer"),
    (
        {"name": "n", "portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "icmp"}]},
        "portMappings[0].protocol",
        "'icmp'",
    ),
    (
        {"name": "n", "portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": 6}]},
        "portMappings[0].protocol",
        "TCP",
    ),
    (
        {"name": "n", "portMappings": [{"hostPort": 1, "containerPort": 2, "hostIP": "host"}]},
        "portMappings[0].hostIP",
        "'host'",
    ),
    ({"name": "n", "bandwidth": [1]}, "bandwidth", "object"),
    ({"name": "n", "bandwidth": {"ingressRate": -1}}, "bandwidth.ingressRate", "negative"),
    ({"name": "n", "bandwidth": {"egressBurst": "10"}}, "bandwidth.egressBurst", "integer"),
    ({"name": "n", "bandwidth": {"egressRate": 1.5}}, "bandwidth.egressRate", "integer"),
    ({"name": "n", "cni-args": "a=b"}, "cni-args", "object"),
    ({"name": "n", "cni-args": ["a"]}, "cni-args", "object"),
    ({"name": "n", "deviceID": 7}, "deviceID", "string"),
    ({"name": "n", "ipam-claim-reference": 7}, "ipam-claim-reference", "string"),
]


@pytest.mark.parametrize(("element", "field", "text"), JSON_ERRORS)
def test_r4_json_validation_error_names_element_and_field(element: Any, field: str, text: str) -> None:
    # the bad element is the second one, so the index in the message is 1
    err = error_of(json.dumps([{"name": "good"}, element]))
    full = str(err)
    assert err.code == INVALID_NETWORK_CONFIG
    assert NETWORKS_ANNOTATION in err.msg
    assert "element 1" in full
    assert f"field {field!r}" in full
    assert text in full
    name = element.get("name") if isinstance(element, dict) else None
    if isinstance(name, str) and name:
        assert repr(name) in full


def test_r13_two_gateways_of_one_family_is_an_error() -> None:
    err = error_of(json.dumps({"name": "gw-net", "default-route": ["10.0.0.1", "10.0.0.2"]}))
    assert "element 0 ('gw-net')" in str(err)
    assert "field 'default-route'" in str(err)
    assert "IPv4" in err.details


def test_r13_one_gateway_per_family_is_fine() -> None:
    (el,) = parse_json({"name": "n", "default-route": ["fd00::1", "10.0.0.1"]})
    assert el.default_route == ("fd00::1", "10.0.0.1")


def test_r13_default_route_on_two_elements_is_an_error() -> None:
    err = error_of(
        json.dumps(
            [
                {"name": "a", "default-route": ["10.0.0.1"]},
                {"name": "b"},
                {"name": "c", "default-route": ["10.1.0.1"]},
            ]
        )
    )
    full = str(err)
    assert "default-route" in full
    assert "element 0 ('a')" in full
    assert "element 2 ('c')" in full


@pytest.mark.parametrize(
    ("elements", "owner"),
    [
        ([], None),
        ([{"name": "a"}, {"name": "b"}], None),
        ([{"name": "a"}, {"name": "b", "default-route": ["10.0.0.1"]}], 1),
        ([{"name": "a", "default-route": ["fd00::1"]}], 0),
    ],
)
def test_r13_validate_default_route_owner(elements: list[dict[str, Any]], owner: int | None) -> None:
    assert validate_default_route_owner(parse_json(*elements)) == owner


def test_r13_validate_default_route_owner_on_combined_lists() -> None:
    a = SelectionElement(name="a", namespace=NS, default_route=("10.0.0.1",), index=0)
    b = SelectionElement(name="b", namespace=NS, default_route=("10.0.0.2",), index=0)
    with pytest.raises(CniError) as info:
        validate_default_route_owner([a, b])
    assert info.value.code == INVALID_NETWORK_CONFIG
    assert "'a'" in str(info.value) and "'b'" in str(info.value)


def test_r15_ipam_claim_reference_with_ips_is_an_error() -> None:
    err = error_of(json.dumps([{"name": "x"}, {"name": "n", "ips": ["10.1.2.3/24"], "ipam-claim-reference": "c1"}]))
    assert "element 1 ('n')" in str(err)
    assert "field 'ipam-claim-reference'" in str(err)
    assert "ips" in err.details


def test_r15_ipam_claim_reference_alone_is_fine() -> None:
    (el,) = parse_json({"name": "n", "ipam-claim-reference": "claim-1"})
    assert el.ipam_claim_reference == "claim-1"
    assert el.runtime_config() == {}


def test_r10_cni_args_are_kept_as_an_object() -> None:
    (el,) = parse_json({"name": "n", "cni-args": {"nested": {"a": [1, 2]}, "flag": True}})
    assert el.cni_args == {"nested": {"a": [1, 2]}, "flag": True}


def test_r11_protocol_case_insensitive_default_tcp() -> None:
    (el,) = parse_json(
        {
            "name": "n",
            "portMappings": [
                {"hostPort": 1, "containerPort": 1},
                {"hostPort": 2, "containerPort": 2, "protocol": "uDp"},
                {"hostPort": 3, "containerPort": 3, "protocol": "SCTP"},
                {"hostPort": 4, "containerPort": 4, "protocol": "tcp", "hostIP": ""},
            ],
        }
    )
    assert [pm["protocol"] for pm in el.port_mappings] == ["tcp", "udp", "sctp", "tcp"]
    assert "hostIP" not in el.port_mappings[3]


# ---------------------------------------------------------------- v1.multus-cni.io/default-network


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("calico", (NS, "calico")),
        ("  kube-system/calico ", ("kube-system", "calico")),
        ('{"name": "calico", "namespace": "kube-system"}', ("kube-system", "calico")),
        ('[{"name": "calico"}]', (NS, "calico")),
    ],
)
def test_default_network_annotation(value: str, expected: tuple[str, str]) -> None:
    el = parse_default_network_annotation(value, NS)
    assert (el.namespace, el.name) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "exactly one"),
        ("a,b", "exactly one"),
        ("[]", "exactly one"),
        ('[{"name": "a"}, {"name": "b"}]', "exactly one"),
        ("ns/calico@eth1", "field 'interface'"),
        ("Calico", "field 'name'"),
        ("{bad json", "JSON"),
    ],
)
def test_default_network_annotation_errors(value: str, fragment: str) -> None:
    with pytest.raises(CniError) as info:
        parse_default_network_annotation(value, NS)
    assert info.value.code == INVALID_NETWORK_CONFIG
    assert DEFAULT_NETWORK_ANNOTATION in info.value.msg
    assert fragment in str(info.value)
