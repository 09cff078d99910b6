"""Issue 9, defect 4: code 199 is unreachable from any input (cni.md 32: every failure is a CNI error with its code).

A property test over what a runtime controls: stdin (raw bytes, arbitrary JSON, and metaplug configurations with
mutated fields, pod annotations through runtimeConfig `io.kubernetes.cri.pod-annotations` and `args.cni.networks`,
GC's valid-attachments, prevResult) and the CNI_* environment (values as os.environ delivers bytes: undecodable ones
as lone surrogates, PEP 383; NUL bytes, which only the daemon's env could carry; FIFOs, files and devices as
CNI_NETNS). Each example calls the pure core `metaplug.plugin.run(env, stdin)` in-process, as the daemon does.

Every answer must be a success (nothing or one JSON document on stdout) or one JSON CNI error whose code is a spec
code or one of metaplug's documented codes (README "Error codes"), never 199, with nothing on stderr (a traceback).

Safety: no delegate can ever run. binDir and CNI_PATH only ever name an empty temp dir (or strings that are no
directory), so every plan stops at "binary not found" (102) before anything touches a namespace; stateDir, confDir
and logFile stay inside the temp dir. readinessIndicatorFile is left out: waiting for it is bounded by design.
"""

from __future__ import annotations

import json
import os
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaplug import journal, plugin

SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}
METAPLUG_CODES = {100, 101, 102, 103, 104, 105, 110, 111, 130, 131, 132, 133, 134}  # README "Error codes"
VERBS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]


class World:
    """Temp dirs shared by every example: an empty binDir, a stateDir with journals, a confDir with NAD files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        self.conf = root / "conf"
        self.bin.mkdir()
        (self.conf / "default").mkdir(parents=True)
        nad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": "blue", "namespace": "default"},
               "spec": {"config": json.dumps({"cniVersion": "1.0.0", "name": "blue", "type": "macvlan"})}}
        (self.conf / "default" / "blue.json").write_text(json.dumps(nad))
        (self.conf / "default" / "empty.json").write_text(json.dumps({**nad, "spec": {"config": ""}}))
        (self.conf / "default" / "broken.json").write_bytes(b"{not json")
        (self.conf / "default" / "deep.json").write_bytes(b"[" * 3000 + b"]" * 3000)
        os.mkfifo(self.conf / "default" / "fifo.json")
        (self.conf / "cluster.conflist").write_text(json.dumps(
            {"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "bridge"}]}))
        os.mkfifo(root / "fifo")
        (root / "file").write_bytes(b"")
        self.seed_journals()

    def seed_journals(self) -> None:
        """A journal DEL, CHECK and GC can act on (its delegate is never found), plus a corrupt one and a FIFO."""
        conflist = json.dumps({"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "nowhere"}]})
        body = {"containerId": "c1", "ifname": "eth0", "network": "mp", "netns": str(self.root / "file"),
                "cniArgs": "", "paths": [str(self.bin)], "timeout": 5, "requestVersion": "1.1.0",
                "pod": {"namespace": "default", "name": "p", "uid": ""}, "result": {"cniVersion": "1.1.0"},
                "attachments": [{"ifname": "eth0", "network": "cluster", "cluster": True, "defaultRoute": [],
                                 "conflist": conflist, "capabilityArgs": {}, "state": "added",
                                 "result": {"cniVersion": "1.1.0"}}]}
        journal.write(journal.JournalKey(str(self.state), "c1", "mp", "eth0"), body)
        (self.state / "c2").mkdir(mode=0o700)
        (self.state / "c2" / "mp-eth0.json").write_bytes(b'{"checksum": "x", "body": {}}')
        os.mkfifo(self.state / "c2" / "mp-net1.json")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with tempfile.TemporaryDirectory(prefix="mp-fuzz-") as tmp:
        yield World(Path(tmp))


# ---- strategies ----------------------------------------------------------------------------------------------------

ANY_CHAR = st.characters(codec=None, exclude_categories=())  # lone surrogates and NUL included
odd_text = st.one_of(st.text(ANY_CHAR, max_size=20),
                     st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape")))
NAME_CHARS = string.ascii_letters + string.digits + "-_."
names = st.one_of(st.sampled_from(["c1", "c2", "eth0", "mpfuzz0", "net1", "blue", "default", "mp", "cluster"]),
                  st.text(NAME_CHARS, min_size=1, max_size=16), odd_text)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=True, allow_infinity=True), odd_text, names)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(names, odd_text), inner, max_size=4)), max_leaves=12)


def netns_paths(world: World) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["", "/proc/self/ns/net", "/proc/self/ns/mnt", "/dev/null", "/etc/passwd",
                                      "/proc/self/fd/0", "/var/run/netns/mpt-none", str(world.root / "fifo"),
                                      str(world.root / "file"), str(world.root), "\x00", "/x\udcff"]), odd_text)


def selection_elements() -> st.SearchStrategy[Any]:
    element = st.fixed_dictionaries({"name": st.one_of(names, json_values)}, optional={
        "namespace": st.one_of(names, json_values), "interface": st.one_of(names, json_values),
        "ips": st.one_of(st.lists(st.sampled_from(["10.1.0.5/24", "fe80::1", "300.1.1.1", "x"]), max_size=3),
                         json_values),
        "mac": st.one_of(st.sampled_from(["02:00:00:00:00:01", "zz"]), json_values),
        "default-route": st.one_of(st.lists(st.sampled_from(["10.1.0.1", "::1", "bad"]), max_size=3), json_values),
        "portMappings": json_values, "bandwidth": json_values, "cni-args": json_values, "deviceID": json_values,
        "infiniband-guid": json_values, "ipam-claim-reference": json_values})
    as_json = st.one_of(st.lists(element, max_size=3), element).map(json.dumps)
    comma = st.lists(st.one_of(names, st.sampled_from(["default/blue", "blue@net9", "default/fifo", "deep",
                                                       "empty", "broken", "a/b/c", "@"])),
                     max_size=4).map(",".join)
    return st.one_of(as_json, comma, odd_text, json_values)


def configs(world: World) -> st.SearchStrategy[Any]:
    """A metaplug configuration whose keys are each kept, dropped or replaced by something odd."""
    inline = {"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "bridge", "capabilities": {"ips": True}}]}
    safe_paths = {"stateDir": str(world.state), "confDir": str(world.conf), "binDir": str(world.bin),
                  "logFile": str(world.root / "metaplug.log")}
    base: dict[str, Any] = {"cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "delegates": [inline],
                            **safe_paths}
    bad_paths = st.sampled_from(["", "\x00", "/x\x00y", "\udcff", "/\ud800"]) | json_scalars.filter(
        lambda v: not isinstance(v, str))
    mutations: dict[str, st.SearchStrategy[Any]] = {
        "cniVersion": st.one_of(st.sampled_from(["0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "9.9.9"]),
                                json_values),
        "cniVersions": json_values,
        "name": st.one_of(names, json_values),
        "delegates": st.one_of(json_values, st.lists(st.one_of(st.just(inline), json_values), max_size=3)),
        "clusterNetwork": st.one_of(st.sampled_from(["cluster", "default/blue", str(world.conf / "cluster.conflist"),
                                                     str(world.conf), str(world.conf / "default" / "fifo.json"),
                                                     "/nonexistent", "a/b/c"]), json_values),
        "defaultNetworks": st.one_of(st.lists(names, max_size=3), json_values),
        "stateDir": bad_paths, "confDir": bad_paths, "binDir": bad_paths, "logFile": bad_paths,
        "kubeconfig": st.one_of(bad_paths, st.just(str(world.root / "file")), st.just("/nonexistent")),
        "delegateTimeout": json_scalars, "kubeDeadline": json_scalars, "logLevel": json_values,
        "namespaceIsolation": json_values, "globalNamespaces": json_values, "systemNamespaces": json_values,
        "networkNamespace": json_values, "result": json_values, "parallel": json_values, "capabilities": json_values,
        "runtimeConfig": st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "io.kubernetes.cri.pod-annotations": st.one_of(json_values, st.fixed_dictionaries({}, optional={
                "k8s.v1.cni.cncf.io/networks": selection_elements(),
                "v1.multus-cni.io/default-network": selection_elements()})),
            "ips": json_values, "mac": json_values, "portMappings": json_values})),
        "args": st.one_of(json_values, st.fixed_dictionaries({"cni": st.one_of(json_values, st.fixed_dictionaries(
            {"networks": selection_elements()}))})),
        "cni.dev/valid-attachments": st.one_of(json_values, st.lists(st.fixed_dictionaries(
            {"containerID": st.one_of(names, json_values), "ifname": st.one_of(names, json_values)}), max_size=3)),
        "cni.dev/attachments": json_values,
        "prevResult": json_values,
        # Multus's keys (README "Coming from Multus")
        "cniDir": st.one_of(bad_paths, st.just(str(world.root / "multus"))), "logToStderr": json_values,
        "logOptions": st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "maxSize": json_scalars, "maxBackups": json_scalars, "maxAge": json_scalars, "compress": json_scalars})),
        "auxiliaryCNIChainName": st.one_of(names, json_values), "retryDeleteOnError": json_values,
    }
    # A few keys at a time, so that most examples get past validation into the verbs' own code.
    overrides = st.lists(st.sampled_from(sorted(mutations)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: mutations[k] for k in keys}))
    # Never dropped: the paths. Their defaults are the host's own (/var/lib/cni/metaplug, /opt/cni/bin,
    # /etc/cni/metaplug/net.d), which a test must neither write nor run delegates from; they are still replaced by odd
    # values above.
    drop = st.sets(st.sampled_from(sorted(set(base) - {"stateDir", "binDir", "confDir"})), max_size=3)

    def build(changes: dict[str, Any], dropped: set[str]) -> dict[str, Any]:
        conf = {k: v for k, v in base.items() if k not in dropped}
        conf.update(changes)
        return conf

    return st.builds(build, overrides, drop)


def stdins(world: World) -> st.SearchStrategy[bytes]:
    def encode(doc: Any) -> bytes:
        return json.dumps(doc).encode()  # NaN and Infinity as Python writes them: not JSON, must be code 6

    return st.one_of(
        st.binary(max_size=64),
        json_values.map(encode),
        configs(world).map(encode),
        st.sampled_from([b"", b"   ", b"[" * 5000, b"[" * 3000 + b"]" * 3000, b'{"cniVersion": "1.1.0"}',
                         b"\xff\xfe{}", b'{"a": 1, "a": 2}']),
    )


def envs(world: World) -> st.SearchStrategy[dict[str, str]]:
    cni_args = st.one_of(st.sampled_from(["", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
                                          "K8S_POD_NAME=p;METAPLUG_NETWORKS=blue,default/blue@net9", "a", "=;==",
                                          "METAPLUG_NETWORKS=" + "[" * 100]), odd_text)
    paths = st.sampled_from([str(world.bin), "", f"{world.bin}:{world.bin}", "nowhere", "\x00", "\udcff"])
    return st.fixed_dictionaries({"CNI_COMMAND": st.one_of(st.sampled_from(VERBS), odd_text)}, optional={
        "CNI_CONTAINERID": names, "CNI_IFNAME": names, "CNI_NETNS": netns_paths(world), "CNI_ARGS": cni_args,
        "CNI_PATH": paths})


def _check_answer(code: int, out: str, err: str) -> None:
    assert "Traceback" not in err, err  # stderr carries only the "about" line (cni.md 1), never a traceback
    if code == 0:
        if out:
            assert out.endswith("\n") and out.count("\n") == 1, out
            assert isinstance(json.loads(out), dict)
        return
    assert out.endswith("\n") and out.count("\n") == 1, out
    doc = json.loads(out)
    assert isinstance(doc, dict) and isinstance(doc.get("code"), int), out
    assert doc["code"] != 199, doc
    assert doc["code"] in SPEC_CODES | METAPLUG_CODES, doc
    assert isinstance(doc.get("msg"), str)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_every_answer_is_a_success_or_a_cni_error_with_a_documented_code(world: World, data: st.DataObject) -> None:
    env = data.draw(envs(world), label="env")
    stdin = data.draw(stdins(world), label="stdin")
    code, out, err = plugin.run(env, stdin)
    _check_answer(code, out, err)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_a_valid_environment_with_any_configuration(world: World, data: st.DataObject) -> None:
    """The same with the env right, so that every example reaches the verbs' own code (plan, journal, GC)."""
    verb = data.draw(st.sampled_from(["ADD", "ADD", *VERBS]), label="verb")
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": data.draw(st.sampled_from(["c1", "c2", "c3", "c4"]), label="cid"),
           "CNI_IFNAME": "mpfuzz0",  # absent from this process's namespace, so ADD gets past R9 to the plan
           "CNI_NETNS": data.draw(st.one_of(st.just("/proc/self/ns/net"), netns_paths(world)), label="netns"),
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1", "CNI_PATH": str(world.bin)}
    conf = data.draw(configs(world), label="conf")
    code, out, err = plugin.run(env, json.dumps(conf).encode())
    _check_answer(code, out, err)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_any_pod_annotation_on_add(world: World, data: st.DataObject) -> None:
    """ADD with a valid env and config, and the attachment request from every source the README lists: the pod's
    annotations through runtimeConfig (containerd, CRI-O), `args.cni.networks`, CNI_ARGS METAPLUG_NETWORKS."""
    conf: dict[str, Any] = {"cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "stateDir": str(world.state),
                            "confDir": str(world.conf), "binDir": str(world.bin),
                            "delegates": [{"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "bridge"}]}]}
    source = data.draw(st.sampled_from(["runtimeConfig", "args", "CNI_ARGS"]), label="source")
    request = data.draw(selection_elements(), label="request")
    cni_args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1"
    if source == "runtimeConfig":
        annotations = {"k8s.v1.cni.cncf.io/networks": request}
        if data.draw(st.booleans(), label="default-network"):
            annotations["v1.multus-cni.io/default-network"] = data.draw(selection_elements(), label="default")
        conf["runtimeConfig"] = {"io.kubernetes.cri.pod-annotations": annotations}
    elif source == "args":
        conf["args"] = {"cni": {"networks": request}}
    else:
        cni_args = f"IgnoreUnknown=1;METAPLUG_NETWORKS={request}"
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c9", "CNI_IFNAME": "mpfuzz0", "CNI_NETNS": "/proc/self/ns/net",
           "CNI_ARGS": cni_args, "CNI_PATH": str(world.bin)}
    code, out, err = plugin.run(env, json.dumps(conf).encode())
    _check_answer(code, out, err)
    assert code != 0  # no delegate binary exists: nothing can have been attached
    assert not (world.state / "c9").exists()  # a failed ADD leaves nothing in stateDir
