"""metaplug.cni.rtnl's encoder and decoder without a kernel: attribute packing and alignment, nested attributes,
message framing, multi-part dumps, NLMSG_ERROR with an errno and the ACK. The "kernel" is the other end of a
datagram socketpair: the answers are queued first, then the request that the client sent is read back and decoded."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest

from metaplug.cni import rtnl


class Kernel:
    """The far end of the client's socket: queues answers, reads back what the client sent."""

    def __init__(self) -> None:
        self.far, near = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.client = rtnl.Rtnl(near)

    def answer(self, *msgs: bytes) -> None:
        """One datagram holding `msgs`."""
        self.far.send(b"".join(msgs))

    def sent(self) -> rtnl.Message:
        found = list(rtnl.messages(self.far.recv(65536)))
        assert len(found) == 1
        return found[0]

    def close(self) -> None:
        self.client.close()
        self.far.close()


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        yield k
    finally:
        k.close()


def ack(seq: int, code: int = 0) -> bytes:
    """NLMSG_ERROR: nlmsgerr.error (-errno, 0 for the ACK) + the request's header."""
    return rtnl.message(rtnl.NLMSG_ERROR, 0, seq, struct.pack("=i", -code) + bytes(16))


def done(seq: int, code: int = 0) -> bytes:
    return rtnl.message(rtnl.NLMSG_DONE, rtnl.NLM_F_MULTI, seq, struct.pack("=i", -code))


def new_link(seq: int, index: int, name: str, *, flags: int = 0, kind: str = "", multi: bool = True,
             extra: bytes = b"") -> bytes:
    attrs = rtnl.attr_str(rtnl.IFLA_IFNAME, name) + rtnl.attr(rtnl.IFLA_ADDRESS, bytes([2, 0, 0, 0, 0, index]))
    attrs += rtnl.attr_u32(rtnl.IFLA_MTU, 1500)
    if kind:
        attrs += rtnl.nested(rtnl.IFLA_LINKINFO, rtnl.attr_str(rtnl.IFLA_INFO_KIND, kind))
    body = rtnl.ifinfomsg(index, flags) + attrs + extra
    return rtnl.message(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI if multi else 0, seq, body)


# --- attributes ----------------------------------------------------------------------------------------------------


def test_an_attribute_is_length_type_payload_padded_to_four_bytes() -> None:
    assert rtnl.attr(3, b"ab") == b"\x06\x00\x03\x00ab\x00\x00"  # length 6 excludes the padding
    assert rtnl.attr(3, b"abcd") == b"\x08\x00\x03\x00abcd"  # aligned already: no padding
    assert rtnl.attr(1, b"") == b"\x04\x00\x01\x00"
    assert rtnl.attr_str(3, "eth0") == b"\x09\x00\x03\x00eth0\x00\x00\x00\x00"  # NUL-terminated, then padded
    assert rtnl.attr_u32(4, 1500) == b"\x08\x00\x04\x00" + struct.pack("=I", 1500)
    assert [rtnl.align(n) for n in (0, 1, 4, 5, 8)] == [0, 4, 4, 8, 8]


def test_nested_attributes_and_the_nested_flag() -> None:
    inner = rtnl.attr_str(rtnl.IFLA_INFO_KIND, "veth")  # 4 + 5 -> 12 with padding
    outer = rtnl.nested(rtnl.IFLA_LINKINFO, inner)
    assert struct.unpack_from("=HH", outer) == (4 + len(inner), rtnl.IFLA_LINKINFO)
    assert struct.unpack_from("=HH", rtnl.nested(12, inner, flag=True))[1] == 12 | rtnl.NLA_F_NESTED
    parsed = rtnl.parse_attrs(outer)
    assert rtnl.text(rtnl.parse_attrs(parsed[rtnl.IFLA_LINKINFO]), rtnl.IFLA_INFO_KIND) == "veth"
    assert set(rtnl.parse_attrs(rtnl.nested(12, inner, flag=True))) == {12}  # the flag is masked off on reading


def test_parse_attrs_walks_padding_keeps_the_first_and_stops_at_garbage() -> None:
    data = rtnl.attr(1, b"a") + rtnl.attr(2, b"bcdef") + rtnl.attr(1, b"zz") + rtnl.attr_u32(3, 7)
    attrs = rtnl.parse_attrs(data)
    assert attrs == {1: b"a", 2: b"bcdef", 3: struct.pack("=I", 7)}
    assert rtnl.u32(attrs, 3) == 7 and rtnl.u32(attrs, 9) == 0
    assert rtnl.parse_attrs(rtnl.attr(1, b"ok") + struct.pack("=HH", 200, 2) + b"short") == {1: b"ok"}
    assert rtnl.parse_attrs(rtnl.attr(1, b"ok") + struct.pack("=HH", 2, 2)) == {1: b"ok"}  # a length below 4


def test_messages_of_one_datagram_and_a_truncated_tail() -> None:
    one = rtnl.message(rtnl.RTM_NEWLINK, 2, 5, b"abcde")  # 21 bytes, padded to 24 between messages
    two = rtnl.message(rtnl.NLMSG_DONE, 2, 5, b"\0\0\0\0")
    data = one + b"\0\0\0" + two
    assert [(m.kind, m.seq, m.body) for m in rtnl.messages(data)] == [
        (rtnl.RTM_NEWLINK, 5, b"abcde"), (rtnl.NLMSG_DONE, 5, b"\0\0\0\0")]
    assert [m.kind for m in rtnl.messages(data + struct.pack("=IHHII", 99, 1, 0, 0, 0))] == [
        rtnl.RTM_NEWLINK, rtnl.NLMSG_DONE]


def test_mac_addresses() -> None:
    assert rtnl.mac_text(bytes([2, 0xAB, 0, 1, 2, 3])) == "02:ab:00:01:02:03" and rtnl.mac_text(b"") == ""
    assert rtnl.mac_bytes("02:AB:00:01:02:03") == bytes([2, 0xAB, 0, 1, 2, 3]) == rtnl.mac_bytes("02-ab-0-1-2-3")
    for bad in ("nonsense", "0211:22:33", "zz:00:00:00:00:00", ""):
        with pytest.raises(ValueError):
            rtnl.mac_bytes(bad)


# --- decoding records ----------------------------------------------------------------------------------------------


def test_decode_a_macvlan_link() -> None:
    info = rtnl.nested(rtnl.IFLA_LINKINFO, rtnl.attr_str(rtnl.IFLA_INFO_KIND, "macvlan"),
                       rtnl.nested(rtnl.IFLA_INFO_DATA, rtnl.attr_u32(rtnl.IFLA_MACVLAN_MODE, 8)))
    body = (rtnl.ifinfomsg(7, rtnl.IFF_UP) + rtnl.attr_str(rtnl.IFLA_IFNAME, "mv0") + rtnl.attr_u32(rtnl.IFLA_MTU, 9000)
            + rtnl.attr_u32(rtnl.IFLA_MASTER, 3) + rtnl.attr_u32(rtnl.IFLA_LINK, 2)
            + rtnl.attr(rtnl.IFLA_LINK_NETNSID, struct.pack("=i", 4)) + info)
    link = rtnl.decode_link(body)
    assert link == rtnl.Link(ifindex=7, name="mv0", kind="macvlan", mac="", mtu=9000, master=3, flags=rtnl.IFF_UP,
                             macvlan_mode="passthru", peer=2, peer_netnsid=4)
    assert link.up


def test_decode_addresses_and_routes() -> None:
    v4 = rtnl.IFADDRMSG.pack(socket.AF_INET, 24, 0, 0, 5) + rtnl.attr(rtnl.IFA_ADDRESS, bytes([10, 0, 0, 9])) + \
        rtnl.attr(rtnl.IFA_LOCAL, bytes([10, 0, 0, 2]))
    assert rtnl.decode_address(v4) == rtnl.Address(5, ipaddress.ip_interface("10.0.0.2/24"), 0, 0)  # IFA_LOCAL wins
    assert rtnl.decode_address(rtnl.IFADDRMSG.pack(17, 0, 0, 0, 5)) is None
    body = rtnl.route_body(rtnl.RouteSpec(dst=ipaddress.ip_network("fd00:1::/64"), gateway="fd00::1", oif=3,
                                          table=1000, priority=5, mtu=1400, advmss=1300))
    route = rtnl.decode_route(body)
    assert route == rtnl.Route(dst=ipaddress.ip_network("fd00:1::/64"), gateway="fd00::1", oif=3, table=1000,
                               priority=5, scope=0, protocol=rtnl.RTPROT_STATIC, type=rtnl.RTN_UNICAST)
    default = rtnl.decode_route(rtnl.RTMSG.pack(socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0))
    assert default is not None and str(default.dst) == "0.0.0.0/0" and default.table == 254 and default.oif is None


def test_route_encoding_table_above_255_and_metrics() -> None:
    body = rtnl.route_body(rtnl.RouteSpec(dst=ipaddress.ip_network("10.1.0.0/16"), table=1000, scope=253, mtu=1400,
                                          advmss=1300))
    family, dst_len, _, _, table, proto, scope, rtype, _ = rtnl.RTMSG.unpack_from(body)
    assert (family, dst_len, table, proto, scope, rtype) == (socket.AF_INET, 16, rtnl.RT_TABLE_UNSPEC,
                                                             rtnl.RTPROT_STATIC, 253, rtnl.RTN_UNICAST)
    attrs = rtnl.parse_attrs(body, rtnl.RTMSG.size)
    assert rtnl.u32(attrs, rtnl.RTA_TABLE) == 1000 and attrs[rtnl.RTA_DST] == bytes([10, 1, 0, 0])
    assert rtnl.RTA_GATEWAY not in attrs and rtnl.RTA_OIF not in attrs
    metrics = rtnl.parse_attrs(attrs[rtnl.RTA_METRICS])
    assert (rtnl.u32(metrics, rtnl.RTAX_MTU), rtnl.u32(metrics, rtnl.RTAX_ADVMSS)) == (1400, 1300)
    main = rtnl.route_body(rtnl.RouteSpec(dst=ipaddress.ip_network("0.0.0.0/0"), gateway="10.0.0.1"))
    assert rtnl.RTMSG.unpack_from(main)[4] == rtnl.RT_TABLE_MAIN
    assert rtnl.RTA_DST not in rtnl.parse_attrs(main, rtnl.RTMSG.size)  # a default route has no RTA_DST


# --- requests, ACKs, errors and dumps ------------------------------------------------------------------------------


def test_a_change_waits_for_the_ack(kernel: Kernel) -> None:
    kernel.answer(ack(1))
    kernel.client.set_link(4, up=True, master=9)
    sent = kernel.sent()
    assert sent.kind == rtnl.RTM_SETLINK and sent.seq == 1
    assert sent.flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK
    _family, _type, index, flags, change = rtnl.IFINFOMSG.unpack_from(sent.body)
    assert (index, flags, change) == (4, rtnl.IFF_UP, rtnl.IFF_UP)
    assert rtnl.u32(rtnl.parse_attrs(sent.body, rtnl.IFINFOMSG.size), rtnl.IFLA_MASTER) == 9


def test_an_nlmsg_error_is_an_oserror_with_its_errno(kernel: Kernel) -> None:
    kernel.answer(ack(1, errno.EEXIST))
    with pytest.raises(OSError) as exists:
        kernel.client.create_bridge("br0")
    assert exists.value.errno == errno.EEXIST and exists.value.strerror == "File exists"
    sent = kernel.sent()
    assert sent.flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    kernel.answer(ack(2, errno.ENODEV))
    with pytest.raises(OSError) as nodev:
        kernel.client.delete_link(3)
    assert nodev.value.errno == errno.ENODEV


def test_each_request_has_its_own_sequence_number_and_stale_answers_are_skipped(kernel: Kernel) -> None:
    kernel.answer(ack(7, errno.EPERM), new_link(7, 9, "stale", multi=False))  # not ours: another seq
    kernel.answer(new_link(1, 2, "eth0", multi=False), ack(1))
    link = kernel.client.link("eth0")
    assert link is not None and (link.ifindex, link.name, link.mac, link.mtu) == (2, "eth0", "02:00:00:00:00:02", 1500)
    assert rtnl.text(rtnl.parse_attrs(kernel.sent().body, rtnl.IFINFOMSG.size), rtnl.IFLA_IFNAME) == "eth0"
    kernel.answer(ack(2, errno.ENODEV))
    assert kernel.client.link(index=77) is None  # ENODEV on a GET: no such link
    assert rtnl.IFINFOMSG.unpack_from(kernel.sent().body)[2] == 77
    assert kernel.client.link("a" * 16) is None and kernel.client.link("") is None  # not asked: no such name can exist
    kernel.answer(ack(3, errno.EPERM))
    with pytest.raises(OSError) as refused:  # any other refusal is raised (the next request has seq 3)
        kernel.client.link("eth1")
    assert refused.value.errno == errno.EPERM


def test_a_dump_spans_datagrams_until_nlmsg_done(kernel: Kernel) -> None:
    kernel.answer(new_link(1, 1, "lo"), new_link(1, 2, "br0", kind="bridge"))
    kernel.answer(new_link(1, 3, "veth1", kind="veth", flags=rtnl.IFF_UP))
    kernel.answer(done(1))
    found = kernel.client.links()
    assert [(link.name, link.kind, link.up) for link in found] == [("lo", "", False), ("br0", "bridge", False),
                                                                   ("veth1", "veth", True)]
    sent = kernel.sent()
    assert sent.kind == rtnl.RTM_GETLINK and sent.flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP


def test_a_dump_that_fails_or_is_interrupted(kernel: Kernel) -> None:
    kernel.answer(new_link(1, 1, "lo"), done(1, errno.ENOBUFS))  # a failure in NLMSG_DONE's payload
    with pytest.raises(OSError) as failed:
        kernel.client.links()
    assert failed.value.errno == errno.ENOBUFS
    kernel.answer(ack(2, errno.EPERM))
    with pytest.raises(OSError):
        kernel.client.links()
    interrupted = rtnl.message(rtnl.RTM_NEWLINK, rtnl.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR, 3,
                               rtnl.ifinfomsg(1) + rtnl.attr_str(rtnl.IFLA_IFNAME, "old"))
    kernel.answer(interrupted, done(3))
    kernel.answer(new_link(4, 1, "new"), done(4))
    assert [link.name for link in kernel.client.links()] == ["new"]  # redone with the next sequence number


def test_veth_request_carries_the_peer_and_its_namespace(kernel: Kernel) -> None:
    kernel.answer(ack(1))
    kernel.client.create_veth("veth0", "eth0", peer_netns_fd=42, mtu=1400)
    sent = kernel.sent()
    attrs = rtnl.parse_attrs(sent.body, rtnl.IFINFOMSG.size)
    assert rtnl.text(attrs, rtnl.IFLA_IFNAME) == "veth0" and rtnl.u32(attrs, rtnl.IFLA_MTU) == 1400
    info = rtnl.parse_attrs(attrs[rtnl.IFLA_LINKINFO])
    assert rtnl.text(info, rtnl.IFLA_INFO_KIND) == "veth"
    peer = rtnl.parse_attrs(info[rtnl.IFLA_INFO_DATA])[rtnl.VETH_INFO_PEER]
    peer_attrs = rtnl.parse_attrs(peer, rtnl.IFINFOMSG.size)  # VETH_INFO_PEER: struct ifinfomsg, then attributes
    assert rtnl.text(peer_attrs, rtnl.IFLA_IFNAME) == "eth0"
    assert rtnl.u32(peer_attrs, rtnl.IFLA_NET_NS_FD) == 42 and rtnl.u32(peer_attrs, rtnl.IFLA_MTU) == 1400


def test_macvlan_hairpin_and_address_requests(kernel: Kernel) -> None:
    kernel.answer(ack(1))
    kernel.client.create_macvlan("mv0", 3, "vepa", netns_fd=8, mac="02:00:00:00:00:09")
    attrs = rtnl.parse_attrs(kernel.sent().body, rtnl.IFINFOMSG.size)
    assert (rtnl.u32(attrs, rtnl.IFLA_LINK), rtnl.u32(attrs, rtnl.IFLA_NET_NS_FD)) == (3, 8)
    assert attrs[rtnl.IFLA_ADDRESS] == bytes([2, 0, 0, 0, 0, 9]) and rtnl.IFLA_MTU not in attrs
    data = rtnl.parse_attrs(rtnl.parse_attrs(attrs[rtnl.IFLA_LINKINFO])[rtnl.IFLA_INFO_DATA])
    assert rtnl.u32(data, rtnl.IFLA_MACVLAN_MODE) == 2  # MACVLAN_MODE_VEPA

    kernel.answer(ack(2))
    kernel.client.set_hairpin(5)
    sent = kernel.sent()
    assert rtnl.IFINFOMSG.unpack_from(sent.body)[0] == rtnl.AF_BRIDGE
    _length, kind = struct.unpack_from("=HH", sent.body, rtnl.IFINFOMSG.size)
    assert kind == rtnl.IFLA_PROTINFO | rtnl.NLA_F_NESTED  # the bridge ignores it without the flag
    assert rtnl.parse_attrs(rtnl.parse_attrs(sent.body, rtnl.IFINFOMSG.size)[rtnl.IFLA_PROTINFO]) == {
        rtnl.IFLA_BRPORT_MODE: b"\x01"}

    kernel.answer(ack(3))
    kernel.client.add_address(5, ipaddress.ip_interface("fd00::5/64"))
    sent = kernel.sent()
    family, prefixlen, flags, _scope, index = rtnl.IFADDRMSG.unpack_from(sent.body)
    assert (family, prefixlen, flags, index) == (socket.AF_INET6, 64, rtnl.IFA_F_NODAD, 5)
    kernel.answer(ack(4))
    kernel.client.add_address(5, ipaddress.ip_interface("10.0.0.5/8"))
    attrs = rtnl.parse_attrs(kernel.sent().body, rtnl.IFADDRMSG.size)
    assert attrs[rtnl.IFA_LOCAL] == attrs[rtnl.IFA_ADDRESS] == bytes([10, 0, 0, 5])
