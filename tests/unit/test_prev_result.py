"""cni.md 10: metaplug inside a chain gets a prevResult; one that is not a result object is CNI error 7 naming
prevResult, on ADD and on CHECK, before anything is attached or read (issue 10.2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from metaplug.cni.convert import check_result
from metaplug.cni.errors import CniError
from metaplug.plugin import run

GOOD = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.0.0.2/24", "interface": 0}]}
BAD: list[Any] = [
    "a string", ["a", "list"], 7, {"ips": []}, {"cniVersion": "", "ips": []}, {"cniVersion": "9.9.9"},
    {"cniVersion": "1.0.0", "ips": "10.0.0.2/24"}, {"cniVersion": "1.0.0", "interfaces": [1]},
    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]}, {"cniVersion": "0.2.0", "ip4": "10.0.0.2/24"},
    {"cniVersion": "1.0.0", "dns": []},
]


def test_check_result_accepts_results_of_every_family() -> None:
    assert check_result(GOOD, "prevResult") is GOOD
    assert check_result({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}, "x")
    assert check_result({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}, "dns": {}}, "x")


@pytest.mark.parametrize("value", BAD)
def test_check_result_refuses_what_is_not_a_result(value: Any) -> None:
    with pytest.raises(CniError) as err:
        check_result(value, "prevResult")
    assert err.value.code == 7 and "prevResult" in err.value.msg


def _call(verb: str, tmp_path: Path, prev: Any) -> dict[str, Any]:
    conf = {"cniVersion": "1.0.0", "name": "mp", "type": "metaplug", "stateDir": str(tmp_path / "state"),
            "confDir": str(tmp_path), "delegates": [{"cniVersion": "1.0.0", "name": "c", "type": "bridge"}],
            "prevResult": prev}
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0",
           "CNI_PATH": str(tmp_path)}
    code, out, _ = run(env, json.dumps(conf).encode())
    assert code == 1
    return json.loads(out)


@pytest.mark.parametrize("verb", ["ADD", "CHECK"])
@pytest.mark.parametrize("prev", ["a string", ["a", "list"], {"ips": [], "interfaces": []}])
def test_bad_prev_result_is_error_7_on_add_and_check(verb: str, prev: Any, tmp_path: Path) -> None:
    error = _call(verb, tmp_path, prev)
    assert error["code"] == 7 and "prevResult" in error["msg"], error
    assert not (tmp_path / "state").exists()  # nothing recorded
