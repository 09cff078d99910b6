"""A throw-away world for metaplug integration tests: a node namespace with a veth uplink, pod namespaces, and
temp dirs for confDir (local NAD files), stateDir and IPAM data. `MetaplugWorld.call` runs metaplug inside the node
namespace exactly as a container runtime would: CNI_* env + the plugin config on stdin.

Two modes (DESIGN: "Two modes, one core"): `thin` execs the metaplug console script per call; `daemon` execs the
static metaplug-shim, which forwards to a `metaplug daemon` running inside the same node namespace (`Daemon`, with
its socket, spool and log in the test's temp dir). Tests that take the `mode` fixture run in both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory, metaplug_env, run

REFERENCE = "/usr/lib/cni"


@dataclass
class CallResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


SHIM = VENV_BIN / "metaplug-shim"
MODES = ("thin", "daemon")


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """thin: one metaplug process per call; daemon: metaplug-shim -> `metaplug daemon` (the world starts it)."""
    if request.param == "daemon" and not SHIM.exists():
        pytest.skip("metaplug-shim not built (bash .ci/setup)")
    return str(request.param)


class Daemon:
    """`metaplug daemon` inside the test's node namespace; ended by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, node: Netns, directory: Path, config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.node = node
        self.env = metaplug_env(env)
        self.dir = directory
        # cniConfDir: readiness looks for the cluster network there; never the host's /etc/cni/net.d
        self.config = {"socketPath": str(directory / "run" / "mp.sock"), "logLevel": "debug",
                       "cniConfDir": str(directory / "net.d"), **(config or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def socket_path(self) -> Path:
        return Path(self.config["socketPath"])

    @property
    def spool_dir(self) -> Path:
        return Path(self.config.get("spoolDir") or self.socket_path.parent / "spool")

    @property
    def log_path(self) -> Path:
        return self.dir / "daemon.out"

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def start(self, *, wait: bool = True) -> Daemon:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "daemon.json").write_text(json.dumps(self.config))
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(  # `ip netns exec` execs the daemon: this PID is the daemon's
                ["ip", "netns", "exec", self.node.name, str(VENV_BIN / "metaplug"), "daemon",
                 "--config", str(self.dir / "daemon.json")],
                stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.exit_code = None
        if wait:
            self.wait_serving()
        return self

    def wait_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.log()}")
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.socket_path))
                    return
                except OSError:
                    time.sleep(0.05)
        raise AssertionError(f"daemon did not listen on {self.socket_path}: {self.log()}")

    def http(self, path: str) -> tuple[int, str]:
        """GET on the daemon's metrics address (127.0.0.1:9091 of the node namespace)."""
        from metaplug.netns import run_in_netns

        address = self.config.get("metricsAddress", "127.0.0.1:9091")

        def get() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as reply:
                    return reply.status, reply.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

        return run_in_netns(self.node.path, get)

    def wait_ready(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        status, body = 0, ""
        while time.monotonic() < deadline:
            try:
                status, body = self.http("/readyz")
            except OSError:
                status = 0
            if status == 200:
                return body
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout} s ({status} {body}): {self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc is None:
            return self.exit_code if self.exit_code is not None else 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.exit_code = self.proc.returncode
        self.proc = None
        return self.exit_code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


@dataclass
class MetaplugWorld:
    factory: NetnsFactory
    node: Netns
    tmp: Path
    uplink: str = "uplink0"
    cni_path: str = f"{VENV_BIN}:{REFERENCE}"
    plugins: dict[str, str] = field(default_factory=lambda: {
        "bridge": "bridge", "macvlan": "macvlan", "host-local": "host-local", "static": "static"})
    mode: str = "thin"
    daemon: Daemon | None = None
    # Set: every thin call runs in a private mount namespace with this directory bind-mounted over /var/lib, for
    # configs used unchanged whose delegates write there (host-local's default dataDir /var/lib/cni/networks).
    private_var_lib: Path | None = None
    # Run metaplug inside another mount namespace (e.g. tests/helpers/private_tmpfs.py) and look at stateDir from
    # there: the command prefix and the root under which that namespace's files appear.
    prefix: list[str] = field(default_factory=list)
    view_root: str = ""

    @property
    def conf_dir(self) -> Path:
        return self.tmp / "net.d"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    @property
    def ipam_dir(self) -> Path:
        return self.tmp / "ipam"

    def setup(self) -> MetaplugWorld:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.factory.veth_uplink(self.node, self.uplink)
        return self

    # ---- networks -----------------------------------------------------------------------------------------
    def bridge_net(self, name: str, subnet: str, bridge: str, *, gateway: bool = True,
                   default_gw: bool = False, version: str = "1.0.0") -> dict[str, Any]:
        return {"cniVersion": version, "name": name, "plugins": [{
            "type": self.plugins["bridge"], "bridge": bridge, "isGateway": gateway, "isDefaultGateway": default_gw,
            "ipam": {"type": self.plugins["host-local"], "dataDir": str(self.ipam_dir),
                     "ranges": [[{"subnet": subnet}]]}}]}

    def macvlan_static_net(self, name: str, *, master: str | None = None, version: str = "1.0.0") -> dict[str, Any]:
        return {"cniVersion": version, "name": name, "plugins": [{
            "type": self.plugins["macvlan"], "master": master or self.uplink, "mode": "bridge",
            "capabilities": {"ips": True, "mac": True}, "ipam": {"type": self.plugins["static"]}}]}

    def macvlan_hostlocal_net(self, name: str, subnet: str, version: str = "1.0.0") -> dict[str, Any]:
        return {"cniVersion": version, "name": name, "plugins": [{
            "type": self.plugins["macvlan"], "master": self.uplink, "mode": "bridge",
            "ipam": {"type": self.plugins["host-local"], "dataDir": str(self.ipam_dir),
                     "ranges": [[{"subnet": subnet}]]}}]}

    def add_nad(self, name: str, config: dict[str, Any] | None, namespace: str = "default") -> None:
        nad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"config": json.dumps(config) if config is not None else ""}}
        (self.conf_dir / namespace).mkdir(parents=True, exist_ok=True)
        (self.conf_dir / namespace / f"{name}.json").write_text(json.dumps(nad))

    def metaplug_conf(self, cluster: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": "1.1.0", "name": "mp", "type": "metaplug", "confDir": str(self.conf_dir),
            "stateDir": str(self.state_dir), "binDir": str(VENV_BIN), "delegateTimeout": 20,
            "logFile": str(self.tmp / "metaplug.log"), "logLevel": "debug",
        }
        if cluster is not None:
            conf["delegates"] = [cluster]
        conf.update(extra)
        return conf

    # ---- calls --------------------------------------------------------------------------------------------
    def start_daemon(self, **config: Any) -> Daemon:
        """A daemon in the node namespace sharing this world's stateDir; later calls go through the shim."""
        self.daemon = Daemon(self.node, self.tmp / "d", {"stateDir": str(self.state_dir), **config},
                             env={"CNI_PATH": self.cni_path}).start()
        self.mode = "daemon"
        return self.daemon

    def stop_daemon(self) -> None:
        """SIGTERM a running daemon; it must exit 0 and must not have logged an exception."""
        if self.daemon is None or self.daemon.proc is None:
            return
        code = self.daemon.stop()
        log = self.daemon.log()
        assert code == 0, f"daemon exited {code}: {log}"
        assert '"exception":' not in log and "Traceback" not in log, log

    def call(self, verb: str, conf: dict[str, Any], *, pod: Netns | None = None, container_id: str = "c1",
             ifname: str = "eth0", args: str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
             netns_path: str | None = None, timeout: float = 120, mode: str | None = None,
             extra_env: dict[str, str] | None = None, umask: int | None = None) -> CallResult:
        """One CNI call as a runtime makes it, in this world's mode (or `mode`), under `umask` when given (the
        runtime's umask, which metaplug must not depend on: issue 9)."""
        argv, stdio = self.command(verb, conf, pod=pod, container_id=container_id, ifname=ifname, args=args,
                                   netns_path=netns_path, mode=mode, extra_env=extra_env)
        if umask is not None:
            argv = ["sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', *argv]
        proc = run([*self.prefix, "ip", "netns", "exec", self.node.name, *argv], check=False, timeout=timeout,
                   **stdio)
        return CallResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def command(self, verb: str, conf: dict[str, Any], *, pod: Netns | None = None, container_id: str = "c1",
                ifname: str = "eth0", args: str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
                netns_path: str | None = None, mode: str | None = None,
                extra_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, Any]]:
        """(argv, keyword arguments of Netns.exec) of one call: the executable, its stdin and its environment."""
        env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": verb,
               "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname, "CNI_PATH": self.cni_path, "CNI_ARGS": args,
               "CNI_NETNS": netns_path if netns_path is not None else (pod.path if pod else ""), **(extra_env or {})}
        exe = VENV_BIN / "metaplug"
        if (mode or self.mode) == "daemon":
            socket_path = self.daemon.socket_path if self.daemon else self.tmp / "d" / "run" / "mp.sock"
            conf = {**conf, "type": "metaplug-shim", "socketPath": str(socket_path)}
            exe = SHIM
        argv = [str(exe)]
        if self.private_var_lib is not None and exe != SHIM:
            self.private_var_lib.mkdir(parents=True, exist_ok=True)
            argv = ["unshare", "-m", "sh", "-c",
                    f"mount --make-rprivate / && mount --bind {self.private_var_lib} /var/lib && exec {exe}"]
        return argv, {"input": json.dumps(conf).encode(), "env": env}

    def annotated(self, conf: dict[str, Any], networks: Any) -> dict[str, Any]:
        """`conf` with the pod annotation passed as containerd does (capability io.kubernetes.cri.pod-annotations)."""
        value = networks if isinstance(networks, str) else json.dumps(networks)
        out = dict(conf)
        out["runtimeConfig"] = {**conf.get("runtimeConfig", {}),
                                "io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": value}}
        return out

    # ---- observations -------------------------------------------------------------------------------------
    def reservations(self) -> list[str]:
        """host-local reservations (files named by IP) across all networks in the IPAM dir."""
        if not self.ipam_dir.exists():
            return []
        out = []
        for net in self.ipam_dir.iterdir():
            if net.is_dir():
                out += [f"{net.name}/{f.name}" for f in net.iterdir()
                        if f.name[0].isdigit() or ":" in f.name]
        return sorted(out)

    def state_files(self) -> list[str]:
        state_dir = Path(f"{self.view_root}{self.state_dir}")
        if not state_dir.exists():
            return []
        return sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*"))


def new_container_id() -> str:
    return uuid.uuid4().hex


def ns_exists(name: str) -> bool:
    return os.path.exists(f"/var/run/netns/{name}")


__all__ = ["MODES", "SHIM", "CallResult", "Daemon", "MetaplugWorld", "mode", "new_container_id", "ns_exists", "run"]
