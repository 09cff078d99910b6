"""The example configurations in configs/examples are valid: metaplug's model accepts them and every NAD's config is a
loadable network configuration list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metaplug.attach.resolve import LocalNadStore, Resolver
from metaplug.cni.chain import load_conflist
from metaplug.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.conflist")), ids=lambda p: p.name)
def test_example_conflist_is_valid(path: Path) -> None:
    conflist = load_conflist(path.read_bytes())
    for plugin in conflist["plugins"]:
        if plugin["type"] == "metaplug":
            cfg = load_config({**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]})
            for delegate in cfg.delegates:
                load_conflist(delegate)


def test_example_nads_resolve() -> None:
    nads = sorted((EXAMPLES / "nads" / "default").glob("*.json"))
    assert nads
    resolver = Resolver(str(EXAMPLES / "nads"), [LocalNadStore(str(EXAMPLES / "nads"))])
    for path in nads:
        name = json.loads(path.read_text())["metadata"]["name"]
        resolved = resolver.nad("default", name, pod_namespace="default", what="example")
        assert resolved.conflist["name"] == name and resolved.status_name == f"default/{name}"
