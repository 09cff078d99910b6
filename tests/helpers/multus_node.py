"""What Multus leaves on a node for a pod it attached, reproduced from Multus's source, for the migration tests
(issue 10.4). Format from k8snetworkplumbingwg/multus-cni v4.x (master after v4.3.0, go.mod containernetworking/cni
v1.3.0):

- pkg/multus/multus.go saveDelegates/saveScratchNetConf: `<cniDir>/<containerID>`, dir 0700, file 0600, holding
  `json.Marshal([]*types.DelegateNetConf)` (compact);
- pkg/types/types.go DelegateNetConf: fields in this order, Go names unless tagged: Conf, ConfList, Name,
  ifnameRequest*, macRequest*, infinibandGUIDRequest*, ipRequest*, default-route*, IsFilterV4Gateway,
  IsFilterV6Gateway, deviceID*, resourceName*, Bytes (base64 of []byte) (* omitempty; CNINetworkConfigList,
  PortMappingsRequest, BandwidthRequest, MasterPlugin and ConfListPlugin are json:"-");
- containernetworking/cni pkg/types PluginConf.MarshalJSON (Conf and every ConfList plugin): a map, so keys sorted,
  `ipam` always there ({} when unset), `dns` dropped when empty; NetConfList: cniVersion, name, disableCheck,
  disableGC, plugins, all omitempty;
- libcni api.go: the delegates run with cacheDir = cniDir: buildOneConfig injects name, cniVersion, prevResult (after
  the first plugin of a list) and runtimeConfig (declared capabilities only); cacheAdd writes
  `<cniDir>/results/<network>-<containerID>-<ifname>` = cachedInfo {kind, containerId, config, ifName, networkName,
  netns, cniArgs, capabilityArgs, result}.

`multus_add` makes a pod's attachments by calling the delegate binaries exactly as Multus's CmdAdd does through libcni
(run inside the node namespace), so its interfaces and IPAM reservations really exist before metaplug's DEL.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.netns import Netns


def _go_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _plugin_conf(plugin: dict[str, Any]) -> dict[str, Any]:
    """containernetworking/cni PluginConf as PluginConf.MarshalJSON writes it (known fields only, keys sorted)."""
    out: dict[str, Any] = {"ipam": {"type": plugin["ipam"]["type"]} if plugin.get("ipam", {}).get("type") else {}}
    for key in ("cniVersion", "name", "type", "capabilities", "prevResult"):
        if plugin.get(key):
            out[key] = plugin[key]
    return dict(sorted(out.items()))


@dataclass
class MultusDelegate:
    """One entry of Multus's delegate list: the config it ran (`config`, a conf or a conflist) and the requests of
    the pod's selection element."""

    name: str  # "<namespace>/<nad>", or the cluster network's conf name
    config: dict[str, Any]
    ifname_request: str = ""
    ip_request: list[str] = field(default_factory=list)
    mac_request: str = ""

    @property
    def is_list(self) -> bool:
        return "plugins" in self.config

    def raw_bytes(self) -> bytes:
        """`Bytes`: a NAD's spec.config as given; a conflist rebuilt by losslessConfListBytes (json.Marshal of a map:
        keys sorted, each plugin's raw bytes kept)."""
        if self.is_list:  # map[string]json.RawMessage: top-level keys sorted, each value compacted as written
            return _go_json(dict(sorted(self.config.items()))).encode()
        return _go_json(self.config).encode()

    def marshalled(self) -> dict[str, Any]:
        """This DelegateNetConf as encoding/json writes it (field order of the struct)."""
        if self.is_list:
            conf: dict[str, Any] = {"ipam": {}}
            conf_list: dict[str, Any] = {k: self.config[k] for k in ("cniVersion", "name") if self.config.get(k)}
            conf_list["plugins"] = [_plugin_conf(p) for p in self.config["plugins"]]
        else:
            conf, conf_list = _plugin_conf(self.config), {}
        out: dict[str, Any] = {"Conf": conf, "ConfList": conf_list, "Name": self.name}
        if self.ifname_request:
            out["ifnameRequest"] = self.ifname_request
        if self.mac_request:
            out["macRequest"] = self.mac_request
        if self.ip_request:
            out["ipRequest"] = self.ip_request
        out.update({"IsFilterV4Gateway": False, "IsFilterV6Gateway": False,
                    "Bytes": base64.b64encode(self.raw_bytes()).decode()})
        return out


def write_entry(cni_dir: Path, container_id: str, delegates: list[MultusDelegate]) -> Path:
    """saveDelegates: the scratch file Multus's ADD writes before its first delegate runs."""
    cni_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = cni_dir / container_id
    path.write_text(_go_json([d.marshalled() for d in delegates]))
    path.chmod(0o600)
    return path


@dataclass
class MultusCall:
    """One delegate call of Multus's CmdAdd: its libcni RuntimeConf (Args in order, CapabilityArgs)."""

    delegate: MultusDelegate
    ifname: str
    args: list[tuple[str, str]]
    capability_args: dict[str, Any] = field(default_factory=dict)


def libcni_add(node: Netns, cni_dir: Path, call: MultusCall, *, container_id: str, netns: str,
               cni_path: str) -> dict[str, Any]:
    """libcni AddNetwork / AddNetworkList of one delegate, run in the node namespace, and its cacheAdd."""
    config = call.delegate.config
    plugins = config["plugins"] if call.delegate.is_list else [config]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id,
           "CNI_NETNS": netns, "CNI_ARGS": ";".join(f"{k}={v}" for k, v in call.args), "CNI_IFNAME": call.ifname,
           "CNI_PATH": cni_path}
    result: dict[str, Any] | None = None
    for plugin in plugins:
        stdin = {**plugin, "name": config["name"], "cniVersion": config["cniVersion"]}
        if result is not None:
            stdin["prevResult"] = result
        declared = {k: v for k, v in call.capability_args.items() if (plugin.get("capabilities") or {}).get(k)}
        if declared:
            stdin["runtimeConfig"] = declared
        exe = next(Path(d) / plugin["type"] for d in cni_path.split(":") if (Path(d) / plugin["type"]).exists())
        proc = node.exec([str(exe)], input=_go_json(stdin).encode(), env=env)
        result = json.loads(proc.stdout)
    assert result is not None
    cached: dict[str, Any] = {"kind": "cniCacheV1", "containerId": container_id,
                              "config": base64.b64encode(call.delegate.raw_bytes()).decode(), "ifName": call.ifname,
                              "networkName": config["name"], "netns": netns, "cniArgs": [list(a) for a in call.args]}
    if call.capability_args:
        cached["capabilityArgs"] = call.capability_args
    cached["result"] = result
    results = cni_dir / "results"
    results.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = results / f"{config['name']}-{container_id}-{call.ifname}"
    path.write_text(_go_json(cached))
    os.chmod(path, 0o600)
    return result


def multus_add(node: Netns, cni_dir: Path, calls: list[MultusCall], *, container_id: str, netns: str,
               cni_path: str) -> list[dict[str, Any]]:
    """Multus's CmdAdd for one pod: saveDelegates, then every delegate in order through libcni."""
    write_entry(cni_dir, container_id, [c.delegate for c in calls])
    return [libcni_add(node, cni_dir, c, container_id=container_id, netns=netns, cni_path=cni_path) for c in calls]


def k8s_args(runtime_args: str) -> list[tuple[str, str]]:
    """The CNI_ARGS thin Multus gives every delegate when the runtime sends kubelet's usual
    `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`, worked out
    by hand from createRuntimeConf + newCNIRuntimeConf: its five entries, then every runtime pair again (each K8S_*
    slot is already filled, so nothing is merged)."""
    pairs = [tuple(p.split("=", 1)) for p in runtime_args.split(";")]
    values = dict(pairs)
    own = [("IgnoreUnknown", "true")] + [(k, values.get(k, "")) for k in (
        "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")]
    assert all(v for _, v in own), "this shortcut holds only when the runtime sends every K8S_* value"
    return own + [(k, v) for k, v in pairs]  # type: ignore[misc]
