"""Real network namespaces for tests, and how to run commands inside them.

Safety (developers' guide): nothing here touches the machine's own interfaces. Every test gets a "node" namespace with
its own veth uplinks; metaplug and the delegates run inside it with `ip netns exec`. Every namespace made here is
deleted when the test ends, pass or fail (deleting a namespace destroys every device inside it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PREFIX = "mpt-"


def run(cmd: Sequence[str], *, check: bool = True, input: bytes | None = None,
        env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(cmd), input=input, capture_output=True, env=dict(env) if env is not None else None,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()} {proc.stdout.decode()}")
    return proc


@dataclass
class Netns:
    """One named network namespace (`ip netns add`)."""

    name: str
    created: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"/var/run/netns/{self.name}"

    def exec(self, cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return run(["ip", "netns", "exec", self.name, *cmd], **kw)

    def ip(self, *args: str, check: bool = True) -> str:
        return self.exec(["ip", *args], check=check).stdout.decode()

    def ip_json(self, *args: str) -> Any:
        out = self.exec(["ip", "-j", *args]).stdout.decode()
        return json.loads(out) if out.strip() else []

    def links(self) -> dict[str, dict[str, Any]]:
        return {link["ifname"]: link for link in self.ip_json("link", "show")}

    def addresses(self, ifname: str) -> list[str]:
        """CIDRs (with prefix) of `ifname`, or [] when the interface does not exist."""
        proc = self.exec(["ip", "-j", "addr", "show", "dev", ifname], check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return []
        data = json.loads(proc.stdout)
        return [f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])
                if a.get("scope") != "link"]

    def has_link(self, ifname: str) -> bool:
        return self.exec(["ip", "link", "show", "dev", ifname], check=False).returncode == 0

    def routes(self, family: str = "-4") -> list[dict[str, Any]]:
        out = self.exec(["ip", "-j", family, "route", "show"]).stdout.decode()
        return json.loads(out) if out.strip() else []

    def delete(self) -> None:
        run(["ip", "netns", "delete", self.name], check=False)


class NetnsFactory:
    """Makes namespaces for one test and deletes all of them at the end."""

    def __init__(self) -> None:
        self.made: list[Netns] = []

    def new(self, role: str = "ns") -> Netns:
        name = f"{PREFIX}{role}-{uuid.uuid4().hex[:8]}"
        run(["ip", "netns", "add", name])
        ns = Netns(name)
        self.made.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def veth_uplink(self, node: Netns, name: str, peer_ns: Netns | None = None, peer: str | None = None) -> str:
        """A veth inside `node` (its peer in `peer_ns`, or also in `node`), both up. Returns `name`."""
        peer = peer or f"{name}p"
        node.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        if peer_ns is not None:
            node.ip("link", "set", peer, "netns", peer_ns.name)
            peer_ns.ip("link", "set", peer, "up")
        else:
            node.ip("link", "set", peer, "up")
        node.ip("link", "set", name, "up")
        return name

    def cleanup(self) -> None:
        for ns in reversed(self.made):
            ns.delete()
        self.made.clear()


def is_root() -> bool:
    return os.geteuid() == 0


def metaplug_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment for running project commands (PATH with the venv first)."""
    env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    if extra:
        env.update(extra)
    return env
