"""The plugin skeleton `dispatch` (cni.md duties 1, 8, 15, 32): env + stdin in, one JSON document out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metaplug.cni.env import CniEnv
from metaplug.cni.errors import CniError
from metaplug.cni.skel import INTERNAL_ERROR, dispatch

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/var/run/netns/p",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}
CONF = b'{"cniVersion": "1.0.0", "name": "n", "type": "metaplug"}'
RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/8", "interface": 0}]}


class Recorder:
    """A handler that records its calls and returns a fixed reply."""

    def __init__(self, reply: dict[str, Any] | None = None, exc: Exception | None = None) -> None:
        self.reply = reply
        self.exc = exc
        self.calls: list[tuple[CniEnv, dict[str, Any], bytes]] = []

    def __call__(self, env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any] | None:
        self.calls.append((env, conf, raw))
        if self.exc is not None:
            raise self.exc
        return self.reply


def one_json(out: str) -> dict[str, Any]:
    """Duty 32 / DESIGN: stdout holds exactly one JSON document."""
    doc, end = json.JSONDecoder().raw_decode(out)
    assert out[end:].strip() == "", f"more than one document on stdout: {out!r}"
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("environ", [{}, {"CNI_COMMAND": ""}, {"PATH": "/bin"}])
def test_duty1_no_command_prints_about_line_on_stderr_exit_0(environ: dict[str, str]) -> None:
    handler = Recorder(RESULT)
    status, out, err = dispatch(environ, CONF, {"ADD": handler}, name="metaplug", supported=("0.4.0", "1.0.0"))
    assert status == 0 and out == ""
    assert err.count("\n") == 1 and err.endswith("\n")
    assert "metaplug" in err and "0.4.0, 1.0.0" in err
    assert handler.calls == []


@pytest.mark.parametrize("stdin", [b"", None, b"   "])
def test_duty15_version_with_empty_stdin(stdin: bytes | None) -> None:
    status, out, err = dispatch({"CNI_COMMAND": "VERSION"}, stdin, {}, name="p", supported=("0.4.0", "1.1.0"))
    assert status == 0 and err == ""
    assert one_json(out) == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.1.0"]}


def test_duty15_version_echoes_input_version_even_if_unsupported() -> None:
    status, out, _ = dispatch({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "0.2.0"}', {}, name="p",
                              supported=("1.0.0",))
    assert status == 0
    assert one_json(out) == {"cniVersion": "0.2.0", "supportedVersions": ["1.0.0"]}


def test_duty15_version_with_bad_json_is_code_6() -> None:
    status, out, _ = dispatch({"CNI_COMMAND": "VERSION"}, b"{oops", {}, name="p")
    assert status == 1 and one_json(out)["code"] == 6


def test_duty8_unsupported_version_code_1_names_config_version_and_list() -> None:
    handler = Recorder(RESULT)
    stdin = b'{"cniVersion": "0.3.1", "name": "n", "type": "x"}'
    status, out, _ = dispatch(ENV, stdin, {"ADD": handler}, name="p", supported=("0.4.0", "1.0.0"))
    doc = one_json(out)
    assert status == 1
    assert doc["code"] == 1
    assert "0.3.1" in doc["details"] and "0.4.0" in doc["details"] and "1.0.0" in doc["details"]
    assert handler.calls == []


def test_duty9_config_without_version_is_0_1_0_and_checked() -> None:
    status, out, _ = dispatch(ENV, b'{"name": "n"}', {"ADD": Recorder(RESULT)}, name="p", supported=("1.0.0",))
    assert status == 1
    doc = one_json(out)
    assert doc["code"] == 1 and "0.1.0" in doc["details"]


def test_duty10_add_success_prints_one_result_and_passes_env_conf_raw() -> None:
    handler = Recorder(RESULT)
    status, out, err = dispatch(ENV, CONF, {"ADD": handler}, name="p")
    assert (status, err) == (0, "")
    assert one_json(out) == RESULT
    (env, conf, raw), = handler.calls
    assert env.ifname == "eth0" and env.container_id == "c1"
    assert conf["name"] == "n" and raw == CONF


@pytest.mark.parametrize("cmd", ["DEL", "CHECK", "GC"])
def test_duty11_12_14_verbs_without_output_print_nothing(cmd: str) -> None:
    status, out, err = dispatch({**ENV, "CNI_COMMAND": cmd}, CONF, {cmd: Recorder(None)}, name="p")
    assert (status, out, err) == (0, "", "")


def test_duty13_status_accepts_empty_stdin() -> None:
    handler = Recorder(None)
    status, out, _ = dispatch({"CNI_COMMAND": "STATUS"}, b"", {"STATUS": handler}, name="p")
    assert (status, out) == (0, "")
    assert handler.calls[0][1] == {}


def test_duty32_handler_error_is_one_json_error_in_config_version() -> None:
    handler = Recorder(exc=CniError(7, "invalid network config", "field x"))
    status, out, _ = dispatch(ENV, CONF, {"ADD": handler}, name="p")
    assert status == 1
    assert one_json(out) == {"cniVersion": "1.0.0", "code": 7, "msg": "invalid network config", "details": "field x"}


def test_duty32_unexpected_exception_is_internal_error_not_traceback_on_stdout() -> None:
    handler = Recorder(exc=KeyError("boom"))
    status, out, err = dispatch(ENV, CONF, {"ADD": handler}, name="p")
    assert status == 1
    doc = one_json(out)
    assert doc["code"] == INTERNAL_ERROR and "KeyError" in doc["details"]
    assert "Traceback" in err and "Traceback" not in out


@pytest.mark.parametrize(
    ("environ", "stdin", "code"),
    [
        ({**ENV, "CNI_COMMAND": "BOGUS"}, CONF, 4),
        ({**ENV, "CNI_IFNAME": "a/b"}, CONF, 4),
        ({**ENV, "CNI_CONTAINERID": ""}, CONF, 3),
        ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, CONF, 4),
        (ENV, b"", 6),
        (ENV, b"{not json", 6),
        (ENV, b'{"cniVersion": "1.0"}', 6),
    ],
)
def test_duty1_8_input_errors_give_one_json_error(environ: dict[str, str], stdin: bytes, code: int) -> None:
    handler = Recorder(RESULT)
    status, out, _ = dispatch(environ, stdin, {"ADD": handler}, name="p")
    assert status == 1
    doc = one_json(out)
    assert doc["code"] == code and doc["msg"] and "cniVersion" in doc
    assert handler.calls == []


def test_duty1_unknown_command_message() -> None:
    status, out, _ = dispatch({**ENV, "CNI_COMMAND": "FROB"}, CONF, {}, name="p")
    assert status == 1 and one_json(out)["msg"] == "unknown CNI_COMMAND: FROB"


def test_duty1_known_verb_without_handler_is_code_4() -> None:
    status, out, _ = dispatch({**ENV, "CNI_COMMAND": "CHECK"}, CONF, {"ADD": Recorder(RESULT)}, name="p")
    assert status == 1
    doc = one_json(out)
    assert doc["code"] == 4 and "CHECK" in doc["msg"]


def test_duty15_version_without_cniversion_answers_own_version() -> None:
    """duty 15: `{}` on stdin carries no version, so VERSION replies with the plugin's own (not 0.1.0)."""
    from metaplug.cni.skel import dispatch

    code, out, _ = dispatch({"CNI_COMMAND": "VERSION"}, b"{}", {}, name="t", supported=("1.0.0", "1.1.0"))
    assert code == 0
    assert json.loads(out) == {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]}
