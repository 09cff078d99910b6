"""Issue 9, defect 4: bad input gets the right CNI error (cni.md 32), never code 199 and a traceback.

Every case calls the pure core `metaplug.plugin.run(env, stdin)` in-process, as the daemon does, with temp dirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metaplug import plugin
from metaplug.cni import jsonload
from metaplug.cni.errors import CniError

DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 5_000 + b"1" + b"}" * 5_000
JUST_OVER = b'{"cniVersion": "1.1.0", "x": ' + b"[" * 70 + b"]" * 70 + b"}"


def _conf(tmp: Path, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "stateDir": str(tmp / "state"),
        "confDir": str(tmp / "conf"), "binDir": str(tmp / "bin"),
        "delegates": [{"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "bridge"}]}],
    }
    conf.update(extra)
    return conf


def _env(**extra: str) -> dict[str, str]:
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/nonexistent"}
    env.update(extra)
    return env


def _error(env: dict[str, str], stdin: bytes) -> dict[str, Any]:
    code, out, err = plugin.run(env, stdin)
    assert code == 1, out
    assert err == "", err  # no traceback
    doc = json.loads(out)
    assert doc["code"] != 199, doc
    return doc


@pytest.mark.parametrize("data", [DEEP_ARRAY, DEEP_OBJECT, JUST_OVER],
                         ids=["array", "object", "just-over-the-bound"])
@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"])
def test_deeply_nested_stdin_is_a_decode_failure(verb: str, data: bytes) -> None:
    """cni.md 8: undecodable JSON is code 6; json.loads used to raise RecursionError (code 199)."""
    doc = _error(_env(CNI_COMMAND=verb), data)
    assert doc["code"] == 6
    assert "nested too deeply" in doc["details"]


def test_nesting_within_the_bound_still_decodes() -> None:
    doc = b"[" * jsonload.MAX_DEPTH + b"]" * jsonload.MAX_DEPTH
    assert jsonload.depth(jsonload.loads(doc)) == jsonload.MAX_DEPTH
    with pytest.raises(jsonload.TooDeep):
        jsonload.loads(b"[" + doc + b"]")


def test_deeply_nested_annotation_is_code_7(tmp_path: Path) -> None:
    nested = "[" * 5_000 + "]" * 5_000
    conf = _conf(tmp_path, runtimeConfig={"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": nested}})
    doc = _error(_env(), json.dumps(conf).encode())
    assert doc["code"] == 7
    assert "nested too deeply" in doc["details"]


def test_deeply_nested_delegate_output_is_code_101() -> None:
    from metaplug.cni import invoke

    with pytest.raises(CniError) as exc:
        invoke._decode_success("fake", "ADD", DEEP_ARRAY)
    assert exc.value.code == 101
    failure = invoke._failure("fake", "ADD", 1, b'{"code": 7, "x": ' + DEEP_ARRAY + b"}", b"")
    assert failure.code == 101  # not a usable JSON error: reported as undecodable


def test_deeply_nested_nad_file_is_code_7(tmp_path: Path) -> None:
    (tmp_path / "conf" / "default").mkdir(parents=True)
    (tmp_path / "conf" / "default" / "deep.json").write_bytes(DEEP_ARRAY)
    conf = _conf(tmp_path, runtimeConfig={"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "deep"}})
    doc = _error(_env(), json.dumps(conf).encode())
    assert doc["code"] == 7


# ---- the environment: a runtime passes bytes ----------------------------------------------------------------------


@pytest.mark.parametrize("var", ["CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH", "CNI_CONTAINERID"])
@pytest.mark.parametrize("value", ["eth\udcff", "e\x00th", "\ud800"], ids=["undecodable-byte", "nul", "lone-surrogate"])
def test_env_values_that_are_not_text_are_code_4(var: str, value: str, tmp_path: Path) -> None:
    """os.environ decodes undecodable bytes as lone surrogates (PEP 383); the daemon's env may carry anything."""
    for verb in ("ADD", "DEL", "CHECK"):
        doc = _error(_env(CNI_COMMAND=verb, **{var: value}), json.dumps(_conf(tmp_path)).encode())
        assert doc["code"] in (3, 4) if var == "CNI_CONTAINERID" else doc["code"] == 4
        assert var in doc["details"]


def test_non_utf8_ifname_from_a_real_process_is_code_4(tmp_path: Path) -> None:
    """The bytes a runtime really passes: b'eth\\xff' reaches os.environ as 'eth\\udcff'."""
    env = {k.encode(): v.encode() for k, v in _env().items()}
    env[b"CNI_IFNAME"] = b"eth\xff"
    env[b"PATH"] = os.environ.get("PATH", "/usr/bin:/bin").encode()
    proc = subprocess.run([sys.executable, "-m", "metaplug"], input=json.dumps(_conf(tmp_path)).encode(), env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert b"Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["code"] == 4 and "CNI_IFNAME" in doc["details"]


@pytest.mark.parametrize("name", ["e\x00", "e\ud800", "e\x7f", "e\u200b\x01"])
def test_annotation_interface_names_that_are_not_text_are_code_7(name: str, tmp_path: Path) -> None:
    annotation = json.dumps([{"name": "blue", "interface": name}])
    conf = _conf(tmp_path, runtimeConfig={"io.kubernetes.cri.pod-annotations":
                                          {"k8s.v1.cni.cncf.io/networks": annotation}})
    doc = _error(_env(), json.dumps(conf).encode())
    assert doc["code"] == 7


# ---- paths in the configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["stateDir", "binDir", "confDir", "clusterNetwork", "logFile", "kubeconfig",
                                 "readinessIndicatorFile"])
def test_nul_in_a_configured_path_is_code_7(key: str, tmp_path: Path) -> None:
    conf = _conf(tmp_path, **{key: str(tmp_path / "x\x00y")})
    doc = _error(_env(), json.dumps(conf).encode())
    assert doc["code"] == 7
    assert key in doc["details"]


@pytest.mark.parametrize("verb", ["DEL", "CHECK", "GC"])
def test_nul_in_state_dir_is_code_7_on_every_verb(verb: str, tmp_path: Path) -> None:
    """journal.locked used to raise ValueError: embedded null byte (code 199)."""
    doc = _error(_env(CNI_COMMAND=verb), json.dumps(_conf(tmp_path, stateDir="/var/lib/x\x00")).encode())
    assert doc["code"] == 7


def test_del_ignores_a_log_file_it_cannot_use(tmp_path: Path) -> None:
    """A bad logFile fails ADD (code 7) but never DEL: a pod must not get stuck in deletion over a log file."""
    conf = _conf(tmp_path, logFile="/tmp/x\x00")
    assert plugin.run(_env(CNI_COMMAND="DEL"), json.dumps(conf).encode())[:2] == (0, "")


# ---- GC input (cni.md 14) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [{"containerID": ["c1"], "ifname": "eth0"}, {"containerID": "c1", "ifname": {}},
                                   {"containerID": "c1"}, "c1", None])
def test_gc_with_a_malformed_valid_attachment_is_code_7(entry: Any, tmp_path: Path) -> None:
    """GC used to raise TypeError: unhashable type: 'list' (code 199)."""
    conf = _conf(tmp_path, **{"cni.dev/valid-attachments": [{"containerID": "ok", "ifname": "eth0"}, entry]})
    doc = _error(_env(CNI_COMMAND="GC"), json.dumps(conf).encode())
    assert doc["code"] == 7
    assert "entry 1" in doc["details"]


def test_bundled_host_local_gc_validates_the_same_way(tmp_path: Path) -> None:
    from metaplug_delegates import mp_host_local

    from metaplug.cni import skel

    conf = {"cniVersion": "1.1.0", "name": "n", "type": "mp-host-local",
            "ipam": {"type": "mp-host-local", "dataDir": str(tmp_path), "ranges": [[{"subnet": "10.9.0.0/24"}]]},
            "cni.dev/valid-attachments": [{"containerID": ["c1"], "ifname": "eth0"}]}
    code, out, err = skel.dispatch({"CNI_COMMAND": "GC", "CNI_PATH": "/x"}, json.dumps(conf).encode(),
                                   {"GC": mp_host_local.cmd_gc}, name="mp-host-local")
    assert (code, json.loads(out)["code"], err) == (1, 7, "")


def test_daemon_decodes_the_env_as_os_environ_does(tmp_path: Path) -> None:
    """The shim forwards the runtime's env bytes; the daemon must see b'eth\\xff' as thin mode does ('eth\\udcff',
    code 4), not as 'eth\\ufffd', which would pass for a valid interface name."""
    from metaplug.daemon.protocol import decode_env

    raw = b"".join(f"{k}={v}".encode() + b"\0" for k, v in _env().items() if k != "CNI_IFNAME")
    env = decode_env(raw + b"CNI_IFNAME=eth\xff\0")
    assert env["CNI_IFNAME"] == "eth\udcff"
    doc = _error(env, json.dumps(_conf(tmp_path)).encode())
    assert doc["code"] == 4 and "CNI_IFNAME" in doc["details"]


@pytest.mark.parametrize("content", [DEEP_ARRAY, b"\xff\xfe not text", b"[" * 3000],
                         ids=["deep-json", "not-utf8", "deep-yaml"])
def test_a_kubeconfig_metaplug_cannot_read_is_a_cni_error(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_bytes(content)
    conf = _conf(tmp_path, kubeconfig=str(tmp_path / "kubeconfig"))
    env = _env(CNI_IFNAME="mpkube0", CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1")
    doc = _error(env, json.dumps(conf).encode())
    assert doc["code"] in (5, 7) and "kubeconfig" in doc["msg"]
