"""A throw-away world for metaplug integration tests: a node namespace with a veth uplink, pod namespaces, and
temp dirs for confDir (local NAD files), stateDir and IPAM data. `MetaplugWorld.call` runs metaplug inside the node
namespace exactly as a container runtime would: CNI_* env + the plugin config on stdin."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory, run

REFERENCE = "/usr/lib/cni"


@dataclass
class CallResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@dataclass
class MetaplugWorld:
    factory: NetnsFactory
    node: Netns
    tmp: Path
    uplink: str = "uplink0"
    cni_path: str = f"{VENV_BIN}:{REFERENCE}"
    plugins: dict[str, str] = field(default_factory=lambda: {
        "bridge": "bridge", "macvlan": "macvlan", "host-local": "host-local", "static": "static"})

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
    def call(self, verb: str, conf: dict[str, Any], *, pod: Netns | None = None, container_id: str = "c1",
             ifname: str = "eth0", args: str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p1",
             netns_path: str | None = None, timeout: float = 120) -> CallResult:
        env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": verb,
               "CNI_CONTAINERID": container_id, "CNI_IFNAME": ifname, "CNI_PATH": self.cni_path, "CNI_ARGS": args,
               "CNI_NETNS": netns_path if netns_path is not None else (pod.path if pod else "")}
        proc = self.node.exec([str(VENV_BIN / "metaplug")], check=False, input=json.dumps(conf).encode(), env=env,
                              timeout=timeout)
        return CallResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

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
        if not self.state_dir.exists():
            return []
        return sorted(str(p.relative_to(self.state_dir)) for p in self.state_dir.rglob("*"))


def new_container_id() -> str:
    return uuid.uuid4().hex


def ns_exists(name: str) -> bool:
    return os.path.exists(f"/var/run/netns/{name}")


__all__ = ["CallResult", "MetaplugWorld", "new_container_id", "ns_exists", "run"]
