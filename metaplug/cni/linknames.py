"""The interface names of another network namespace, read from this one over rtnetlink, without entering it.

ADD checks the pod's namespace for names it is about to use (cni.md 10, R9). Entering the namespace needs `setns(2)`,
which Python 3.11 has only through ctypes (~3 ms to import) and, to keep the caller in its own namespace, a thread
(threading, queue: ~1.5 ms): too much for thin mode's every ADD (issue 10.7). Since Linux 4.20 an RTM_GETLINK dump
can name the namespace to list by its id in the caller's namespace (IFLA_TARGET_NETNSID); the id is the one the
kernel already gives a namespace that holds the peer of one of our veths (RTM_GETNSID), or one assigned here
(RTM_NEWNSID with id -1: the kernel picks; the id lives as long as the namespace, as `ip link set ... netns` makes
one). The requests are metaplug.cni.rtnl's (which needs only the C `_socket` and `_struct` modules). Any failure (an
older kernel, an id that cannot be given, a reply that does not name the target namespace) returns None, and the
caller enters the namespace instead.
Layouts: linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/net_namespace.h.
"""

from __future__ import annotations

import contextlib

from metaplug.cni import rtnl

IFLA_TARGET_NETNSID = 46


def _assign_nsid(client: rtnl.Rtnl, fd: int) -> int:
    """The id this namespace knows the namespace `fd` by, given one (the kernel picks it) when it has none; -1 when
    none can be given."""
    nsid = client.netnsid(fd)
    if nsid is not None:
        return nsid
    payload = (rtnl.RTGENMSG.pack(rtnl.AF_UNSPEC) + rtnl.attr_u32(rtnl.NETNSA_FD, fd)
               + rtnl.attr(rtnl.NETNSA_NSID, rtnl.S32.pack(-1)))
    with contextlib.suppress(FileExistsError):  # another call gave it one meanwhile
        client.request(rtnl.RTM_NEWNSID, payload)
    nsid = client.netnsid(fd)
    return -1 if nsid is None else nsid


def names(netns_fd: int) -> set[str] | None:
    """Every interface name in the network namespace `netns_fd` (an open fd, checked by the caller), or None when
    this kernel cannot list it from here."""
    try:
        client = rtnl.Rtnl()
    except OSError:
        return None
    try:
        nsid = _assign_nsid(client, netns_fd)
        if nsid < 0:
            return None
        request = rtnl.ifinfomsg() + rtnl.attr(IFLA_TARGET_NETNSID, rtnl.S32.pack(nsid))
        found: set[str] = set()
        for msg in client.dump(rtnl.RTM_GETLINK, request):
            if msg.kind != rtnl.RTM_NEWLINK:
                continue
            attrs = rtnl.parse_attrs(msg.body, rtnl.IFINFOMSG.size)
            # A kernel that does not know IFLA_TARGET_NETNSID ignores it and lists its own namespace: only links that
            # say which namespace they are from count.
            target = attrs.get(IFLA_TARGET_NETNSID)
            if target is None or len(target) < 4 or rtnl.S32.unpack_from(target)[0] != nsid:
                return None
            if rtnl.IFLA_IFNAME in attrs:
                found.add(rtnl.text(attrs, rtnl.IFLA_IFNAME))
        return found
    except OSError:
        return None
    finally:
        client.close()
