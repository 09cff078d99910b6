"""What Multus's cache (`cniDir`, multus_cache.py) accounts for: the pods Multus attached before this node switched
to metaplug.

Such a pod has no journal, yet its addresses sit in the IPAM stores metaplug's networks share and its host-side veths
on their bridges; its DEL (the runtime's, or GC) deletes it from that cache (issue 10.4). So doctor counts as
accounted for
- every reservation of a container that has a Multus entry (`<cniDir>/<containerID>`: Multus derives the interface
  names at DEL, so any interface of that container is its), or that libcni's result cache under cniDir records for
  that container and interface;
- every host-side interface (no sandbox) that a cached result lists.
Nothing here is ever repaired: Multus's entries are the runtime's DEL to consume.
"""

from __future__ import annotations

import os
from typing import NamedTuple


class MultusCache(NamedTuple):
    cni_dir: str  # "" when there is none to read

    def accounts_for(self, container_id: str, ifname: str) -> bool:
        """Read now (as the journals are by doctor's re-check): does Multus's cache hold this attachment?"""
        from metaplug import multus_cache
        from metaplug.cni import cache

        if not self.cni_dir:
            return False
        if os.path.isfile(multus_cache.entry_path(self.cni_dir, container_id)):
            return True
        return any(e["containerId"] == container_id and (not ifname or e["ifName"] == ifname)
                   for e in cache.list_cache(self.cni_dir))

    def host_side_names(self) -> set[str]:
        from metaplug.cni import cache

        if not self.cni_dir:
            return set()
        names: set[str] = set()
        for entry in cache.list_cache(self.cni_dir):
            result = entry.get("result")
            interfaces = result.get("interfaces") if isinstance(result, dict) else None
            if isinstance(interfaces, list):
                names |= {str(i.get("name")) for i in interfaces if isinstance(i, dict) and not i.get("sandbox")}
        return names
