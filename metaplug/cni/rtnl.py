"""A small rtnetlink client on the standard library: links, addresses, routes and namespace ids.

Why not pyroute2: importing it costs 110-140 ms per process, and each request runs an asyncio loop and builds
message objects (~45 ms CPU and ~90,000 Python calls per pod ADD+DEL in the bundled delegates). What the delegates,
CHECK, doctor, R13 and thin ADD's name check (cni.linknames) need is a handful of fixed requests; this module packs
them with `struct` and reads the answers into typed records. Importing it loads only the C `_socket` and `_struct`
modules (no `socket`, `typing` or `ipaddress`, which the records' address fields load when first decoded): it is on
thin mode's ADD path (issue 10.7).

One `Rtnl` is one NETLINK_ROUTE socket, so one network namespace: the namespace of the thread that made the socket
(`Rtnl()` in the current one; for another namespace make the socket in a thread inside it, metaplug.cni.ns.run_in,
and hand it over: `Rtnl(sock)`). Every request has its own sequence number. Changes are sent with NLM_F_ACK and wait
for the kernel's answer; a negative answer is raised as OSError(errno) (EEXIST, ENODEV, ... as `exc.errno`). Reads
are single GETs (ENODEV: None) or dumps read to NLMSG_DONE across as many datagrams as the kernel sends.

Message layouts (all host byte order, attributes 4-byte aligned):
- linux/netlink.h: struct nlmsghdr {u32 len; u16 type; u16 flags; u32 seq; u32 pid}, NLMSG_ERROR's struct nlmsgerr
  {int error; struct nlmsghdr msg}, struct nlattr {u16 len; u16 type} with NLA_F_NESTED, NLA_ALIGNTO 4.
- linux/rtnetlink.h: RTM_* types, struct ifinfomsg {u8 family; u8 pad; u16 type; int index; u32 flags; u32 change},
  struct rtmsg {u8 family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags}, RTA_* and RTAX_*
  (RTA_METRICS nests RTAX_MTU, RTAX_ADVMSS as u32), RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST.
- linux/if_link.h: IFLA_* (IFLA_LINKINFO nests IFLA_INFO_KIND and IFLA_INFO_DATA; IFLA_NET_NS_FD; IFLA_PROTINFO
  nests IFLA_BRPORT_MODE, the hairpin flag, sent with family AF_BRIDGE and NLA_F_NESTED as the bridge requires;
  IFLA_MACVLAN_MODE and the MACVLAN_MODE_* values).
- linux/veth.h: VETH_INFO_PEER in IFLA_INFO_DATA carries a struct ifinfomsg followed by the peer's IFLA_* attributes.
- linux/if_addr.h: struct ifaddrmsg {u8 family, prefixlen, flags, scope; u32 index}, IFA_ADDRESS, IFA_LOCAL,
  IFA_F_NODAD. linux/net_namespace.h: RTM_GETNSID with struct rtgenmsg and NETNSA_FD / NETNSA_NSID.
"""

from __future__ import annotations

import _socket
import os
import struct

from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import ipaddress
    from collections.abc import Iterable, Iterator

    IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
    IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AF_UNSPEC, AF_INET, AF_BRIDGE, AF_INET6, AF_NETLINK = 0, 2, 7, 10, 16  # socket's (not imported: issue 10.7)
NETLINK_ROUTE = 0
TIMEOUT = 5.0  # seconds for one reply; the kernel answers at once, this only bounds a surprise
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP_INTR = 0x1, 0x2, 0x4, 0x10
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED = 0x8000
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNSID, RTM_GETNSID = 88, 90
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_PROTINFO = 1, 3, 4, 5, 10, 12
IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_LINK_NETNSID = 18, 28, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_MACVLAN_MODE = 1
IFLA_BRPORT_MODE = 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_METRICS, RTA_TABLE = 1, 4, 5, 6, 8, 15
RTAX_MTU, RTAX_ADVMSS = 2, 8
RT_TABLE_UNSPEC, RT_TABLE_MAIN = 0, 254
RTPROT_STATIC, RTN_UNICAST, RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE = 4, 1, 0, 255
NETNSA_NSID, NETNSA_FD = 1, 3
IFF_UP = 0x1
IFNAMSIZ = 16  # linux/if.h, with the terminating NUL
MACVLAN_MODES = {1: "private", 2: "vepa", 4: "bridge", 8: "passthru", 16: "source"}
MACVLAN_MODE_IDS = {name: mode for mode, name in MACVLAN_MODES.items()}
RECV_BUFFER = 65536  # the kernel sizes a dump's datagrams to the reader's buffer (netlink_dump), at most this

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
RTGENMSG = struct.Struct("=Bxxx")  # family (padded to 4)
NLATTR = struct.Struct("=HH")  # len, type
U32 = struct.Struct("=I")
S32 = struct.Struct("=i")

Attrs = dict[int, bytes]

# --- encoding and decoding ----------------------------------------------------------------------------------------


def align(n: int) -> int:
    """NLMSG_ALIGN / NLA_ALIGN: up to a multiple of 4."""
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute: header, payload, zero padding to 4 bytes (the length field excludes the padding)."""
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * (align(length) - length)


def attr_u32(kind: int, value: int) -> bytes:
    return attr(kind, U32.pack(value))


def attr_str(kind: int, value: str) -> bytes:
    """A NUL-terminated string attribute (IFLA_IFNAME, IFLA_INFO_KIND)."""
    return attr(kind, value.encode() + b"\0")


def nested(kind: int, *children: bytes, flag: bool = False) -> bytes:
    """An attribute holding attributes; `flag` sets NLA_F_NESTED (required where the kernel checks it)."""
    return attr(kind | (NLA_F_NESTED if flag else 0), b"".join(children))


def parse_attrs(data: bytes, offset: int = 0) -> Attrs:
    """{type: payload} of the attributes from `offset` on (flags masked off; the first of a repeated type wins)."""
    out: Attrs = {}
    end = len(data)
    while offset + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size or offset + length > end:
            break
        out.setdefault(kind & 0x3FFF, data[offset + NLATTR.size: offset + length])
        offset += align(length)
    return out


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    """A netlink message: nlmsghdr (pid 0: to the kernel) + body."""
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags, seq, 0) + body


class Message(NamedTuple):
    """One netlink message as received: its header fields and its body (the bytes after nlmsghdr)."""

    kind: int
    flags: int
    seq: int
    body: bytes


def messages(data: bytes) -> Iterator[Message]:
    """The messages in one datagram (a truncated or malformed tail ends the list)."""
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            return
        yield Message(kind, flags, seq, data[offset + NLMSGHDR.size: offset + length])
        offset += align(length)


def error_of(body: bytes) -> int:
    """The errno of an NLMSG_ERROR (nlmsgerr.error is -errno; 0 is an ACK)."""
    return -S32.unpack_from(body)[0] if len(body) >= S32.size else 0


def u32(attrs: Attrs, kind: int) -> int:
    raw = attrs.get(kind)
    return U32.unpack_from(raw)[0] if raw is not None and len(raw) >= 4 else 0


def text(attrs: Attrs, kind: int) -> str:
    return attrs.get(kind, b"").split(b"\0", 1)[0].decode(errors="replace")


def mac_text(raw: bytes) -> str:
    """Lower-case colon hex ("" for none)."""
    return ":".join(f"{b:02x}" for b in raw)


def mac_bytes(mac: str) -> bytes:
    """'02:aa:...' (or '-' separated) as bytes; ValueError when it is not hex octets."""
    parts = mac.replace("-", ":").split(":")
    if len(parts) < 2 or not all(len(p) in (1, 2) for p in parts):
        raise ValueError(f"{mac!r} is not a MAC address")
    return bytes(int(p, 16) for p in parts)


# --- records -------------------------------------------------------------------------------------------------------


class Link(NamedTuple):
    """One interface. `master` is the ifindex of its bridge; `peer` is IFLA_LINK (a veth's peer ifindex, in the
    namespace `peer_netnsid` names when set, else in this one; a macvlan's master); 0 / "" / None when absent."""

    ifindex: int
    name: str
    kind: str  # IFLA_INFO_KIND: "veth", "bridge", "macvlan", ... ("" for physical and loopback)
    mac: str  # lower-case colon hex, "" when the link has none
    mtu: int
    master: int
    flags: int  # IFF_*
    macvlan_mode: str | None  # "bridge", "private", "vepa", "passthru", "source" for a macvlan
    peer: int
    peer_netnsid: int | None

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)


class Address(NamedTuple):
    """One address of an interface (IFA_LOCAL when present: ours on a point-to-point link, else IFA_ADDRESS)."""

    ifindex: int
    interface: IPInterface  # address with prefix length
    flags: int
    scope: int


class Route(NamedTuple):
    """One route: `dst` is the network (0.0.0.0/0, ::/0 for a default route), `table` RTA_TABLE or rtm_table."""

    dst: IPNetwork
    gateway: str | None
    oif: int | None
    table: int
    priority: int | None
    scope: int
    protocol: int
    type: int


class RouteSpec(NamedTuple):
    """A route to add or delete: destination network, and what the result route (cni.md) may say about it."""

    dst: IPNetwork
    gateway: str | None = None
    oif: int | None = None
    priority: int | None = None
    table: int | None = None  # RT_TABLE_MAIN when None
    scope: int | None = None
    mtu: int | None = None  # RTA_METRICS / RTAX_MTU
    advmss: int | None = None  # RTA_METRICS / RTAX_ADVMSS


def decode_link(body: bytes) -> Link:
    _family, _type, index, flags, _change = IFINFOMSG.unpack_from(body)
    attrs = parse_attrs(body, IFINFOMSG.size)
    info = parse_attrs(attrs[IFLA_LINKINFO]) if IFLA_LINKINFO in attrs else {}
    kind = text(info, IFLA_INFO_KIND)
    mode: str | None = None
    if kind == "macvlan" and IFLA_INFO_DATA in info:
        raw_mode = u32(parse_attrs(info[IFLA_INFO_DATA]), IFLA_MACVLAN_MODE)
        mode = MACVLAN_MODES.get(raw_mode, str(raw_mode))
    netnsid = attrs.get(IFLA_LINK_NETNSID)
    return Link(ifindex=index, name=text(attrs, IFLA_IFNAME), kind=kind, mac=mac_text(attrs.get(IFLA_ADDRESS, b"")),
                mtu=u32(attrs, IFLA_MTU), master=u32(attrs, IFLA_MASTER), flags=flags, macvlan_mode=mode,
                peer=u32(attrs, IFLA_LINK),
                peer_netnsid=S32.unpack_from(netnsid)[0] if netnsid is not None and len(netnsid) >= 4 else None)


def decode_address(body: bytes) -> Address | None:
    """An RTM_NEWADDR body as an Address (None for families other than IPv4 and IPv6)."""
    import ipaddress

    family, prefixlen, flags, scope, index = IFADDRMSG.unpack_from(body)
    attrs = parse_attrs(body, IFADDRMSG.size)
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None or family not in (AF_INET, AF_INET6):
        return None
    return Address(index, ipaddress.ip_interface((ipaddress.ip_address(raw), prefixlen)), flags, scope)


def decode_route(body: bytes) -> Route | None:
    """An RTM_NEWROUTE body as a Route (None for families other than IPv4 and IPv6)."""
    import ipaddress

    family, dst_len, _src_len, _tos, table, protocol, scope, rtype, _flags = RTMSG.unpack_from(body)
    if family not in (AF_INET, AF_INET6):
        return None
    attrs = parse_attrs(body, RTMSG.size)
    raw_dst = attrs.get(RTA_DST) or bytes(4 if family == AF_INET else 16)
    gateway = attrs.get(RTA_GATEWAY)
    return Route(dst=ipaddress.ip_network((ipaddress.ip_address(raw_dst), dst_len), strict=False),
                 gateway=str(ipaddress.ip_address(gateway)) if gateway else None,
                 oif=u32(attrs, RTA_OIF) if RTA_OIF in attrs else None,
                 table=u32(attrs, RTA_TABLE) if RTA_TABLE in attrs else table,
                 priority=u32(attrs, RTA_PRIORITY) if RTA_PRIORITY in attrs else None,
                 scope=scope, protocol=protocol, type=rtype)


def ifinfomsg(index: int = 0, flags: int = 0, change: int = 0, family: int = AF_UNSPEC) -> bytes:
    return IFINFOMSG.pack(family, 0, index, flags, change)


def route_body(spec: RouteSpec, *, delete: bool = False) -> bytes:
    """rtmsg + attributes of a route to add (table main, proto static, type unicast and scope universe unless the
    spec says otherwise, what pyroute2 sent) or to delete (any protocol, type and scope: RT_SCOPE_NOWHERE, as
    `ip route del` asks, so that a route someone else added matches too)."""
    import ipaddress

    family = AF_INET if spec.dst.version == 4 else AF_INET6
    table = RT_TABLE_MAIN if spec.table is None else spec.table
    protocol, rtype = (0, 0) if delete else (RTPROT_STATIC, RTN_UNICAST)
    scope = spec.scope if spec.scope is not None else RT_SCOPE_NOWHERE if delete else RT_SCOPE_UNIVERSE
    head = RTMSG.pack(family, spec.dst.prefixlen, 0, 0, table if table < 256 else RT_TABLE_UNSPEC, protocol, scope,
                      rtype, 0)
    parts = [head, attr_u32(RTA_TABLE, table)]  # a u32: tables above 255 exist only here
    if spec.dst.prefixlen:
        parts.append(attr(RTA_DST, spec.dst.network_address.packed))
    if spec.gateway:
        parts.append(attr(RTA_GATEWAY, ipaddress.ip_address(spec.gateway).packed))
    if spec.oif is not None:
        parts.append(attr_u32(RTA_OIF, spec.oif))
    if spec.priority is not None:
        parts.append(attr_u32(RTA_PRIORITY, spec.priority))
    metrics = [attr_u32(kind, value) for kind, value in ((RTAX_MTU, spec.mtu), (RTAX_ADVMSS, spec.advmss))
               if value is not None]
    if metrics:
        parts.append(nested(RTA_METRICS, *metrics))
    return b"".join(parts)


# --- the client ----------------------------------------------------------------------------------------------------


class Rtnl:
    """One NETLINK_ROUTE socket (the namespace it was made in) and the requests the delegates, CHECK and R13 make."""

    def __init__(self, sock: _socket.socket | None = None) -> None:
        """A new socket in the current thread's namespace, or `sock` (made elsewhere, e.g. inside another one)."""
        self.sock = sock if sock is not None else _socket.socket(AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                                                                 NETLINK_ROUTE)
        try:
            self.sock.settimeout(TIMEOUT)
            if self.sock.family == AF_NETLINK:  # (a test hands over one end of a socketpair instead)
                self.sock.bind((0, 0))  # the kernel picks the port id
        except OSError:
            self.sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        self.sock.send(message(kind, flags | NLM_F_REQUEST, self._seq, body))
        return self._seq

    def _answers(self, seq: int) -> Iterator[Message]:
        """The messages answering request `seq` (others, e.g. of an earlier abandoned request, are skipped)."""
        while True:
            for msg in messages(self.sock.recv(RECV_BUFFER)):
                if msg.seq == seq:
                    yield msg

    def request(self, kind: int, body: bytes, flags: int = 0) -> list[Message]:
        """Send a request with NLM_F_ACK; return the messages before the ACK (a GET's answer). A negative answer
        raises OSError(errno)."""
        seq = self._send(kind, flags | NLM_F_ACK, body)
        out: list[Message] = []
        for msg in self._answers(seq):
            if msg.kind == NLMSG_ERROR:
                code = error_of(msg.body)
                if code:
                    raise OSError(code, os.strerror(code))
                return out
            out.append(msg)
        raise AssertionError("unreachable")  # pragma: no cover - _answers never ends

    def dump(self, kind: int, body: bytes, attempts: int = 3) -> list[Message]:
        """A dump request; every message up to NLMSG_DONE. Redone when the kernel flags it inconsistent
        (NLM_F_DUMP_INTR: the table changed meanwhile), up to `attempts` times."""
        for _ in range(attempts):
            seq = self._send(kind, NLM_F_DUMP, body)
            out: list[Message] = []
            interrupted = False
            for msg in self._answers(seq):
                interrupted |= bool(msg.flags & NLM_F_DUMP_INTR)
                if msg.kind == NLMSG_DONE:
                    code = error_of(msg.body)  # a dump's failure can arrive as a negative NLMSG_DONE
                    if code:
                        raise OSError(code, os.strerror(code))
                    break
                if msg.kind == NLMSG_ERROR:
                    code = error_of(msg.body)
                    if code:
                        raise OSError(code, os.strerror(code))
                    continue
                out.append(msg)
            if not interrupted:
                return out
        return out

    # --- links

    def links(self) -> list[Link]:
        """Every interface of the namespace."""
        return [decode_link(m.body) for m in self.dump(RTM_GETLINK, ifinfomsg()) if m.kind == RTM_NEWLINK]

    def link(self, name: str | None = None, index: int = 0) -> Link | None:
        """The interface called `name` (or with ifindex `index`), None when there is none (ENODEV)."""
        if name is not None and not 0 < len(name.encode()) < IFNAMSIZ:
            return None  # no interface can have it (the kernel would refuse the attribute: EINVAL)
        body = ifinfomsg(index) + (attr_str(IFLA_IFNAME, name) if name is not None else b"")
        try:
            answer = self.request(RTM_GETLINK, body)
        except OSError as exc:
            if exc.errno == 19:  # ENODEV
                return None
            raise
        found = [decode_link(m.body) for m in answer if m.kind == RTM_NEWLINK]
        return found[0] if found else None

    def _new_link(self, name: str, kind: str, *, info_data: bytes = b"", mtu: int | None = None,
                  mac: str | None = None, extra: Iterable[bytes] = ()) -> None:
        parts = [ifinfomsg(), attr_str(IFLA_IFNAME, name)]
        if mtu:
            parts.append(attr_u32(IFLA_MTU, mtu))
        if mac:
            parts.append(attr(IFLA_ADDRESS, mac_bytes(mac)))
        parts.extend(extra)
        info = [attr_str(IFLA_INFO_KIND, kind)] + ([attr(IFLA_INFO_DATA, info_data)] if info_data else [])
        parts.append(nested(IFLA_LINKINFO, *info))
        self.request(RTM_NEWLINK, b"".join(parts), NLM_F_CREATE | NLM_F_EXCL)

    def create_bridge(self, name: str, *, mtu: int | None = None) -> None:
        self._new_link(name, "bridge", mtu=mtu)

    def create_veth(self, name: str, peer: str, *, peer_netns_fd: int | None = None, mtu: int | None = None,
                    peer_mac: str | None = None) -> None:
        """A veth pair `name` (here) <-> `peer`, the peer created directly in the namespace `peer_netns_fd` when
        given (VETH_INFO_PEER with IFLA_NET_NS_FD), both with `mtu`."""
        peer_attrs = [ifinfomsg(), attr_str(IFLA_IFNAME, peer)]
        if mtu:
            peer_attrs.append(attr_u32(IFLA_MTU, mtu))
        if peer_mac:
            peer_attrs.append(attr(IFLA_ADDRESS, mac_bytes(peer_mac)))
        if peer_netns_fd is not None:
            peer_attrs.append(attr_u32(IFLA_NET_NS_FD, peer_netns_fd))
        self._new_link(name, "veth", mtu=mtu, info_data=attr(VETH_INFO_PEER, b"".join(peer_attrs)))

    def create_macvlan(self, name: str, master: int, mode: str, *, netns_fd: int | None = None,
                       mtu: int | None = None, mac: str | None = None) -> None:
        """A macvlan on ifindex `master` (IFLA_LINK) in `mode`, created in the namespace `netns_fd` when given."""
        extra = [attr_u32(IFLA_LINK, master)]
        if netns_fd is not None:
            extra.append(attr_u32(IFLA_NET_NS_FD, netns_fd))
        self._new_link(name, "macvlan", mtu=mtu, mac=mac, extra=extra,
                       info_data=attr_u32(IFLA_MACVLAN_MODE, MACVLAN_MODE_IDS[mode]))

    def set_link(self, index: int, *, up: bool | None = None, master: int | None = None) -> None:
        """Bring the interface up or down and/or enslave it to ifindex `master` (0: release it)."""
        flags = change = 0
        if up is not None:
            flags, change = (IFF_UP if up else 0), IFF_UP
        body = ifinfomsg(index, flags, change) + (attr_u32(IFLA_MASTER, master) if master is not None else b"")
        self.request(RTM_SETLINK, body)

    def set_hairpin(self, index: int, on: bool = True) -> None:
        """Hairpin mode of a bridge port: IFLA_PROTINFO (nested, NLA_F_NESTED) / IFLA_BRPORT_MODE, family
        AF_BRIDGE, the request `ip link set DEV type bridge_slave hairpin on` and the reference bridge make."""
        body = ifinfomsg(index, family=AF_BRIDGE) + nested(IFLA_PROTINFO, attr(IFLA_BRPORT_MODE, bytes([on])),
                                                           flag=True)
        self.request(RTM_SETLINK, body)

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, ifinfomsg(index))

    # --- addresses

    def addresses(self, index: int | None = None, family: int = AF_UNSPEC) -> list[Address]:
        """The IPv4 and IPv6 addresses of the namespace (of ifindex `index` when given)."""
        found = [decode_address(m.body) for m in self.dump(RTM_GETADDR, IFADDRMSG.pack(family, 0, 0, 0, 0))
                 if m.kind == RTM_NEWADDR]
        return [a for a in found if a is not None and index in (None, a.ifindex)]

    def add_address(self, index: int, interface: IPInterface) -> None:
        """Add `interface` (address/prefix) to ifindex `index`: IFA_LOCAL + IFA_ADDRESS for IPv4, IFA_ADDRESS with
        IFA_F_NODAD for IPv6 (usable at once, no duplicate address detection wait, as the reference plugins do)."""
        v6 = interface.version == 6
        head = IFADDRMSG.pack(AF_INET6 if v6 else AF_INET, interface.network.prefixlen,
                              IFA_F_NODAD if v6 else 0, 0, index)
        packed = interface.ip.packed
        body = head + (attr(IFA_ADDRESS, packed) if v6 else attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed))
        self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL)

    # --- routes

    def routes(self, family: int, table: int | None = RT_TABLE_MAIN) -> list[Route]:
        """The routes of one family (AF_INET / AF_INET6) in `table` (every table: None)."""
        found = [decode_route(m.body) for m in self.dump(RTM_GETROUTE, RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
                 if m.kind == RTM_NEWROUTE]
        return [r for r in found if r is not None and table in (None, r.table)]

    def add_route(self, spec: RouteSpec) -> None:
        self.request(RTM_NEWROUTE, route_body(spec), NLM_F_CREATE | NLM_F_EXCL)

    def delete_route(self, spec: RouteSpec) -> None:
        self.request(RTM_DELROUTE, route_body(spec, delete=True))

    # --- namespace ids

    def netnsid(self, netns_fd: int) -> int | None:
        """The id this namespace knows the namespace `netns_fd` by (what a veth's IFLA_LINK_NETNSID holds), or None
        when it has none."""
        body = RTGENMSG.pack(AF_UNSPEC) + attr_u32(NETNSA_FD, netns_fd)
        for msg in self.request(RTM_GETNSID, body):
            if msg.kind == RTM_NEWNSID:
                raw = parse_attrs(msg.body, RTGENMSG.size).get(NETNSA_NSID)
                nsid = S32.unpack_from(raw)[0] if raw is not None and len(raw) >= 4 else -1
                return nsid if nsid >= 0 else None
        return None


# --- the current thread's namespace, one socket per call (CHECK, doctor) -------------------------------------------


def link_details() -> list[Link]:
    """Every link of the current thread's namespace, with its kind, bridge and veth peer."""
    with Rtnl() as rtnl:
        return rtnl.links()


def links() -> dict[int, tuple[str, str]]:
    """{ifindex: (name, mac)} of every link; mac is lower-case colon hex ("" when the link has none)."""
    return {link.ifindex: (link.name, link.mac) for link in link_details()}


def addresses() -> list[tuple[int, str]]:
    """(ifindex, "address/prefix") of every IPv4 and IPv6 address."""
    with Rtnl() as rtnl:
        return [(a.ifindex, str(a.interface)) for a in rtnl.addresses()]


def netnsid(path: str) -> int | None:
    """The id the current namespace knows the namespace at `path` by, or None when it has none."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with Rtnl() as rtnl:
            return rtnl.netnsid(fd)
    finally:
        os.close(fd)
