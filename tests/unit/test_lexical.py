"""metaplug.cni.lexical decides exactly what `re.fullmatch` of each stated pattern decides (issue 10.7: the thin
path does without `re`). The patterns are the ones the code quotes in its error messages."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from metaplug.cni import lexical, trace
from metaplug.cni import version as cniversion
from metaplug.cni.errors import CniError

# Characters around every boundary of the patterns, plus a few that must never pass (newline, non-ASCII digits).
tricky = st.text(alphabet=st.sampled_from(list("aAzZ09fFgG_.-:\n \u0661\u00e9")), max_size=20)


def _full(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value, flags=re.ASCII) is not None


@given(tricky)
@settings(max_examples=1000)
def test_container_id_is_the_duty3_pattern(value: str) -> None:
    assert lexical.container_id(value) == _full(lexical.CONTAINER_ID_PATTERN, value)


@given(tricky)
@settings(max_examples=1000)
def test_dns_label_is_the_r1_pattern(value: str) -> None:
    assert lexical.dns_label(value) == _full(lexical.DNS_LABEL_PATTERN, value)


@given(tricky)
@settings(max_examples=1000)
def test_hex_octets_are_mac_and_guid_patterns(value: str) -> None:
    assert lexical.hex_octets(value, 6) == _full(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", value)
    assert lexical.hex_octets(value, 8) == _full(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){7}", value)


@given(st.text(alphabet=st.sampled_from(list("0129.\n \u0661a")), max_size=10))
@settings(max_examples=1000)
def test_semver_is_the_cniversion_pattern(value: str) -> None:
    match = re.fullmatch(lexical.SEMVER_PATTERN, value, flags=re.ASCII)
    assert lexical.semver(value) == (tuple(int(g) for g in match.groups()) if match else None)


def test_semver_refuses_what_a_plain_regex_let_through() -> None:
    """`re.match(r"^(\\d+)...$")` accepted a trailing newline and Unicode digits (cni.md 8: code 6 now)."""
    for bad in ("1.0.0\n", "\u0661.0.0"):
        try:
            cniversion.parse(bad)
        except CniError as err:
            assert err.code == 6
        else:
            raise AssertionError(bad)


TRACEPARENT = r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?"


def _trace_oracle(value: str) -> str | None:
    match = re.fullmatch(TRACEPARENT, value.strip())
    if match is None:
        return None
    version, tid, parent, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or set(tid) == {"0"} or set(parent) == {"0"}:
        return None
    return tid


@given(st.sampled_from(["00", "01", "ff", "0g"]), st.sampled_from(["4bf92f3577b34da6a3ce929d0e0e4736", "0" * 32,
                                                                   "4BF92F3577B34DA6A3CE929D0E0E4736", "abc"]),
       st.sampled_from(["00f067aa0ba902b7", "0" * 16, "00f067aa0ba902b"]), st.sampled_from(["01", "00", "1"]),
       st.sampled_from(["", "-", "-x", "-x\ny", " ", "x", "\n"]))
def test_trace_id_is_the_w3c_traceparent_pattern(version: str, tid: str, parent: str, flags: str, rest: str) -> None:
    value = f"{version}-{tid}-{parent}-{flags}{rest}"
    assert trace.trace_id(value) == _trace_oracle(value)
