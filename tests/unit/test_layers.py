"""DESIGN.md: imports only point down; metaplug/cni (a reusable Python libcni) never imports the rest of metaplug, and
the lower layers never import the verbs (plugin.py, runner.py) or the CLI. No import cycle anywhere, and every package
is installed under its own name."""

from __future__ import annotations

import ast
import tomllib
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
         "config.py", "k8s/client.py", "k8s/kubeconfig.py", "k8s/source.py"]


@pytest.mark.parametrize("name", LOWER)
def test_lower_layers_do_not_import_the_verbs_or_the_cli(name: str) -> None:
    upper = ("metaplug.plugin", "metaplug.runner", "metaplug.cli", "metaplug.demo", "metaplug.__main__",
             "metaplug.daemon")
    assert not {m for m in imported_modules(ROOT / "metaplug" / name) if m.startswith(upper)}


def test_delegates_use_metaplug_cni_only() -> None:
    for path in (ROOT / "delegates").glob("*.py"):
        used = {m for m in imported_modules(path) if m.split(".")[0] == "metaplug"}
        assert all(m.startswith("metaplug.cni") for m in used), (path.name, used)


# The source tree: installed package name -> its directory (delegates/ installs as metaplug_delegates).
PACKAGES = {"metaplug": ROOT / "metaplug", "metaplug_delegates": ROOT / "delegates"}


def source_modules() -> dict[str, Path]:
    """Every module of the installed packages by dotted name (a package by its own name, not `.__init__`)."""
    modules: dict[str, Path] = {}
    for package, directory in PACKAGES.items():
        for path in directory.rglob("*.py"):
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of `modules` it imports: every import statement counts, at the top, inside a function
    (lazy imports) or under TYPE_CHECKING (type-only); relative imports resolved; `from pkg import mod` is an import
    of pkg.mod."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    dotted = alias.name
                    while dotted and dotted not in modules:
                        dotted = dotted.rpartition(".")[0]
                    if dotted:
                        targets.add(dotted)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        targets.add(f"{base}.{alias.name}")
                    elif base in modules:
                        targets.add(base)
        targets.discard(name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_metaplug_or_the_delegates() -> None:
    """A cycle, even through a lazy or a TYPE_CHECKING import, means two modules that cannot be read apart."""
    assert cycles(import_graph(source_modules())) == []


def test_the_cycle_finder_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    modules = {"pkg": pkg / "__init__.py", **{f"pkg.{m}": pkg / f"{m}.py" for m in "abc"}}
    assert cycles(import_graph(modules)) == [["pkg.a", "pkg.b"]]


def test_every_package_directory_is_installed() -> None:
    """pyproject lists the packages by hand (the renamed metaplug_delegates defeats discovery): a new package
    directory that is not listed would be missing from the wheel while the editable install still finds it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {name for name, path in source_modules().items() if path.name == "__init__.py"}
    assert listed == on_disk
