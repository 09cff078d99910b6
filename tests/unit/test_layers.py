"""DESIGN.md: imports only point down; metaplug/cni (a reusable Python libcni) never imports the rest of metaplug, and
the lower layers never import the verbs (plugin.py, runner.py) or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "metaplug" / "cni").glob("*.py")), ids=lambda p: p.name)
def test_cni_library_imports_nothing_of_metaplug_above_it(path: Path) -> None:
    outside = {m for m in imported_modules(path)
               if m.startswith("metaplug") and not m.startswith("metaplug.cni") and m != "metaplug"}
    assert outside == set()


LOWER = ["attach/annotations.py", "attach/resolve.py", "attach/plan.py", "merge.py", "journal.py", "netns.py",
         "rtnl.py", "config.py", "config_model.py", "k8s/client.py", "k8s/kubeconfig.py", "k8s/source.py"]


@pytest.mark.parametrize("name", LOWER)
def test_lower_layers_do_not_import_the_verbs_or_the_cli(name: str) -> None:
    upper = ("metaplug.plugin", "metaplug.runner", "metaplug.cli", "metaplug.demo", "metaplug.__main__")
    assert not {m for m in imported_modules(ROOT / "metaplug" / name) if m.startswith(upper)}


def test_delegates_use_metaplug_cni_only() -> None:
    for path in (ROOT / "delegates").glob("*.py"):
        used = {m for m in imported_modules(path) if m.startswith("metaplug")}
        assert all(m.startswith("metaplug.cni") for m in used), (path.name, used)
