"""`metaplug install` / `uninstall` in temp dirs: what it writes, idempotence, --dry-run, exact uninstall, and a
kubeconfig that really works against the API simulator."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from metaplug import install as inst
from metaplug.k8s.client import KubeClient
from metaplug.k8s.kubeconfig import load_kubeconfig
from tests.helpers.kube_sim import KubeSim

ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
CA = b"-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n"
CALICO = {"cniVersion": "0.3.1", "name": "k8s-pod-network", "plugins": [
    {"type": "calico", "ipam": {"type": "calico-ipam"}},
    {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
    {"type": "bandwidth", "capabilities": {"bandwidth": True, "customCap": True, "off": False}},
]}
OTHER = {"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "bridge"}]}


class Node:
    """A fake node: a host CNI conf dir with two conflists, a bin dir, a service account, executables to install."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "etc/cni/net.d"
        self.bin = root / "opt/cni/bin"
        self.sa = root / "sa"
        self.src = root / "image"
        for d in (self.conf, self.bin, self.sa, self.src):
            d.mkdir(parents=True)
        (self.conf / "10-calico.conflist").write_text(json.dumps(CALICO))
        (self.conf / "20-other.conflist").write_text(json.dumps(OTHER))
        (self.sa / "token").write_text("sa-token-1")
        (self.sa / "ca.crt").write_bytes(CA)
        for name in ("metaplug", "mp-bridge"):
            (self.src / name).write_bytes(b"#!/bin/sh\necho " + name.encode() + b"\n")
            (self.src / name).chmod(0o755)
        self.kubeconfig = self.conf / "metaplug.d" / "metaplug.kubeconfig"

    def run(self, *, dry_run: bool = False, env: dict[str, str] | None = None, **kw: Any) -> list[str]:
        args: dict[str, Any] = dict(cni_bin_dir=str(self.bin), cni_conf_dir=str(self.conf),
                                    source_bin=[str(self.src / "metaplug"), str(self.src / "mp-bridge")],
                                    kubeconfig_out=str(self.kubeconfig), sa_dir=str(self.sa), dry_run=dry_run,
                                    kubernetes_env=ENV if env is None else env)
        args.update(kw)
        return inst.install(**args)

    def snapshot(self, dir_mtimes: bool = True) -> dict[str, tuple[int, int, int, bytes]]:
        """Every file and dir under root: (inode, mtime_ns, mode, content); a dir's mtime only if `dir_mtimes`."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                is_file = stat.S_ISREG(st.st_mode)
                data = Path(p).read_bytes() if is_file else b""
                mtime = st.st_mtime_ns if is_file or dir_mtimes else 0
                out[os.path.relpath(p, self.root)] = (st.st_ino, mtime, st.st_mode, data)
        return out

    def conflist(self) -> dict[str, Any]:
        return json.loads((self.conf / inst.CONFLIST_NAME).read_text())


@pytest.fixture
def node(tmp_path: Path) -> Node:  # shadows the netns `node` fixture on purpose: no namespaces needed here
    return Node(tmp_path)


def test_install_writes_binaries_kubeconfig_and_conflist(node: Node) -> None:
    actions = node.run()
    assert f"wrote {node.bin / 'metaplug'}" in actions and f"wrote {node.conf / inst.CONFLIST_NAME}" in actions
    for name in ("metaplug", "mp-bridge"):
        dst = node.bin / name
        assert dst.read_bytes() == (node.src / name).read_bytes()
        assert stat.S_IMODE(dst.stat().st_mode) == 0o755

    assert stat.S_IMODE(node.kubeconfig.stat().st_mode) == 0o600  # it holds a token
    creds = load_kubeconfig(str(node.kubeconfig))
    assert creds.server == "https://10.96.0.1:443" and creds.ca_data == CA and creds.bearer_token() == "sa-token-1"
    json.loads(node.kubeconfig.read_text())  # JSON (valid YAML): loading it needs no PyYAML

    conf = node.conflist()
    assert conf["cniVersion"] == CALICO["cniVersion"] and conf["name"] == "metaplug"
    (plugin,) = conf["plugins"]
    assert plugin["type"] == "metaplug"
    assert plugin["clusterNetwork"] == str(node.conf / "10-calico.conflist")  # the alphabetically first (R24)
    assert plugin["kubeconfig"] == str(node.kubeconfig)
    # duty 34: the union of the wrapped plugins' capabilities (true ones only) and metaplug's own.
    assert set(plugin["capabilities"]) == {"customCap", *inst.METAPLUG_CAPABILITIES}
    assert all(v is True for v in plugin["capabilities"].values())


def test_the_runtime_sees_metaplug_first_and_nothing_else_new(node: Node) -> None:
    """libcni loads every .conf/.conflist/.json of the dir, hidden or not, sorted: after install the first is ours
    and no other file we wrote there would be taken for a network configuration."""
    before = {p.name for p in node.conf.iterdir()}
    node.run()
    new = {p.name for p in node.conf.iterdir()} - before
    confs = sorted(p.name for p in node.conf.iterdir() if p.is_file() and p.suffix in inst.CONF_EXTENSIONS)
    assert confs[0] == inst.CONFLIST_NAME
    assert {n for n in new if n.endswith(inst.CONF_EXTENSIONS)} == {inst.CONFLIST_NAME}


def test_install_is_idempotent(node: Node) -> None:
    node.run()
    before = node.snapshot()
    actions = node.run()
    assert all(a.startswith("unchanged ") for a in actions), actions
    assert node.snapshot() == before  # not even rewritten with the same bytes


def test_dry_run_writes_nothing(node: Node) -> None:
    before = node.snapshot()
    actions = node.run(dry_run=True)
    assert node.snapshot() == before
    assert any(a.startswith(f"would write {node.conf / inst.CONFLIST_NAME}") and '"clusterNetwork"' in a
               for a in actions)
    assert f"would create directory {node.kubeconfig.parent}" in actions
    assert not any("sa-token-1" in a for a in actions)  # the token is not printed


def test_uninstall_removes_exactly_what_install_wrote(node: Node) -> None:
    before = node.snapshot(dir_mtimes=False)
    node.run()
    node.run()
    assert inst.uninstall(cni_conf_dir=str(node.conf), dry_run=True)[0].startswith("would remove")
    actions = inst.uninstall(cni_conf_dir=str(node.conf))
    # The wrapped conflists, the SA and the sources stay; the directory install made is gone.
    assert node.snapshot(dir_mtimes=False) == before
    assert actions[0] == f"removed {node.conf / inst.CONFLIST_NAME}"  # the runtime falls back first
    assert inst.uninstall(cni_conf_dir=str(node.conf))[0].startswith("nothing to uninstall")


def test_uninstall_keeps_a_file_changed_since_install(node: Node) -> None:
    node.run()
    (node.bin / "mp-bridge").write_bytes(b"someone else's\n")
    actions = inst.uninstall(cni_conf_dir=str(node.conf))
    assert any(a.startswith(f"kept {node.bin / 'mp-bridge'}") for a in actions)
    assert (node.bin / "mp-bridge").read_bytes() == b"someone else's\n"
    assert not (node.bin / "metaplug").exists() and not (node.conf / inst.CONFLIST_NAME).exists()


def test_token_rotation_rewrites_only_the_kubeconfig(node: Node) -> None:
    node.run()
    (node.sa / "token").write_text("sa-token-2")
    actions = node.run()
    assert [a for a in actions if not a.startswith("unchanged")] == [
        f"recorded the installed files in {node.conf / inst.MANIFEST_NAME}", f"wrote {node.kubeconfig}"]
    assert load_kubeconfig(str(node.kubeconfig)).bearer_token() == "sa-token-2"


def test_choice_of_the_cluster_network(node: Node) -> None:
    """The first file skips metaplug's own conflist and any config whose plugin is metaplug; a single-plugin .conf
    counts too, and a new first file is followed on the next run."""
    (node.conf / "01-old-metaplug.conf").write_text(json.dumps({"cniVersion": "1.0.0", "name": "x",
                                                                 "type": "metaplug"}))
    node.run()
    assert node.conflist()["plugins"][0]["clusterNetwork"] == str(node.conf / "10-calico.conflist")
    single = {"cniVersion": "0.4.0", "name": "flannel", "type": "flannel", "capabilities": {"foo": True}}
    (node.conf / "05-flannel.conf").write_text(json.dumps(single))
    node.run()
    conf = node.conflist()
    assert conf["cniVersion"] == "0.4.0"
    assert conf["plugins"][0]["clusterNetwork"] == str(node.conf / "05-flannel.conf")
    assert "foo" in conf["plugins"][0]["capabilities"] and "customCap" not in conf["plugins"][0]["capabilities"]


def test_errors(node: Node, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(inst.InstallError, match="no CNI network configuration"):
        node.run(cni_conf_dir=str(empty))
    (node.conf / "00-broken.conflist").write_text("{not json")
    with pytest.raises(inst.InstallError, match=r"00-broken\.conflist is not valid JSON"):
        node.run()
    (node.conf / "00-broken.conflist").unlink()
    with pytest.raises(inst.InstallError, match="incomplete service-account"):
        node.run(env={})  # a token and a CA but no KUBERNETES_SERVICE_HOST


def test_without_a_service_account_no_kubeconfig(node: Node, tmp_path: Path) -> None:
    actions = node.run(sa_dir=str(tmp_path / "none"), env={})
    assert any("no kubeconfig written" in a for a in actions)
    assert not node.kubeconfig.exists() and "kubeconfig" not in node.conflist()["plugins"][0]


def test_the_written_kubeconfig_works_against_the_api(node: Node, tmp_path: Path) -> None:
    """End to end: install from a (simulated) pod's service account, then metaplug's client uses the kubeconfig."""
    with KubeSim() as sim:
        sim.add_pod("default", "web")
        env = sim.service_account(tmp_path / "sim-sa")
        node.run(sa_dir=str(tmp_path / "sim-sa"), env=env)
        plugin = node.conflist()["plugins"][0]
        with KubeClient(load_kubeconfig(plugin["kubeconfig"])) as kube:
            assert kube.get_pod("default", "web")["metadata"]["name"] == "web"
        assert sim.requests[0].auth == "token#1"
        ca = load_kubeconfig(plugin["kubeconfig"]).ca_data
        assert ca is not None and base64.b64encode(ca) == base64.b64encode(sim.pki.ca_cert)


def test_command_line(node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    common = ["--mode", "thin", "--cni-bin-dir", str(node.bin), "--cni-conf-dir", str(node.conf),
              "--sa-dir", str(node.sa), "--kubeconfig-out", str(node.kubeconfig),
              "--source-bin", str(node.src / "metaplug")]
    before = node.snapshot(dir_mtimes=False)
    assert inst.main(["install", *common, "--dry-run"]) == 0
    assert "would write" in capsys.readouterr().out and node.snapshot(dir_mtimes=False) == before
    assert inst.main(["install", *common]) == 0
    assert (node.bin / "metaplug").exists() and not (node.bin / "mp-bridge").exists()
    assert inst.main(["uninstall", "--cni-conf-dir", str(node.conf)]) == 0
    assert node.snapshot(dir_mtimes=False) == before
    assert inst.main(["install", *common, "--cni-conf-dir", str(node.root / "nowhere")]) == 1
    assert "no CNI network configuration" in capsys.readouterr().err


def test_a_file_install_replaces_is_put_back_by_uninstall(node: Node) -> None:
    """A binary of the same name that was there before install (another version, someone else's) is kept aside as a
    hard link and restored by uninstall: same inode, mode, mtime and content, as if install had never run."""
    old = node.bin / "metaplug"
    old.write_bytes(b"#!/bin/sh\necho older\n")
    old.chmod(0o700)
    same = node.bin / "mp-bridge"
    same.write_bytes((node.src / "mp-bridge").read_bytes())  # identical to what install brings: never written
    same.chmod(0o755)
    before = node.snapshot(dir_mtimes=False)
    actions = node.run()
    assert f"unchanged {same}" in actions and f"wrote {old}" in actions
    assert old.read_bytes() == (node.src / "metaplug").read_bytes()
    assert not any(p.suffix in inst.CONF_EXTENSIONS for p in node.bin.iterdir())
    assert all(a.startswith("unchanged") for a in node.run())  # the second run keeps the first backup
    actions = inst.uninstall(cni_conf_dir=str(node.conf))
    assert f"restored the original {old}" in actions and f"kept {same}: it was there before install" in actions
    assert node.snapshot(dir_mtimes=False) == before


def test_install_refuses_a_conflist_naming_an_executable_it_does_not_install(node: Node) -> None:
    before = node.snapshot()
    with pytest.raises(inst.InstallError, match="not installing one of that name"):
        node.run(source_bin=[])  # the old behaviour: no metaplug found, conflist written anyway
    with pytest.raises(inst.InstallError, match="not installing one of that name"):
        node.run(name=inst.SHIM_NAME, primary=inst.SHIM_NAME)  # daemon mode without a shim
    console_script = node.root / "venv-bin" / "metaplug"  # what pip makes in the image
    console_script.parent.mkdir()
    console_script.write_bytes(b"#!/opt/image-venv/bin/python\nimport metaplug\n")
    console_script.chmod(0o755)
    before = node.snapshot()
    with pytest.raises(inst.InstallError, match="interpreter /opt/image-venv/bin/python does not exist on the host"):
        node.run(source_bin=[str(console_script)])
    with pytest.raises(inst.InstallError, match="a static executable is required"):
        node.run(static_only=True)
    assert node.snapshot() == before


def test_own_conflists_are_never_wrapped(node: Node) -> None:
    shim_conf = {"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": inst.SHIM_NAME}]}
    (node.conf / "01-shim.conflist").write_text(json.dumps(shim_conf))
    assert inst.find_cluster_network(str(node.conf)) == str(node.conf / "10-calico.conflist")


def test_uninstall_keeps_the_daemon_dirs_while_they_hold_journals_or_spooled_dels(tmp_path: Path) -> None:
    state, run_dir = tmp_path / "state", tmp_path / "run"
    (state / "c1").mkdir(parents=True)
    (state / "c1" / "mp-eth0.json").write_text("{}")
    (run_dir / "spool").mkdir(parents=True)
    (run_dir / "spool" / "1-1.del").write_bytes(b"MPQ1")
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"socketPath": str(run_dir / "mp.sock"), "stateDir": str(state)}))
    actions = inst.remove_daemon_dirs(str(config))
    assert actions[0].startswith(f"warning: 1 journals in {state}")
    assert f"kept directory {run_dir / 'spool'}: not empty (1-1.del)" in actions
    assert (state / "c1" / "mp-eth0.json").exists() and (run_dir / "spool" / "1-1.del").exists()
    (state / "c1" / "mp-eth0.json").unlink()
    (state / "c1").rmdir()
    (run_dir / "spool" / "1-1.del").unlink()
    assert inst.remove_daemon_dirs(str(config), dry_run=True)[0] == f"would remove directory {run_dir / 'spool'}"
    assert inst.remove_daemon_dirs(str(config)) == [f"removed directory {d}" for d in (run_dir / "spool", run_dir,
                                                                                        state)]
    assert not run_dir.exists() and not state.exists()


def test_an_install_interrupted_part_way_is_undone_by_uninstall(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest is written before any file: install failing (or killed) after replacing a binary but before the
    conflist still leaves a record from which uninstall restores the node."""
    old = node.bin / "metaplug"
    old.write_bytes(b"#!/bin/sh\necho older\n")
    old.chmod(0o755)
    before = node.snapshot(dir_mtimes=False)
    real_write = inst._write_atomic

    def write_then_fail(path: str, content: bytes, mode: int) -> None:
        if path.endswith(inst.CONFLIST_NAME):
            raise OSError(28, "No space left on device")
        real_write(path, content, mode)

    monkeypatch.setattr(inst, "_write_atomic", write_then_fail)
    with pytest.raises(OSError):
        node.run()
    assert old.read_bytes() == (node.src / "metaplug").read_bytes() and node.kubeconfig.exists()
    monkeypatch.setattr(inst, "_write_atomic", real_write)
    inst.uninstall(cni_conf_dir=str(node.conf))
    assert node.snapshot(dir_mtimes=False) == before
