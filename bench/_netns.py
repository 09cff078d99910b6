"""Shared helpers of the benchmark scripts: throw-away namespaces and temp dirs, process runs, small statistics.

Safety (common brief): nothing here touches the machine's own interfaces. Every device a benchmark makes lives in a
namespace made by `Sandbox`, and every file in its temp dir; leaving the `with` block deletes the namespaces (which
destroys every device inside them) and the temp dir, also after Ctrl-C or SIGTERM/SIGHUP.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

PREFIX = "mpbench"
BASE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def run(cmd: Sequence[str], *, check: bool = True, input: bytes | None = None,
        env: Mapping[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run `cmd`, capturing its output; with `check`, a non-zero exit raises RuntimeError with both outputs."""
    proc = subprocess.run(list(cmd), input=input, capture_output=True, env=dict(env) if env is not None else None,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                           f"{proc.stderr.decode(errors='replace')}{proc.stdout.decode(errors='replace')}")
    return proc


def need_root() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def ms(values_ns: Sequence[int | float]) -> list[float]:
    return [v / 1e6 for v in values_ns]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (inclusive method: never beyond the largest value); the value itself for one sample."""
    if len(values) < 2:
        return float(values[0])
    return float(statistics.quantiles(values, n=10, method="inclusive")[8])


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Sandbox:
    """Named network namespaces and one temp dir, all removed on exit (also on Ctrl-C, SIGTERM, SIGHUP)."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.tag = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.namespaces: list[str] = []
        self.tmp = Path(".")
        self._old: dict[int, Any] = {}

    def __enter__(self) -> Sandbox:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old[sig] = signal.signal(sig, _interrupted)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.tag}-"))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            for name in reversed(self.namespaces):
                run(["ip", "netns", "delete", name], check=False)
            self.namespaces.clear()
            shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            for sig, handler in self._old.items():
                signal.signal(sig, handler)

    def netns(self, role: str) -> str:
        """A new namespace `<tag>-<role>` with lo up; returns its name (path: /var/run/netns/<name>)."""
        name = f"{self.tag}-{role}"
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def veth(self, ns: str, name: str) -> str:
        """A veth pair `name`/`name`p, both ends inside `ns` and up (an uplink for macvlan); returns `name`."""
        run(["ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"])
        run(["ip", "-n", ns, "link", "set", f"{name}p", "up"])
        run(["ip", "-n", ns, "link", "set", name, "up"])
        return name


def netns_path(name: str) -> str:
    return f"/var/run/netns/{name}"


def links(ns: str) -> list[str]:
    """Interface names inside namespace `ns` (works from any namespace: `ip -n` opens the named one)."""
    out = run(["ip", "-n", ns, "-o", "link", "show"]).stdout.decode()
    return [line.split(":", 2)[1].strip().split("@", 1)[0] for line in out.splitlines() if line.strip()]
