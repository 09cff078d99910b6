"""One plugin of a running attachment run again in place (issue 12.3, 12.4): the mechanism behind `set-bandwidth`
(bandwidth.py) and `set-firewall` (firewall.py). The attachment's interface and the other plugins of its list stay.

- DEL of that one plugin with its recorded config, runtimeConfig and the attachment's recorded final result as
  prevResult (cni.md 20: what every DEL gets); then `between` (bandwidth: qdiscs its DEL leaves); then ADD of it with
  its new config or runtimeConfig and the same recorded result as prevResult. The plugins before it made that result
  and are not re-run; those after it only passed it on or added to it.
- The attachment's result is then recomputed (`chained_result`): the plugin is the last of the list: its new output;
  plugins follow it and its output is its prevResult unchanged (as the reference bandwidth and firewall plugins'
  always are): what they saw has not changed, so they are not re-run and the result stays; its output changed: the
  plugins after it would hold a stale prevResult, so they run again, DEL (reverse order, the old final result as
  prevResult) then ADD from its new output on, and their final output is the attachment's result.
- The caller journals the new config or capability args and the result (`hotplug.commit`) on success only: after a
  failure the old ones stay recorded (a later attempt DELs with them again, which is harmless, cni.md 11), and the
  error says that the plugin's effect is gone (`undone`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metaplug.cni.errors import CniError

if TYPE_CHECKING:
    from metaplug.cni.documents import JsonObject
    from metaplug.cni.runtime import RuntimeConf

log = logging.getLogger("metaplug.inplace")
MERGE_VERSION = "1.1.0"  # results are compared in this shape


def rerun_plugin(old: dict[str, Any], new: dict[str, Any], index: int, rts: tuple[RuntimeConf, RuntimeConf],
                 paths: list[str], recorded: JsonObject | None, timeout: float | None, *, what: str, undone: str,
                 between: Callable[[], None] | None = None) -> JsonObject:
    """Plugin `index` of the conflist `old` run again as in `new` (same list, that plugin's config changed or not),
    with the runtime confs (old, new). Returns the attachment's new final result."""
    from metaplug.cni.chain import add_network_list, del_network_list

    old_rt, new_rt = rts
    del_network_list({**old, "plugins": [old["plugins"][index]]}, old_rt, paths, prev_result=recorded,
                     timeout=timeout)
    if between is not None:
        between()
    try:
        out = add_network_list({**new, "plugins": [new["plugins"][index]]}, new_rt, paths, timeout=timeout,
                               prev_result=recorded)
    except CniError as err:
        raise CniError(err.code, f"{what} could not be set; {undone}",
                       f"{err.msg}: {err.details}" if err.details else err.msg, plugin=err.plugin) from None
    tail = {**new, "plugins": new["plugins"][index + 1:]}
    try:
        return chained_result(tail, new_rt, paths, recorded, out, timeout)
    except CniError as err:
        raise CniError(err.code, f"{what} set, but the plugins after it could not run again",
                       f"{err.msg}: {err.details}" if err.details else err.msg, plugin=err.plugin) from None


def chained_result(tail: dict[str, Any], rt: RuntimeConf, paths: list[str], recorded: JsonObject | None,
                   out: JsonObject, timeout: float | None) -> JsonObject:
    """The attachment's final result after one plugin re-ran with `recorded` as prevResult and gave `out`; `tail` is
    the list of the plugins after it (module docstring)."""
    from metaplug.cni.chain import add_network_list, del_network_list
    from metaplug.cni.convert import convert_result

    if not tail["plugins"]:
        return out
    if recorded is not None and convert_result(out, MERGE_VERSION) == convert_result(recorded, MERGE_VERSION):
        return recorded  # passed through: the later plugins' prevResult is what they saw
    log.info("a re-run plugin's result changed: re-running the plugins after it",
             extra={"ifname": rt.ifname, "plugins": [p.get("type") for p in tail["plugins"]]})
    del_network_list(tail, rt, paths, prev_result=recorded, timeout=timeout)
    return add_network_list(tail, rt, paths, timeout=timeout, prev_result=out)


def plugin_index(conflist: dict[str, Any], match: Callable[[dict[str, Any]], bool], what: str, where: str) -> int:
    """The index of the one plugin of the list that `match`es; code 7 when none or several do."""
    from metaplug.cni.errors import INVALID_NETWORK_CONFIG

    found = [i for i, p in enumerate(conflist["plugins"]) if match(p)]
    if len(found) != 1:
        raise CniError(INVALID_NETWORK_CONFIG, f"no {what} to re-run" if not found else f"several plugins are {what}s",
                       f"{where}: {len(found)} plugins of {conflist['name']!r} are {what}s")
    return found[0]
