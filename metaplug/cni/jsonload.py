"""Decoding JSON that comes from outside (stdin, delegates' stdout, annotations, NAD files) with a nesting bound.

`json.loads` recurses once per nesting level: a document of a few thousand `[` raises RecursionError, and one just
under the interpreter's limit decodes but makes every later recursive step (deepcopy, json.dumps, pydantic) raise it
instead (issue 9: code 199 and a traceback for bad input). No CNI configuration, result or annotation comes close to
MAX_DEPTH levels, so deeper documents are refused here, as a ValueError: every caller already turns a ValueError from
decoding into its own CNI error (code 6 for stdin, cni.md 8; code 7 for annotations and NADs; 101 for a delegate).
"""

from __future__ import annotations

from metaplug.cni import jsontext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_DEPTH = 64  # levels of arrays/objects; a conflist with IPAM ranges and prevResult needs fewer than 10


class TooDeep(ValueError):
    """The document nests arrays/objects deeper than the bound."""


def loads(data: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads`, except that nesting deeper than `max_depth` raises TooDeep (a ValueError).

    Undecodable bytes raise UnicodeDecodeError (also a ValueError), as json.loads does.
    """
    try:
        doc = jsontext.loads(data)
    except RecursionError:
        raise TooDeep(f"JSON nested too deeply (more than {max_depth} levels)") from None
    if depth(doc) > max_depth:
        raise TooDeep(f"JSON nested too deeply (more than {max_depth} levels)")
    return doc


def depth(doc: Any) -> int:
    """Nesting depth of arrays/objects in a decoded document (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        stack.extend((child, level) for child in children if isinstance(child, dict | list))
    return deepest
