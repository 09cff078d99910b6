"""Selection element -> delegate network configuration list (R1-R3, R29; DESIGN "attach/resolve").

Where a network's configuration can come from, in order:
- a NetworkAttachmentDefinition (NAD) from the Kubernetes API (when configured) or from a local NAD file
  `<confDir>/<namespace>/<name>.json` (a full NAD object, for runtimes without Kubernetes);
- R2: a NAD whose spec.config is empty falls back to the CNI config in confDir whose `name` equals the NAD's name;
- the cluster network may also be a conf name in confDir, a file path or a directory (its first conf file).
"""

from __future__ import annotations

import os

from metaplug.cni import files, jsonload, lexical
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

CONF_SUFFIXES = (".conflist", ".conf", ".json")
# Multus's auxiliary chain opens with its `passthru` plugin (an empty result, so chained-only plugins get a prevResult)
PASSTHRU = {"type": "passthru", "name": "passthru-cni"}


class NadSource(Protocol):
    """Anything that can look up a NetworkAttachmentDefinition object (None when it does not exist)."""

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None: ...


class ResolvedNetwork(NamedTuple):
    status_name: str  # the network-status name: "<namespace>/<nad>" or the cluster conf's name
    conflist: dict[str, Any]  # normalized network configuration list (cni.chain.load_conflist)
    source: str  # where it came from, for messages


class LocalNadStore:
    """NAD objects kept as JSON files `<confDir>/<namespace>/<name>.json`."""

    def __init__(self, conf_dir: str) -> None:
        self.conf_dir = conf_dir

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = os.path.join(self.conf_dir, namespace, f"{name}.json")
        try:
            data = jsonload.loads(files.read_file(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CniError(INVALID_NETWORK_CONFIG, "cannot read NetworkAttachmentDefinition file",
                           f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid NetworkAttachmentDefinition file", f"{path}: not an object")
        return data


def _load(data: bytes | dict[str, Any], source: str) -> dict[str, Any]:
    from metaplug.cni.chain import load_conflist

    try:
        return load_conflist(data)
    except CniError as err:
        raise CniError(err.code, f"invalid network configuration in {source}", f"{err.msg}: {err.details}") from None


def conf_files(conf_dir: str) -> list[str]:
    """CNI config files directly in `conf_dir`, in the alphabetical order libcni uses."""
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return []
    return [os.path.join(conf_dir, n) for n in names
            if n.endswith(CONF_SUFFIXES) and os.path.isfile(os.path.join(conf_dir, n))]


def load_conf_file(path: str) -> dict[str, Any]:
    try:
        data = files.read_file(path)
    except OSError as exc:
        raise CniError(INVALID_NETWORK_CONFIG, "cannot read network configuration", f"{path}: {exc}") from None
    return _load(data, path)


class Resolver:
    """Resolves network references for one ADD."""

    def __init__(self, conf_dir: str, nad_sources: Sequence[NadSource], *, namespace_isolation: bool = False,
                 global_namespaces: Sequence[str] = ()) -> None:
        self.conf_dir = conf_dir
        self.nad_sources = list(nad_sources)
        self.namespace_isolation = namespace_isolation
        self.global_namespaces = set(global_namespaces)

    def conf_by_name(self, name: str) -> dict[str, Any] | None:
        """The conf in confDir whose `name` is `name` (R2), or None."""
        for path in conf_files(self.conf_dir):
            try:
                raw = jsonload.loads(files.read_file(path))
            except (OSError, ValueError):
                continue
            if isinstance(raw, dict) and raw.get("name") == name:
                return _load(raw, path)
        return None

    def cluster_network(self, spec: str, network_namespace: str, what: str = "clusterNetwork") -> ResolvedNetwork:
        """`clusterNetwork` (and, as Multus, each of `defaultNetworks`): a file path, a directory (first conf), a conf
        name in confDir, or a NAD (`ns/name`, or a name in `network_namespace`)."""
        if spec.startswith("/"):
            if os.path.isdir(spec):
                files = [f for f in conf_files(spec) if not os.path.basename(f).startswith("00-metaplug")]
                if not files:
                    raise CniError(INVALID_NETWORK_CONFIG, "no CNI configuration found", f"{what} dir {spec}")
                conflist = load_conf_file(files[0])
                return ResolvedNetwork(conflist["name"], conflist, files[0])
            conflist = load_conf_file(spec)
            return ResolvedNetwork(conflist["name"], conflist, spec)
        if "/" in spec:
            namespace, _, name = spec.partition("/")
            return self.nad(namespace, name, pod_namespace=namespace, what=what)
        by_name = self.conf_by_name(spec)
        if by_name is not None:
            return ResolvedNetwork(spec, by_name, f"{self.conf_dir} (name {spec})")
        return self.nad(network_namespace, spec, pod_namespace=network_namespace, what=what)

    def nad(self, namespace: str, name: str, *, pod_namespace: str, what: str) -> ResolvedNetwork:
        """A NAD's delegate list (R1-R3), enforcing namespace isolation (R29)."""
        for label, value in (("namespace", namespace), ("name", name)):
            if not lexical.dns_label(value):  # R1
                raise CniError(INVALID_NETWORK_CONFIG, f"invalid NetworkAttachmentDefinition {label}",
                               f"{what}: {value!r} must match {lexical.DNS_LABEL_PATTERN}")
        if (self.namespace_isolation and namespace != pod_namespace
                and namespace not in self.global_namespaces):
            raise CniError(INVALID_NETWORK_CONFIG, "namespace isolation violation",
                           f"{what}: pod in namespace {pod_namespace!r} may not use NetworkAttachmentDefinition "
                           f"{namespace}/{name} (allowed: its own namespace and {sorted(self.global_namespaces)})")
        nad = None
        for source in self.nad_sources:
            nad = source.get_nad(namespace, name)
            if nad is not None:
                break
        status_name = f"{namespace}/{name}"
        if nad is None:
            raise CniError(INVALID_NETWORK_CONFIG, "NetworkAttachmentDefinition not found",
                           f"{what}: {status_name} (looked in the Kubernetes API when configured and "
                           f"{os.path.join(self.conf_dir, namespace, name + '.json')})")
        spec = nad.get("spec") or {}
        config = spec.get("config") if isinstance(spec, dict) else None
        if not config:
            # R2: an empty spec.config means the on-disk conf with the NAD's name.
            fallback = self.conf_by_name(name)
            if fallback is None:
                raise CniError(INVALID_NETWORK_CONFIG, "NetworkAttachmentDefinition has no config",
                               f"{what}: {status_name} has an empty spec.config and no conf named {name!r} "
                               f"exists in {self.conf_dir}")
            return ResolvedNetwork(status_name, fallback, f"{self.conf_dir} (R2 fallback for {status_name})")
        if not isinstance(config, str):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid NetworkAttachmentDefinition",
                           f"{what}: {status_name} spec.config must be a JSON string")
        try:
            raw = jsonload.loads(config)
        except ValueError as exc:
            raise CniError(INVALID_NETWORK_CONFIG, "invalid NetworkAttachmentDefinition",
                           f"{what}: {status_name} spec.config is not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid NetworkAttachmentDefinition",
                           f"{what}: {status_name} spec.config must be a JSON object")
        raw.setdefault("name", name)  # R3
        return ResolvedNetwork(status_name, _load(raw, f"NetworkAttachmentDefinition {status_name}"), status_name)

    def auxiliary_chain(self, chain_name: str, cluster_network: str | None, cni_version: str
                        ) -> ResolvedNetwork | None:
        """Multus's `auxiliaryCNIChainName`: the `.conf` plugin files of `<directory of clusterNetwork>/<name>/`
        (libcni's subdirectory plugin loading, CNI #1052: name order, subdirectories skipped), chained after
        passthru in a list named `chain_name` with metaplug's own cniVersion; None when the directory has none."""
        if not cluster_network or not cluster_network.startswith("/"):
            raise CniError(INVALID_NETWORK_CONFIG, "auxiliaryCNIChainName needs a clusterNetwork file path",
                           f"the chain's directory is next to clusterNetwork, which is {cluster_network!r}")
        directory = os.path.join(os.path.dirname(cluster_network), chain_name)
        plugins = []
        for path in conf_files(directory):
            if not path.endswith(".conf"):
                continue
            try:
                plugin = jsonload.loads(files.read_file(path))
            except (OSError, ValueError) as exc:
                raise CniError(INVALID_NETWORK_CONFIG, "cannot read auxiliary chain plugin", f"{path}: {exc}") from None
            if not isinstance(plugin, dict) or not plugin.get("type"):
                raise CniError(INVALID_NETWORK_CONFIG, "invalid auxiliary chain plugin", f"{path}: missing 'type'")
            plugins.append(plugin)
        if not plugins:
            return None
        conflist = {"cniVersion": cni_version, "name": chain_name, "plugins": [dict(PASSTHRU), *plugins]}
        return ResolvedNetwork(chain_name, _load(conflist, f"auxiliary chain {directory}"), directory)

    def inline(self, delegate: dict[str, Any], index: int) -> ResolvedNetwork:
        """A network config given inline in metaplug's `delegates` list."""
        conflist = _load(delegate, f"delegates[{index}]")
        return ResolvedNetwork(conflist["name"], conflist, f"delegates[{index}]")
