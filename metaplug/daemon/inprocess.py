"""The bundled mp-* delegates served in-process by the daemon: no exec, no imports per call (their netlink is stdlib).

Each is registered in cni.invoke's `in_process` table under its executable's name, so the core finds and calls it
exactly as before (find_plugin still requires the executable in binDir/CNI_PATH) and decodes its answer like an
executable's; only the process is saved. Every other delegate is exec'd as in thin mode.
"""

from __future__ import annotations

import functools
import importlib
import logging

from metaplug.cni import invoke

log = logging.getLogger("metaplug.daemon.inprocess")
BUNDLED = ("mp_bridge", "mp_macvlan", "mp_loopback", "mp_host_local", "mp_static")


def register() -> list[str]:
    """Serve every bundled delegate in-process; returns their names (none when the package is not installed)."""
    try:
        from metaplug_delegates._common import answer
    except ImportError as exc:
        log.warning("bundled delegates not installed; every delegate is exec'd", extra={"error": str(exc)})
        return []
    names = []
    for module_name in BUNDLED:
        module = importlib.import_module(f"metaplug_delegates.{module_name}")
        invoke.in_process[module.NAME] = functools.partial(answer, module.NAME, module.HANDLERS)
        names.append(module.NAME)
    return names
