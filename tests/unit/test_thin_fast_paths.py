"""The fast paths thin mode takes instead of importing ipaddress and copy (issue 10.7) decide exactly as those did."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from metaplug.cni import jsontext
from metaplug.cni.convert import address_family
from metaplug.cni.errors import CniError
from metaplug.merge import is_default_route

addresses = st.one_of(
    st.ip_addresses().map(str),
    st.text(alphabet=st.sampled_from(list("0123456789abcdefABCDEFg.:%/ x")), max_size=24),
    st.sampled_from(["1.2.3.04", "01.2.3.4", "1.2.3", "::ffff:1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "fe80::1%eth0",
                     "1::2:3:4:5:6:7:8", "00001::", "256.1.1.1", "0.0.0.0", "::", "1.2.3.4.5"]),
)
prefixes = st.sampled_from(["", "/0", "/00", "/8", "/024", "/32", "/33", "/64", "/128", "/129", "/x", "/255.0.0.0",
                            "/0.0.0.0", "/", "/-1", "/\u0661"])


def _old_family(cidr: Any) -> str | None:
    """address_family as it was: ipaddress alone."""
    if isinstance(cidr, str) and "/" in cidr:
        _, _, prefix = cidr.partition("/")
        if prefix.isdigit() and prefix.isascii():
            try:
                return str(ipaddress.ip_interface(cidr).version)
            except ValueError:
                pass
    return None


@given(addresses, prefixes)
@settings(max_examples=2000)
def test_address_family_is_ipaddress_verdict(address: str, prefix: str) -> None:
    cidr = address + prefix
    try:
        ours: str | None = address_family(cidr)
    except CniError as err:
        assert err.code == 6
        ours = None
    assert ours == _old_family(cidr)


def _old_default(dst: Any) -> bool:
    if not isinstance(dst, str):
        return False
    try:
        return ipaddress.ip_network(dst, strict=False).prefixlen == 0
    except ValueError:
        return False


@given(addresses, prefixes)
@settings(max_examples=2000)
def test_is_default_route_is_ipaddress_verdict(address: str, prefix: str) -> None:
    dst = address + prefix
    assert is_default_route({"dst": dst}) == _old_default(dst)


def test_default_route_spellings() -> None:
    for dst in ("0.0.0.0/0", "::/0", "10.0.0.0/0", "0.0.0.0/0.0.0.0", "::ffff:0:0/0"):
        assert is_default_route({"dst": dst}), dst
    for dst in ("0.0.0.0/1", "10.0.0.0/8", "0.0.0.0", "x/0", None, 5):
        assert not is_default_route({"dst": dst}), dst


json_docs = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                         lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=4), max_leaves=25)


@given(json_docs)
def test_clone_is_a_deep_copy(doc: Any) -> None:
    cloned = jsontext.clone(doc)
    assert cloned == copy.deepcopy(doc)
    if isinstance(doc, dict | list) and doc:
        assert cloned is not doc
        first = next(iter(doc.values())) if isinstance(doc, dict) else doc[0]
        copied = next(iter(cloned.values())) if isinstance(cloned, dict) else cloned[0]
        if isinstance(first, dict | list):
            assert copied is not first  # nested containers are copies too


@given(addresses, prefixes)
@example("0.0.0.0/0", "")  # the address strategy's text may carry its own prefix
@settings(max_examples=2000)
def test_ip_version_never_contradicts_ipaddress(address: str, prefix: str) -> None:
    """lexical.ip_version decides only what ipaddress accepts, with the same family; None leaves it to ipaddress."""
    from metaplug.cni import lexical

    text = address + prefix
    version = lexical.ip_version(text)
    if version is not None:
        assert ipaddress.ip_interface(text).version == version
        if "/" not in text:
            assert ipaddress.ip_address(text).version == version
