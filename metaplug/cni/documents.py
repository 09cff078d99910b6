"""Names for the CNI documents that stay free-form JSON objects, so a signature says which one it passes.

A network configuration keeps every key a plugin defines (cni.md 17: unknown fields pass through unchanged) and a
result may carry keys of a newer spec version, so neither is a closed record: both stay plain dicts at the edge.
Import these under TYPE_CHECKING; they cost nothing at run time.
"""

from __future__ import annotations

from typing import Any, TypeAlias

NetConf: TypeAlias = dict[str, Any]  # a network configuration or configuration list (a plugin's stdin, a conflist)
Result: TypeAlias = dict[str, Any]  # a CNI result, of any version (cni.md 27-29)
JsonObject: TypeAlias = dict[str, Any]  # any other JSON object: an interface, ip or route of a result, a NAD, dns
