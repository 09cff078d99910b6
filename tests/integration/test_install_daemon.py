"""`metaplug install` in daemon mode on a "host" that has no Python (issue 11, item 3).

The host is a private mount namespace (`unshare -m --propagation private`) in which the venv, every Python of this
machine (pyenv, /usr/bin/python3*, /usr/lib/python3*, ...) are hidden under empty bind mounts, with a temp host tree
for the CNI bin and conf dirs. `metaplug daemon` runs outside it (as in its DaemonSet container) in the test's node
network namespace; install (also Python, as in the image) copies the static shim and writes the conflist once the
daemon is ready. Then a runtime that is NOT Python (runtime.sh, /bin/sh) drives ADD, CHECK and DEL through the
installed shim from inside the hidden-Python namespace, with the reference plugins, and uninstall restores the host
tree exactly. The mounts vanish with each `unshare` process: nothing to clean up on the real host.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from metaplug import install as inst
from tests.helpers.metaplug_env import REFERENCE, MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns, metaplug_env

SHIM = VENV_BIN / "metaplug-shim"
pytestmark = pytest.mark.skipif(not SHIM.exists(), reason="metaplug-shim not built (bash .ci/setup)")
POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# A container runtime in /bin/sh: finds the conflist plugin's `type` in CNI_PATH as libcni does and execs it with
# the CNI_* environment and the prepared plugin entry on stdin.
RUNTIME_SH = """\
#!/bin/sh
# usage: runtime.sh VERB TYPE STDIN-FILE   (CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_PATH, CNI_ARGS set)
verb=$1 type=$2 conf=$3
exe=
old_ifs=$IFS
IFS=:
for dir in $CNI_PATH; do
  if [ -x "$dir/$type" ]; then exe=$dir/$type; break; fi
done
IFS=$old_ifs
if [ -z "$exe" ]; then echo "runtime.sh: no $type in $CNI_PATH" >&2; exit 127; fi
CNI_COMMAND=$verb
export CNI_COMMAND CNI_CONTAINERID CNI_NETNS CNI_IFNAME CNI_PATH CNI_ARGS
exec "$exe" < "$conf"
"""


def python_locations() -> tuple[list[str], list[str]]:
    """(directories, files) holding this machine's Pythons and the venv."""
    dirs = {str(VENV_BIN.parent), sys.base_prefix, sys.prefix, os.path.expanduser("~/.pyenv")}
    for pattern in ("/usr/lib/python3*", "/usr/local/lib/python3*", "/usr/lib64/python3*"):
        dirs.update(glob.glob(pattern))
    files = set()
    for pattern in ("/usr/bin/python*", "/usr/local/bin/python*", "/bin/python*"):
        for path in glob.glob(pattern):
            real = os.path.realpath(path)
            if os.path.isfile(real):
                files.add(real)
    found = sorted(os.path.realpath(d) for d in dirs if os.path.isdir(d))
    outermost = [d for d in found if not any(d.startswith(other + "/") for other in found)]
    return outermost, sorted(f for f in files if not any(f.startswith(d + "/") for d in outermost))


class NoPythonHost:
    """The host tree (CNI bin and conf dirs) and the way to run a command on a host that has no Python."""

    def __init__(self, tmp: Path, node: Netns) -> None:
        self.node = node
        self.root = tmp / "host"
        self.bin = self.root / "opt/cni/bin"
        self.conf = self.root / "etc/cni/net.d"
        self.empty_dir = tmp / "empty-dir"
        self.empty_file = tmp / "empty-file"
        for d in (self.bin, self.conf, self.empty_dir):
            d.mkdir(parents=True)
        self.empty_file.write_bytes(b"")
        self.runtime = tmp / "runtime.sh"
        self.runtime.write_text(RUNTIME_SH)
        self.runtime.chmod(0o755)

    def run(self, argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """`argv` in the node network namespace, in a private mount namespace where no Python can be found."""
        dirs, files = python_locations()
        hide = [f"mount --bind {shlex.quote(str(self.empty_dir))} {shlex.quote(d)}" for d in dirs]
        hide += [f"mount --bind {shlex.quote(str(self.empty_file))} {shlex.quote(f)}" for f in files]
        script = "set -e; " + "; ".join(hide) + '; exec "$@"'
        return subprocess.run(["ip", "netns", "exec", self.node.name, "unshare", "-m", "--propagation", "private",
                               "/bin/sh", "-c", script, "sh", *argv],
                              capture_output=True, env=env, timeout=timeout)

    def cni(self, verb: str, plugin_type: str, stdin: dict[str, Any], pod: Netns,
            container_id: str = "nopy1") -> subprocess.CompletedProcess[bytes]:
        """One CNI call made by runtime.sh on the host."""
        stdin_file = self.runtime.parent / f"stdin-{verb}.json"
        stdin_file.write_text(json.dumps(stdin))
        env = {"PATH": HOST_PATH, "CNI_CONTAINERID": container_id, "CNI_NETNS": pod.path, "CNI_IFNAME": "eth0",
               "CNI_PATH": str(self.bin), "CNI_ARGS": POD_ARGS}
        return self.run([str(self.runtime), verb, plugin_type, str(stdin_file)], env)

    def listing(self) -> dict[str, tuple[Any, ...]]:
        """Every entry of the host tree: its mode and, for a file, inode, mtime and content hash (a symlink: its
        target)."""
        out: dict[str, tuple[Any, ...]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    info: tuple[Any, ...] = (st.st_mode, os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
                    info = (st.st_mode, st.st_ino, st.st_mtime_ns, digest)
                else:
                    info = (st.st_mode,)
                out[os.path.relpath(path, self.root)] = info
        return out


@pytest.fixture
def host(world: MetaplugWorld, tmp_path: Path) -> NoPythonHost:
    """A host with the cluster network (bridge + host-local) configured and the reference plugins installed."""
    h = NoPythonHost(tmp_path, world.node)
    for plugin in ("bridge", "host-local", "macvlan", "loopback"):
        (h.bin / plugin).symlink_to(f"{REFERENCE}/{plugin}")
    cluster = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "mpnopy0", "isGateway": True, "isDefaultGateway": True,
         "ipam": {"type": "host-local", "dataDir": str(world.ipam_dir), "ranges": [[{"subnet": "10.33.0.0/24"}]]}},
    ]}
    (h.conf / "10-podnet.conflist").write_text(json.dumps(cluster))
    return h


def start_daemon(world: MetaplugWorld, host: NoPythonHost, **config: Any) -> Any:
    """The daemon as its DaemonSet container runs it: delegates from the host's CNI bin dir, NADs from confDir."""
    return world.start_daemon(binDir=str(host.bin), confDir=str(world.conf_dir), **config)


def install_cmd(world: MetaplugWorld, host: NoPythonHost, *extra: str) -> list[str]:
    assert world.daemon is not None
    return [str(VENV_BIN / "metaplug"), "install", "--daemon-config", str(world.daemon.dir / "daemon.json"),
            "--shim", str(SHIM), "--cni-bin-dir", str(host.bin), "--cni-conf-dir", str(host.conf),
            "--no-kubeconfig", *extra]


def run_install(world: MetaplugWorld, host: NoPythonHost, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return world.node.exec(install_cmd(world, host, *extra), env=metaplug_env(), check=False, timeout=120)


def plugin_stdin(conflist: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What libcni sends a conflist's plugin: its entry with the list's cniVersion and name injected."""
    (entry,) = conflist["plugins"]
    return {**entry, "cniVersion": conflist["cniVersion"], "name": conflist["name"], **extra}


def test_the_installed_shim_serves_add_check_del_on_a_host_without_python(world: MetaplugWorld, host: NoPythonHost,
                                                                        pod: Netns, tmp_path: Path) -> None:
    world.add_nad("macnet", world.macvlan_hostlocal_net("macnet", "10.34.0.0/24"))
    daemon = start_daemon(world, host)
    daemon.wait_ready()
    before = host.listing()

    done = run_install(world, host, "--wait", "30")
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    installed = host.bin / inst.SHIM_NAME
    assert installed.read_bytes() == SHIM.read_bytes() and stat.S_IMODE(installed.stat().st_mode) == 0o755
    conflist = json.loads((host.conf / inst.CONFLIST_NAME).read_text())
    (entry,) = conflist["plugins"]
    assert entry["type"] == inst.SHIM_NAME
    assert entry["socketPath"] == str(daemon.socket_path) and entry["spoolDir"] == str(daemon.spool_dir)
    assert entry["clusterNetwork"] == str(host.conf / "10-podnet.conflist")
    assert run_install(world, host).stdout.decode().count("unchanged") == 2  # idempotent: shim and conflist

    # The host really has no Python: the venv is empty, no python3, and a copy of the thin console script (what
    # install used to put on the host, its shebang names the venv's python) cannot run there.
    thin_copy = tmp_path / "thin" / "metaplug"
    thin_copy.parent.mkdir()
    thin_copy.write_bytes((VENV_BIN / "metaplug").read_bytes())
    thin_copy.chmod(0o755)
    probe = host.run(["/bin/sh", "-c", f"ls -A {VENV_BIN.parent}; command -v python3 || echo no-python3; "
                                       f"{thin_copy} --help"], {"PATH": HOST_PATH})
    assert probe.returncode == 127 and probe.stdout.decode() == "no-python3\n", probe
    assert str(thin_copy).encode() in probe.stderr
    assert subprocess.run([str(thin_copy), "--help"], capture_output=True).returncode == 0  # it runs here

    annotations = {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": "macnet"}}
    add = host.cni("ADD", entry["type"], plugin_stdin(conflist, runtimeConfig=annotations), pod)
    assert add.returncode == 0, add.stdout.decode() + add.stderr.decode()
    result = json.loads(add.stdout)
    assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == ["eth0", "net1"]
    assert pod.addresses("eth0") == ["10.33.0.2/24"] and pod.addresses("net1") == ["10.34.0.2/24"]

    after_add = plugin_stdin(conflist, runtimeConfig=annotations, prevResult=result)
    check = host.cni("CHECK", entry["type"], after_add, pod)
    assert check.returncode == 0 and check.stdout == b"", check.stdout.decode() + check.stderr.decode()
    delete = host.cni("DEL", entry["type"], after_add, pod)
    assert delete.returncode == 0 and delete.stdout == b"", delete.stdout.decode() + delete.stderr.decode()
    assert set(pod.links()) == {"lo"}
    assert world.reservations() == [] and world.state_files() == []

    assert daemon.stop() == 0
    gone = world.node.exec([str(VENV_BIN / "metaplug"), "uninstall", "--cni-conf-dir", str(host.conf),
                            "--daemon-config", str(daemon.dir / "daemon.json")], env=metaplug_env(), check=False)
    assert gone.returncode == 0, gone.stderr.decode()
    assert host.listing() == before  # modes, inodes, mtimes and contents as before install
    # and the daemon's own directories, empty now, are gone too
    assert not daemon.spool_dir.exists() and not daemon.socket_path.parent.exists()
    assert not world.state_dir.exists()


def test_install_waits_for_readiness_and_refuses_when_the_daemon_is_not_ready(world: MetaplugWorld,
                                                                            host: NoPythonHost) -> None:
    """No conflist before /readyz says 200 (no window in which pods start without their networks): a daemon
    whose cluster network is not ready makes install exit non-zero within --wait with nothing written; once the
    daemon gets ready, a waiting install proceeds."""
    cluster = json.loads((host.conf / "10-podnet.conflist").read_text())
    cluster["plugins"][0]["type"] = "late-bridge"  # not in the bin dir yet: STATUS fails, the daemon is not ready
    daemon = start_daemon(world, host, delegates=[cluster])
    before = host.listing()

    started = time.monotonic()
    refused = run_install(world, host, "--wait", "2")
    assert refused.returncode == 1 and time.monotonic() - started < 10
    err = refused.stderr.decode()
    assert "not ready" in err and "late-bridge" in err and daemon.http("/readyz")[0] == 503, err
    assert host.listing() == before

    waiting = subprocess.Popen(["ip", "netns", "exec", world.node.name, *install_cmd(world, host, "--wait", "60")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=metaplug_env())
    try:
        time.sleep(2.5)
        assert waiting.poll() is None and host.listing() == before  # still waiting, still nothing written
        (host.bin / "late-bridge").symlink_to(f"{REFERENCE}/bridge")
        _, err_bytes = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err_bytes.decode()
    assert daemon.http("/readyz")[0] == 200
    assert (host.conf / inst.CONFLIST_NAME).exists() and (host.bin / inst.SHIM_NAME).exists()


def test_install_refuses_without_a_daemon(world: MetaplugWorld, host: NoPythonHost) -> None:
    start_daemon(world, host)
    assert world.daemon is not None
    world.daemon.stop()
    before = host.listing()
    refused = run_install(world, host, "--wait", "1")
    assert refused.returncode == 1 and "not ready" in refused.stderr.decode(), refused.stderr.decode()
    assert host.listing() == before


def test_install_refuses_executables_the_host_cannot_run(world: MetaplugWorld, host: NoPythonHost,
                                                         tmp_path: Path) -> None:
    """A console script whose interpreter the host lacks (thin mode, --host-root seen without the venv), a
    dynamically linked "shim" (daemon mode) and a missing shim: exit 1, a message naming the problem, nothing
    written."""
    daemon = start_daemon(world, host)
    daemon.wait_ready()
    before = host.listing()
    bare_root = tmp_path / "bare-root"  # a host root with a /bin/sh but no venv and no Python
    (bare_root / "bin").mkdir(parents=True)
    (bare_root / "bin/sh").symlink_to("/bin/sh")
    thin = world.node.exec([str(VENV_BIN / "metaplug"), "install", "--mode", "thin", "--host-root", str(bare_root),
                            "--source-bin", str(VENV_BIN / "metaplug"), "--cni-bin-dir", str(host.bin),
                            "--cni-conf-dir", str(host.conf), "--no-kubeconfig"], env=metaplug_env(), check=False)
    assert thin.returncode == 1
    assert f"interpreter {VENV_BIN / 'python'} does not exist on the host" in thin.stderr.decode(), thin.stderr

    dynamic = tmp_path / "dynamic" / inst.SHIM_NAME
    dynamic.parent.mkdir()
    dynamic.write_bytes(Path("/bin/true").read_bytes())
    dynamic.chmod(0o755)
    for shim, message in ((dynamic, "dynamically linked"), (tmp_path / "none" / inst.SHIM_NAME,
                                                            "No such file or directory")):
        cmd = install_cmd(world, host)
        cmd[cmd.index("--shim") + 1] = str(shim)
        refused = world.node.exec(cmd, env=metaplug_env(), check=False)
        assert refused.returncode == 1 and message in refused.stderr.decode(), refused.stderr.decode()
    assert host.listing() == before


def test_installed_as_multus_the_shim_serves_multus_configurations(world: MetaplugWorld, host: NoPythonHost,
                                                                  pod: Netns) -> None:
    """`--name multus` in daemon mode: the static shim as /opt/cni/bin/multus, `"type": "multus"` in the conflist,
    and a call for that type reaches the daemon (from the host without Python)."""
    start_daemon(world, host).wait_ready()
    done = run_install(world, host, "--name", "multus")
    assert done.returncode == 0, done.stderr.decode()
    assert (host.bin / "multus").read_bytes() == SHIM.read_bytes() and not (host.bin / inst.SHIM_NAME).exists()
    conflist = json.loads((host.conf / inst.CONFLIST_NAME).read_text())
    assert conflist["plugins"][0]["type"] == "multus"
    add = host.cni("ADD", "multus", plugin_stdin(conflist), pod, container_id="asmultus")
    assert add.returncode == 0, add.stdout.decode() + add.stderr.decode()
    assert pod.addresses("eth0") == ["10.33.0.2/24"]
    delete = host.cni("DEL", "multus", plugin_stdin(conflist, prevResult=json.loads(add.stdout)), pod,
                      container_id="asmultus")
    assert delete.returncode == 0 and set(pod.links()) == {"lo"}, delete.stdout.decode()
