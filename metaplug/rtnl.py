"""A minimal rtnetlink reader: links (name, MAC) and addresses of the current thread's network namespace.

Why not pyroute2 here: importing pyroute2 costs 110-140 ms, and CHECK (which CRI-O runs right after every ADD) only
needs two read-only dumps. This module uses the standard library alone (~1 ms). Changing routes (R13) still uses
pyroute2 in netns.py. Message layouts: linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

from metaplug.cni.linknames import align, attributes

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR, RTM_NEWNSID, RTM_GETNSID = 16, 18, 20, 22, 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_LINK_NETNSID = 1, 3, 5, 10, 18, 37
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")  # len, type


def _dump(request_type: int, payload: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP) -> Iterator[tuple[int, bytes]]:
    """Send one request (a dump by default); yield (message type, message body) until NLMSG_DONE."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        seq = 1
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(payload), request_type, flags, seq, 0) + payload)
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    return
                body = data[offset + _NLMSGHDR.size: offset + length]
                offset += align(length)
                if msg_seq != seq:
                    continue
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (errno,) = struct.unpack_from("=i", body)
                    if errno:
                        raise OSError(-errno, os.strerror(-errno))
                    continue
                yield kind, body
                if not flags & NLM_F_DUMP:
                    return  # a plain request has one answer


class Link(NamedTuple):
    """One link of the current namespace. `peer` is IFLA_LINK (a veth's peer ifindex, in the namespace
    `peer_netnsid` names when set, else in this one); `master` the ifindex of its bridge; 0/None when absent."""

    ifindex: int
    name: str
    mac: str  # lower-case colon hex, "" when the link has none
    kind: str  # IFLA_INFO_KIND: "veth", "bridge", "macvlan", ... ("" for physical and loopback)
    master: int
    peer: int
    peer_netnsid: int | None


def _u32(attrs: dict[int, bytes], key: int) -> int:
    raw = attrs.get(key)
    return struct.unpack_from("=I", raw)[0] if raw is not None and len(raw) >= 4 else 0


def link_details() -> list[Link]:
    """Every link of the current thread's namespace, with its kind, bridge and veth peer."""
    out: list[Link] = []
    for kind, body in _dump(RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        if kind != RTM_NEWLINK:
            continue
        _family, _type, index, _flags, _change = _IFINFOMSG.unpack_from(body)
        attrs = attributes(body, _IFINFOMSG.size)
        info = attributes(attrs[IFLA_LINKINFO], 0) if IFLA_LINKINFO in attrs else {}
        netnsid = attrs.get(IFLA_LINK_NETNSID)
        out.append(Link(
            ifindex=index,
            name=attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace"),
            mac=":".join(f"{b:02x}" for b in attrs.get(IFLA_ADDRESS, b"")),
            kind=info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode(errors="replace"),
            master=_u32(attrs, IFLA_MASTER),
            peer=_u32(attrs, IFLA_LINK),
            peer_netnsid=struct.unpack_from("=i", netnsid)[0] if netnsid is not None and len(netnsid) >= 4 else None,
        ))
    return out


def netnsid(path: str) -> int | None:
    """The id the current namespace knows the namespace at `path` by (what a veth's IFLA_LINK_NETNSID holds), or None
    when it has none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        attr = _RTATTR.pack(_RTATTR.size + 4, NETNSA_FD) + struct.pack("=I", fd)
        for kind, body in _dump(RTM_GETNSID, struct.pack("=Bxxx", socket.AF_UNSPEC) + attr, NLM_F_REQUEST):
            if kind == RTM_NEWNSID:
                raw = attributes(body, 4).get(NETNSA_NSID)
                nsid = struct.unpack_from("=i", raw)[0] if raw is not None and len(raw) >= 4 else -1
                return nsid if nsid >= 0 else None
    finally:
        os.close(fd)
    return None


def links() -> dict[int, tuple[str, str]]:
    """{ifindex: (name, mac)} of every link; mac is lower-case colon hex ("" when the link has none)."""
    return {link.ifindex: (link.name, link.mac) for link in link_details()}


def addresses() -> list[tuple[int, str]]:
    """(ifindex, "address/prefix") of every IPv4 and IPv6 address."""
    out: list[tuple[int, str]] = []
    for kind, body in _dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
        if kind != RTM_NEWADDR:
            continue
        family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(body)
        attrs = attributes(body, _IFADDRMSG.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)  # IFA_LOCAL is ours on point-to-point links
        if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
            continue
        out.append((index, f"{ipaddress.ip_address(raw)}/{prefixlen}"))
    return out
