"""CNI_* environment, CNI_ARGS and stdin parsing (cni.md duties 1-9)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from metaplug.cni.env import (
    CniEnv,
    parse_cni_args,
    parse_env,
    parse_stdin,
    read_stdin,
    validate_container_id,
    validate_ifname,
    validate_network_name,
)
from metaplug.cni.errors import CniError

FULL = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/var/run/netns/pod",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p",
    "CNI_PATH": "/opt/cni/bin:/usr/lib/cni::",
}


def _code(fn: Any, *args: Any, **kwargs: Any) -> CniError:
    with pytest.raises(CniError) as exc:
        fn(*args, **kwargs)
    return exc.value


# ---- duty 1: the verb ----


@pytest.mark.parametrize("cmd", ["add", "FOO", "DELETE", " ADD", "VERSION\n"])
def test_duty1_unknown_command_is_code_4_naming_it(cmd: str) -> None:
    err = _code(parse_env, {**FULL, "CNI_COMMAND": cmd})
    assert err.code == 4
    assert err.msg == f"unknown CNI_COMMAND: {cmd}"


@pytest.mark.parametrize("cmd", ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"])
def test_duty1_every_verb_accepted_with_full_env(cmd: str) -> None:
    env = parse_env({**FULL, "CNI_COMMAND": cmd})
    assert env.command == cmd


def test_duty2_7_full_env_parsed() -> None:
    env = parse_env(FULL)
    assert env == CniEnv(
        command="ADD",
        container_id="abc123",
        netns="/var/run/netns/pod",
        ifname="eth0",
        args="IgnoreUnknown=1;K8S_POD_NAME=p",
        path=("/opt/cni/bin", "/usr/lib/cni"),  # duty 7: ':'-separated, empty parts skipped
    )


# ---- duty 2: required variables per verb ----


@pytest.mark.parametrize(
    ("cmd", "present", "missing"),
    [
        ("ADD", {}, ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
        ("ADD", {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}, ["CNI_NETNS", "CNI_PATH"]),
        ("CHECK", {"CNI_CONTAINERID": "c1"}, ["CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]),
        ("DEL", {}, ["CNI_CONTAINERID", "CNI_IFNAME"]),
        ("DEL", {"CNI_CONTAINERID": "c1", "CNI_IFNAME": ""}, ["CNI_IFNAME"]),  # empty counts as missing
        ("GC", {}, ["CNI_PATH"]),
    ],
)
def test_duty2_missing_variables_code_4_lists_every_one(cmd: str, present: dict[str, str], missing: list[str]) -> None:
    err = _code(parse_env, {"CNI_COMMAND": cmd, **present})
    assert err.code == 4
    assert err.details == ", ".join(missing)


@pytest.mark.parametrize(
    ("cmd", "env"),
    [
        ("DEL", {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0"}),  # CNI_NETNS optional on DEL
        ("DEL", {"CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/gone/ns"}),
        ("GC", {"CNI_PATH": "/opt/cni/bin"}),
        ("STATUS", {}),
        ("VERSION", {}),
    ],
)
def test_duty2_verbs_with_few_requirements(cmd: str, env: dict[str, str]) -> None:
    assert parse_env({"CNI_COMMAND": cmd, **env}).command == cmd


# ---- duty 3: container ID ----


@pytest.mark.parametrize("cmd", ["ADD", "CHECK", "DEL"])
def test_duty3_empty_container_id_is_code_3(cmd: str) -> None:
    err = _code(parse_env, {**FULL, "CNI_COMMAND": cmd, "CNI_CONTAINERID": ""})
    assert (err.code, err.msg) == (3, "missing containerID")
    err = _code(validate_container_id, "")
    assert (err.code, err.msg) == (3, "missing containerID")


@pytest.mark.parametrize("cid", ["a", "A9", "0abc", "a_b.c-d", "f" * 64])
def test_duty3_valid_container_ids(cid: str) -> None:
    validate_container_id(cid)
    assert parse_env({**FULL, "CNI_CONTAINERID": cid}).container_id == cid


@pytest.mark.parametrize("cid", ["-abc", "_abc", ".abc", "a b", "a/b", "a:b", "abc\n", "\nabc", "é", "a$"])
def test_duty3_bad_characters_are_code_4(cid: str) -> None:
    err = _code(parse_env, {**FULL, "CNI_CONTAINERID": cid})
    assert err.code == 4
    assert repr(cid) in err.details


# ---- duty 4: interface name ----


@pytest.mark.parametrize("name", ["eth0", "net1", "a", "x" * 15, "é" * 7, "veth-a.b_c"])
def test_duty4_valid_ifnames(name: str) -> None:
    validate_ifname(name)
    assert parse_env({**FULL, "CNI_IFNAME": name}).ifname == name


@pytest.mark.parametrize(
    "name",
    ["x" * 16, "é" * 8, ".", "..", "a/b", "a:b", "a b", "a\tb", "eth0\n", "\u00a0x"],
)
def test_duty4_bad_ifnames_are_code_4(name: str) -> None:
    err = _code(parse_env, {**FULL, "CNI_IFNAME": name})
    assert err.code == 4
    assert "CNI_IFNAME" in err.msg


def test_duty2_4_empty_ifname_on_add_is_missing_variable() -> None:
    err = _code(parse_env, {**FULL, "CNI_IFNAME": ""})
    assert err.code == 4 and "CNI_IFNAME" in err.details


# ---- duty 5: network name ----


@pytest.mark.parametrize("name", ["", "net a", "-net", "net/1", "net\n", None, 7])
def test_duty5_bad_network_names_are_code_7(name: Any) -> None:
    assert _code(validate_network_name, name).code == 7


def test_duty5_good_network_name() -> None:
    validate_network_name("cluster-net_1.v2")


# ---- duty 6: CNI_ARGS ----


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("", {}),
        ("A=1", {"A": "1"}),
        ("A=1;B=2", {"A": "1", "B": "2"}),
        ("A=;B=x", {"A": "", "B": "x"}),
        ("A=1;", {"A": "1"}),
        ("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns",
                                                                 "K8S_POD_NAME": "p"}),
    ],
)
def test_duty6_cni_args_parsed(raw: str, want: dict[str, str]) -> None:
    assert parse_cni_args(raw) == want


@pytest.mark.parametrize("raw", ["A", "A=1=2", "A=1;B", "A=1;B=2=3", "novalue;"])
def test_duty6_pair_without_exactly_one_equals_is_code_4(raw: str) -> None:
    err = _code(parse_cni_args, raw)
    assert err.code == 4


@pytest.mark.parametrize("flag", ["1", "true", "True"])
def test_duty6_unknown_keys_tolerated_with_ignore_unknown(flag: str) -> None:
    out = parse_cni_args(f"IgnoreUnknown={flag};K8S_POD_NAME=p;OTHER=x", known={"K8S_POD_NAME"})
    assert out["OTHER"] == "x" and out["K8S_POD_NAME"] == "p"


@pytest.mark.parametrize("raw", ["OTHER=x", "IgnoreUnknown=0;OTHER=x", "IgnoreUnknown=false;OTHER=x",
                                 "IgnoreUnknown=yes;OTHER=x", "IgnoreUnknown=;OTHER=x"])
def test_duty6_unknown_keys_rejected_otherwise(raw: str) -> None:
    err = _code(parse_cni_args, raw, known={"K8S_POD_NAME"})
    assert err.code == 4
    assert "OTHER" in err.details


def test_duty6_known_keys_only_pass_without_ignore_unknown() -> None:
    assert parse_cni_args("K8S_POD_NAME=p", known={"K8S_POD_NAME"}) == {"K8S_POD_NAME": "p"}


# ---- duties 8, 9: stdin ----


def test_duty8_stdin_object_decoded() -> None:
    assert parse_stdin(b'{"cniVersion": "1.0.0", "name": "n", "type": "bridge"}') == {
        "cniVersion": "1.0.0", "name": "n", "type": "bridge"}


@pytest.mark.parametrize("data", [b"{", b"not json", b"\xff\xfe{}", b"[1, 2]", b'"str"', b"null", b"42"])
def test_duty8_undecodable_stdin_is_code_6(data: bytes) -> None:
    assert _code(parse_stdin, data).code == 6


@pytest.mark.parametrize("ver", ["1.0", "one", "1.0.0-rc1", "", 1, None, ["1.0.0"]])
def test_duty8_bad_cniversion_string_is_code_6(ver: Any) -> None:
    import json

    err = _code(parse_stdin, json.dumps({"cniVersion": ver, "name": "n"}).encode())
    assert err.code == 6


def test_duty8_unsupported_but_wellformed_version_passes_stdin_parsing() -> None:
    """Support is decided by the caller (code 1 in skel), not by the decoder."""
    assert parse_stdin(b'{"cniVersion": "9.9.9"}')["cniVersion"] == "9.9.9"


def test_duty9_missing_cniversion_is_0_1_0() -> None:
    assert parse_stdin(b'{"name": "n", "type": "bridge"}')["cniVersion"] == "0.1.0"


@pytest.mark.parametrize("data", [b"", b"  \n", None])
def test_duty8_15_empty_stdin(data: bytes | None) -> None:
    assert parse_stdin(data, allow_empty=True) == {}
    assert _code(parse_stdin, data).code == 6


class _Broken(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise OSError(5, "Input/output error")


def test_duty8_unreadable_stdin_is_code_5() -> None:
    assert _code(read_stdin, _Broken()).code == 5
    assert read_stdin(io.BytesIO(b"{}")) == b"{}"
    assert read_stdin(io.StringIO("{}")) == b"{}"
