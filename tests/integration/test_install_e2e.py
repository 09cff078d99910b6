"""`metaplug install` end to end: the conflist it generates, used by a libcni-style runtime, attaches the wrapped
cluster network through the installed metaplug executable; uninstall removes what it wrote and keeps what changed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.netns import VENV_BIN, Netns, run


def test_generated_conflist_drives_a_real_add_and_del(node: Netns, pod: Netns, tmp_path: Path) -> None:
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    conf_dir.mkdir()
    cluster = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "mpinst0", "isGateway": True, "isDefaultGateway": True,
         "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": "10.33.0.0/24"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    (conf_dir / "10-podnet.conflist").write_text(json.dumps(cluster))
    run([str(VENV_BIN / "metaplug"), "install", "--mode", "thin", "--cni-bin-dir", str(bin_dir),
         "--cni-conf-dir", str(conf_dir), "--source-bin", str(VENV_BIN / "metaplug"), "--no-kubeconfig"])
    generated = conf_dir / "00-metaplug.conflist"
    installed = (bin_dir / "metaplug").read_bytes()
    # the console script went in as the -I -S launcher of the same interpreter (launcher.py, issue 10.7)
    assert installed.startswith(f"#!{VENV_BIN / 'python'} -IS\n".encode()), installed[:200]
    conflist = json.loads(generated.read_text())
    assert conflist["cniVersion"] == "1.0.0" and conflist["plugins"][0]["type"] == "metaplug"
    assert conflist["plugins"][0]["capabilities"]["portMappings"] is True  # the wrapped list's capability kept
    # Keep metaplug's journal in the test's temp dir (the default is the node's /var/lib/cni/metaplug).
    conflist["plugins"][0]["stateDir"] = str(tmp_path / "state")
    generated.write_text(json.dumps(conflist))

    tool = [str(VENV_BIN / "python"), "-m", "metaplug.cni.tool"]
    common = ["--container-id", "inst1", "--path", f"{bin_dir}:/usr/lib/cni", "--cache-dir", str(tmp_path / "cache"),
              "--args", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"]
    env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    add = node.exec([*tool, "add", str(generated), pod.path, *common], env=env, check=False)
    assert add.returncode == 0, add.stdout.decode() + add.stderr.decode()
    assert pod.addresses("eth0") == ["10.33.0.2/24"]
    delete = node.exec([*tool, "del", str(generated), pod.path, *common], env=env, check=False)
    assert delete.returncode == 0, delete.stdout.decode()
    assert set(pod.links()) == {"lo"}

    out = run([str(VENV_BIN / "metaplug"), "uninstall", "--cni-conf-dir", str(conf_dir)]).stdout.decode()
    # the conflist was edited after install (stateDir above), so uninstall keeps it and says so; the binary goes
    assert "00-metaplug.conflist" in out
    assert sorted(p.name for p in conf_dir.iterdir()) == ["00-metaplug.conflist", "10-podnet.conflist"]
    assert not (bin_dir / "metaplug").exists()


def test_install_as_multus_replaces_multus(node: Netns, pod: Netns, tmp_path: Path) -> None:
    """`metaplug install --name multus` (issue 10.4): the executable goes in as `multus`, the conflist says
    `"type": "multus"`, and Multus's own conf is never taken for the cluster network; a runtime then runs metaplug."""
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "00-multus.conf").write_text(json.dumps({  # what Multus left behind: must not be wrapped
        "cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus", "kubeconfig": "/nowhere"}))
    cluster = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "mpinst1", "isGateway": True,
         "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "ranges": [[{"subnet": "10.34.0.0/24"}]]}}]}
    (conf_dir / "10-podnet.conflist").write_text(json.dumps(cluster))
    run([str(VENV_BIN / "metaplug"), "install", "--mode", "thin", "--name", "multus", "--cni-bin-dir", str(bin_dir),
         "--cni-conf-dir", str(conf_dir), "--source-bin", str(VENV_BIN / "metaplug"), "--no-kubeconfig"])
    assert sorted(p.name for p in bin_dir.iterdir()) == ["multus"]
    generated = conf_dir / "00-metaplug.conflist"
    conflist = json.loads(generated.read_text())
    assert conflist["plugins"][0]["type"] == "multus"
    assert conflist["plugins"][0]["clusterNetwork"] == str(conf_dir / "10-podnet.conflist")
    conflist["plugins"][0]["stateDir"] = str(tmp_path / "state")
    generated.write_text(json.dumps(conflist))

    tool = [str(VENV_BIN / "python"), "-m", "metaplug.cni.tool"]
    common = ["--container-id", "inst2", "--path", f"{bin_dir}:/usr/lib/cni",
              "--args", "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"]
    env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    add = node.exec([*tool, "add", str(generated), pod.path, *common], env=env, check=False)
    assert add.returncode == 0, add.stdout.decode() + add.stderr.decode()
    assert pod.addresses("eth0") == ["10.34.0.2/24"]
    assert node.exec([*tool, "del", str(generated), pod.path, *common], env=env, check=False).returncode == 0
    assert set(pod.links()) == {"lo"} and not list((tmp_path / "state").iterdir())
    run([str(VENV_BIN / "metaplug"), "uninstall", "--cni-conf-dir", str(conf_dir)])
    assert not (bin_dir / "multus").exists()
