"""configs/kubernetes/*.yaml: every document parses, has the fields its kind requires, the pieces refer to each
other consistently, the RBAC grants every call the client makes (metaplug.k8s.client.API_CALLS), and the DaemonSet
matches the code it runs: its commands parse with metaplug's own command line, the daemon's config (the ConfigMap)
loads with the daemon's loader, and every path the code uses (socket, spool, state, the shim's install path, the CNI
dirs, the kubeconfig) is mounted from the host at the same path, so the manifests cannot drift from the code."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from metaplug import install
from metaplug.config import DEFAULT_STATE_DIR
from metaplug.daemon.config import DEFAULT_SOCKET
from metaplug.k8s.client import API_CALLS, NAD_GROUP, NAD_RESOURCE
from metaplug.k8s.watch import WATCH_CALLS

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "kubernetes"
NAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def documents(directory: Path = CONFIGS) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def test_the_expected_manifests_exist() -> None:
    kinds = sorted(doc["kind"] for _, doc in documents())
    for kind in ("CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"):
        assert kind in kinds
    assert kinds.count("NetworkAttachmentDefinition") >= 2


@pytest.mark.parametrize(("file", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v.get("kind", "?"))
def test_every_document_has_the_common_fields(file: str, doc: dict[str, Any]) -> None:
    assert isinstance(doc, dict), file
    assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), file
    name = doc.get("metadata", {}).get("name")
    assert isinstance(name, str) and name, f"{file}: metadata.name"


def test_crd_matches_the_client_paths() -> None:
    """The client GETs /apis/k8s.cni.cncf.io/v1/namespaces/NS/network-attachment-definitions/NAME (R1)."""
    (crd,) = of_kind("CustomResourceDefinition")
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert spec["group"] == NAD_GROUP and spec["names"]["plural"] == NAD_RESOURCE
    assert crd["metadata"]["name"] == f"{NAD_RESOURCE}.{NAD_GROUP}"
    assert spec["names"]["kind"] == "NetworkAttachmentDefinition" and spec["scope"] == "Namespaced"
    versions = spec["versions"]
    assert [v["name"] for v in versions if v["storage"]] == ["v1"] and all(v["served"] for v in versions)
    config = versions[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["config"]
    assert config["type"] == "string"


def test_example_nads_hold_valid_cni_configs() -> None:
    """R1-R3: apiVersion k8s.cni.cncf.io/v1, a valid name, spec.config a JSON CNI config whose name is the NAD's."""
    import re

    nads = of_kind("NetworkAttachmentDefinition")
    types: set[str] = set()
    for nad in nads:
        assert nad["apiVersion"] == f"{NAD_GROUP}/v1"
        assert re.match(NAME_RE, nad["metadata"]["name"]) and re.match(NAME_RE, nad["metadata"]["namespace"])
        config = json.loads(nad["spec"]["config"])
        assert config["cniVersion"] and config.get("name", nad["metadata"]["name"]) == nad["metadata"]["name"]
        plugins = config.get("plugins", [config])
        assert plugins and all(p.get("type") for p in plugins)
        types.update(p["type"] for p in plugins)
    assert {"bridge", "macvlan"} <= types


def _grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and
               (verb in r.get("verbs", []) or "*" in r.get("verbs", [])) for r in rules)


@pytest.mark.parametrize("call", API_CALLS + WATCH_CALLS, ids=lambda c: "/".join(c))
def test_rbac_grants_every_client_call(call: tuple[str, str, str]) -> None:
    (role,) = of_kind("ClusterRole")
    assert _grants(role["rules"], *call), f"configs/kubernetes/rbac.yaml does not grant {call}"


def test_rbac_is_not_wider_than_needed() -> None:
    """The rules can fail: no wildcard, and nothing that writes pods themselves, secrets, or NADs."""
    (role,) = of_kind("ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    assert not _grants(role["rules"], "", "pods", "update") and not _grants(role["rules"], "", "pods", "patch")
    assert not _grants(role["rules"], "", "secrets", "get")
    assert not _grants(role["rules"], NAD_GROUP, NAD_RESOURCE, "create")


def test_binding_ties_the_role_to_the_daemonset_service_account() -> None:
    (binding,) = of_kind("ClusterRoleBinding")
    (role,) = of_kind("ClusterRole")
    (sa,) = of_kind("ServiceAccount")
    (ds,) = of_kind("DaemonSet")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"]} in binding["subjects"]
    assert ds["metadata"]["namespace"] == sa["metadata"]["namespace"]
    assert ds["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def cli() -> argparse.ArgumentParser:
    from metaplug.cli import build_parser

    return build_parser()


def pod_spec() -> dict[str, Any]:
    (ds,) = of_kind("DaemonSet")
    return dict(ds["spec"]["template"]["spec"])


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return dict(found)


def host_mounts(spec: dict[str, Any], c: dict[str, Any]) -> dict[str, str]:
    """mountPath -> host path of every hostPath volume the container mounts."""
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    return {m["mountPath"]: host[m["name"]] for m in c["volumeMounts"] if m["name"] in host}


def writable(c: dict[str, Any], path: str) -> bool:
    return any(m["mountPath"] == mount_of(c, path) and not m.get("readOnly") for m in c["volumeMounts"])


def mount_of(c: dict[str, Any], path: str) -> str | None:
    """The mountPath that holds `path` (the deepest)."""
    best = None
    for m in c["volumeMounts"]:
        mp = m["mountPath"].rstrip("/")
        if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best)):
            best = mp
    return best


def on_host_at_same_path(spec: dict[str, Any], c: dict[str, Any], path: str) -> bool:
    """`path` is inside a hostPath mount whose host path equals its mount path (valid on the host and here)."""
    mp = mount_of(c, path)
    return mp is not None and host_mounts(spec, c).get(mp) == mp


def daemon_config_file(c: dict[str, Any], path: str, spec: dict[str, Any] | None = None) -> Any:
    """The daemon config the container sees at `path`, from the ConfigMap mounted there."""
    from metaplug.daemon import config

    spec = spec or pod_spec()
    mp = mount_of(c, path)
    assert mp is not None, f"{c['name']}: nothing mounted at {path}"
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == mp]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    (cm,) = [d for d in of_kind("ConfigMap") if d["metadata"]["name"] == volume["configMap"]["name"]]
    raw = json.loads(cm["data"][os.path.relpath(path, mp)])
    return config.from_dict(raw), raw


def daemon_args() -> argparse.Namespace:
    return cli().parse_args(container(pod_spec(), "daemon")["command"][1:])


def install_args(c: dict[str, Any]) -> argparse.Namespace:
    cmd = c["command"]
    assert cmd[0] == "metaplug"
    return cli().parse_args(cmd[1:])


def test_the_daemon_is_the_main_container_with_its_config_from_the_configmap() -> None:
    spec = pod_spec()
    c = container(spec, "daemon")
    assert c in spec["containers"]
    args = daemon_args()
    assert args.command == "daemon"
    cfg, raw = daemon_config_file(c, args.config)
    assert cfg.socket_path == DEFAULT_SOCKET  # the shim's compiled-in default: a conflist without socketPath works
    # every directory the daemon writes is the host's, at the same path (the shim on the host uses them too)
    state_dir = raw.get("stateDir", DEFAULT_STATE_DIR)
    for path in (os.path.dirname(cfg.socket_path), cfg.spool_dir, state_dir):
        assert on_host_at_same_path(spec, c, path) and writable(c, path), path
    # the delegates: binDir is the image's bundled delegates, CNI_PATH the host's plugins
    assert raw["binDir"] == os.path.dirname(install.IMAGE_SHIM)
    cni_path = {e["name"]: e.get("value") for e in c.get("env", [])}["CNI_PATH"]
    for d in cni_path.split(":"):
        assert on_host_at_same_path(spec, c, d), d
    # host-local keeps its reservations in /var/lib/cni/networks: they must outlive the container
    assert on_host_at_same_path(spec, c, "/var/lib/cni/networks") and writable(c, "/var/lib/cni/networks")


def test_the_probes_ask_the_daemon_where_it_serves() -> None:
    c = container(pod_spec(), "daemon")
    cfg, _ = daemon_config_file(c, daemon_args().config)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c[probe]["httpGet"]
        assert (get["host"], get["port"], get["path"]) == (cfg.metrics_host, cfg.metrics_port, path)
    assert pod_spec()["hostNetwork"] is True  # the kubelet reaches the daemon's loopback address only so


def test_the_daemon_sees_pod_namespaces_and_may_act_in_them() -> None:
    spec = pod_spec()
    c = container(spec, "daemon")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for netns_dir in ("/run/netns", "/var/run/netns"):  # created after the container started: HostToContainer
        assert host_mounts(spec, c)[netns_dir] == netns_dir
        assert mounts[netns_dir].get("mountPropagation") == "HostToContainer"
    assert spec["hostPID"] is True  # CNI_NETNS=/proc/<pid>/ns/net
    assert c["securityContext"].get("privileged") is True  # writable /proc/sys for the delegates' sysctls
    assert "limits" in c["resources"] and "memory" in c["resources"]["limits"]


def test_sigterm_has_time_to_drain() -> None:
    from metaplug.daemon.config import SHUTDOWN_TIMEOUT

    assert pod_spec()["terminationGracePeriodSeconds"] > SHUTDOWN_TIMEOUT


def test_install_waits_for_the_daemon_and_installs_the_image_shim_with_host_paths() -> None:
    """The install container: daemon mode, the same daemon config file as the daemon, the shim where the
    Containerfile puts it, the host's CNI dirs at the same paths; it must not run before the daemon, so it is a
    regular container (an init container would wait for ever for a daemon that starts after it)."""
    spec = pod_spec()
    c = container(spec, "install")
    assert c in spec["containers"] and not spec.get("initContainers")
    args = install_args(c)
    assert args.handler is install.run_install and args.mode == "daemon" and args.wait > 0 and args.interval > 0
    assert args.shim == install.IMAGE_SHIM
    assert args.daemon_config == daemon_args().config
    assert daemon_config_file(c, args.daemon_config)[0] == daemon_config_file(container(spec, "daemon"),
                                                                              daemon_args().config)[0]
    for d in (args.cni_conf_dir, args.cni_bin_dir):
        assert host_mounts(spec, c).get(d) == d and writable(c, d)
    assert args.kubeconfig_out.startswith(args.cni_conf_dir + "/")
    # the daemon reads what the conflist names: the cluster network's conflist and the kubeconfig
    daemon = container(spec, "daemon")
    assert on_host_at_same_path(spec, daemon, args.cni_conf_dir)
    assert on_host_at_same_path(spec, daemon, args.kubeconfig_out)
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged") and not sc["allowPrivilegeEscalation"]


def test_every_image_is_the_package_version() -> None:
    from metaplug import __version__

    spec = pod_spec()
    for c in spec["containers"]:
        assert c["image"].rsplit(":", 1)[1] == __version__


def test_the_uninstall_daemonset_undoes_what_install_wrote() -> None:
    """configs/kubernetes/uninstall/ (applied by hand, never with the directory above): `metaplug uninstall` with
    the install container's conf dir and daemon config, every path install wrote mounted at the same host path."""
    (ds,) = [d for _, d in documents(CONFIGS / "uninstall") if d["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    c = container(spec, "uninstall")
    args = install_args(c)
    assert args.handler is install.run_uninstall
    inst = install_args(container(pod_spec(), "install"))
    assert args.cni_conf_dir == inst.cni_conf_dir and args.daemon_config == inst.daemon_config
    for d in (inst.cni_conf_dir, inst.cni_bin_dir, os.path.dirname(inst.kubeconfig_out)):
        mp = mount_of(c, d)
        assert mp is not None and host_mounts(spec, c)[mp] == mp and writable(c, d), d
    cfg, raw = daemon_config_file(c, args.daemon_config, spec)
    for d in (cfg.spool_dir, raw.get("stateDir", DEFAULT_STATE_DIR)):
        assert on_host_at_same_path(spec, c, d) and writable(c, d), d
    # with the daemon gone, the conflist left on the node fails every pod ADD (code 11): this pod must need none
    assert spec["hostNetwork"] is True


def test_root_only_where_asked_for() -> None:
    """The image's default user has no privileges (Containerfile); the containers that write host files or run
    the delegates ask for uid 0 themselves."""
    (ds,) = [d for _, d in documents(CONFIGS / "uninstall") if d["kind"] == "DaemonSet"]
    for spec, name in ((pod_spec(), "daemon"), (pod_spec(), "install"),
                       (ds["spec"]["template"]["spec"], "uninstall")):
        assert container(spec, name)["securityContext"]["runAsUser"] == 0, name
