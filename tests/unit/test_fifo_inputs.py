"""Issue 9, defect 5, the siblings of CNI_NETNS: no file a CNI call reads may block it.

A FIFO where a config file, a NAD file, a journal or a resolv.conf should be used to block the plain open(2) forever.
metaplug.cni.files.read_file opens non-blocking and accepts regular files only, so each is now its CNI error at once.
Each case runs the real executable in a subprocess with a timeout, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

DEADLINE = 20.0


def _run(module: str, env: dict[str, str], conf: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    proc = subprocess.run([sys.executable, "-m", module], input=json.dumps(conf).encode(), env=env,
                          capture_output=True, timeout=DEADLINE)
    out = proc.stdout.decode().strip()
    return proc.returncode, json.loads(out) if out else None, proc.stderr.decode()


def _metaplug(tmp: Path, verb: str, **extra: Any) -> tuple[int, dict[str, Any] | None, str]:
    conf: dict[str, Any] = {"cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "stateDir": str(tmp / "state"),
                            "confDir": str(tmp / "conf"), "binDir": str(tmp / "bin")}
    conf.update(extra)
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": str(tmp / "bin")}
    return _run("metaplug", env, conf)


def _fifo(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return str(path)


def test_cluster_network_file_that_is_a_fifo(tmp_path: Path) -> None:
    code, out, err = _metaplug(tmp_path, "ADD", clusterNetwork=_fifo(tmp_path / "cluster.conflist"))
    assert code == 1 and out is not None and out["code"] == 7, (out, err)
    assert "not a regular file" in out["details"]


def test_nad_file_that_is_a_fifo(tmp_path: Path) -> None:
    _fifo(tmp_path / "conf" / "default" / "blue.json")
    code, out, err = _metaplug(
        tmp_path, "ADD",
        delegates=[{"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "bridge"}]}],
        runtimeConfig={"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "blue"}})
    assert code == 1 and out is not None and out["code"] == 7, (out, err)


def test_journal_that_is_a_fifo(tmp_path: Path) -> None:
    """CHECK refuses it (code 5); DEL treats it as a damaged journal (issue 9, defect 7): moved aside without
    blocking, the event logged at error level, and DEL goes on from what is left."""
    _fifo(tmp_path / "state" / "c1" / "mp-eth0.json")
    code, out, err = _metaplug(tmp_path, "CHECK")
    assert code == 1 and out is not None and out["code"] == 5, (out, err)
    code, out, err = _metaplug(tmp_path, "DEL")
    assert code == 0 and "corrupt journal" in err and "not a regular file" in err, (out, err)
    assert [p.name.split(".corrupt.")[0] for p in (tmp_path / "state" / "c1").iterdir()] == ["mp-eth0.json"]


def test_resolv_conf_that_is_a_fifo(tmp_path: Path) -> None:
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "mp-static",
            "ipam": {"type": "mp-static", "addresses": [{"address": "10.1.0.5/24"}],
                     "resolvConf": _fifo(tmp_path / "resolv.conf")}}
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": str(tmp_path)}
    code, out, err = _run("delegates.mp_static", env, conf)
    assert code == 1 and out is not None and out["code"] == 7, (out, err)
    assert "resolvConf" in out["msg"]


def test_kubeconfig_that_is_a_fifo(tmp_path: Path) -> None:
    """ADD with the Kubernetes API: the kubeconfig is read before any call; a FIFO there used to block forever."""
    code, out, err = _run("metaplug", {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "mpfifo0",
        "CNI_PATH": str(tmp_path / "bin"), "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1"},
        {"cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "stateDir": str(tmp_path / "state"),
         "binDir": str(tmp_path / "bin"), "kubeconfig": _fifo(tmp_path / "kubeconfig"),
         "delegates": [{"cniVersion": "1.1.0", "name": "cluster", "plugins": [{"type": "bridge"}]}]})
    assert code == 1 and out is not None and out["code"] == 5, (out, err)
    assert "kubeconfig" in out["msg"]
