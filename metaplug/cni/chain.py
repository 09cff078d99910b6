"""Run a network configuration list: ADD / DEL / CHECK / STATUS / GC (cni.md duties 12-14, 16-22, 25, 34, 35).

The Python counterpart of libcni's `*NetworkList` functions, on plain dicts. One call runs every plugin of ONE list for
ONE attachment (container ID + ifname). What a runtime does around it is the caller's business, notably (duty 19):
**after a failed ADD the caller must DEL the attachment** (or pass `rollback_on_error=True`), because the plugins that
succeeded before the failing one have already created things.

`timeout` is per delegate call. `paths` is CNI_PATH as a list. `cache_dir` enables libcni's result cache (duty 35): ADD
writes it, DEL/CHECK read it when no `prev_result` is given, DEL removes it.
"""

from __future__ import annotations

from metaplug.cni import jsonload, jsontext
from metaplug.cni import version as cniversion
from metaplug.cni.env import (
    LEGACY_ATTACHMENTS_KEY,
    VALID_ATTACHMENTS_KEY,
    attachment_pairs,
    validate_container_id,
    validate_ifname,
    validate_network_name,
)
from metaplug.cni.errors import (
    DECODE_FAILURE,
    DELEGATE_FAILED,
    INCOMPATIBLE_VERSION,
    INVALID_NETWORK_CONFIG,
    CniError,
)
from metaplug.cni.invoke import build_env, exec_plugin, find_plugin
from metaplug.cni.lazylog import LazyLogger
from metaplug.cni.runtime import RuntimeConf as RuntimeConf  # re-exported: callers build what they pass in
from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

log = LazyLogger("metaplug.cni.chain")


# Duty 34: the spec's spelling of the keys inside well-known capability values. containerd (go-cni structs without
# JSON tags) sends HostPort, IngressRate, Servers...; Go plugins match case-insensitively, Python ones would not.
CAPABILITY_VALUE_KEYS: dict[str, tuple[str, ...]] = {
    "portMappings": ("hostPort", "containerPort", "protocol", "hostIP"),
    "bandwidth": ("ingressRate", "ingressBurst", "egressRate", "egressBurst"),
    "dns": ("servers", "searches", "options", "domain"),
    "ipRanges": ("subnet", "rangeStart", "rangeEnd", "gateway"),
}

_BOOL_KEYS = ("disableCheck", "disableGC", "loadOnlyInlinedPlugins")


# --- configuration ---------------------------------------------------------------------------------------------------


def load_conflist(data: bytes | dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a network configuration list (duties 5, 9, 16, 17).

    Accepts a list or a single-plugin `.conf` (wrapped as libcni does: `{"cniVersion","name","plugins":[conf]}`, the
    conf keeping its own keys). Returns a new dict: cniVersion chosen (cniVersions: the highest supported of the union;
    absent: 0.1.0), disableCheck/disableGC/loadOnlyInlinedPlugins as booleans, plugins deep-copied; other keys kept.
    Undecodable JSON: code 6; invalid structure: code 7; no supported version: code 1.
    """
    if isinstance(data, bytes | bytearray):
        try:
            conf = jsonload.loads(data)  # a new object already: nobody else holds it, no copy needed
        except ValueError as exc:  # UnicodeDecodeError and jsonload.TooDeep too
            raise CniError(DECODE_FAILURE, "failed to decode network configuration", str(exc)) from None
    else:
        conf = jsontext.clone(data) if isinstance(data, dict) else data
    if not isinstance(conf, dict):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid network configuration", "it must be a JSON object")
    if "plugins" not in conf:
        if "type" not in conf:
            raise CniError(INVALID_NETWORK_CONFIG, "invalid network configuration",
                           "neither a list (no 'plugins') nor a single plugin (no 'type')")
        single = conf
        conf = {"plugins": [single]}
        for key in ("cniVersion", "name"):
            if key in single:
                conf[key] = single[key]
    validate_network_name(conf.get("name"))
    conf["cniVersion"] = _choose_version(conf)
    for key in _BOOL_KEYS:
        conf[key] = _as_bool(conf.get(key, False), key)
    plugins = conf.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid network configuration", "'plugins' must be a non-empty list")
    for i, plugin in enumerate(plugins):
        _check_plugin(i, plugin)
    return conf


def plugin_stdin(conflist: dict[str, Any], plugin: dict[str, Any], rt: RuntimeConf,
                 prev_result: dict[str, Any] | None) -> bytes:
    """The stdin of one delegate call (duties 18, 34), compact JSON.

    cniVersion and name of the list are injected; runtimeConfig gets only the capabilities the plugin declares true and
    rt has a value for (merged over a runtimeConfig the plugin already has, capability values win; absent when neither);
    prevResult when given.
    """
    return jsontext.dumps(_plugin_conf(conflist, plugin, rt, prev_result), separators=(",", ":")).encode()


def normalize_capability(name: str, value: Any) -> Any:
    """Duty 34: rename the keys inside a well-known capability value to the spec's spelling, case-insensitively.

    Unknown capabilities and unknown keys pass unchanged; a key already spelled right wins over a differently-cased one.
    """
    names = CAPABILITY_VALUE_KEYS.get(name)
    if names is None:
        return value
    return _rename_keys(value, {n.lower(): n for n in names})


# --- verbs -----------------------------------------------------------------------------------------------------------


def add_network_list(
    conflist: dict[str, Any] | bytes,  # bytes: parsed here (no copy of a caller's dict)
    rt: RuntimeConf,
    paths: Sequence[str],
    *,
    timeout: float | None = None,
    cache_dir: str | None = None,
    rollback_on_error: bool = False,
    base_env: Mapping[str, str] | None = None,
    prev_result: dict[str, Any] | None = None,
    before_input: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """ADD every plugin in order, each getting the previous result as prevResult; stop at the first error (duty 19).

    Returns the final result in the list's cniVersion (a result without cniVersion takes the list's, duty 25; a result
    in another version is converted). With `cache_dir` the result is cached (duty 35). On error the CniError is raised;
    the caller must then DEL the attachment, unless `rollback_on_error` is set, in which case DEL runs here (with the
    last successful result as prevResult) before the error is re-raised. `prev_result` is the first plugin's
    prevResult: running the tail of a list again on a made attachment (a bandwidth change in place).
    `before_input`: run by the first plugin's call once its process has started, before its stdin
    (invoke.exec_plugin).
    """
    conf = load_conflist(conflist)
    validate_container_id(rt.container_id)
    validate_ifname(rt.ifname)
    version = conf["cniVersion"]
    prev: dict[str, Any] | None = _in_version(prev_result, version) if prev_result is not None else None
    try:
        for plugin in conf["plugins"]:
            result = _call(conf, plugin, "ADD", rt, prev, paths, timeout, base_env, before_input=before_input)
            before_input = None
            if result is None:
                raise CniError(DELEGATE_FAILED, f"{plugin['type']} returned no result on ADD",
                               "a plugin must print its result on ADD")
            prev = _in_version(result, version)
        if prev is None:  # load_conflist guarantees at least one plugin
            raise CniError(DELEGATE_FAILED, "no result", "the list produced no result")
        if cache_dir:
            from metaplug.cni import cache  # only runtimes that keep libcni's cache (not metaplug's verbs)

            cache.write_cache(cache_dir, conf, rt, prev)
    except CniError as err:
        if not rollback_on_error:
            raise
        try:
            del_network_list(conf, rt, paths, prev_result=prev, timeout=timeout, cache_dir=cache_dir,
                             base_env=base_env)
        except CniError as del_err:
            log.warning("rollback DEL of %s/%s failed: %s", conf["name"], rt.ifname, del_err)
            raise _with_note(err, f"rollback DEL also failed: {del_err}") from None
        raise
    return prev


def del_network_list(
    conflist: dict[str, Any] | bytes,  # bytes: parsed here (no copy of a caller's dict)
    rt: RuntimeConf,
    paths: Sequence[str],
    *,
    prev_result: dict[str, Any] | None = None,
    timeout: float | None = None,
    cache_dir: str | None = None,
    base_env: Mapping[str, str] | None = None,
) -> None:
    """DEL every plugin in reverse order, best effort (duties 11, 20).

    From 0.4.0 on every plugin gets the final ADD result as prevResult: `prev_result`, else the cached one; a missing or
    corrupt cache does not stop DEL. Every plugin is called even when some fail; then the first error is raised with
    the others in its details. The cache entry is removed only when every plugin succeeded.
    """
    conf = load_conflist(conflist)
    validate_container_id(rt.container_id)
    validate_ifname(rt.ifname)
    version = conf["cniVersion"]
    prev: dict[str, Any] | None = None
    if cniversion.at_least(version, "0.4.0"):
        prev = _final_result(conf, rt, prev_result, cache_dir)
    failures: list[tuple[str, CniError]] = []
    for plugin in reversed(conf["plugins"]):
        try:
            _call(conf, plugin, "DEL", rt, prev, paths, timeout, base_env)
        except CniError as err:
            log.debug("DEL %s of %s failed: %s", plugin["type"], conf["name"], err)
            failures.append((plugin["type"], err))
    if failures:
        raise _combine(failures, "DEL")
    if cache_dir:
        from metaplug.cni import cache

        cache.delete_cache(cache_dir, conf["name"], rt.container_id, rt.ifname)


def check_network_list(
    conflist: dict[str, Any] | bytes,  # bytes: parsed here (no copy of a caller's dict)
    rt: RuntimeConf,
    paths: Sequence[str],
    *,
    prev_result: dict[str, Any] | None = None,
    timeout: float | None = None,
    cache_dir: str | None = None,
    base_env: Mapping[str, str] | None = None,
) -> None:
    """CHECK every plugin in order with the final ADD result, stop at the first error (duties 12, 21).

    Needs config version 0.4.0+ (else code 1); does nothing when disableCheck. Without `prev_result` and cache entry the
    plugins are called without prevResult (as libcni does) and report that themselves.
    """
    conf = load_conflist(conflist)
    version = conf["cniVersion"]
    if not cniversion.at_least(version, "0.4.0"):
        raise CniError(INCOMPATIBLE_VERSION, "config version does not allow CHECK",
                       f"network {conf['name']!r} has cniVersion {version}; CHECK needs 0.4.0 or later")
    if conf["disableCheck"]:
        return
    validate_container_id(rt.container_id)
    validate_ifname(rt.ifname)
    prev = _final_result(conf, rt, prev_result, cache_dir)
    for plugin in conf["plugins"]:
        _call(conf, plugin, "CHECK", rt, prev, paths, timeout, base_env)


def status_network_list(
    conflist: dict[str, Any],
    paths: Sequence[str],
    *,
    timeout: float | None = None,
    base_env: Mapping[str, str] | None = None,
) -> None:
    """STATUS every plugin in order, stop at the first error (duties 13, 22). Lists older than 1.1.0: nothing to ask."""
    conf = load_conflist(conflist)
    if not cniversion.at_least(conf["cniVersion"], "1.1.0"):
        return
    rt = RuntimeConf("", "", "")
    for plugin in conf["plugins"]:
        _call(conf, plugin, "STATUS", rt, None, paths, timeout, base_env)


def gc_network_list(
    conflist: dict[str, Any],
    paths: Sequence[str],
    valid_attachments: list[dict[str, str]],
    *,
    timeout: float | None = None,
    cache_dir: str | None = None,
    base_env: Mapping[str, str] | None = None,
) -> None:
    """GC every plugin with `cni.dev/valid-attachments`, continuing past errors (duties 14, 22).

    Nothing when disableGC. With `cache_dir`, first DEL every cached attachment of this network that is not in
    `valid_attachments` (libcni does the same). GC itself goes only to lists of 1.1.0+. All failures are reported in
    one CniError (the first's code and message, every failure in the details).
    """
    conf = load_conflist(conflist)
    if conf["disableGC"]:
        return
    valid = attachment_pairs(valid_attachments)
    failures: list[tuple[str, CniError]] = []
    if cache_dir:
        from metaplug.cni import cache

        for entry in cache.list_cache(cache_dir, conf["name"]):
            if (entry["containerId"], entry["ifName"]) in valid:
                continue
            stale = _rt_of_entry(entry)
            try:
                del_network_list(conf, stale, paths, timeout=timeout, cache_dir=cache_dir, base_env=base_env)
            except CniError as err:
                failures.append((f"DEL of stale {stale.container_id}/{stale.ifname}", err))
    if cniversion.at_least(conf["cniVersion"], "1.1.0"):
        rt = RuntimeConf("", "", "")
        extra = {VALID_ATTACHMENTS_KEY: valid_attachments, LEGACY_ATTACHMENTS_KEY: valid_attachments}
        for plugin in conf["plugins"]:
            try:
                _call(conf, plugin, "GC", rt, None, paths, timeout, base_env, extra=extra)
            except CniError as err:
                failures.append((plugin["type"], err))
    if failures:
        raise _combine(failures, "GC")


# --- internals -------------------------------------------------------------------------------------------------------


def _call(
    conf: dict[str, Any],
    plugin: dict[str, Any],
    command: str,
    rt: RuntimeConf,
    prev: dict[str, Any] | None,
    paths: Sequence[str],
    timeout: float | None,
    base_env: Mapping[str, str] | None,
    *,
    extra: dict[str, Any] | None = None,
    before_input: Callable[[], None] | None = None,
) -> dict[str, Any] | None:
    try:
        path = find_plugin(plugin["type"], paths)
        body = _plugin_conf(conf, plugin, rt, prev)
        if extra:
            body.update(extra)
        env = build_env(command, container_id=rt.container_id, netns=rt.netns, ifname=rt.ifname,
                        args=rt.cni_args(), paths=paths, base=base_env)
        log.debug("%s %s (conflist %s, ifname %s)", command, plugin["type"], conf["name"], rt.ifname)
        return exec_plugin(path, jsontext.dumps(body, separators=(",", ":")).encode(), env, timeout=timeout,
                           before_input=before_input)
    except CniError as err:
        if err.plugin is None:
            err.plugin = plugin["type"]  # callers can name the delegate that failed
        raise


def _plugin_conf(conflist: dict[str, Any], plugin: dict[str, Any], rt: RuntimeConf,
                 prev_result: dict[str, Any] | None) -> dict[str, Any]:
    body = dict(plugin)  # only top-level keys change below (the body is serialised, never mutated deeper)
    body["cniVersion"] = conflist.get("cniVersion", cniversion.DEFAULT_CONFIG_VERSION)
    body["name"] = conflist.get("name")
    caps = plugin.get("capabilities")
    runtime: dict[str, Any] = {}
    if isinstance(caps, dict):
        for cap, declared in caps.items():
            # Duty 18: only declared-true capabilities with a value; names match exactly (as libcni does).
            if declared is True and cap in rt.capability_args:
                runtime[cap] = normalize_capability(cap, jsontext.clone(rt.capability_args[cap]))
    if runtime:
        existing = body.get("runtimeConfig")
        merged = dict(existing) if isinstance(existing, dict) else {}
        merged.update(runtime)
        body["runtimeConfig"] = merged
    if prev_result is not None:
        body["prevResult"] = prev_result
    return body


def _rename_keys(value: Any, canonical: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_rename_keys(v, canonical) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, val in value.items():
        name = canonical.get(key.lower(), key) if isinstance(key, str) else key
        if name != key and name in out:
            continue  # the correctly spelled key was already there: it wins
        out[name] = val
    return out


def _choose_version(conf: dict[str, Any]) -> str:
    """Duty 16 (cniVersions: highest supported of the union with cniVersion) and duty 9 (absent: 0.1.0)."""
    candidates: list[str] = []
    if "cniVersion" in conf:
        candidates.append(_version_string(conf["cniVersion"], "cniVersion"))
    extra = conf.get("cniVersions")
    if extra is not None:
        if not isinstance(extra, list):
            raise CniError(INVALID_NETWORK_CONFIG, "invalid cniVersions", "cniVersions must be a list of versions")
        candidates.extend(_version_string(v, f"cniVersions[{i}]") for i, v in enumerate(extra))
    if not candidates:
        return cniversion.DEFAULT_CONFIG_VERSION
    best = cniversion.highest_supported(candidates)
    if best is None:
        raise CniError(INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config offers {candidates}, supported are {list(cniversion.SUPPORTED_VERSIONS)}")
    return best


def _version_string(value: Any, what: str) -> str:
    try:
        cniversion.parse(value)
    except CniError as exc:
        raise CniError(INVALID_NETWORK_CONFIG, f"invalid {what}", exc.details) from None
    return str(value)


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CniError(INVALID_NETWORK_CONFIG, f"invalid {key}", f"{value!r} is not a boolean or 'true'/'false'")


def _check_plugin(index: int, plugin: Any) -> None:
    where = f"plugins[{index}]"
    if not isinstance(plugin, dict):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid plugin configuration", f"{where} must be an object")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not ptype:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid plugin configuration",
                       f"{where} needs a non-empty string 'type'")
    if "/" in ptype or "\0" in ptype:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid plugin configuration",
                       f"{where} type {ptype!r} contains a path separator (duty 7)")
    caps = plugin.get("capabilities")
    if caps is not None and (not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values())):
        raise CniError(INVALID_NETWORK_CONFIG, "invalid plugin configuration",
                       f"{where} capabilities must map capability names to true/false")


def _in_version(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Duty 25: no cniVersion -> the list's. Another version -> converted, so prevResult and the answer match."""
    have = result.get("cniVersion")
    if not isinstance(have, str) or not have:
        result = dict(result)
        result["cniVersion"] = version
        return result
    if have == version:
        return result
    from metaplug.cni.convert import convert_result

    return convert_result(result, version)


def _final_result(conf: dict[str, Any], rt: RuntimeConf, given: dict[str, Any] | None,
                  cache_dir: str | None) -> dict[str, Any] | None:
    """The final ADD result for DEL/CHECK: the caller's, else the cached one; unusable -> None (duty 20)."""
    found = given
    if found is None and cache_dir:
        from metaplug.cni import cache

        found = cache.read_cache(cache_dir, conf["name"], rt.container_id, rt.ifname)
    if found is None:
        return None
    try:
        return _in_version(found, conf["cniVersion"])
    except CniError as err:
        log.warning("ignoring an unusable cached result of %s/%s: %s", conf["name"], rt.ifname, err)
        return None


def _rt_of_entry(entry: dict[str, Any]) -> RuntimeConf:
    args = entry.get("cniArgs")
    pairs = [(str(p[0]), str(p[1])) for p in args if isinstance(p, list) and len(p) == 2] if isinstance(args, list) \
        else []
    caps = entry.get("capabilityArgs")
    netns = entry.get("netns")
    return RuntimeConf(
        container_id=entry["containerId"],
        netns=netns if isinstance(netns, str) else "",
        ifname=entry["ifName"],
        args=pairs,
        capability_args=caps if isinstance(caps, dict) else {},
    )


def _combine(failures: list[tuple[str, CniError]], verb: str) -> CniError:
    """One error for several: the first's code and message; every failure named in the details."""
    if len(failures) == 1:
        return failures[0][1]
    first = failures[0][1]
    listed = "; ".join(f"{who}: [code {err.code}] {err}" for who, err in failures)
    return CniError(first.code, first.msg, f"{len(failures)} {verb} failures: {listed}")


def _with_note(err: CniError, note: str) -> CniError:
    return CniError(err.code, err.msg, f"{err.details}; {note}" if err.details else note)
