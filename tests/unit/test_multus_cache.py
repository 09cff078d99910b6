"""Reading Multus's cache and rebuilding the delegate calls of its DEL (issue 10.4). Expected values worked out from
Multus v4's source (pkg/types/conf.go createRuntimeConf, newCNIRuntimeConf, mergeCNIRuntimeConfig,
delegateRuntimeConfig; pkg/multus/multus.go getIfname, CmdDel); the entries come from tests/helpers/multus_node.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaplug import multus_cache
from metaplug.cni.env import CniEnv
from tests.helpers import fake_delegate
from tests.helpers.multus_node import MultusDelegate, write_entry

KUBELET = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;K8S_POD_INFRA_CONTAINER_ID=sb;K8S_POD_UID=u1"


def test_cni_args_are_multus_five_then_the_runtime_pairs() -> None:
    assert multus_cache.multus_cni_args(KUBELET) == [
        ("IgnoreUnknown", "true"), ("K8S_POD_NAMESPACE", "ns1"), ("K8S_POD_NAME", "p1"),
        ("K8S_POD_INFRA_CONTAINER_ID", "sb"), ("K8S_POD_UID", "u1"),
        ("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", "ns1"), ("K8S_POD_NAME", "p1"),
        ("K8S_POD_INFRA_CONTAINER_ID", "sb"), ("K8S_POD_UID", "u1")]


def test_cni_args_without_a_runtime_value_keep_empty_slots() -> None:
    assert multus_cache.multus_cni_args("") == [
        ("IgnoreUnknown", "true"), ("K8S_POD_NAMESPACE", ""), ("K8S_POD_NAME", ""),
        ("K8S_POD_INFRA_CONTAINER_ID", ""), ("K8S_POD_UID", "")]
    # A pair for an empty slot fills it only when Multus's own value was empty (LoadArgs saw none): never here,
    # since LoadArgs reads the same CNI_ARGS; an empty runtime value is appended, not merged.
    assert multus_cache.multus_cni_args("K8S_POD_UID=")[-1] == ("K8S_POD_UID", "")
    # Podman sends only K8S_POD_NAME: Multus's slot holds it already, the runtime's pair follows again.
    assert multus_cache.multus_cni_args("K8S_POD_NAME=web")[2:] == [
        ("K8S_POD_NAME", "web"), ("K8S_POD_INFRA_CONTAINER_ID", ""), ("K8S_POD_UID", ""), ("K8S_POD_NAME", "web")]


def test_runtime_config_as_multus_decodes_it() -> None:
    rc = multus_cache.runtime_config({"runtimeConfig": {
        "portMappings": [{"HostPort": 80, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""}],
        "Bandwidth": {"IngressRate": 5}, "ips": ["10.1.0.2/24"], "MAC": "0a:00:00:00:00:01",
        "io.kubernetes.cri.pod-annotations": {"a": "b"}, "dns": {"servers": ["1.1.1.1"]}}})
    assert rc == {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}],
                  "bandwidth": {"ingressRate": 5, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0},
                  "ips": ["10.1.0.2/24"], "mac": "0a:00:00:00:00:01"}
    assert multus_cache.runtime_config({"runtimeConfig": {"mac": "exact", "MAC": "other"}}) == {"mac": "exact"}
    assert multus_cache.runtime_config({}) == {}


def _delegate(**kw: object) -> multus_cache.MultusDelegate:
    base = {"name": "default/blue", "conflist": {"plugins": [{"type": "x"}]}, "ifname_request": "", "ip_request": None,
            "mac_request": "", "guid_request": "", "device_id": ""}
    return multus_cache.MultusDelegate(**{**base, **kw})  # type: ignore[arg-type]


def test_capability_args_cluster_gets_the_runtime_ones_others_their_requests_over_them() -> None:
    rc = {"ips": ["10.1.0.2/24"], "portMappings": [{"hostPort": 1, "containerPort": 2}]}
    asked = _delegate(ip_request=["10.9.0.9/24"], mac_request="0a:00:00:00:00:09", device_id="0000:03:00.1")
    assert multus_cache.capability_args(rc, asked, master=True, container_id="c1", ifname="eth0") == rc
    assert multus_cache.capability_args(rc, asked, master=False, container_id="c1", ifname="net1") == {
        "ips": ["10.9.0.9/24"], "portMappings": rc["portMappings"], "mac": "0a:00:00:00:00:09",
        "deviceID": "0000:03:00.1",
        "CNIDeviceInfoFile": "/var/run/k8s.cni.cncf.io/devinfo/cni/default-blue-c1_net1"}


def test_delegate_calls_ifnames_follow_getifname(tmp_path: Path) -> None:
    entry = [MultusDelegate("cluster", {"cniVersion": "1.0.0", "name": "cluster", "plugins": [{"type": "a"}]}),
             MultusDelegate("default/blue", {"cniVersion": "1.0.0", "name": "blue", "type": "b"}),
             MultusDelegate("default/red", {"cniVersion": "1.0.0", "name": "red", "type": "c"},
                            ifname_request="red0"),
             MultusDelegate("default/blue", {"cniVersion": "1.0.0", "name": "blue", "type": "b"})]
    write_entry(tmp_path, "c1", entry)
    delegates = multus_cache.read_entry(str(tmp_path), "c1", "0.3.1")
    assert delegates is not None
    env = CniEnv(command="DEL", container_id="c1", netns="", ifname="eth9", args=KUBELET)
    calls = multus_cache.delegate_calls(delegates, env, {}, "")
    assert [c.describe() for c in calls] == ["eth9 (cluster)", "net1 (default/blue)", "red0 (default/red)",
                                             "net3 (default/blue)"]
    assert delegates[0].conflist["plugins"] == [{"type": "a"}]
    assert delegates[1].conflist["plugins"] == [{"cniVersion": "1.0.0", "name": "blue", "type": "b"}]


def test_a_cached_conflist_without_cni_version_gets_multus_own(tmp_path: Path) -> None:
    write_entry(tmp_path, "c1", [MultusDelegate("cluster", {"name": "cluster", "plugins": [{"type": "a"}]}),
                                 MultusDelegate("x", {"name": "x", "type": "b"})])
    delegates = multus_cache.read_entry(str(tmp_path), "c1", "0.3.1")
    assert delegates is not None
    assert delegates[0].conflist["cniVersion"] == "0.3.1"
    assert delegates[1].conflist["cniVersion"] == "0.1.0"  # a conf keeps its own (none: 0.1.0, cni.md 9)


@pytest.mark.parametrize("content", [b"", b"{}", b"[]", b"null", b"[1]", b'[{"Name":"x"}]',
                                     b'[{"Bytes":"!!"}]', b'[{"Bytes":"WzFd"}]', b"\xff\xfe",
                                     b'[{"Bytes":"eyJuYW1lIjoieCJ9"}]'])  # {"name":"x"}: no type, no plugins
def test_corrupt_entries_are_named(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "c1").write_bytes(content)
    with pytest.raises(multus_cache.CorruptEntry) as info:
        multus_cache.read_entry(str(tmp_path), "c1", "1.0.0")
    assert str(tmp_path / "c1") in str(info.value)


@pytest.mark.parametrize(("target", "mode"), [("c1", 0o646), ("c1", 0o620), (".", 0o777)])
def test_an_entry_others_could_write_is_not_used(tmp_path: Path, target: str, mode: int) -> None:
    write_entry(tmp_path / "multus", "c1", [MultusDelegate("x", {"cniVersion": "1.0.0", "name": "x", "type": "b"})])
    (tmp_path / "multus" / target).chmod(mode)
    with pytest.raises(multus_cache.CorruptEntry, match="writable by group or others"):
        multus_cache.read_entry(str(tmp_path / "multus"), "c1", "1.0.0")


def test_no_entry() -> None:
    assert multus_cache.read_entry("/nonexistent/multus", "c1", "1.0.0") is None
    assert multus_cache.read_entry("", "c1", "1.0.0") is None  # no cniDir: never a path relative to the cwd


def test_del_from_a_multus_entry_stays_lean(tmp_path: Path) -> None:
    """DEL of a Multus-attached container imports no pydantic, httpx, pyroute2 or dataclasses (start-up budget);
    a DEL without an entry does not even import metaplug.multus_cache."""
    fake_delegate.install(tmp_path / "bin", "fake", {"log": str(tmp_path / "calls.jsonl")})
    write_entry(tmp_path / "multus", "c1", [MultusDelegate("fk", {"cniVersion": "1.0.0", "name": "fk",
                                                                  "type": "fake"})])
    conf = {"cniVersion": "1.0.0", "name": "n", "stateDir": str(tmp_path / "state"),
            "cniDir": str(tmp_path / "multus"), "binDir": str(tmp_path / "bin")}
    code = (
        "import sys, json\n"
        "from metaplug.plugin import run\n"
        "env = {'CNI_COMMAND': 'DEL', 'CNI_CONTAINERID': 'c1', 'CNI_IFNAME': 'eth0', 'CNI_PATH': '/nonexistent'}\n"
        f"st = run(env, json.dumps({conf!r}).encode())\n"
        "assert st[0] == 0, st\n"
        "print([m for m in ('pydantic', 'pydantic_core', 'httpx', 'pyroute2', 'dataclasses') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    plain = code.replace("'c1'", "'c2'").replace("'pydantic', ", "'metaplug.multus_cache', 'pydantic', ")
    out = subprocess.run([sys.executable, "-c", plain], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert [c["command"] for c in fake_delegate.read_log(tmp_path / "calls.jsonl")] == ["DEL"]
    assert not (tmp_path / "multus" / "c1").exists()
    assert json.loads(json.dumps(sorted(p.name for p in tmp_path.joinpath("state").glob("*")))) == []


def _gc(tmp_path: Path, valid: list[dict[str, str]]) -> tuple[int, str, str]:
    from metaplug.plugin import run

    conf = {"cniVersion": "1.1.0", "name": "n", "stateDir": str(tmp_path / "state"), "binDir": str(tmp_path / "bin"),
            "cniDir": str(tmp_path / "multus"), "cni.dev/valid-attachments": valid}
    return run({"CNI_COMMAND": "GC", "CNI_PATH": str(tmp_path / "bin")}, json.dumps(conf).encode())


def test_gc_leaves_a_stale_multus_pod_whose_ifname_is_unknown(tmp_path: Path) -> None:
    """cni.md 14: without its cluster network's cached result GC cannot know the pod's CNI_IFNAME: left alone (the
    runtime's DEL still removes it), never deleted under a guessed name."""
    fake_delegate.install(tmp_path / "bin", "fake", {"log": str(tmp_path / "calls.jsonl")})
    write_entry(tmp_path / "multus", "gone", [MultusDelegate("fk", {"cniVersion": "1.0.0", "name": "fk",
                                                                    "type": "fake"})])
    assert _gc(tmp_path, [])[0] == 0
    assert (tmp_path / "multus" / "gone").exists()
    assert fake_delegate.read_log(tmp_path / "calls.jsonl") == []


def test_gc_reports_a_stale_multus_pod_it_could_not_delete(tmp_path: Path) -> None:
    fake_delegate.install(tmp_path / "bin", "fake", {"log": str(tmp_path / "calls.jsonl"), "on": {"DEL": "crash"}})
    write_entry(tmp_path / "multus", "gone", [MultusDelegate("fk", {"cniVersion": "1.0.0", "name": "fk",
                                                                    "type": "fake"})])
    (tmp_path / "multus" / "results").mkdir()
    (tmp_path / "multus" / "results" / "fk-gone-eth0").write_text(json.dumps({
        "kind": "cniCacheV1", "containerId": "gone", "ifName": "eth0", "networkName": "fk", "netns": "/gone",
        "cniArgs": [["IgnoreUnknown", "true"], ["K8S_POD_NAME", "p"]], "result": {"cniVersion": "1.0.0"}}))
    code, out, _ = _gc(tmp_path, [{"containerID": "other", "ifname": "eth0"}])
    assert code == 1 and json.loads(out)["code"] == 104 and "gone (attached by Multus)" in json.loads(out)["details"]
    assert (tmp_path / "multus" / "gone").exists()
    (call,) = fake_delegate.read_log(tmp_path / "calls.jsonl")
    assert (call["command"], call["env"]["CNI_IFNAME"], call["env"]["CNI_ARGS"], call["env"]["CNI_NETNS"]) == (
        "DEL", "eth0", "IgnoreUnknown=true;K8S_POD_NAME=p", "")  # a netns that is gone is not handed over


@pytest.mark.parametrize(("raw", "expected"), [({}, "/var/lib/cni/multus"), ({"cniDir": "/x"}, "/x"),
                                               ({"cniDir": 5}, ""), ({"cniDir": ""}, ""), ({"cniDir": "/a\0b"}, "")])
def test_settings_read_cni_dir_and_never_fail_over_it(raw: dict[str, object], expected: str) -> None:
    from metaplug.config import Settings

    assert Settings.from_raw({"name": "mp", **raw}).multus_cache_dir == expected
