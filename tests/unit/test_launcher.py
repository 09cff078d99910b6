"""The thin-mode launcher `metaplug install` writes in place of pip's console script (metaplug/launcher.py): the same
interpreter with -I -S and the import path its `site` would give, for the editable dev install and for a wheel-style
install in site-packages; anything else is copied as it is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import metaplug
from metaplug import launcher

VENV_BIN = Path(sys.executable).parent
CONSOLE_SCRIPT = VENV_BIN / "metaplug"
PIP_STYLE = "#!{python}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom metaplug.__main__ import main\n" \
            "if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n" \
            "    sys.exit(main())\n"


def write_launcher(source: Path, dest: Path) -> bytes:
    assert launcher.write_launcher(str(source), str(dest))
    assert dest.stat().st_mode & 0o777 == 0o755
    return dest.read_bytes()


def version(executable: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(executable)], env={"PATH": os.defpath, "CNI_COMMAND": "VERSION", **env},
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=60, check=False)


def poisoned_pythonpath(tmp_path: Path) -> str:
    """A PYTHONPATH whose `metaplug` package fails on import: what -I must ignore."""
    fake = tmp_path / "poison" / "metaplug"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('the poisoned metaplug was imported')\n")
    return str(fake.parent)


@pytest.mark.skipif(not CONSOLE_SCRIPT.is_file(), reason="needs the venv's console script")
def test_editable_install_launcher_runs_isolated(tmp_path: Path) -> None:
    script = write_launcher(CONSOLE_SCRIPT, tmp_path / "metaplug")
    assert script.startswith(f"#!{sys.executable} -IS\n".encode())
    source_tree = str(Path(metaplug.__file__).resolve().parent.parent)
    assert source_tree.encode() in script  # the editable install's .pth entry, taken over
    out = version(tmp_path / "metaplug")
    assert out.returncode == 0 and "supportedVersions" in json.loads(out.stdout), out
    # -I: the runtime's PYTHONPATH changes nothing (the console script it replaces would import the poison)
    poison = poisoned_pythonpath(tmp_path)
    assert version(tmp_path / "metaplug", PYTHONPATH=poison).returncode == 0
    assert b"poisoned" in version(CONSOLE_SCRIPT, PYTHONPATH=poison).stderr


def test_wheel_style_install_launcher(tmp_path: Path) -> None:
    """metaplug copied into a fresh venv's site-packages (what installing the wheel gives) with pip's console script:
    the launcher imports that copy, not the source tree."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    shutil.copytree(Path(metaplug.__file__).parent, site / "metaplug",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (site / "marker.pth").write_text(str(tmp_path / "pth-dir") + "\n")  # a .pth entry, as other wheels bring
    (tmp_path / "pth-dir").mkdir()
    console = venv / "bin" / "metaplug"
    console.write_text(PIP_STYLE.format(python=venv / "bin" / "python"))
    console.chmod(0o755)
    script = write_launcher(console, tmp_path / "metaplug")
    paths = json.loads(script.split(b"sys.path[:0] = ", 1)[1].split(b"\n", 1)[0])
    assert paths == [str(site), str(tmp_path / "pth-dir")]
    out = version(tmp_path / "metaplug")
    assert out.returncode == 0 and "supportedVersions" in json.loads(out.stdout), out


def test_other_scripts_are_not_replaced(tmp_path: Path) -> None:
    assert launcher.for_console_script("x", b"#!/bin/sh\necho metaplug\n") is None
    assert launcher.for_console_script("x", b"\x7fELF\x02\x01\x01") is None
    # pip's form for a long interpreter path (#!/bin/sh + exec): not the plain form, left as it is
    assert launcher.for_console_script("x", b"#!/bin/sh\n'''exec' \"/very long/python\" \"$0\" \"$@\"\n' '''\n"
                                            b"from metaplug.__main__ import main\n") is None
    missing = PIP_STYLE.format(python=tmp_path / "no-such-python").encode()
    assert launcher.for_console_script("x", missing) is None  # an interpreter that cannot answer
    other = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(other)], check=True, timeout=120)
    no_metaplug = PIP_STYLE.format(python=other / "bin" / "python").encode()
    assert launcher.for_console_script("x", no_metaplug) is None  # that interpreter cannot import metaplug
