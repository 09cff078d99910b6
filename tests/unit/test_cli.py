"""The command line (issue 10.6) run as the real `metaplug` executable: `--version`, and `metaplug` with neither
arguments nor CNI_COMMAND prints the help on stdout and cni.md duty 1's about line on stderr, exit 0. With
CNI_COMMAND set the same executable is the plugin."""

from __future__ import annotations

import json
import subprocess

from metaplug import __version__
from tests.helpers.netns import VENV_BIN

METAPLUG = str(VENV_BIN / "metaplug")
ENV = {"PATH": "/usr/bin:/bin"}


def _run(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run([METAPLUG, *args], input=stdin.decode(), capture_output=True, text=True,
                          env=env or ENV, timeout=60)


def test_version_flag_and_subcommand_agree() -> None:
    flag, sub = _run("--version"), _run("version")
    assert flag.returncode == 0 and sub.returncode == 0
    assert flag.stdout == sub.stdout
    assert flag.stdout.startswith(f"metaplug {__version__}; CNI versions 0.1.0") and "1.1.0" in flag.stdout


def test_no_arguments_no_cni_command_prints_help_and_about_line() -> None:
    proc = _run()
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: metaplug") and "install" in proc.stdout and "--version" in proc.stdout
    # cni.md 1: the about line, with the supported versions, on stderr
    assert proc.stderr.strip() == "CNI plugin metaplug; supported CNI versions: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, " \
                                  "1.0.0, 1.1.0"


def test_cni_command_makes_it_the_plugin() -> None:
    proc = _run(env={**ENV, "CNI_COMMAND": "VERSION"}, stdin=b'{"cniVersion": "1.0.0"}')
    assert proc.returncode == 0 and json.loads(proc.stdout)["cniVersion"] == "1.0.0"
    unknown = _run("--version", env={**ENV, "CNI_COMMAND": "BOGUS"})  # arguments do not turn the plugin into the CLI
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["code"] == 4
