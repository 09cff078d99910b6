"""The DaemonSet image for real (issue 14): built by scripts/build-image from the Containerfile, its containers run
with Podman exactly as configs/kubernetes says (commands, env, mounts, security contexts, host network and PID
namespaces: all read from the YAML, so the manifests cannot drift from what ran here).

The "node" is a private mount namespace (a holder process, `NodeHost`) in which a temp host tree is mounted at the
DaemonSet's hostPath paths (/opt/cni/bin, /etc/cni/net.d, /var/lib/cni, /run/metaplug), with private /run,
/dev/shm, /var/lib, /var/tmp and /opt, while /run/netns stays the machine's (slave propagation: namespaces made
after the daemon started are seen inside it, mountPropagation HostToContainer). Every container's network namespace
is the test's node namespace (hostNetwork), never the machine's. The Kubernetes API is the simulator, listening in
that node namespace. The install container puts the static shim and the conflist into the host tree; a libcni-style
runtime on the host (metaplug.cni.tool, outside every container) drives ADD, CHECK and DEL of a pod with three
attachments through the installed shim to the daemon container; the uninstall DaemonSet's container leaves the host
tree as it was before install. Containers, the image store, the mounts and the namespaces are removed even when the
test fails (by container ID and process ID).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from metaplug import __version__
from metaplug import install as inst
from metaplug.executable import host_problem
from metaplug.netns import run_in_netns
from tests.helpers.kube_sim import KubeSim
from tests.helpers.netns import REPO, VENV_BIN, Netns, NetnsFactory, is_root

CONFIGS = REPO / "configs" / "kubernetes"
BUILD_SCRIPT = REPO / "scripts" / "build-image"
REFERENCE = Path("/usr/lib/cni")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NODE_NAME = "node-1"
# the DaemonSet's netns volumes: the machine's own /run/netns, where the test's pod namespaces are pinned
NETNS_DIRS = ("/run/netns", "/var/run/netns")
NEEDED = ("podman", "runc", "mmdebstrap", "unshare", "nsenter")

pytestmark = pytest.mark.skipif(
    not is_root() or any(shutil.which(t) is None for t in NEEDED) or not (REFERENCE / "bridge").exists(),
    reason=f"needs root, {', '.join(NEEDED)} and the reference CNI plugins (bash .ci/setup installs them)")


# ---------------------------------------------------------------- the manifests


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


class Manifests(NamedTuple):
    daemonset: dict[str, Any]
    uninstall: dict[str, Any]
    configmaps: dict[str, dict[str, str]]  # name -> data


def manifests() -> Manifests:
    docs = [d for p in sorted(CONFIGS.glob("*.yaml")) for d in yaml_docs(p)]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (un,) = [d for d in yaml_docs(CONFIGS / "uninstall" / "daemonset.yaml") if d["kind"] == "DaemonSet"]
    cms = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    return Manifests(ds, un, cms)


def pod_spec(ds: dict[str, Any]) -> dict[str, Any]:
    return dict(ds["spec"]["template"]["spec"])


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return dict(found)


def host_paths(spec: dict[str, Any]) -> list[str]:
    return [v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v]


# ---------------------------------------------------------------- the image


class BuiltImage(NamedTuple):
    tag: str
    size: int
    archive: Path
    seconds: float


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """scripts/build-image, once per test session (about 2-3 minutes here: two mmdebstrap bases, a vfs build)."""
    out = tmp_path_factory.mktemp("image") / "metaplug.oci.tar"
    started = time.monotonic()
    proc = subprocess.run([str(BUILD_SCRIPT), "--output", str(out), "--python", str(VENV_BIN / "python")],
                          capture_output=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()[-6000:]
    info = dict(line.split("=", 1) for line in proc.stdout.decode().split())
    return BuiltImage(info["image"], int(info["size"]), Path(info["archive"]), time.monotonic() - started)


# ---------------------------------------------------------------- the node


HOLDER = r"""
set -e
root=$1 keep=$2; shift 2
mount --make-rslave /
# the machine's /run/netns, kept across the private /run (a slave of it: later namespaces appear here too)
mkdir -p "$keep/netns" && mount --rbind /run/netns "$keep/netns"
for d in /run /dev/shm /var/lib /var/tmp /opt; do mount -t tmpfs -o mode=0755 none "$d"; done
mkdir /run/netns && mount --rbind "$keep/netns" /run/netns
for p in "$@"; do
  case $p in
    /run/*|/var/lib/*|/var/tmp/*|/opt/*) mkdir -p "$p" ;;  # on the private tmpfs above
    *) [ -d "$p" ] || { echo "no mount point $p on this machine" >&2; exit 1; } ;;
  esac
  mount --bind "$root$p" "$p"
done
echo ready
exec sleep 86400
"""


class NodeHost:
    """The node's mount namespace (see the module docstring) and a Podman whose storage is in a temp dir."""

    def __init__(self, tmp: Path, node: Netns, tree_paths: Sequence[str]) -> None:
        self.node = node
        self.root = tmp / "host"
        self.tree_paths = list(tree_paths)
        self.dir = Path(tempfile.mkdtemp(prefix="mpt-img-"))  # short: Podman refuses a long runroot
        self.holder: subprocess.Popen[bytes] | None = None
        self.containers: list[str] = []
        # runc (crun cannot use this machine's hybrid cgroups, and Podman wants cgroups for a host PID namespace)
        # puts every container under this cgroup, removed in close()
        self.cgroup = f"/{self.dir.name}"
        self.runtime = ["--runtime", "runc", "--cgroup-parent", self.cgroup]
        self.cgroups_left: list[str] = []
        (self.dir / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'  # the defaults are above this machine's
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n')

    def host(self, path: str) -> Path:
        """Where the host tree holds the node's `path`."""
        return self.root / path.lstrip("/")

    def start(self) -> NodeHost:
        for p in self.tree_paths:
            self.host(p).mkdir(parents=True, exist_ok=True)
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "slave", "sh", "-c", HOLDER, "sh", str(self.root),
             str(self.dir / "keep"), *self.tree_paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline()
        if line != b"ready\n":
            self.holder.wait(10)
            err = self.holder.stderr.read().decode() if self.holder.stderr else ""
            raise AssertionError(f"node mount namespace: {err}")
        return self

    def run(self, argv: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """`argv` on the node: in its mount namespace and in the test's node network namespace."""
        assert self.holder is not None
        proc = subprocess.run(["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", f"--net={self.node.path}",
                               "--", *argv], capture_output=True, timeout=timeout,
                              env=env or {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}"
                                 f"{proc.stdout.decode()}")
        return proc

    def podman(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        d = self.dir
        proc = self.run(["podman", "--root", str(d / "store"), "--runroot", str(d / "run"), "--tmpdir",
                         str(d / "tmp"), "--storage-driver", "vfs", *args], timeout=timeout, check=check,
                        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERS_CONF": str(d / "containers.conf"),
                             "TMPDIR": str(d / "tmp")})
        return proc.stdout.decode() + (proc.stderr.decode() if proc.returncode else "")

    def logs(self, cid: str) -> str:
        """A container's stdout and stderr."""
        proc = self.run(["podman", "--root", str(self.dir / "store"), "--runroot", str(self.dir / "run"),
                         "--storage-driver", "vfs", "logs", cid],
                        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                             "CONTAINERS_CONF": str(self.dir / "containers.conf")})
        return proc.stdout.decode() + proc.stderr.decode()

    def listing(self, skip: Sequence[str] = ()) -> dict[str, tuple[Any, ...]]:
        """Every entry of the host tree (mode, owner; a file's inode, mtime and content hash; a symlink's target),
        except those under the `skip` paths of the node."""
        out: dict[str, tuple[Any, ...]] = {}
        skipped = [self.host(p) for p in skip]
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [n for n in dirnames if Path(dirpath, n) not in skipped]
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                info: tuple[Any, ...] = (st.st_mode, st.st_uid, st.st_gid)
                if stat.S_ISLNK(st.st_mode):
                    info += (os.readlink(path),)
                elif stat.S_ISREG(st.st_mode):
                    info += (st.st_ino, st.st_mtime_ns, hashlib.sha256(Path(path).read_bytes()).hexdigest())
                out["/" + os.path.relpath(path, self.root)] = info
        return out

    def close(self) -> None:
        """Every container by ID, then every process left in the node's mount namespace by PID (conmon), then the
        holder: the namespace and its mounts go with the last of them. The store goes with the temp dir."""
        try:
            for cid in reversed(self.containers):
                self.podman("rm", "-f", "-t", "0", cid, timeout=120, check=False)
        finally:
            if self.holder is not None:
                mnt = os.readlink(f"/proc/{self.holder.pid}/ns/mnt") if self.holder.poll() is None else None
                for pid in _pids_in_mount_ns(mnt, exclude=self.holder.pid) if mnt else []:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                if self.holder.poll() is None:
                    self.holder.kill()
                self.holder.wait(30)
            self.cgroups_left = _remove_cgroups(self.cgroup)
            shutil.rmtree(self.dir, ignore_errors=True)


def _remove_cgroups(name: str, timeout: float = 10) -> list[str]:
    """The cgroup `name` (runc and conmon made it and its children) in every hierarchy, innermost first; a process
    still in it (a conmon on its way out) is killed by PID. Returns what could not be removed within `timeout`."""
    assert name.startswith("/mpt-img-")
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for top in [Path("/sys/fs/cgroup"), *Path("/sys/fs/cgroup").iterdir()]:
            tree = top / name.lstrip("/")
            if not tree.is_dir():
                continue
            for dirpath, _, _ in sorted(os.walk(tree), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError, ValueError):
                    for pid in Path(dirpath, "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
                try:
                    os.rmdir(dirpath)
                except OSError:
                    left.append(dirpath)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _pids_in_mount_ns(mnt: str, exclude: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (exclude, os.getpid()):
            continue
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{entry}/ns/mnt") == mnt:
                out.append(int(entry))
    return out


# ---------------------------------------------------------------- a container as the kubelet runs it


def podman_run_args(spec: dict[str, Any], c: dict[str, Any], *, host: NodeHost, name: str, node: Netns,
                    configmaps: dict[str, Path], service_account: tuple[Path, dict[str, str]] | None) -> list[str]:
    """`podman run` arguments for container `c` of pod `spec`, from the manifest alone: host network and PID
    namespaces (the node's network namespace is the "host" one), securityContext, env, volumeMounts (hostPath,
    configMap, readOnly, mountPropagation), the service account the kubelet mounts, the image and command."""
    args = ["run", "-d", "--name", name, *host.runtime, "--pull=never"]
    assert spec.get("hostNetwork") is True
    args += ["--network", f"ns:{node.path}"]
    if spec.get("hostPID"):
        args += ["--pid", "host"]
    sc = c.get("securityContext", {})
    if sc.get("privileged"):
        args.append("--privileged")
    if "runAsUser" in sc:
        args += ["--user", str(sc["runAsUser"])]
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]  # Kubernetes adds no tmpfs
    for cap in sc.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", cap]
    for cap in sc.get("capabilities", {}).get("add", []):
        args += ["--cap-add", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    assert sc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault"  # podman's default
    memory = c.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        assert memory.endswith("Mi"), memory
        args += ["--memory", f"{memory[:-2]}m"]  # Podman's m is MiB
    for e in c.get("env", []):
        if "value" in e:
            value = e["value"]
        else:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", e
            value = NODE_NAME
        args += ["--env", f"{e['name']}={value}"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        src = v["hostPath"]["path"] if "hostPath" in v else str(configmaps[v["configMap"]["name"]])
        opts = ["ro"] if m.get("readOnly") else ["rw"]
        propagation = m.get("mountPropagation", "None")
        opts.append({"None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}[propagation])
        args += ["--volume", f"{src}:{m['mountPath']}:{','.join(opts)}"]
    if service_account is not None and spec.get("automountServiceAccountToken", True):
        sa_dir, sa_env = service_account
        args += ["--volume", f"{sa_dir}:{SA_DIR}:ro"]
        args += [a for k, val in sa_env.items() for a in ("--env", f"{k}={val}")]
    return [*args, c["image"], *c["command"], *c.get("args", [])]


def http_get(node: Netns, host: str, port: int, path: str) -> int:
    """A kubelet probe: GET from the node's network namespace; the status, 0 when nothing answers."""
    def get() -> int:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{host}:{port}{path}", timeout=3) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            return 0

    return int(run_in_netns(node.path, get))


def wait_for(what: str, predicate: Any, timeout: float, log: Any = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {log()}")


# ---------------------------------------------------------------- the tests


@pytest.fixture
def node_host(tmp_path: Path, node: Netns, image: BuiltImage) -> Iterator[NodeHost]:
    m = manifests()
    paths = sorted({p for ds in (m.daemonset, m.uninstall) for p in host_paths(pod_spec(ds))} - set(NETNS_DIRS))
    h = NodeHost(tmp_path, node, paths)
    try:
        h.start()
        h.podman("load", "-q", "-i", str(image.archive))
        yield h
    finally:
        h.close()
    assert not h.cgroups_left, f"cgroups left behind: {h.cgroups_left}"


def test_the_image_is_small_labelled_and_named_as_the_manifests_say(image: BuiltImage, node_host: NodeHost) -> None:
    print(f"\nimage {image.tag}: {image.size / 1e6:.1f} MB, built in {image.seconds:.0f} s")
    assert image.size < 150e6, f"{image.size / 1e6:.1f} MB"
    m = manifests()
    for ds in (m.daemonset, m.uninstall):
        for c in pod_spec(ds)["containers"] + pod_spec(ds).get("initContainers", []):
            if c["image"].startswith("registry.k8s.io/pause:"):
                continue  # the uninstall DaemonSet's idle container
            assert c["image"] == image.tag == f"ghcr.io/metaplug/metaplug:{__version__}"
    info = json.loads(node_host.podman("image", "inspect", image.tag))[0]
    labels = info["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert info["Config"]["User"] == "65532:65532"  # root only where a manifest asks for it
    # no compiler, pip, wheels or package caches in the final image; the shim where install looks for it
    probe = ("for x in gcc cc pip pip3 apt-get; do command -v $x; done; "
             "ls /wheels /root/.cache /var/cache/apt/archives/*.deb 2>/dev/null; "
             "ls /opt/metaplug/lib/python3*/site-packages | grep -i '^pip' ; id -u; "
             f"test -x {inst.IMAGE_SHIM} && echo shim; "
             # ipMasq / portmap delegates run in the daemon's container
             "command -v iptables >/dev/null && echo iptables")
    out = node_host.podman("run", "--rm", *node_host.runtime, "--network", "none", image.tag, "sh", "-c", probe)
    assert out.split() == ["65532", "shim", "iptables"], out


def test_install_daemon_and_uninstall_containers_on_a_node(node_host: NodeHost, image: BuiltImage, node: Netns,
                                                           netns_factory: NetnsFactory, tmp_path: Path) -> None:
    m = manifests()
    spec, un_spec = pod_spec(m.daemonset), pod_spec(m.uninstall)
    daemon_c, install_c = container(spec, "daemon"), container(spec, "install")
    h = node_host
    netns_factory.veth_uplink(node, "uplink0")

    # the node before metaplug: the cluster network's plugins and conflist (host-local keeps its reservations in
    # /var/lib/cni/networks, its default), the kubelet's hostPath directories
    bin_dir, conf_dir = h.host("/opt/cni/bin"), h.host("/etc/cni/net.d")
    for plugin in ("bridge", "host-local", "macvlan"):
        shutil.copy2(REFERENCE / plugin, bin_dir / plugin)  # copies: a link to /usr/lib/cni is not in the container
    cluster = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "mpimg0", "isGateway": True, "isDefaultGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.61.0.0/24"}]]}}]}
    (conf_dir / "10-podnet.conflist").write_text(json.dumps(cluster))
    configmaps = {}
    for cm_name, data in m.configmaps.items():
        d = tmp_path / "configmaps" / cm_name
        d.mkdir(parents=True)
        for key, value in data.items():
            (d / key).write_text(value)
        configmaps[cm_name] = d
    ipam_dir = "/var/lib/cni/networks"
    before = h.listing(skip=[ipam_dir])

    sim = KubeSim()
    run_in_netns(node.path, sim.start)  # the API server, reachable from the node's network namespace
    try:
        nad = {"blue": {"cniVersion": "1.0.0", "name": "blue", "type": "macvlan", "master": "uplink0",
                        "mode": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.62.0.0/24"}]]}},
               "red": {"cniVersion": "1.0.0", "name": "red", "type": "bridge", "bridge": "mpimg1",
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.63.0.0/24"}]]}}}
        for name, conf in nad.items():
            sim.add_nad("default", name, json.dumps(conf))
        web = sim.add_pod("default", "web", {"k8s.v1.cni.cncf.io/networks": "blue,red"})
        service_account = (tmp_path / "sa", sim.service_account(tmp_path / "sa"))

        # the DaemonSet's pod: the daemon, then install (which waits for the daemon's /readyz itself)
        def start(pod: dict[str, Any], c: dict[str, Any], sa: tuple[Path, dict[str, str]] | None) -> str:
            cid = h.podman(*podman_run_args(pod, c, host=h, name=f"mpt-{c['name']}-{uuid.uuid4().hex[:8]}",
                                            node=node, configmaps=configmaps, service_account=sa)).strip()
            h.containers.append(cid)
            return cid

        daemon_id = start(spec, daemon_c, service_account)

        def daemon_log() -> str:
            return h.logs(daemon_id)

        ready = daemon_c["readinessProbe"]["httpGet"]
        wait_for("the daemon's readiness probe", lambda: http_get(node, ready["host"], ready["port"],
                                                                  ready["path"]) == 200, 60, daemon_log)
        live = daemon_c["livenessProbe"]["httpGet"]
        assert http_get(node, live["host"], live["port"], live["path"]) == 200
        install_id = start(spec, install_c, service_account)
        conflist_path = conf_dir / inst.CONFLIST_NAME
        wait_for("the install container's conflist", conflist_path.exists, 60,
                 lambda: h.logs(install_id))

        # the host holds the static shim (from the image) and a conflist naming it
        shim = bin_dir / inst.SHIM_NAME
        assert host_problem(str(shim), static_only=True) is None
        assert stat.S_IMODE(shim.stat().st_mode) == 0o755
        conflist = json.loads(conflist_path.read_text())
        (entry,) = conflist["plugins"]
        cfg = json.loads(next(iter(m.configmaps.values()))["daemon.json"])
        assert entry["type"] == inst.SHIM_NAME and entry["socketPath"] == cfg["socketPath"]
        assert entry["clusterNetwork"] == "/etc/cni/net.d/10-podnet.conflist"
        kubeconfig = yaml.safe_load(h.host(entry["kubeconfig"]).read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == sim.server

        # a libcni runtime on the node (outside every container) runs the pod's networks through the shim
        pod = netns_factory.new("pod")  # made after the daemon started: seen through HostToContainer
        cid = uuid.uuid4().hex
        runtime_env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}

        def cni(verb: str) -> subprocess.CompletedProcess[bytes]:
            return h.run([str(VENV_BIN / "python"), "-m", "metaplug.cni.tool", verb, "/etc/cni/net.d/" +
                          inst.CONFLIST_NAME, pod.path, "--container-id", cid, "--path", "/opt/cni/bin",
                          "--cache-dir", str(tmp_path / "libcni-cache"), "--args",
                          f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
                          f"K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={web['metadata']['uid']}"],
                         env=runtime_env)

        add = cni("add")
        assert add.returncode == 0, add.stdout.decode() + add.stderr.decode() + daemon_log()
        result = json.loads(add.stdout)
        assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == ["eth0", "net1", "net2"]
        assert pod.addresses("eth0") == ["10.61.0.2/24"]
        assert pod.addresses("net1") == ["10.62.0.2/24"] and pod.addresses("net2") == ["10.63.0.2/24"]
        status = json.loads(sim.annotations("default", "web")["k8s.v1.cni.cncf.io/network-status"])
        assert [s["name"] for s in status] == ["podnet", "default/blue", "default/red"]
        check = cni("check")
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        delete = cni("del")
        assert delete.returncode == 0, delete.stdout.decode() + delete.stderr.decode()
        assert set(pod.links()) == {"lo"}
        reservations = [p for p in h.host(ipam_dir).rglob("*") if p.name[0].isdigit() and p.name != "lock"]
        assert reservations == [] and [p for p in h.host(cfg["stateDir"]).rglob("*") if not p.is_dir()] == []
    finally:
        sim.stop()

    # kubectl delete ds metaplug: both containers get SIGTERM and terminationGracePeriodSeconds
    grace = str(spec["terminationGracePeriodSeconds"])
    for cid_ in (install_id, daemon_id):
        h.podman("stop", "-t", grace, cid_, timeout=int(grace) + 30)
    assert h.podman("inspect", "--format", "{{.State.ExitCode}}", daemon_id).strip() == "0", daemon_log()
    assert '"exception"' not in daemon_log() and "Traceback" not in daemon_log(), daemon_log()

    # configs/kubernetes/uninstall/: its init container puts the node back as it was
    uninstall_id = start(un_spec, container(un_spec, "uninstall"), None)
    code = h.podman("wait", uninstall_id, timeout=120).strip()
    logs = h.logs(uninstall_id)
    assert code == "0", logs
    assert "removed /etc/cni/net.d/00-metaplug.conflist" in logs, logs
    assert h.listing(skip=[ipam_dir]) == before, logs
