"""metaplug.cni.jsontext is json.loads / json.dumps without the json package: the same documents, the same errors
(issue 10.7: `import json` costs every thin-mode process ~6 ms of re, enum and functools)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplug.cni import jsontext

REPO = Path(__file__).resolve().parents[2]

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


def _same(a: Any, b: Any) -> bool:
    """Equal documents, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _outcome(fn: Any, arg: Any, **kw: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(arg, **kw)
    except Exception as exc:
        return type(exc).__name__, str(exc)


@given(documents, st.sampled_from([None, (",", ":"), (", ", ": ")]), st.booleans())
@settings(max_examples=300)
def test_dumps_is_json_dumps(doc: Any, separators: tuple[str, str] | None, sort_keys: bool) -> None:
    assert _outcome(jsontext.dumps, doc, separators=separators, sort_keys=sort_keys) == \
        _outcome(json.dumps, doc, separators=separators, sort_keys=sort_keys)


@given(documents)
@settings(max_examples=300)
def test_loads_reads_back_what_json_writes(doc: Any) -> None:
    text = json.dumps(doc)
    assert _same(jsontext.loads(text), json.loads(text))
    assert _same(jsontext.loads(text.encode()), json.loads(text.encode()))


@given(st.text(alphabet=st.sampled_from(list('{}[]:," \t\n\r0123456789.eE+-truefalsnNIiy\\u\ufeff')), max_size=30))
@settings(max_examples=500)
def test_loads_of_any_text_matches_json(text: str) -> None:
    """Valid or not: the same document, or the same exception type with json's own message."""
    ours, theirs = _outcome(jsontext.loads, text), _outcome(json.loads, text)
    assert ours[0] == theirs[0]
    assert _same(ours[1], theirs[1]) if ours[0] == "ok" else ours[1] == theirs[1]


@pytest.mark.parametrize("data", [
    b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM: json.loads accepts it in bytes
    '{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-32"), '"\u00e9"'.encode(),
    b'{"a": "\xff"}',  # not UTF-8 at all
    "\ufeff{}",  # a BOM in a str is an error
    b"", "  ", '{"a": 1} x', "[1, 2", "NaN", "-Infinity", '"\\ud800"', 12,
])
def test_loads_edge_cases_match_json(data: Any) -> None:
    ours, theirs = _outcome(jsontext.loads, data), _outcome(json.loads, data)
    assert ours[0] == theirs[0]
    assert _same(ours[1], theirs[1]) if ours[0] == "ok" else ours[1] == theirs[1]


def test_dumps_errors_match_json() -> None:
    loop: list[Any] = []
    loop.append(loop)
    for value in (loop, {1: {2}}, {(1, 2): 3}, object()):
        assert _outcome(jsontext.dumps, value) == _outcome(json.dumps, value)
    assert jsontext.dumps({"a": [1]}, indent=2) == json.dumps({"a": [1]}, indent=2)


def test_imports_neither_json_nor_re() -> None:
    """The point of the module: a fresh `python -I -S` round trip loads neither the json package nor re."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from metaplug.cni import jsontext;"
            "assert jsontext.loads(jsontext.dumps({'a': [1.5, None]})) == {'a': [1.5, None]};"
            "print(sorted(m for m in ('json', 're', 'enum', 'typing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(REPO)], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
