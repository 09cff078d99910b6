"""The ordered attachments of one ADD (R9, R10, R13, R24, R30; DESIGN "attach/plan").

Order (R24): the cluster network first, as CNI_IFNAME; then `defaultNetworks` (not for pods in systemNamespaces);
then the static `delegates` after the first (Multus style); then the pod's selection elements in annotation order.
Everything is validated here, before the first delegate runs: element syntax, NAD lookup, namespace isolation,
interface names, and that each requested capability is declared by some plugin of that network (R7/R8/R11/R12/R14).
"""

from __future__ import annotations

from metaplug.attach.annotations import (
    DEFAULT_NETWORK_ANNOTATION,
    NETWORKS_ANNOTATION,
    SelectionElement,
    parse_default_network_annotation,
    parse_networks_annotation,
    validate_default_route_owner,
)
from metaplug.attach.resolve import ResolvedNetwork, Resolver
from metaplug.cni import jsontext
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from metaplug.config import MetaplugConfig

POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations"
NETWORKS_CNI_ARG = "METAPLUG_NETWORKS"
# R30: the CNI_ARGS keys every delegate gets. The rest (`IP`, `MAC` that Podman sets from `--ip`/`--mac-address`,
# and any other per-container setting a runtime makes for its own network) belong to the cluster network.
GENERIC_CNI_ARGS = ("IgnoreUnknown",)
GENERIC_CNI_ARG_PREFIXES = ("K8S_POD_",)


class Attachment(NamedTuple):
    """One delegate network list to run for the container."""

    ifname: str
    status_name: str
    conflist: dict[str, Any]
    capability_args: dict[str, Any]
    cluster: bool = False
    default_route: tuple[str, ...] = ()  # R13 gateways when this attachment owns the default route
    source: str = ""  # where its configuration came from (ResolvedNetwork.source), for messages
    cni_args: dict[str, Any] | None = None  # the element's own cni-args (R10), already merged into conflist


def describe(ifname: str, network: str, *, cluster: bool, source: str = "") -> str:
    """An attachment as error messages name it: its ifname and the network that asked for it (issue 10.5).
    `network` is the network-status name: `<namespace>/<name>` for a NetworkAttachmentDefinition."""
    if cluster:
        what = f"cluster network {network}"
    elif "/" in network:
        what = f"NetworkAttachmentDefinition {network}"
    else:
        what = f"network {network}"
    if source and source != network:
        what += f" from {source}"
    return f"attachment {ifname} ({what})"


class PodRef(NamedTuple):
    namespace: str
    name: str | None
    uid: str | None


def pod_ref(cni_args: Mapping[str, str]) -> PodRef:
    """The pod from CNI_ARGS (cni.md 33); `default` namespace when the runtime sends none."""
    return PodRef(
        namespace=cni_args.get("K8S_POD_NAMESPACE") or "default",
        name=cni_args.get("K8S_POD_NAME") or None,
        uid=cni_args.get("K8S_POD_UID") or None,
    )


def secondary_cni_args(cni_args: str) -> str:
    """R30: the runtime's CNI_ARGS as a secondary attachment gets them: only the generic keys (IgnoreUnknown and the
    K8S_POD_* identity, cni.md 33), in their original order. What a secondary needs beyond that comes from its own
    selection element (ips, mac, cni-args)."""
    kept = []
    for pair in cni_args.split(";"):
        key = pair.partition("=")[0]
        if key in GENERIC_CNI_ARGS or key.startswith(GENERIC_CNI_ARG_PREFIXES):
            kept.append(pair)
    return ";".join(kept)


def runtime_annotations(runtime_config: Mapping[str, Any]) -> dict[str, str] | None:
    """Pod annotations handed over by containerd/CRI-O through the capability (source 1), or None."""
    value = runtime_config.get(POD_ANNOTATIONS_CAPABILITY)
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return None


def _declared_capabilities(conflist: Mapping[str, Any]) -> set[str]:
    caps: set[str] = set()
    for plugin in conflist.get("plugins", []):
        for name, on in (plugin.get("capabilities") or {}).items():
            if on is True:
                caps.add(name)
    return caps


def _merge_cni_args(conflist: dict[str, Any], cni_args: Mapping[str, Any]) -> dict[str, Any]:
    """R10: `cni-args` go into `args.cni` of every plugin of the list; the annotation wins."""
    out = jsontext.clone(conflist)
    for plugin in out["plugins"]:
        args = plugin.get("args")
        if not isinstance(args, dict):
            args = {}
        cni = args.get("cni")
        if not isinstance(cni, dict):
            cni = {}
        cni.update(cni_args)
        args["cni"] = cni
        plugin["args"] = args
    return out


class PlanInputs(NamedTuple):
    """What the planner needs to know about the call, gathered by plugin.py."""

    ifname: str
    pod: PodRef
    runtime_config: dict[str, Any]
    annotations: dict[str, str] | None
    config_networks: str | None  # args.cni.networks of metaplug's config, or CNI_ARGS METAPLUG_NETWORKS


def next_free_ifname(taken: set[str], counter: int = 0) -> tuple[str, int]:
    """The next unnamed secondary's ifname: `net<N>`, N counting every secondary attachment and skipping names taken
    (explicit `interface` requests, names already in use). Returns the name and the counter it used."""
    counter += 1
    while f"net{counter}" in taken:
        counter += 1
    return f"net{counter}", counter


def secondary_attachment(resolved: ResolvedNetwork, sel: SelectionElement | None, ifname: str) -> Attachment:
    """One secondary attachment, as ADD and hot-plug make it: the element's runtimeConfig only (R30), each requested
    capability declared by some plugin of the list (R7/R8/R11/R12/R14), its cni-args merged in (R10)."""
    conflist = resolved.conflist
    caps: dict[str, Any] = {}
    if sel is not None:
        caps = sel.runtime_config()
        missing = sorted(set(caps) - _declared_capabilities(conflist))
        if missing:
            raise CniError(INVALID_NETWORK_CONFIG, "network does not support the requested capability",
                           f"network {sel.index} ({resolved.status_name}): no plugin of "
                           f"{conflist['name']!r} declares {', '.join(missing)} (R7/R8/R11/R12/R14)")
        if sel.cni_args:
            conflist = _merge_cni_args(conflist, sel.cni_args)
    return Attachment(ifname=ifname, status_name=resolved.status_name, conflist=conflist, capability_args=caps,
                      default_route=sel.default_route if sel is not None else (), source=resolved.source,
                      cni_args=sel.cni_args if sel is not None and sel.cni_args else None)


def build_plan(cfg: MetaplugConfig, inputs: PlanInputs, resolver: Resolver,
               existing_ifnames: Callable[[], set[str]] | None = None) -> list[Attachment]:
    """Every attachment of the ADD, validated, in order."""
    annotations = inputs.annotations or {}
    pod_ns = inputs.pod.namespace

    # Cluster network (R24), overridable per pod with v1.multus-cni.io/default-network.
    override = annotations.get(DEFAULT_NETWORK_ANNOTATION)
    if override:
        chosen = parse_default_network_annotation(override, cfg.network_namespace)
        cluster = resolver.nad(chosen.namespace, chosen.name, pod_namespace=chosen.namespace,
                               what=DEFAULT_NETWORK_ANNOTATION)
    elif cfg.cluster_network:
        cluster = resolver.cluster_network(cfg.cluster_network, cfg.network_namespace)
    elif cfg.delegates:
        cluster = resolver.inline(cfg.delegates[0], 0)
    else:
        raise CniError(INVALID_NETWORK_CONFIG, "no cluster network configured",
                       "set clusterNetwork or delegates in metaplug's configuration")
    plan = [Attachment(inputs.ifname, cluster.status_name, cluster.conflist,
                       # R30: the runtime's runtimeConfig goes to the cluster network only.
                       capability_args=dict(inputs.runtime_config), cluster=True, source=cluster.source)]

    secondaries: list[tuple[ResolvedNetwork, SelectionElement | None]] = []
    if pod_ns not in cfg.system_namespaces:
        for ref in cfg.default_networks:
            # Multus resolves each like clusterNetwork: a NAD, a conf name in confDir, a directory or a file.
            secondaries.append((resolver.cluster_network(ref, cfg.network_namespace, what="defaultNetworks"), None))
    for index, delegate in enumerate(cfg.delegates[1:], start=1):
        secondaries.append((resolver.inline(delegate, index), None))

    request = annotations.get(NETWORKS_ANNOTATION) or inputs.config_networks
    elements = parse_networks_annotation(request, pod_ns) if request else []
    validate_default_route_owner(elements)
    for element in elements:
        resolved = resolver.nad(element.namespace, element.name, pod_namespace=pod_ns,
                                what=f"network {element.index} ({element.namespace}/{element.name})")
        secondaries.append((resolved, element))
    if cfg.auxiliary_chain:  # Multus: the auxiliary chain runs last, on an ifname of its own
        aux = resolver.auxiliary_chain(cfg.auxiliary_chain, cfg.cluster_network, cfg.cni_version)
        if aux is not None:
            secondaries.append((aux, None))

    taken = {inputs.ifname}
    explicit: set[str] = set()
    for _, wanted in secondaries:
        if wanted is not None and wanted.interface:
            if wanted.interface in taken or wanted.interface in explicit:
                raise CniError(INVALID_NETWORK_CONFIG, "interface name used twice",
                               f"network {wanted.index} ({wanted.name}): interface {wanted.interface!r} is "
                               "already used by another attachment of this pod (R9)")
            explicit.add(wanted.interface)
    taken |= explicit

    counter = 0
    for resolved, sel in secondaries:
        if sel is not None and sel.interface:
            ifname = sel.interface
            counter += 1  # explicit names count too: the next unnamed one is still net<its position>
        else:
            ifname, counter = next_free_ifname(taken, counter)
            taken.add(ifname)
        plan.append(secondary_attachment(resolved, sel, ifname))

    if existing_ifnames is not None:
        present = existing_ifnames()
        clash = [a.ifname for a in plan if a.ifname in present]
        if clash:
            raise CniError(INVALID_NETWORK_CONFIG, "interface already exists in the container's network namespace",
                           f"{', '.join(clash)} (cni.md 10, R9)")
    return plan
