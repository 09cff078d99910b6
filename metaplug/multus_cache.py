"""Pods that Multus attached before this node switched to metaplug: their DEL, CHECK and GC (issue 10.4's drop-in).

A node whose Multus is replaced by metaplug (installed as `multus`) keeps running pods that Multus attached; their DEL
comes to metaplug, which has no journal for them. Multus's own cache says what to delete. What it holds and how
Multus uses it, as read in Multus's source (k8snetworkplumbingwg/multus-cni v4.x, master after v4.3.0:
pkg/multus/multus.go, pkg/types/types.go and conf.go; containernetworking/cni v1.3.0 libcni/api.go for libcni). Thick
mode runs the same CmdAdd/CmdDel in its daemon, which mounts the host's cniDir at the same path, so both modes leave
the same files:

- ADD writes `<cniDir>/<CNI_CONTAINERID>` (saveDelegates; dir 0700, file 0600) before its first delegate runs: a JSON
  list of Multus's DelegateNetConf, in attachment order. Per delegate: `Bytes` (base64, Go's []byte: the exact config
  the delegate got, NAD `cni-args` and deviceID already injected), `Conf` / `ConfList` (the same config parsed; a
  non-empty `ConfList.plugins` marks a conflist), `Name` (`<namespace>/<nad>` or the conf's name), `ifnameRequest`,
  `macRequest`, `ipRequest`, `infinibandGUIDRequest`, `deviceID`, `resourceName`, `default-route`,
  `IsFilterV4Gateway`/`IsFilterV6Gateway`. Port mappings and bandwidth of a pod element are not kept (json:"-").
- The delegates run through libcni with cacheDir = cniDir, so their results are in
  `<cniDir>/results/<network>-<containerID>-<ifname>` (cni.md 35); DEL and CHECK take their prevResult from there.
- DEL (CmdDel): the first delegate is the cluster network (MasterPlugin); delegate i gets CNI_IFNAME = its
  ifnameRequest, else CNI_IFNAME for the first one, else `net<i>`; delegates are deleted in reverse order, every one
  attempted; each call's CNI_ARGS and runtimeConfig as `multus_cni_args` and `capability_args` below. The file is
  removed after the DEL (with retryDeleteOnError only when every delegate's DEL succeeded).
- CHECK (CmdCheck) runs only the delegates of the configuration on stdin, never the cache; GC counts every entry of
  `<cniDir>/results` as a valid attachment.

metaplug does the same DEL, keeps the file until every delegate's DEL succeeded (the runtime's next DEL retries,
cni.md 11), CHECKs every cached delegate with its cached result (cni.md 12); its GC deletes a Multus pod that no valid
attachment names and counts every other attachment in Multus's result cache as valid, so a shared IPAM never frees a
live Multus pod's address (cni.md 14). A cache entry that cannot be used is logged and the caller's fallback applies.
No pydantic here: this is DEL's path.
"""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from metaplug.cni import files, jsonload, ns
from metaplug.cni.env import parse_cni_args
from metaplug.cni.errors import CHECK_MISMATCH, DEL_INCOMPLETE, CniError
from metaplug.cni.lazylog import LazyLogger
from metaplug.cni.runtime import RuntimeConf

if TYPE_CHECKING:
    from metaplug.cni.env import CniEnv
    from metaplug.config import Settings

log = LazyLogger("metaplug.multus_cache")

# nadutils.GetCNIDeviceInfoPath (network-attachment-definition-client pkg/utils): where Multus points a delegate with
# a deviceID for its device-info file.
CNI_DEVICE_INFO_DIR = "/var/run/k8s.cni.cncf.io/devinfo/cni"
# Multus's createRuntimeConf: the CNI_ARGS every delegate gets first, filled from the runtime's K8S_* values.
K8S_ARGS = ("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID")
# Multus's types.RuntimeConfig: the only runtimeConfig keys Multus reads from the runtime (Go matches them without
# regard to case), in its spelling.
RUNTIME_CONFIG_KEYS = {k.lower(): k for k in (
    "portMappings", "bandwidth", "ips", "mac", "infinibandGUID", "deviceID", "CNIDeviceInfoFile")}
PORT_MAPPING_KEYS = {k.lower(): k for k in ("hostPort", "containerPort", "protocol", "hostIP")}
BANDWIDTH_KEYS = ("ingressRate", "ingressBurst", "egressRate", "egressBurst")


class CorruptEntry(Exception):
    """The cache entry exists but cannot be used as Multus would (then the caller falls back, and says so)."""


class MultusDelegate(NamedTuple):
    """One delegate of a Multus cache entry, as Multus's CmdDel reloads it."""

    name: str  # Multus's delegate Name: "<namespace>/<nad>", or the conf's name
    conflist: dict[str, Any]  # its `Bytes`, checked by cni.chain.load_conflist; cniVersion filled as CmdDel does
    ifname_request: str
    ip_request: list[str] | None
    mac_request: str
    guid_request: str
    device_id: str


class DelegateCall(NamedTuple):
    """What Multus's DEL (or CHECK) of one delegate runs: the config and the runtime's view (libcni's RuntimeConf)."""

    delegate: MultusDelegate
    rt: RuntimeConf

    def describe(self) -> str:
        return f"{self.rt.ifname} ({self.delegate.name})"


def entry_path(cni_dir: str, container_id: str) -> str:
    """Multus's saveScratchNetConf: `<cniDir>/<containerID>` (plugin.cmd_del checks it before importing this)."""
    return os.path.join(cni_dir, container_id)


def read_entry(cni_dir: str, container_id: str, multus_version: str) -> list[MultusDelegate] | None:
    """The delegates of the container's entry in attachment order; None when there is none; CorruptEntry when it
    cannot be used. `multus_version`: the cniVersion of the configuration on stdin (Multus's own), which CmdDel puts
    into a cached conflist that has none."""
    if not cni_dir:
        return None
    path = entry_path(cni_dir, container_id)
    try:
        for place in (path, cni_dir):  # as a journal (cni.md 32): DEL would run, as root, the delegates it names
            problem = files.untrusted(os.lstat(place))
            if problem:
                raise CorruptEntry(f"{place} {problem}: not used (Multus writes it 0600 in a 0700 directory)")
        raw = files.read_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptEntry(f"{path}: cannot read ({exc})") from None
    try:
        doc = jsonload.loads(raw)
    except ValueError as exc:
        raise CorruptEntry(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, list) or not doc:  # Multus itself would index delegates[0] of it and panic
        raise CorruptEntry(f"{path}: not a non-empty JSON list of delegates")
    return [_delegate(path, i, item, multus_version) for i, item in enumerate(doc)]


def _delegate(path: str, index: int, item: Any, multus_version: str) -> MultusDelegate:
    where = f"{path}: delegate {index}"
    if not isinstance(item, dict):
        raise CorruptEntry(f"{where} is not an object")
    encoded = item.get("Bytes")
    try:
        config = jsonload.loads(base64.b64decode(encoded, validate=True)) if isinstance(encoded, str) else None
    except ValueError as exc:  # bad base64 (binascii.Error) or bad JSON
        raise CorruptEntry(f"{where}: Bytes is not a base64 JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise CorruptEntry(f"{where}: Bytes holds no JSON object")
    conf_list = item.get("ConfList")
    conf_list = conf_list if isinstance(conf_list, dict) else {}
    is_list = isinstance(conf_list.get("plugins"), list) and bool(conf_list["plugins"])
    if is_list and multus_version and not conf_list.get("cniVersion"):
        # CmdDel: a cached conflist whose ConfList has no cniVersion gets Multus's own (InjectCNIVersionInConfList)
        config = {**config, "cniVersion": multus_version}
    from metaplug.cni.chain import load_conflist

    try:  # what libcni's ConfFromBytes / ConfListFromBytes would refuse: Multus's DEL of it fails on every retry
        conflist = load_conflist(config)  # a single conf wrapped as libcni does (its own name and cniVersion)
    except CniError as err:
        raise CorruptEntry(f"{where}: not a usable network configuration ({err})") from None
    name = item.get("Name")
    ips = item.get("ipRequest")
    return MultusDelegate(
        name=name if isinstance(name, str) and name else str(conflist["name"]),
        conflist=conflist,
        ifname_request=_text(item.get("ifnameRequest")),
        ip_request=[str(ip) for ip in ips] if isinstance(ips, list) else None,
        mac_request=_text(item.get("macRequest")),
        guid_request=_text(item.get("infinibandGUIDRequest")),
        device_id=_text(item.get("deviceID")),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def multus_cni_args(runtime_args: str) -> list[tuple[str, str]]:
    """CNI_ARGS of every delegate call, as thin-mode Multus builds them (createRuntimeConf, then newCNIRuntimeConf
    merging the runtime's CNI_ARGS): IgnoreUnknown=true and the four K8S_* values first, then each pair of the
    runtime's CNI_ARGS, which fills a K8S_* slot left empty or else is appended (so K8S_POD_NAME=x comes twice).
    Thick mode builds the same list from its own process environment (no runtime pairs): every delegate accepts both,
    as IgnoreUnknown says; metaplug, run per call like thin Multus, sends the thin form."""
    known = parse_cni_args(runtime_args)
    args: list[tuple[str, str]] = [("IgnoreUnknown", "true"), *((k, known.get(k, "")) for k in K8S_ARGS)]
    for pair in runtime_args.split(";") if runtime_args else []:
        key, sep, value = pair.partition("=")
        if not sep:
            continue  # Multus skips (and logs) a pair without "="
        slot = next((i for i, (k, v) in enumerate(args) if k == key and v == "" and value != ""), None)
        if slot is None:
            args.append((key, value))
        else:
            args[slot] = (key, value)
    return args


def runtime_config(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The runtime's runtimeConfig as Multus reads it into its types.RuntimeConfig: its seven keys only (matched
    without regard to case, as Go's encoding/json does), each value in Multus's shape; other keys are dropped."""
    raw = conf.get("runtimeConfig")
    out: dict[str, Any] = {}
    if not isinstance(raw, dict):
        return out
    for key in sorted(raw, key=lambda k: k in RUNTIME_CONFIG_KEYS.values()):  # an exact spelling wins, as in Go
        name = RUNTIME_CONFIG_KEYS.get(key.lower()) if isinstance(key, str) else None
        value = raw[key]
        if name == "portMappings" and isinstance(value, list):
            out[name] = [_port_mapping(p) for p in value if isinstance(p, dict)]
        elif name == "bandwidth" and isinstance(value, dict):
            lower = {str(k).lower(): v for k, v in value.items()}
            out[name] = {k: lower.get(k.lower(), 0) for k in BANDWIDTH_KEYS}
        elif name == "ips" and isinstance(value, list):
            out[name] = [str(ip) for ip in value]
        elif name is not None and name not in ("portMappings", "bandwidth", "ips") and isinstance(value, str):
            out[name] = value
    return out


def _port_mapping(entry: dict[str, Any]) -> dict[str, Any]:
    """Multus's PortMapEntry: hostPort and containerPort always, protocol and hostIP when not empty."""
    found = {PORT_MAPPING_KEYS[k.lower()]: v for k, v in entry.items() if isinstance(k, str)
             and k.lower() in PORT_MAPPING_KEYS}
    out = {"hostPort": found.get("hostPort", 0), "containerPort": found.get("containerPort", 0)}
    out.update({k: found[k] for k in ("protocol", "hostIP") if found.get(k)})
    return out


def capability_args(rc: Mapping[str, Any], delegate: MultusDelegate, *, master: bool, container_id: str,
                    ifname: str) -> dict[str, Any]:
    """libcni CapabilityArgs of one delegate call, as Multus's newCNIRuntimeConf builds them: the runtime's
    runtimeConfig, for a delegate other than the cluster network overridden by its cached requests
    (mergeCNIRuntimeConfig), a device-info file named when it has a deviceID (delegateRuntimeConfig); empty values
    left out. libcni then passes a plugin only the capabilities it declares (cni.md 18: chain does the same)."""
    merged = dict(rc)
    if not master:
        if delegate.ip_request is not None:
            merged["ips"] = delegate.ip_request
        for key, value in (("mac", delegate.mac_request), ("infinibandGUID", delegate.guid_request),
                           ("deviceID", delegate.device_id)):
            if value:
                merged[key] = value
    if merged.get("deviceID"):
        info = f"{delegate.name}-{container_id}_{ifname}".replace("/", "-")
        merged["CNIDeviceInfoFile"] = os.path.join(CNI_DEVICE_INFO_DIR, info)
    return {k: v for k, v in merged.items() if v}


def delegate_calls(delegates: Sequence[MultusDelegate], env: CniEnv, conf: Mapping[str, Any], netns: str,
                   cni_args: list[tuple[str, str]] | None = None) -> list[DelegateCall]:
    """Every delegate call of Multus's DEL (and CHECK) for this container, in attachment order. `cni_args`: the
    CNI_ARGS Multus used at ADD (GC, which has no runtime's), else they are built from the runtime's."""
    args = cni_args if cni_args is not None else multus_cni_args(env.args)
    rc = runtime_config(conf)
    calls = []
    for index, delegate in enumerate(delegates):
        master = index == 0  # CmdDel: "First delegate is always the master plugin"
        ifname = delegate.ifname_request or (env.ifname if master else f"net{index}")  # Multus's getIfname
        caps = capability_args(rc, delegate, master=master, container_id=env.container_id, ifname=ifname)
        calls.append(DelegateCall(delegate, RuntimeConf(env.container_id, netns, ifname, list(args), caps)))
    return calls


# ---------------------------------------------------------------- the verbs


def _load(env: CniEnv, conf: Mapping[str, Any], settings: Settings, verb: str) -> list[MultusDelegate] | None:
    """The container's delegates, or None (no cniDir, no entry; or a corrupt one, logged: the caller's fallback)."""
    if not settings.multus_cache_dir:
        return None
    try:
        return read_entry(settings.multus_cache_dir, env.container_id, str(conf.get("cniVersion") or ""))
    except CorruptEntry as bad:
        log.error(f"Multus's cache entry for this container is unusable; {verb} goes on without it (left in place "
                  "for inspection)", extra={"multus_cache": str(bad)})
        return None


def delete(env: CniEnv, conf: Mapping[str, Any], settings: Settings, paths: list[str], *,
           cni_args: list[tuple[str, str]] | None = None, reason: str = "DEL") -> bool:
    """DEL what Multus attached to this container, from its cache entry, as Multus's DEL would (the caller holds the
    container's lock and has no journal for it). False when there is no usable entry. Every delegate is attempted
    (R27); the entry goes only when every one succeeded, else code 104 and the runtime's next DEL retries
    (cni.md 11). Each delegate's libcni result (its prevResult, cni.md 20) goes with its successful DEL."""
    from metaplug.cni.chain import del_network_list

    delegates = _load(env, conf, settings, reason)
    if delegates is None:
        return False
    # cni.md 11: CNI_NETNS is optional on DEL; a path that is no longer a namespace is not handed to the delegates.
    netns = env.netns if env.netns and ns.is_netns(env.netns) else ""
    calls = delegate_calls(delegates, env, conf, netns, cni_args)
    failures = []
    for call in reversed(calls):  # Multus's delPlugins: last delegate first
        try:
            del_network_list(call.delegate.conflist, call.rt, paths, timeout=settings.delegate_timeout,
                             cache_dir=settings.multus_cache_dir)
        except Exception as exc:  # one delegate's failure never stops the others
            failures.append(f"{call.describe()}: {exc if isinstance(exc, CniError) else repr(exc)}")
            continue
        device_info = call.rt.capability_args.get("CNIDeviceInfoFile")
        if device_info:  # Multus's delPlugins removes it too (CleanDeviceInfoForCNI)
            with contextlib.suppress(OSError):
                os.unlink(device_info)
    path = entry_path(settings.multus_cache_dir, env.container_id)
    if failures:
        raise CniError(DEL_INCOMPLETE, f"{reason} of what Multus attached: could not delete every delegate",
                       "; ".join(failures) + f" ({path} kept: the next DEL retries)")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CniError(DEL_INCOMPLETE, f"{reason} of what Multus attached: cannot remove its cache entry",
                       f"{path}: {exc}") from None
    log.warning("migration from Multus: deleted a container that Multus attached, from its cache entry",
                extra={"multus_cache": path, "delegates": [c.describe() for c in calls], "reason": reason})
    return True


def check(env: CniEnv, conf: Mapping[str, Any], settings: Settings, paths: list[str]) -> bool:
    """CHECK what Multus attached to this container (cni.md 12): every cached delegate in order with its cached
    libcni result, then every sandbox interface of those results in the namespace. False without a usable entry."""
    from metaplug import netns as netns_view
    from metaplug.cni import cache
    from metaplug.cni.chain import check_network_list
    from metaplug.cni.convert import convert_result

    delegates = _load(env, conf, settings, "CHECK")
    if delegates is None:
        return False
    problems: list[str] = []
    for call in delegate_calls(delegates, env, conf, env.netns):
        try:
            conflist = call.delegate.conflist
            check_network_list(conflist, call.rt, paths, timeout=settings.delegate_timeout,
                               cache_dir=settings.multus_cache_dir)
            result = cache.read_cache(settings.multus_cache_dir, conflist["name"], env.container_id, call.rt.ifname)
            if result is not None:
                problems += netns_view.check_result(env.netns, convert_result(result, "1.1.0"))
        except CniError as err:
            raise CniError(err.code, f"CHECK failed for {call.describe()}, attached by Multus",
                           f"{err.msg}: {err.details}" if err.details else err.msg) from None
    if problems:
        raise CniError(CHECK_MISMATCH, "container network does not match what Multus recorded", "; ".join(problems))
    log.info("migration from Multus: checked a container that Multus attached, from its cache entry",
             extra={"multus_cache": entry_path(settings.multus_cache_dir, env.container_id)})
    return True


def attached(cni_dir: str) -> list[tuple[str, dict[str, str]]]:
    """GC (cni.md 14): every attachment in Multus's libcni result cache as (delegate network name, valid attachment),
    as Multus's own GC counts them (gatherValidAttachmentsFromCache)."""
    from metaplug.cni import cache

    if not cni_dir:
        return []
    return [(entry["networkName"], {"containerID": entry["containerId"], "ifname": entry["ifName"]})
            for entry in cache.list_cache(cni_dir) if isinstance(entry.get("networkName"), str)]


def collect_stale(conf: Mapping[str, Any], settings: Settings, valid: set[tuple[str, str]],
                  paths: list[str]) -> list[str]:
    """GC (cni.md 14): DEL every container Multus attached that no valid attachment names (by container ID: Multus's
    entry records no network of the runtime's), as its DEL would, under the container's lock; what is ours (a
    journal) is left to the journal. The cluster network's libcni result gives what GC lacks: the container's
    CNI_IFNAME, netns and CNI_ARGS at ADD. Returns the failures; an entry without that result is left (warning)."""
    from metaplug import journal
    from metaplug.cni import cache, lexical
    from metaplug.cni.env import CniEnv

    cni_dir = settings.multus_cache_dir
    try:
        names = sorted(os.listdir(cni_dir)) if cni_dir else []
    except OSError:
        return []
    live = {cid for cid, _ in valid}
    stale = [n for n in names if n not in live and lexical.container_id(n)
             and os.path.isfile(entry_path(cni_dir, n))]
    results = cache.list_cache(cni_dir) if stale else []
    failures: list[str] = []
    for cid in stale:
        try:
            delegates = read_entry(cni_dir, cid, str(conf.get("cniVersion") or ""))
        except CorruptEntry as bad:
            log.error("GC: Multus's cache entry of a stale container is unusable; left in place",
                      extra={"multus_cache": str(bad)})
            continue
        cluster = delegates[0].conflist["name"] if delegates else ""
        added = next((e for e in results if e["containerId"] == cid and e.get("networkName") == cluster), None)
        if added is None:
            log.warning("GC: a stale container Multus attached has no cached result of its cluster network, so its "
                        "CNI_IFNAME is unknown; left for the runtime's DEL",
                        extra={"multus_cache": entry_path(cni_dir, cid), "cluster_network": cluster})
            continue
        recorded = added.get("netns")
        netns = recorded if isinstance(recorded, str) else ""
        args = [(str(p[0]), str(p[1])) for p in added.get("cniArgs") or [] if isinstance(p, list) and len(p) == 2]
        env = CniEnv(command="DEL", container_id=cid, netns=netns, ifname=added["ifName"])
        key = journal.JournalKey(settings.state_dir, cid, settings.meta_network, env.ifname)
        try:
            with journal.locked(key):
                if not journal.exists(key):
                    delete(env, conf, settings, paths, cni_args=args, reason="GC")
        except Exception as exc:  # one container's failure never stops the others (cni.md 14)
            failures.append(f"{cid} (attached by Multus): {exc if isinstance(exc, CniError) else repr(exc)}")
    return failures
