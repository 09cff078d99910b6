"""mp-host-local's pure logic: ranges (reference defaults, validation, round-robin order), the on-disk store (the
reference layout) and allocation (one address per containerID+ifname, requests, exhaustion)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from metaplug_delegates import ADDRESS_UNAVAILABLE, RANGE_EXHAUSTED
from metaplug_delegates._allocator import allocate
from metaplug_delegates._ranges import RangeSet, candidates, parse_range, parse_range_set, parse_range_sets, range_for
from metaplug_delegates._store import Store

from metaplug.cni.errors import INVALID_NETWORK_CONFIG, IO_FAILURE, CniError

ip = ipaddress.ip_address


# --- ranges --------------------------------------------------------------------------------------------------------


def test_range_defaults_follow_the_reference() -> None:
    """rangeStart = network+1, rangeEnd = broadcast-1 (IPv4), gateway = network+1, as the reference host-local."""
    r = parse_range({"subnet": "10.1.0.0/29"})
    assert (r.start, r.end, r.gateway) == (ip("10.1.0.1"), ip("10.1.0.6"), ip("10.1.0.1"))
    assert str(r) == "10.1.0.1-10.1.0.6"


def test_ipv6_range_ends_at_the_last_address() -> None:
    r = parse_range({"subnet": "fd00::/126"})
    assert (r.start, r.end) == (ip("fd00::1"), ip("fd00::3"))


@pytest.mark.parametrize(("obj", "fragment"), [
    ({"subnet": "10.1.0.1/24"}, "subnet"),  # host bits set
    ({"subnet": "10.1.0.0/31"}, "too small"),
    ({"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.50", "rangeEnd": "10.1.0.10"}, "rangeStart after rangeEnd"),
    ({"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.5"}, "rangeStart not in subnet"),
    ({"subnet": "10.1.0.0/24", "gateway": "banana"}, "invalid gateway"),
    ({"rangeStart": "10.1.0.5"}, "needs a subnet"),
])
def test_invalid_ranges_are_code_7(obj: dict[str, str], fragment: str) -> None:
    with pytest.raises(CniError) as exc:
        parse_range(obj)
    assert exc.value.code == INVALID_NETWORK_CONFIG
    assert fragment in str(exc.value)


def test_overlapping_ranges_and_mixed_families_are_rejected() -> None:
    with pytest.raises(CniError, match="overlapping"):
        parse_range_sets({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]]})
    with pytest.raises(CniError, match="mixed address families"):
        parse_range_set([{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}])


def test_legacy_flat_subnet_and_ip_ranges_capability() -> None:
    """The flat ipam.subnet form is one range set; the ipRanges capability replaces ipam.ranges (cni.md 34)."""
    sets = parse_range_sets({"subnet": "10.5.0.0/24", "rangeStart": "10.5.0.10"})
    assert len(sets) == 1 and sets[0][0].start == ip("10.5.0.10")
    sets = parse_range_sets({"ranges": [[{"subnet": "10.5.0.0/24"}]]}, [[{"subnet": "10.6.0.0/24"}]])
    assert sets[0][0].subnet == ipaddress.ip_network("10.6.0.0/24")


def test_candidates_skip_the_gateway_and_cover_each_address_once() -> None:
    rs = parse_range_set([{"subnet": "10.1.0.0/29"}])
    assert list(candidates(rs)) == [ip(f"10.1.0.{n}") for n in range(2, 7)]


def test_candidates_start_after_the_last_reserved_and_wrap() -> None:
    """Round robin (reference RangeIter): after 10.1.0.4 comes .5, .6, then .2, .3, .4."""
    rs = parse_range_set([{"subnet": "10.1.0.0/29"}])
    assert list(candidates(rs, ip("10.1.0.4"))) == [ip(f"10.1.0.{n}") for n in (5, 6, 2, 3, 4)]
    assert list(candidates(rs, ip("10.1.0.6"))) == [ip(f"10.1.0.{n}") for n in range(2, 7)]
    assert list(candidates(rs, ip("192.168.0.1"))) == [ip(f"10.1.0.{n}") for n in range(2, 7)]  # not in the set


def test_candidates_walk_several_ranges_in_order() -> None:
    rs = parse_range_set([
        {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.11"},
        {"subnet": "10.2.0.0/24", "rangeStart": "10.2.0.20", "rangeEnd": "10.2.0.21"},
    ])
    assert [str(a) for a in candidates(rs, ip("10.1.0.11"))] == ["10.2.0.20", "10.2.0.21", "10.1.0.10", "10.1.0.11"]
    assert range_for(rs, ip("10.2.0.21")) is rs[1]
    assert range_for(rs, ip("10.2.0.22")) is None


def test_candidates_at_the_top_of_the_ipv6_space_do_not_overflow() -> None:
    rs = parse_range_set([{"subnet": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"}])
    assert list(candidates(rs))[-1] == ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


# --- store ---------------------------------------------------------------------------------------------------------


def test_store_layout_is_the_reference_one(tmp_path: Path) -> None:
    """One file per address holding "containerID\\r\\nifname", last_reserved_ip.N, and a lock file."""
    store = Store(str(tmp_path), "net1")
    with store.locked():
        assert store.reserve(ip("10.1.0.2"), "c1", "eth0", 0)
        assert not store.reserve(ip("10.1.0.2"), "c2", "eth0", 0)
    net = tmp_path / "net1"
    assert (net / "10.1.0.2").read_bytes() == b"c1\r\neth0"
    assert (net / "last_reserved_ip.0").read_text() == "10.1.0.2"
    assert (net / "lock").exists()


def test_store_reads_old_single_field_files(tmp_path: Path) -> None:
    """Files of old reference versions hold only the container ID; they match that container, any ifname."""
    store = Store(str(tmp_path), "net1")
    with store.locked():
        (tmp_path / "net1" / "10.1.0.9").write_text("c1")
        (tmp_path / "net1" / "10.1.0.3").write_text("c1\r\neth0")
        assert store.get_by_id("c1", "eth0") == [ip("10.1.0.3")]  # exact match wins
        assert store.get_by_id("c1", "net1") == [ip("10.1.0.9")]
        assert store.release_by_id("c1", "eth0") == [ip("10.1.0.3")]
        assert store.release_by_id("c1", "eth0") == [ip("10.1.0.9")]
        assert store.owners() == {}


def test_store_io_errors_are_code_5(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CniError) as exc, Store(str(blocker), "net1").locked():
        pass
    assert exc.value.code == IO_FAILURE


# --- allocation ----------------------------------------------------------------------------------------------------


def _alloc(store: Store, rs: RangeSet, cid: str, ifname: str = "eth0", requested: str | None = None) -> str:
    with store.locked():
        return allocate(store, rs, 0, cid, ifname, ip(requested) if requested else None).address


def test_repeated_add_gets_the_same_address(tmp_path: Path) -> None:
    """cni.md 36: a retried ADD for the same containerID+ifname must not take a second address."""
    store = Store(str(tmp_path), "n")
    rs = parse_range_set([{"subnet": "10.1.0.0/29"}])
    first = _alloc(store, rs, "c1")
    assert first == "10.1.0.2/29"
    assert _alloc(store, rs, "c1") == first
    assert _alloc(store, rs, "c1", "eth1") == "10.1.0.3/29"  # another ifname is another attachment
    assert len(store.owners()) == 2


def test_round_robin_does_not_reuse_a_released_address_at_once(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "n")
    rs = parse_range_set([{"subnet": "10.1.0.0/29"}])
    assert _alloc(store, rs, "c1") == "10.1.0.2/29"
    with store.locked():
        store.release_by_id("c1", "eth0")
    assert _alloc(store, rs, "c2") == "10.1.0.3/29"


def test_exhaustion_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(str(tmp_path), "n")
    rs = parse_range_set([{"subnet": "10.1.0.0/29"}])
    got = {_alloc(store, rs, f"c{n}") for n in range(5)}
    assert len(got) == 5
    with pytest.raises(CniError) as exc:
        _alloc(store, rs, "c99")
    assert exc.value.code == RANGE_EXHAUSTED
    assert "no IP addresses available in range set: 10.1.0.1-10.1.0.6" in exc.value.msg


def test_requested_addresses(tmp_path: Path) -> None:
    """The ips capability: a free address in the set is granted; taken, gateway or outside is ADDRESS_UNAVAILABLE."""
    store = Store(str(tmp_path), "n")
    rs = parse_range_set([{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20",
                           "gateway": "10.1.0.1"}])
    assert _alloc(store, rs, "c1", requested="10.1.0.15") == "10.1.0.15/24"
    assert _alloc(store, rs, "c1", requested="10.1.0.15") == "10.1.0.15/24"  # repeated ADD
    for cid, req, fragment in (("c2", "10.1.0.15", "allocated to c1/eth0"),
                               ("c2", "10.1.0.30", "outside the range set"),
                               ("c1", "10.1.0.16", "already holds 10.1.0.15")):
        with pytest.raises(CniError) as exc:
            _alloc(store, rs, cid, requested=req)
        assert exc.value.code == ADDRESS_UNAVAILABLE
        assert fragment in str(exc.value)
    rs_gw = parse_range_set([{"subnet": "10.2.0.0/24", "gateway": "10.2.0.7"}])
    with pytest.raises(CniError, match="gateway"):
        _alloc(store, rs_gw, "c3", requested="10.2.0.7")
    assert sorted(os.listdir(tmp_path / "n")) == ["10.1.0.15", "last_reserved_ip.0", "lock"]
