"""The interface names of another network namespace, read from this one over rtnetlink, without entering it.

ADD checks the pod's namespace for names it is about to use (cni.md 10, R9). Entering the namespace needs `setns(2)`,
which Python 3.11 has only through ctypes (~3 ms to import) and, to keep the caller in its own namespace, a thread
(threading, queue: ~1.5 ms): too much for thin mode's every ADD (issue 10.7). Since Linux 4.20 an RTM_GETLINK dump
can name the namespace to list by its id in the caller's namespace (IFLA_TARGET_NETNSID); the id is the one the
kernel already gives a namespace that holds the peer of one of our veths (RTM_GETNSID), or one assigned here
(RTM_NEWNSID with id -1: the kernel picks; the id lives as long as the namespace, as `ip link set ... netns` makes
one). The C `_socket` and `_struct` modules are enough. Any failure (an older kernel, an id that cannot be given, a
reply that does not name the target namespace) returns None, and the caller enters the namespace instead.
Layouts: linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/net_namespace.h.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import struct

AF_NETLINK, NETLINK_ROUTE = 16, 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
RTM_NEWLINK, RTM_GETLINK, RTM_NEWNSID, RTM_GETNSID = 16, 18, 88, 90
IFLA_IFNAME, IFLA_TARGET_NETNSID = 3, 46
NETNSA_NSID, NETNSA_FD = 1, 3
TIMEOUT = 5.0  # seconds; the kernel answers at once, this only bounds a surprise

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_RTGENMSG = struct.Struct("=Bxxx")  # family, padded (struct rtgenmsg as netns requests use it)
_ATTR = struct.Struct("=HH")  # rtattr: len, type
_S32_ATTR = struct.Struct("=HHi")


def align(n: int) -> int:
    """A netlink length rounded up to the 4-byte boundary messages and attributes start on (NLMSG_ALIGN)."""
    return (n + 3) & ~3


class _Channel:
    """One NETLINK_ROUTE socket: requests with sequence numbers, replies until the request is answered."""

    def __init__(self) -> None:
        self.sock = _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.seq = 0
        try:
            self.sock.settimeout(TIMEOUT)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """(type, body) of every reply message; an NLMSG_ERROR with an errno raises OSError."""
        self.seq += 1
        self.sock.send(_HEADER.pack(_HEADER.size + len(payload), kind, NLM_F_REQUEST | flags, self.seq, 0) + payload)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, msg_type, _flags, seq, _pid = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise OSError("malformed netlink reply")
                body = data[offset + _HEADER.size: offset + length]
                offset += align(length)
                if seq != self.seq:
                    continue
                if msg_type == NLMSG_DONE:
                    return replies
                if msg_type == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", body)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies  # the ACK
                replies.append((msg_type, body))
                if not flags & (NLM_F_DUMP | NLM_F_ACK):
                    return replies


def attributes(body: bytes, offset: int) -> dict[int, bytes]:
    """{type: payload} of the rtattrs in `body` from `offset` on (the first of a repeated type; nested flag off)."""
    out: dict[int, bytes] = {}
    while offset + _ATTR.size <= len(body):
        length, kind = _ATTR.unpack_from(body, offset)
        if length < _ATTR.size:
            break
        out.setdefault(kind & 0x3FFF, body[offset + _ATTR.size: offset + length])
        offset += align(length)
    return out


def _nsid(channel: _Channel, fd: int) -> int:
    """The id this namespace knows the namespace `fd` by; -1 when it has none."""
    payload = _RTGENMSG.pack(_socket.AF_UNSPEC) + _S32_ATTR.pack(_S32_ATTR.size, NETNSA_FD, fd)
    for msg_type, body in channel.request(RTM_GETNSID, 0, payload):
        raw = attributes(body, _RTGENMSG.size).get(NETNSA_NSID) if msg_type == RTM_NEWNSID else None
        if raw is not None and len(raw) >= 4:
            return int(struct.unpack_from("=i", raw)[0])
    return -1


def _assign_nsid(channel: _Channel, fd: int) -> int:
    nsid = _nsid(channel, fd)
    if nsid >= 0:
        return nsid
    payload = (_RTGENMSG.pack(_socket.AF_UNSPEC) + _S32_ATTR.pack(_S32_ATTR.size, NETNSA_FD, fd)
               + _S32_ATTR.pack(_S32_ATTR.size, NETNSA_NSID, -1))
    with contextlib.suppress(FileExistsError):  # another call gave it one meanwhile
        channel.request(RTM_NEWNSID, NLM_F_ACK, payload)
    return _nsid(channel, fd)


def names(netns_fd: int) -> set[str] | None:
    """Every interface name in the network namespace `netns_fd` (an open fd, checked by the caller), or None when
    this kernel cannot list it from here."""
    try:
        channel = _Channel()
    except OSError:
        return None
    try:
        nsid = _assign_nsid(channel, netns_fd)
        if nsid < 0:
            return None
        request = _IFINFOMSG.pack(_socket.AF_UNSPEC, 0, 0, 0, 0) + _S32_ATTR.pack(_S32_ATTR.size,
                                                                                 IFLA_TARGET_NETNSID, nsid)
        found: set[str] = set()
        for msg_type, body in channel.request(RTM_GETLINK, NLM_F_DUMP, request):
            if msg_type != RTM_NEWLINK:
                continue
            attrs = attributes(body, _IFINFOMSG.size)
            # A kernel that does not know IFLA_TARGET_NETNSID ignores it and lists its own namespace: only links that
            # say which namespace they are from count.
            target = attrs.get(IFLA_TARGET_NETNSID)
            if target is None or len(target) < 4 or struct.unpack_from("=i", target)[0] != nsid:
                return None
            if IFLA_IFNAME in attrs:
                found.add(attrs[IFLA_IFNAME].rstrip(b"\0").decode(errors="replace"))
        return found
    except OSError:
        return None
    finally:
        channel.close()
