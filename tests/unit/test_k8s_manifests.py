"""configs/kubernetes/*.yaml: every document parses, has the fields its kind requires, the pieces refer to each
other consistently, the RBAC grants every call the client makes (metaplug.k8s.client.API_CALLS), and the DaemonSet's
command lines are accepted by `metaplug install`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from metaplug import install
from metaplug.k8s.client import API_CALLS, NAD_GROUP, NAD_RESOURCE

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "kubernetes"
NAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
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


@pytest.mark.parametrize("call", API_CALLS, ids=lambda c: "/".join(c))
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


def test_daemonset_runs_metaplug_install_with_host_paths() -> None:
    """The DaemonSet's commands parse with `metaplug install`'s own options; the host dirs are mounted at the same
    paths (so the paths written into 00-metaplug.conflist are valid on the host)."""
    (ds,) = of_kind("DaemonSet")
    spec = ds["spec"]
    assert ds["apiVersion"] == "apps/v1"
    labels = spec["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items())
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    containers = pod["initContainers"] + pod["containers"]
    assert pod["initContainers"], "install must run before the pod counts as started"
    parser = argparse.ArgumentParser(prog="metaplug")
    install.add_arguments(parser.add_subparsers(dest="command", required=True))
    for c in containers:
        assert c["image"]
        cmd = c["command"]
        assert cmd[:2] == ["metaplug", "install"]
        args = parser.parse_args(cmd[1:])
        assert args.handler is install.run_install
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        assert mounts.get(args.cni_conf_dir) == args.cni_conf_dir
        assert mounts.get(args.cni_bin_dir) == args.cni_bin_dir
        assert args.kubeconfig_out.startswith(args.cni_conf_dir + "/")
