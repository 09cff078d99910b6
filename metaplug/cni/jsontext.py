"""JSON text in and out through CPython's `_json` accelerator, without importing the `json` package.

`import json` loads `re` (json.decoder, json.scanner and json.encoder compile regular expressions when imported), and
`re` loads `enum`, `functools` and `collections`: ~6 ms of every thin-mode process (issue 10.7), although for the
common case json itself only calls two C functions of `_json`, its scanner and its encoder. This module drives those
two directly, with json's default settings. Whatever they do not cover goes to the json package, so documents and
error messages are exactly json's: an indent, a bytes document that is not plain UTF-8 (a BOM, UTF-16/32), any
failure (the error is raised by json.loads / json.dumps themselves), an interpreter without `_json`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

try:
    import _json
except ImportError:  # pragma: no cover - every CPython has it; other interpreters take the json package
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"  # json.decoder.WHITESPACE
_NOT_PLAIN_UTF8 = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")  # BOMs json.detect_encoding looks for


class _DecoderSettings:
    """The attributes `_json.make_scanner` reads off a json.JSONDecoder made with no arguments."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


# The scanner reads only these attributes of its argument (typeshed asks for a decoder-like make_scanner).
_scan = _json.make_scanner(_DecoderSettings()) if _json is not None else None  # type: ignore[arg-type]


def loads(data: str | bytes | bytearray) -> Any:
    """`json.loads(data)`: the same document, or the same exception."""
    if _scan is not None:
        try:
            return _decode(data)
        except Exception:
            pass
    import json

    return json.loads(data)


def _decode(data: str | bytes | bytearray) -> Any:
    if isinstance(data, (bytes, bytearray)):
        if data.startswith(_NOT_PLAIN_UTF8) or b"\x00" in data[:4]:
            raise ValueError("not plain UTF-8")
        text = data.decode("utf-8", "surrogatepass")
    else:
        text = data
    if not isinstance(text, str) or text.startswith("\ufeff"):
        raise ValueError("not a JSON text")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    assert _scan is not None
    doc, end = _scan(text, start)
    if text[end:].lstrip(_WHITESPACE):
        raise ValueError("extra data")
    return doc


def _not_serializable(value: object) -> NoReturn:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def dumps(value: Any, *, separators: tuple[str, str] | None = None, sort_keys: bool = False,
          indent: int | None = None) -> str:
    """`json.dumps(value, separators=..., sort_keys=..., indent=...)` with json's other defaults (ASCII output,
    circular references detected, NaN and Infinity allowed)."""
    if _json is not None and indent is None:
        item_separator, key_separator = separators or (", ", ": ")
        try:
            if isinstance(value, str):
                return str(_json.encode_basestring_ascii(value))
            encode = _json.make_encoder({}, _not_serializable, _json.encode_basestring_ascii, None,
                                        key_separator, item_separator, sort_keys, False, True)
            return "".join(encode(value, 0))
        except Exception:
            pass
    import json

    return json.dumps(value, separators=separators, sort_keys=sort_keys, indent=indent)


def clone(value: Any) -> Any:
    """A deep copy of a decoded JSON document (dicts and lists copied, everything else shared: str, int, float, bool
    and None are immutable). `copy.deepcopy` does the same for these documents but costs an import of copy, weakref
    and copyreg (~0.7 ms) and is several times slower. Documents are bounded in depth (jsonload.MAX_DEPTH)."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone(item) for item in value]
    return value
