"""What the runtime knows about one attachment (libcni's RuntimeConf), shared by the result cache and the verbs.

Its own module so that cache.py (which stores it) and chain.py (which runs the verbs with it) need not import each
other.
"""

from __future__ import annotations

from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any



class RuntimeConf:
    """What the runtime knows about one attachment (libcni's RuntimeConf).

    A plain class rather than a dataclass: importing dataclasses costs ~10 ms on every CNI call (start-up budget).
    """

    __slots__ = ("args", "capability_args", "container_id", "ifname", "netns")

    def __init__(self, container_id: str, netns: str, ifname: str, args: list[tuple[str, str]] | None = None,
                 capability_args: dict[str, Any] | None = None) -> None:
        self.container_id = container_id
        self.netns = netns
        self.ifname = ifname
        self.args: list[tuple[str, str]] = args if args is not None else []  # become CNI_ARGS "K=V;K=V"
        self.capability_args: dict[str, Any] = capability_args if capability_args is not None else {}  # duty 18

    def __repr__(self) -> str:
        return (f"RuntimeConf(container_id={self.container_id!r}, netns={self.netns!r}, ifname={self.ifname!r}, "
                f"args={self.args!r}, capability_args={self.capability_args!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuntimeConf):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.args)
