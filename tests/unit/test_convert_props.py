"""Property tests of result conversion (cni.md duties 27-30): random valid results of every version."""

from __future__ import annotations

import copy
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from metaplug.cni.convert import INTERFACE_EXTRAS_1_1, ROUTE_EXTRAS_1_1, convert_result
from metaplug.cni.errors import CniError
from metaplug.cni.types import dump_result, parse_result

ALL = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
FAMILY = {"0.1.0": "v02", "0.2.0": "v02", "0.3.0": "v04", "0.3.1": "v04", "0.4.0": "v04", "1.0.0": "v1", "1.1.0": "v1"}


Fam = Literal[4, 6]
FAMS: tuple[Fam, ...] = (4, 6)


def cidr(fam: Fam) -> st.SearchStrategy[str]:
    return st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=fam), st.integers(0, 32 if fam == 4 else 128))


def ip_of(fam: Fam) -> st.SearchStrategy[str]:
    return st.ip_addresses(v=fam).map(str)


def maybe(key: str, strat: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """{key: value} or {} (absent, never null)."""
    return st.one_of(st.just({}), strat.map(lambda v: {key: v}))


small = st.integers(0, 65535)
names = st.text("abcdefghij0123456789", min_size=1, max_size=15)

dns = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "nameservers": st.lists(ip_of(4) | ip_of(6), max_size=3),
            "domain": names,
            "search": st.lists(names, max_size=3),
            "options": st.lists(names, max_size=3),
        },
    ),
).map(lambda d: {"dns": d})


def route(fam: Fam, extras: bool) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {"gw": ip_of(fam)}
    if extras:
        optional.update({k: small for k in ROUTE_EXTRAS_1_1})
    return st.fixed_dictionaries({"dst": cidr(fam)}, optional=optional)


def interface(extras: bool) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {"mac": st.just("0a:58:0a:00:00:01"), "sandbox": st.just("/run/ns")}
    if extras:
        optional.update({"mtu": small, "socketPath": st.just("/run/s.sock"), "pciID": st.just("0000:00:1f.6")})
    return st.fixed_dictionaries({"name": names}, optional=optional)


@st.composite
def modern_result(draw: st.DrawFn, ver: str) -> dict[str, Any]:
    """A valid 0.3.0 .. 1.1.0 result; only 1.1.0 gets the 1.1-only fields."""
    extras = ver == "1.1.0"
    ifaces = draw(st.lists(interface(extras), max_size=3))
    ips = []
    for _ in range(draw(st.integers(0, 4))):
        fam = draw(st.sampled_from(FAMS))
        ip: dict[str, Any] = {"address": draw(cidr(fam))}
        ip.update(draw(maybe("gateway", ip_of(fam))))
        if ifaces:
            ip.update(draw(maybe("interface", st.integers(0, len(ifaces) - 1))))
        if FAMILY[ver] == "v04":
            ip["version"] = str(fam)
        ips.append(ip)
    routes = draw(st.lists(st.sampled_from(FAMS).flatmap(lambda f: route(f, extras)), max_size=4))
    res: dict[str, Any] = {"cniVersion": ver}
    parts: tuple[tuple[str, list[dict[str, Any]]], ...] = (("interfaces", ifaces), ("ips", ips), ("routes", routes))
    for key, value in parts:
        write_empty: bool = draw(st.booleans())
        if value or write_empty:  # an empty list may or may not be written
            res[key] = value
    res.update(draw(st.one_of(st.just({}), dns)))
    return res


@st.composite
def old_result(draw: st.DrawFn, ver: str) -> dict[str, Any]:
    """A valid 0.1.0/0.2.0 result: ip4/ip6 each optional, routes of their own family."""
    res: dict[str, Any] = {"cniVersion": ver}
    for fam in FAMS:
        if draw(st.booleans()):
            conf: dict[str, Any] = {"ip": draw(cidr(fam))}
            conf.update(draw(maybe("gateway", ip_of(fam))))
            conf.update(draw(maybe("routes", st.lists(route(fam, False), min_size=1, max_size=3))))
            res[f"ip{fam}"] = conf
    res.update(draw(st.one_of(st.just({}), dns)))
    return res


any_result = st.sampled_from(ALL).flatmap(lambda v: old_result(v) if FAMILY[v] == "v02" else modern_result(v))


def has_ips(res: dict[str, Any]) -> bool:
    return bool(res.get("ips")) or "ip4" in res or "ip6" in res


def without_1_1(res: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(res)
    for iface in out.get("interfaces", []):
        for k in INTERFACE_EXTRAS_1_1:
            iface.pop(k, None)
    for r in out.get("routes", []):
        for k in ROUTE_EXTRAS_1_1:
            r.pop(k, None)
    return out


@settings(max_examples=300, deadline=None)
@given(any_result)
def test_duty30_every_pair_converts_or_fails_as_documented(res: dict[str, Any]) -> None:
    assert dump_result(parse_result(res)) == res  # the generator makes valid results
    before = copy.deepcopy(res)
    for dst in ALL:
        try:
            out = convert_result(res, dst)
        except CniError as err:
            # the only documented failure for valid input: nothing left for the 0.2.0 form
            assert FAMILY[dst] == "v02" and not has_ips(res), err
            assert (err.code, err.msg) == (1, "cannot convert: no valid IP addresses")
            continue
        assert out["cniVersion"] == dst
        assert dump_result(parse_result(out)) == out  # valid in its new version
        for back in ALL:  # and onward again, to every version
            try:
                convert_result(out, back)
            except CniError as err:
                assert FAMILY[back] == "v02" and not has_ips(out)
                assert err.code == 1
    assert res == before


@settings(max_examples=200, deadline=None)
@given(any_result)
def test_duty30_within_family_preserves_content(res: dict[str, Any]) -> None:
    src = res["cniVersion"]
    for dst in ALL:
        if FAMILY[dst] != FAMILY[src]:
            continue
        want = without_1_1(res) if (src, dst) == ("1.1.0", "1.0.0") else copy.deepcopy(res)
        want["cniVersion"] = dst
        assert convert_result(res, dst) == want


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")).flatmap(modern_result))
def test_duty30_modern_round_trip_loses_only_1_1_extras(res: dict[str, Any]) -> None:
    src = res["cniVersion"]
    for mid in ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        want = res if mid == "1.1.0" or src != "1.1.0" else without_1_1(res)
        assert convert_result(convert_result(res, mid), src) == want


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(("0.1.0", "0.2.0")).flatmap(old_result))
def test_duty30_02_round_trip_through_newer_is_lossless(res: dict[str, Any]) -> None:
    for mid in ALL:
        if not has_ips(res) and FAMILY[mid] != "v02":
            continue  # nothing to carry: newer forms have no ips, and back to 0.2.0 fails by design
        assert convert_result(convert_result(res, mid), res["cniVersion"]) == res


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(("0.3.0", "0.4.0", "1.0.0", "1.1.0")).flatmap(modern_result))
def test_duty30_to_02_keeps_first_address_of_each_family(res: dict[str, Any]) -> None:
    ips = res.get("ips") or []
    if not ips:
        return
    out = convert_result(res, "0.2.0")
    for fam in ("4", "6"):
        first = next((ip for ip in ips if ":" not in ip["address"]) if fam == "4" else
                     (ip for ip in ips if ":" in ip["address"]), None)
        if first is None:
            assert f"ip{fam}" not in out
            continue
        assert out[f"ip{fam}"]["ip"] == first["address"]
        assert out[f"ip{fam}"].get("gateway") == first.get("gateway")
        want_routes = [{k: v for k, v in r.items() if k in ("dst", "gw")}
                       for r in res.get("routes", []) if (":" in r["dst"]) == (fam == "6")]
        assert out[f"ip{fam}"].get("routes", []) == want_routes
    assert "interfaces" not in out
