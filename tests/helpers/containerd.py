"""A private containerd on the test's node (tests/helpers/image_node.py), driven with Debian's `ctr`: the image's OCI
archive imported with `ctr image import`, the DaemonSet's containers run with `ctr run` the way a kubelet's CRI
runtime would run them.

containerd, its shims and every `ctr` run inside the node's mount namespace and the test's node network namespace
(so `--net-host` is the node's network, never the machine's); its root, state, sockets and config are in the node's
temp dir, its CRI plugin is disabled (the test plays the kubelet), and it is stopped by PID when the test ends.

ctr 1.6 has no `--user`: `ctr run IMAGE` would run as the image's default user (65532), not as the manifests'
`runAsUser: 0`. So a container runs on a writable snapshot of the imported image (`ctr image mount --rw`, containerd's
own snapshotter) with `ctr run --rootfs`, whose process user is the default spec's root; the image's Env and
WorkingDir come from its config in containerd's content store, as the CRI plugin applies them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers.image_node import SYSTEM_PATH, KubeletContainer, NodeHost

NAMESPACE = "k8s.io"  # the containerd namespace the kubelet's images live in (ctr -n k8s.io image import)


class ContainerdEngine:
    name = "containerd"

    def __init__(self, host: NodeHost) -> None:
        self.host = host
        self.dir = host.dir / "containerd"
        self.socket = self.dir / "c.sock"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.runs: dict[str, subprocess.Popen[bytes]] = {}  # container ID -> its foreground `ctr run`
        self.rootfs: list[Path] = []
        self._default_caps: list[str] | None = None

    # ------------------------------------------------------------ the daemon

    def start_daemon(self) -> ContainerdEngine:
        d = self.dir
        for sub in ("root", "state", "opt", "logs", "rootfs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        config = d / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{d / "root"}"\n'
            f'state = "{d / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{d / "opt"}"\n')
        with open(d / "containerd.log", "wb") as log:
            self.daemon = subprocess.Popen(self.host.argv(["containerd", "--config", str(config)]), stdout=log,
                                           stderr=subprocess.STDOUT, env={"PATH": SYSTEM_PATH})
        deadline = time.monotonic() + 30
        while self.ctr("version").returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"containerd did not start: {self.daemon_log()}")
            time.sleep(0.2)
        # --net-host gives the containers containerd's own network namespace: it must be the test's node namespace
        assert os.stat(f"/proc/{self.daemon.pid}/ns/net").st_ino == os.stat(self.host.node.path).st_ino
        return self

    def daemon_log(self) -> str:
        return (self.dir / "containerd.log").read_text(errors="replace")[-6000:]

    def ctr(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[bytes]:
        return self.host.run(["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
                             timeout=timeout, check=check)

    # ------------------------------------------------------------ images

    def load(self, archive: Path) -> list[str]:
        self.ctr("image", "import", str(archive), timeout=300, check=True)
        return self.ctr("image", "ls", "-q", check=True).stdout.decode().split()

    def image_config(self, ref: str) -> dict[str, Any]:
        """The OCI image configuration of `ref`, read from containerd's content store."""
        rows = [line.split() for line in self.ctr("image", "ls", check=True).stdout.decode().splitlines()[1:]]
        (digest,) = [row[2] for row in rows if row[0] == ref]
        manifest = json.loads(self.ctr("content", "get", digest, check=True).stdout)
        return dict(json.loads(self.ctr("content", "get", manifest["config"]["digest"], check=True).stdout))

    def default_caps(self) -> list[str]:
        """The capabilities of containerd's default spec (what `drop: ["ALL"]` removes)."""
        if self._default_caps is None:
            spec = json.loads(self.ctr("oci", "spec", check=True).stdout)
            self._default_caps = list(spec["process"]["capabilities"]["bounding"])
        return self._default_caps

    # ------------------------------------------------------------ containers

    def run_args(self, name: str, kc: KubeletContainer, rootfs: Path, config: dict[str, Any]) -> list[str]:
        """`ctr run` arguments for `kc` on the image snapshot mounted at `rootfs` (see the module docstring)."""
        assert kc.user == 0, "ctr 1.6 runs --rootfs containers as root only: the manifests ask for runAsUser: 0"
        args = ["run", "--rm", "--rootfs", "--cgroup", f"{self.host.cgroup}/{name}"]
        if kc.host_network:
            args.append("--net-host")  # containerd's own network namespace: the test's node namespace
        if kc.host_pid:
            # the runtime's own PID namespace (the node's; PID 1's is not readable on this machine)
            args += ["--with-ns", "pid:/proc/self/ns/pid"]
        if kc.privileged:
            args.append("--privileged")
        if kc.read_only_root:
            args.append("--read-only")
        drop = [c if c.startswith("CAP_") else f"CAP_{c}" for c in kc.cap_drop]
        if "CAP_ALL" in drop:
            drop = self.default_caps()
        args += [a for cap in drop for a in ("--cap-drop", cap)]
        args += [a for cap in kc.cap_add for a in ("--cap-add", cap if cap.startswith("CAP_") else f"CAP_{cap}")]
        if not kc.no_new_privileges:
            args.append("--allow-new-privs")  # the default spec sets NoNewPrivileges
        if kc.seccomp_runtime_default:
            args.append("--seccomp")  # containerd's default profile
        if kc.memory_limit:
            args += ["--memory-limit", str(kc.memory_limit)]
        image_env = [tuple(e.split("=", 1)) for e in config.get("config", {}).get("Env", [])]
        args += [a for k, v in [*image_env, *kc.env] for a in ("--env", f"{k}={v}")]
        for m in kc.mounts:
            opts = ["rbind", "ro" if m.read_only else "rw", m.propagation]
            args += ["--mount", f"type=bind,src={m.source},dst={m.target},options={':'.join(opts)}"]
        args += ["--cwd", config.get("config", {}).get("WorkingDir") or "/"]
        return [*args, str(rootfs), name, *kc.argv]

    def start(self, name: str, kc: KubeletContainer) -> str:
        rootfs = self.dir / "rootfs" / name
        rootfs.mkdir()
        self.ctr("image", "mount", "--rw", kc.image, str(rootfs), check=True)
        self.rootfs.append(rootfs)
        argv = ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE,
                *self.run_args(name, kc, rootfs, self.image_config(kc.image))]
        with open(self.dir / "logs" / f"{name}.log", "wb") as log:
            self.runs[name] = subprocess.Popen(self.host.argv(argv), stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, env={"PATH": SYSTEM_PATH})
        deadline = time.monotonic() + 60
        while self.task_status(name) != "RUNNING":
            if self.runs[name].poll() is not None:
                break  # exited already (or failed to start): its log says which
            if time.monotonic() > deadline:
                raise AssertionError(f"ctr run {name} did not start: {self.logs(name)}")
            time.sleep(0.1)
        return name

    def task_status(self, cid: str) -> str | None:
        """RUNNING, STOPPED, ... from `ctr task ls` (TASK PID STATUS); None without a task."""
        rows = [line.split() for line in self.ctr("task", "ls").stdout.decode().splitlines()[1:]]
        return next((row[2] for row in rows if len(row) == 3 and row[0] == cid), None)

    def logs(self, cid: str) -> str:
        return (self.dir / "logs" / f"{cid}.log").read_text(errors="replace")

    def stop(self, cid: str, grace: int) -> int:
        self.ctr("task", "kill", "--signal", "SIGTERM", cid)
        try:
            return self.runs[cid].wait(grace)
        except subprocess.TimeoutExpired:
            self.ctr("task", "kill", "--signal", "SIGKILL", cid)
            return self.runs[cid].wait(30)

    def wait(self, cid: str, timeout: float) -> int:
        return self.runs[cid].wait(timeout)  # the foreground `ctr run` exits with the container's code

    def close(self) -> None:
        """Every task killed and deleted by ID, every `ctr run` ended by PID, the snapshots unmounted and removed,
        then containerd stopped by PID (its shims, if any are left, go with the node's mount namespace)."""
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                for cid, proc in self.runs.items():
                    if proc.poll() is None:
                        self.ctr("task", "kill", "--signal", "SIGKILL", cid)
                        with contextlib.suppress(subprocess.TimeoutExpired):
                            proc.wait(30)
                    self.ctr("task", "delete", "--force", cid)
                    self.ctr("container", "delete", cid)
                for rootfs in self.rootfs:
                    self.ctr("image", "unmount", "--rm", str(rootfs))
        finally:
            for proc in [*self.runs.values(), *([self.daemon] if self.daemon else [])]:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(proc.pid, signal.SIGKILL)
                        proc.wait(10)
