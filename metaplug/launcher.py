"""The thin-mode executable `metaplug install --mode thin` puts on the host: a launcher that starts the interpreter
isolated and without `site` (`-I -S`) and sets the import path itself.

pip's console script (`#!/venv/bin/python` + `from metaplug.__main__ import main`) makes every CNI call run `site`:
the venv's site-packages, every .pth file in it (setuptools' distutils hack, an editable install's path hook), user
site-packages and PYTHON* variables from the runtime's environment: ~2.5 ms of each call (issue 10.7), and an
environment that can change what runs. The launcher names the same interpreter and puts exactly the directories that
interpreter's `site` adds (asked once, at install time) in front of its stdlib path, so an installed wheel and an
editable install (whose .pth names the source tree) import the same metaplug as the console script did.

Anything it cannot vouch for (another kind of script, an interpreter that does not answer, a path that does not
import metaplug) returns None: install then copies the source file unchanged, as before.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

MARKER = b"# metaplug thin launcher"
_CONSOLE_SCRIPT = re.compile(rb"\A#!(?P<python>/[^\s]+)\n(?:.*\n)*?from metaplug\.__main__ import main\n")
_ASK_PATH = "import json, sys; print(json.dumps(sys.path))"
_ASK_TIMEOUT = 30.0


def launcher_script(python: str, paths: list[str], source: str) -> bytes:
    """The launcher: `python -I -S`, `paths` first on sys.path, then metaplug's entry point (as the console script)."""
    return (
        f"#!{python} -IS\n"
        f"{MARKER.decode()}, written by `metaplug install` from {source}: -I -S skips site and .pth processing\n"
        "import sys\n"
        f"sys.path[:0] = {json.dumps(paths)}\n"
        "from metaplug.__main__ import main\n"
        "sys.exit(main())\n"
    ).encode()


def _ask(python: str, *flags: str) -> list[str] | None:
    try:
        out = subprocess.run([python, *flags, "-c", _ASK_PATH], capture_output=True, timeout=_ASK_TIMEOUT,
                             check=True, cwd="/", env={"PATH": os.defpath})
        found = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return [p for p in found if isinstance(p, str)] if isinstance(found, list) else None


def site_paths(python: str) -> list[str] | None:
    """The directories `site` adds to `python`'s import path (site-packages, .pth entries), in order; None when
    the interpreter cannot tell."""
    full = _ask(python, "-s", "-E")  # what a console script gets, without user site-packages and PYTHON* variables
    bare = _ask(python, "-I", "-S")
    if full is None or bare is None:
        return None
    return [p for p in full if p and p not in bare and p != "/"]


def for_console_script(source: str, data: bytes) -> bytes | None:
    """The launcher replacing the console script `data` (read from `source`), or None when it is not metaplug's console
    script with a plain `#!/path/to/python` line, or the launcher would not import metaplug."""
    match = _CONSOLE_SCRIPT.match(data)
    if match is None:
        return None
    python = match["python"].decode(errors="replace")
    paths = site_paths(python)
    if paths is None:
        return None
    script = launcher_script(python, paths, source)
    probe = f"import sys; sys.path[:0] = {json.dumps(paths)}; import metaplug.__main__"
    try:
        subprocess.run([python, "-I", "-S", "-c", probe], capture_output=True, timeout=_ASK_TIMEOUT, check=True,
                       cwd="/", env={"PATH": os.defpath})
    except (OSError, subprocess.SubprocessError):
        return None
    return script


def write_launcher(console_script: str, dest: str) -> bool:
    """Write at `dest` (mode 0755) the launcher `metaplug install --mode thin` makes of `console_script`; False (and
    nothing written) when install would copy it unchanged. For the benchmarks, which measure what install installs."""
    with open(console_script, "rb") as f:
        script = for_console_script(console_script, f.read())
    if script is None:
        return False
    with open(dest, "wb") as f:
        f.write(script)
    os.chmod(dest, 0o755)
    return True
