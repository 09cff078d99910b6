"""The Containerfile (the DaemonSet's image) against what the code and the manifests expect: the shim compiled
static with .ci/setup's flags in a build stage, wheels installed with --no-index from the prepared directory, the
shim and the bundled delegates where the DaemonSet and the daemon's config look for them, no compiler in the final
stage, and a build context that holds only what the build copies. (Building the image is issue 14's test.)"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import NamedTuple

import yaml

from metaplug import install

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "Containerfile"


class Stage(NamedTuple):
    base: str
    name: str | None
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined


def stages() -> list[Stage]:
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            out.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None, []))
        elif out:
            out[-1].instructions.append((word, rest.strip()))
    return out


def runs(stage: Stage) -> str:
    return " ; ".join(rest for word, rest in stage.instructions if word == "RUN")


def setup_gcc_flags() -> list[str]:
    """The flags .ci/setup compiles the shim with (the same binary here and in the image)."""
    line = next(ln for ln in (REPO / ".ci" / "setup").read_text().splitlines() if ln.strip().startswith("gcc "))
    words = shlex.split(line)
    return [w for w in words[1:] if w.startswith("-") and w != "-o"]


def test_a_build_stage_compiles_the_shim_static_with_the_setup_flags() -> None:
    shim = next(s for s in stages() if "gcc" in runs(s))
    gcc = re.search(r"gcc ([^;&|]*)", runs(shim))
    assert gcc is not None
    flags = [w for w in gcc.group(1).split() if w.startswith("-") and w != "-o"]
    assert "-static" in flags and flags == setup_gcc_flags()
    assert "metaplug/shim/metaplug-shim.c" in " ".join(rest for word, rest in shim.instructions if word == "COPY")


def test_the_final_stage_has_the_shim_the_venv_and_no_compiler() -> None:
    all_stages = stages()
    final = all_stages[-1]
    assert "gcc" not in runs(final) and "apt-get" not in runs(final) and "pip" not in runs(final)
    assert final.base == all_stages[1].base  # the venv was made with the very Python it runs on
    copies = [rest.split() for word, rest in final.instructions if word == "COPY"]
    shim_stage = next(s.name for s in all_stages if "gcc" in runs(s))
    assert [f"--from={shim_stage}", "/out/metaplug-shim", install.IMAGE_SHIM] in copies
    env = " ".join(rest for word, rest in final.instructions if word == "ENV")
    path = re.search(r"PATH=(\S+)", env)
    assert path is not None and path.group(1).split(":")[0] == os.path.dirname(install.IMAGE_SHIM)


def test_wheels_are_installed_offline_from_the_prepared_directory() -> None:
    venv = next(s for s in stages() if "pip" in runs(s))
    assert "--no-index" in runs(venv) and "--find-links /wheels" in runs(venv)
    assert ("COPY", "build/wheels/ /wheels/") in venv.instructions
    venv_dir = os.path.dirname(os.path.dirname(install.IMAGE_SHIM))
    assert f"venv --without-pip {venv_dir}" in runs(venv)  # its bin/ holds metaplug, mp-* and the shim
    # the build context lets in exactly what the stages copy
    allowed = [ln[1:] for ln in (REPO / ".containerignore").read_text().splitlines() if ln.startswith("!")]
    assert sorted(allowed) == ["build/debs/", "build/wheels/", "metaplug/shim/metaplug-shim.c"]


def test_iptables_comes_from_debs_fetched_outside_the_build_and_leaves_no_trace() -> None:
    """The final stage installs build/debs (what the base lacks of iptables; empty when it has it) with dpkg from a
    bind mount, so no .deb lands in a layer, and fails the build when iptables is still missing; the script fills
    build/debs with apt resolving against the base's own dpkg status, outside the build."""
    final = stages()[-1]
    dpkg = next(rest for word, rest in final.instructions if word == "RUN" and "dpkg" in rest)
    assert dpkg.startswith("--mount=type=bind,source=build/debs,target=/debs ")
    assert "dpkg --install" in dpkg and "/debs/*.deb" in dpkg and dpkg.rstrip().endswith("iptables --version")
    assert not any("debs" in rest for word, rest in final.instructions if word in ("COPY", "ADD"))
    script = (REPO / "scripts" / "build-image").read_text()
    apt = re.search(r"apt-get install (.*?) iptables", script, re.S)
    assert apt is not None and "--download-only" in apt.group(1) and "--no-install-recommends" in apt.group(1)
    assert 'Dir::State::status="$work/dpkg/status"' in apt.group(1)  # the base's status, not the machine's
    assert "mv \"$work\"/debs/*.deb build/debs/" in script


def test_the_daemon_config_finds_the_bundled_delegates_in_the_image() -> None:
    docs = yaml.safe_load_all((REPO / "configs" / "kubernetes" / "daemon-config.yaml").read_text())
    (cm,) = [d for d in docs if d and d["kind"] == "ConfigMap"]
    assert json.loads(cm["data"]["daemon.json"])["binDir"] == os.path.dirname(install.IMAGE_SHIM)


def test_the_build_script_builds_this_containerfile_offline() -> None:
    """scripts/build-image: the wheels go where the venv stage copies them from, the build has no network, and its
    registry bases are the Containerfile's defaults (the local ones replace them with --build-arg)."""
    script = (REPO / "scripts" / "build-image").read_text()
    assert "--wheel-dir build/wheels . pip" in script
    build = re.search(r"podman_private build (.*?)-f Containerfile", script, re.S)
    assert build is not None and "--network none" in build.group(1)
    defaults = dict(re.findall(r"^ARG (BASE|BUILD_BASE)=(\S+)$", CONTAINERFILE.read_text(), re.M))
    assert f"base_image={defaults['BASE']}" in script and f"build_base_image={defaults['BUILD_BASE']}" in script
    for arg in ("BASE", "BUILD_BASE", "VERSION", "SOURCE", "REVISION"):
        assert f"--build-arg {arg}=" in script
