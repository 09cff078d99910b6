"""A "node" for the DaemonSet image's end-to-end tests (tests/integration/test_image.py): the manifests read from
configs/kubernetes, a private mount namespace holding a temp host tree at the DaemonSet's hostPath paths, what a
kubelet makes of a manifest container (`KubeletContainer`), and the container engines that run it on the node:
Podman here, containerd in tests/helpers/containerd.py.

The node's mount namespace (a holder process, `NodeHost`) has the temp host tree mounted at the DaemonSet's hostPath
paths (/opt/cni/bin, /etc/cni/net.d, /var/lib/cni, /run/metaplug), with private /run, /dev/shm, /var/lib, /var/tmp
and /opt, while /run/netns stays the machine's (slave propagation: namespaces made after the daemon started are seen
inside it, mountPropagation HostToContainer). Every engine and container runs in it and in the test's node network
namespace (hostNetwork), never the machine's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import yaml

from metaplug.netns import run_in_netns
from tests.helpers.netns import REPO, Netns

CONFIGS = REPO / "configs" / "kubernetes"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
NODE_NAME = "node-1"
# the DaemonSet's netns volumes: the machine's own /run/netns, where the test's pod namespaces are pinned
NETNS_DIRS = ("/run/netns", "/var/run/netns")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


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


class BuiltImage(NamedTuple):
    tag: str
    size: int
    archive: Path
    seconds: float


# ---------------------------------------------------------------- what the kubelet makes of a container


class Mount(NamedTuple):
    source: str  # on the node
    target: str  # in the container
    read_only: bool
    propagation: str  # rprivate | rslave | rshared


class KubeletContainer(NamedTuple):
    """Container `c` of a pod spec as a kubelet hands it to its runtime, from the manifest alone."""

    image: str
    argv: list[str]
    host_network: bool
    host_pid: bool
    privileged: bool
    user: int | None  # runAsUser
    read_only_root: bool
    cap_drop: list[str]
    cap_add: list[str]
    no_new_privileges: bool
    seccomp_runtime_default: bool
    memory_limit: int | None  # bytes
    env: list[tuple[str, str]]
    mounts: list[Mount]


PROPAGATION = {"None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}


def kubelet_container(spec: dict[str, Any], c: dict[str, Any], *, configmaps: dict[str, Path],
                      service_account: tuple[Path, dict[str, str]] | None) -> KubeletContainer:
    """Host network and PID namespaces, securityContext, env (fieldRef spec.nodeName = NODE_NAME), volumeMounts
    (hostPath, configMap, readOnly, mountPropagation), the service account the kubelet mounts, image and command."""
    sc = c.get("securityContext", {})
    profile = sc.get("seccompProfile", spec.get("securityContext", {}).get("seccompProfile", {}))
    assert profile.get("type", "RuntimeDefault") == "RuntimeDefault", profile
    memory = c.get("resources", {}).get("limits", {}).get("memory")
    if memory:
        assert memory.endswith("Mi"), memory
    env = []
    for e in c.get("env", []):
        if "value" in e:
            env.append((e["name"], e["value"]))
        else:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", e
            env.append((e["name"], NODE_NAME))
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = []
    for m in c.get("volumeMounts", []):
        v = volumes[m["name"]]
        src = v["hostPath"]["path"] if "hostPath" in v else str(configmaps[v["configMap"]["name"]])
        mounts.append(Mount(src, m["mountPath"], bool(m.get("readOnly")),
                            PROPAGATION[m.get("mountPropagation", "None")]))
    if service_account is not None and spec.get("automountServiceAccountToken", True):
        sa_dir, sa_env = service_account
        mounts.append(Mount(str(sa_dir), SA_DIR, True, "rprivate"))
        env += sorted(sa_env.items())
    assert spec.get("hostNetwork") is True  # the node's network namespace is the "host" one
    return KubeletContainer(
        image=c["image"], argv=[*c["command"], *c.get("args", [])], host_network=True,
        host_pid=bool(spec.get("hostPID")), privileged=bool(sc.get("privileged")), user=sc.get("runAsUser"),
        read_only_root=bool(sc.get("readOnlyRootFilesystem")),
        cap_drop=list(sc.get("capabilities", {}).get("drop", [])),
        cap_add=list(sc.get("capabilities", {}).get("add", [])),
        # Kubernetes: allowPrivilegeEscalation defaults to true, and is true for a privileged container
        no_new_privileges=sc.get("allowPrivilegeEscalation") is False,
        # a seccompProfile RuntimeDefault is the runtime's default profile; unset is Unconfined (the kubelet's
        # default), and privileged containers run unconfined
        seccomp_runtime_default=profile.get("type") == "RuntimeDefault" and not sc.get("privileged"),
        memory_limit=int(memory[:-2]) * 2**20 if memory else None, env=env, mounts=mounts)


class ContainerEngine(Protocol):
    """A container runtime on the node, driven the way a kubelet drives its CRI runtime."""

    name: str

    def load(self, archive: Path) -> list[str]:
        """Import the OCI archive; the image names the runtime then holds."""
        ...

    def start(self, name: str, kc: KubeletContainer) -> str:
        """Start the container (detached); its ID."""
        ...

    def logs(self, cid: str) -> str: ...

    def stop(self, cid: str, grace: int) -> int:
        """SIGTERM, SIGKILL after `grace` seconds; the exit code."""
        ...

    def wait(self, cid: str, timeout: float) -> int:
        """Until the container exits; its exit code."""
        ...

    def close(self) -> None:
        """Remove every container and what the engine runs (by ID and PID)."""
        ...


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
    """The node's mount namespace (see the module docstring) and a temp dir for the engines' stores."""

    def __init__(self, tmp: Path, node: Netns, tree_paths: Sequence[str]) -> None:
        self.node = node
        self.root = tmp / "host"
        self.tree_paths = list(tree_paths)
        self.dir = Path(tempfile.mkdtemp(prefix="mpt-img-"))  # short: Podman refuses a long runroot
        self.holder: subprocess.Popen[bytes] | None = None
        # runc puts every container under this cgroup (Podman: --cgroup-parent, ctr: --cgroup), removed in close()
        self.cgroup = f"/{self.dir.name}"
        self.cgroups_left: list[str] = []

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

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` entering the node's mount namespace and the test's node network namespace (nsenter execs it)."""
        assert self.holder is not None
        return ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", f"--net={self.node.path}", "--", *argv]

    def run(self, argv: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[bytes]:
        """`argv` on the node: in its mount namespace and in the test's node network namespace."""
        proc = subprocess.run(self.argv(argv), capture_output=True, timeout=timeout,
                              env=env or {"PATH": SYSTEM_PATH})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}"
                                 f"{proc.stdout.decode()}")
        return proc

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
        """Every process left in the node's mount namespace by PID (conmon, containerd shims), then the holder: the
        namespace and its mounts go with the last of them; then the cgroups and the temp dir. The engines are
        closed before (they remove their containers by ID)."""
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


# ---------------------------------------------------------------- Podman


class PodmanEngine:
    """Podman with its storage in the node's temp dir, runc as the runtime (crun cannot use this machine's hybrid
    cgroups, and Podman wants cgroups for a host PID namespace)."""

    name = "podman"

    def __init__(self, host: NodeHost) -> None:
        self.host = host
        self.containers: list[str] = []
        self.runtime = ["--runtime", "runc", "--cgroup-parent", host.cgroup]
        (host.dir / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'  # the defaults are above this machine's
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n')

    def podman(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        d = self.host.dir
        proc = self.host.run(["podman", "--root", str(d / "store"), "--runroot", str(d / "run"), "--tmpdir",
                              str(d / "tmp"), "--storage-driver", "vfs", *args], timeout=timeout, check=check,
                             env={"PATH": SYSTEM_PATH, "CONTAINERS_CONF": str(d / "containers.conf"),
                                  "TMPDIR": str(d / "tmp")})
        return proc.stdout.decode() + (proc.stderr.decode() if proc.returncode else "")

    def load(self, archive: Path) -> list[str]:
        self.podman("load", "-q", "-i", str(archive))
        return self.podman("images", "--format", "{{.Repository}}:{{.Tag}}").split()

    def start(self, name: str, kc: KubeletContainer) -> str:
        args = ["run", "-d", "--name", name, *self.runtime, "--pull=never", "--network", f"ns:{self.host.node.path}"]
        if kc.host_pid:
            args += ["--pid", "host"]
        if kc.privileged:
            args.append("--privileged")
        if kc.user is not None:
            args += ["--user", str(kc.user)]
        if kc.read_only_root:
            args += ["--read-only", "--read-only-tmpfs=false"]  # Kubernetes adds no tmpfs
        args += [a for cap in kc.cap_drop for a in ("--cap-drop", cap)]
        args += [a for cap in kc.cap_add for a in ("--cap-add", cap)]
        if kc.no_new_privileges:
            args += ["--security-opt", "no-new-privileges"]
        if not kc.seccomp_runtime_default:
            args += ["--security-opt", "seccomp=unconfined"]
        if kc.memory_limit:
            args += ["--memory", str(kc.memory_limit)]
        args += [a for k, v in kc.env for a in ("--env", f"{k}={v}")]
        for m in kc.mounts:
            args += ["--volume", f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'},{m.propagation}"]
        cid = self.podman(*args, kc.image, *kc.argv).strip()
        self.containers.append(cid)
        return cid

    def logs(self, cid: str) -> str:
        d = self.host.dir
        proc = self.host.run(["podman", "--root", str(d / "store"), "--runroot", str(d / "run"),
                              "--storage-driver", "vfs", "logs", cid],
                             env={"PATH": SYSTEM_PATH, "CONTAINERS_CONF": str(d / "containers.conf")})
        return proc.stdout.decode() + proc.stderr.decode()

    def stop(self, cid: str, grace: int) -> int:
        self.podman("stop", "-t", str(grace), cid, timeout=grace + 30)
        return int(self.podman("inspect", "--format", "{{.State.ExitCode}}", cid).strip())

    def wait(self, cid: str, timeout: float) -> int:
        return int(self.podman("wait", cid, timeout=timeout).strip())

    def close(self) -> None:
        for cid in reversed(self.containers):
            self.podman("rm", "-f", "-t", "0", cid, timeout=120, check=False)


# ---------------------------------------------------------------- probes


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


def wait_for(what: str, predicate: Callable[[], bool], timeout: float,
             log: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {log()}")
