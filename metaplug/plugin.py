"""metaplug's CNI verbs: ADD, DEL, CHECK, STATUS, GC (VERSION is answered by cni.skel).

Each verb reads like its story; the details live in attach/ (what to attach), cni/ (running delegates), journal
(what was made), merge (one result) and netns (looking into the container).

- ADD: validate everything first (config, elements, NADs, binaries, interface names), then run the attachments in order
  (cluster network first, R24), journaling each one before and after its delegate ADD. Any failure: DEL what was made,
  in reverse, and return the original error naming the attachment (R27).
  A repeated ADD first removes the previous attempt.
- DEL, CHECK, GC: driven by the journal alone (DESIGN), so they never depend on annotations, NADs or config files that
  may have changed or vanished, and they never import pydantic.
"""

from __future__ import annotations

import contextlib
import os
import time

from metaplug import journal
from metaplug.cni import jsontext, lazylog, ns, skel
from metaplug.cni.env import CniEnv, parse_cni_args, valid_attachments
from metaplug.cni.errors import (
    CHECK_MISMATCH,
    DEL_INCOMPLETE,
    INCOMPATIBLE_VERSION,
    IO_FAILURE,
    NOT_AVAILABLE,
    NOT_AVAILABLE_DEGRADED,
    TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER,
    CniError,
)
from metaplug.cni.lazylog import LazyLogger
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from metaplug.attach.plan import Attachment, PodRef
    from metaplug.attach.resolve import Resolver
    from metaplug.cni.documents import JsonObject, NetConf, Result
    from metaplug.config import MetaplugConfig, Settings
    from metaplug.journal import AttachmentRecord, JournalRecord
    from metaplug.k8s.source import KubeContext
    from metaplug.merge import NetworkStatusEntry

log = LazyLogger("metaplug.plugin")
RESULT_VERSION = "1.1.0"  # attachments are merged in this shape, then converted to the request's version


# metaplug's logLevel names as logging's numbers (metaplug.log.LEVELS), known here without importing logging.
_THRESHOLDS = {"debug": lazylog.DEBUG, "verbose": lazylog.INFO, "info": lazylog.INFO, "warning": lazylog.WARNING,
               "error": lazylog.ERROR, "panic": lazylog.CRITICAL}


def _setup(env: CniEnv, settings: Settings) -> None:
    """Logging as configured. With a logFile it is set up now (the file exists and a bad path is reported at once);
    else only before the first record at the configured level: a call that logs nothing never imports logging."""
    from metaplug.cni import trace

    context = {"verb": env.command, "container": env.container_id, "ifname": env.ifname}
    trace_id = trace.trace_id(trace.current().get("TRACEPARENT"))
    if trace_id:  # a malformed TRACEPARENT is ignored, never an error (W3C Trace Context)
        context["trace_id"] = trace_id

    def configure() -> None:
        from metaplug import log as mplog

        mplog.configure(settings.log_level, settings.log_file, context,
                        to_stderr=settings.log_to_stderr, rotation=settings.log_rotation)

    if settings.log_file:
        configure()
    else:
        lazylog.defer(_THRESHOLDS.get(settings.log_level, lazylog.WARNING), configure)
    if settings.multus_differences:
        log.warning("Multus configuration keys that metaplug does not act on as Multus does: "
                    + "; ".join(settings.multus_differences))


def _journal_verb_setup(env: CniEnv, conf: NetConf) -> Settings:
    """DEL, CHECK, GC: the lean view of the configuration (no pydantic), logging configured."""
    from metaplug.config import Settings

    settings = Settings.from_raw(conf)
    _setup(env, settings)
    return settings


def _check_prev_result(conf: NetConf) -> None:
    """cni.md 10: a prevResult (metaplug inside a chain) must be a result object; code 7 naming it otherwise."""
    if conf.get("prevResult") is not None:
        from metaplug.cni.convert import check_result

        check_result(conf["prevResult"], "prevResult")


def _paths(bin_dir: str, env: CniEnv) -> list[str]:
    """binDir is searched before CNI_PATH."""
    return [bin_dir, *[p for p in env.path if p != bin_dir]]


# ---------------------------------------------------------------- ADD


def cmd_add(env: CniEnv, conf: NetConf, raw: bytes) -> Result:
    from metaplug.config import load_config

    cfg = load_config(conf)
    _setup(env, cfg.settings)
    _check_prev_result(conf)
    ns.require_netns(env.netns)  # code 4 before anything is made: a FIFO, a file or /dev/null is no namespace
    key = journal.JournalKey(cfg.state_dir, env.container_id, cfg.meta_network, env.ifname)
    with journal.locked(key):  # released with nothing recorded: a failed ADD leaves nothing in stateDir
        # cni.md 36: Nomad retries ADD without DEL and kubelet may repeat it; never leak the earlier attempt.
        # The lock file stays: this ADD goes on under it, and a file unlinked now would let another verb in.
        _delete_recorded(key, env, reason="repeated ADD", keep_lock=True)
        return _add_locked(env, conf, cfg, key)


def _add_locked(env: CniEnv, conf: NetConf, cfg: MetaplugConfig, key: journal.JournalKey) -> Result:
    from metaplug.cni.convert import convert_result
    from metaplug.runner import Recorder, run_attachments

    body, kube = plan_add(env, conf, cfg)
    _wait_for_readiness(cfg.readiness_indicator_file, cfg.readiness_timeout)

    recorder = Recorder(key, body)
    try:
        results = run_attachments(recorder, parallel=cfg.parallel)
        merged, status = _finish(env, conf, cfg, body, results)
        # Converting can fail (0.2.0 without any IP, cni.md 30): do it before ADD counts as done, so it rolls back.
        reply = convert_result(merged if cfg.result == "merged" else body["primaryResult"], conf["cniVersion"])
        body["status"] = status
        body["result"] = merged
        recorder.write()  # not synced: the first record, durable, already lists every attachment
    except BaseException as exc:
        raise rolled_back(exc, _rollback(key, env, body), "ADD") from exc
    if kube is not None:
        kube.publish_status(status)
    return reply


def rolled_back(exc: BaseException, failures: list[str], verb: str) -> CniError:
    """The error to return after a rollback (R27): the original one (an unexpected exception as code 199), with the
    attachments the rollback could not delete named in its details (the runtime's DEL retries them)."""
    error = exc if isinstance(exc, CniError) else CniError(skel.INTERNAL_ERROR, f"internal error during {verb}",
                                                            f"{type(exc).__name__}: {exc}")
    if not failures:
        return error
    log.error("rollback left attachments behind; the runtime's DEL will retry them", extra={"failures": failures})
    details = "; ".join(filter(None, [error.details, f"rollback: {'; '.join(failures)}"]))
    return CniError(error.code, error.msg, details, plugin=error.plugin)


class PlannedAdd(NamedTuple):
    """Everything an ADD decided before its first delegate runs (shared by ADD and `metaplug explain`)."""

    body: JournalRecord  # the journal body, attachments in state "planned"
    kube: KubeContext | None  # the Kubernetes side, when configured and the runtime names the pod


def plan_add(env: CniEnv, conf: NetConf, cfg: MetaplugConfig, *, dry_run: bool = False,
             for_del: bool = False) -> PlannedAdd:
    """Validate and plan an ADD without running any delegate: sources, NADs, elements, interface names (inside
    CNI_NETNS when one is given), binaries. ADD runs exactly this plan; `metaplug explain` prints it (`dry_run`: no
    event is posted to the pod for a missing NAD). `for_del`: the plan DEL recomputes after its journal was lost
    (the interfaces exist in the netns, and each attachment's DEL reports its own missing binary)."""
    from metaplug import netns
    from metaplug.attach.plan import PlanInputs, build_plan, pod_ref, runtime_annotations

    cni_args = parse_cni_args(env.args)
    pod = pod_ref(cni_args)
    runtime_config: JsonObject = conf["runtimeConfig"] if isinstance(conf.get("runtimeConfig"), dict) else {}
    annotations = runtime_annotations(runtime_config)
    kube = _kube_context(cfg, pod, cni_args)
    if kube is not None and annotations is None:
        annotations = kube.pod_annotations()
    resolver = nad_resolver(cfg, kube, events=not dry_run)
    inputs = PlanInputs(ifname=env.ifname, pod=pod, runtime_config=runtime_config, annotations=annotations,
                        config_networks=_config_networks(conf, cni_args))
    plan = build_plan(cfg, inputs, resolver,
                      existing_ifnames=(lambda: netns.interface_names(env.netns)) if env.netns and not for_del
                      else None)
    paths = _paths(cfg.bin_dir, env)
    if not for_del:
        _find_binaries(plan, paths)
    body: JournalRecord = {
        "containerId": env.container_id, "ifname": env.ifname, "network": cfg.meta_network, "netns": env.netns,
        "cniArgs": env.args, "paths": paths, "timeout": cfg.delegate_timeout, "requestVersion": conf["cniVersion"],
        "pod": {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid},
        "attachments": [attachment_record(a, env.args) for a in plan],
    }
    return PlannedAdd(body, kube)


def nad_resolver(cfg: MetaplugConfig, kube: KubeContext | None, *, events: bool = True) -> Resolver:
    """Where NADs come from (ADD, explain, hot-plug): the API when configured, then `<confDir>/<namespace>/`."""
    from metaplug.attach.resolve import LocalNadStore, NadSource, Resolver

    sources: list[NadSource] = []
    if kube is not None:
        sources.append(kube.nad_source(events=events))
    sources.append(LocalNadStore(cfg.conf_dir))
    return Resolver(cfg.conf_dir, sources, namespace_isolation=cfg.namespace_isolation,
                    global_namespaces=cfg.global_namespaces)


def attachment_record(a: Attachment, runtime_cni_args: str) -> AttachmentRecord:
    """A planned attachment as the journal records it, before its delegate ADD (ADD and hot-plug)."""
    from metaplug.attach.plan import secondary_cni_args

    record: AttachmentRecord = {
        "ifname": a.ifname, "network": a.status_name, "cluster": a.cluster, "defaultRoute": list(a.default_route),
        "cniArgs": runtime_cni_args if a.cluster else secondary_cni_args(runtime_cni_args),  # R30
        "conflist": jsontext.dumps(a.conflist, separators=(",", ":")), "capabilityArgs": a.capability_args,
        "state": "planned", "result": None}
    if a.cni_args:
        record["requestedCniArgs"] = a.cni_args  # what hot-plug's diff compares a changed element with
    return record


def _find_binaries(plan: list[Attachment], paths: list[str]) -> None:
    """Every delegate binary is found before the first delegate runs; each missing one is named with the attachment
    that needs it (issue 10.5), all of them in one error."""
    from metaplug.attach.plan import describe
    from metaplug.cni.invoke import find_plugin

    errors: list[CniError] = []
    for attachment in plan:
        for plugin in attachment.conflist["plugins"]:
            try:
                find_plugin(plugin["type"], paths)
            except CniError as err:
                who = describe(attachment.ifname, attachment.status_name, cluster=attachment.cluster,
                               source=attachment.source)
                errors.append(CniError(err.code, f"{who} needs plugin {plugin['type']!r}: {err.msg}", err.details))
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise CniError(errors[0].code, f"{len(errors)} delegate plugins not found",
                       "; ".join(f"{err.msg}: {err.details}" for err in errors))


def _finish(env: CniEnv, conf: NetConf, cfg: MetaplugConfig, body: JournalRecord,
            results: list[Result]) -> tuple[Result, list[NetworkStatusEntry]]:
    """Default route (R13) moved in the namespace, merged result, network-status (R17-R23)."""
    from metaplug import netns

    attachments = body["attachments"]
    owner = next((i for i, a in enumerate(attachments) if a["defaultRoute"]), None)
    if owner is not None:
        cluster_ifname = attachments[0]["ifname"]
        netns.move_default_route(env.netns, cluster_ifname, attachments[owner]["ifname"],
                                 attachments[owner]["defaultRoute"])
    return summarize(body, results, conf.get("prevResult"))


def summarize(body: JournalRecord, results: list[Result],
              prev_result: object = None) -> tuple[Result, list[NetworkStatusEntry]]:
    """The merged result and network-status of the attachments of `body` with their 1.1.0 `results` (the default
    route's owner, R13, given its routes); sets `primaryResult`. ADD, and hot-plug after every change."""
    from metaplug.merge import AttachmentResult, merge_results, network_status, primary_result

    attachments = body["attachments"]
    owner = next((i for i, a in enumerate(attachments) if a["defaultRoute"]), None)
    if owner is not None:
        results = _reassign_default_routes(results, owner, attachments[owner]["defaultRoute"])
    default_index = owner if owner is not None else 0
    merged_inputs = [
        AttachmentResult(status_name=a["network"], ifname=a["ifname"], result=r, is_default=(i == default_index),
                         cluster=a["cluster"])
        for i, (a, r) in enumerate(zip(attachments, results, strict=True))
    ]
    merged = merge_results(merged_inputs)
    if isinstance(prev_result, dict):  # cni.md 10: metaplug inside a chain carries prevResult forward
        from metaplug.cni.convert import convert_result

        prior = AttachmentResult(status_name="prevResult", ifname="", result=convert_result(prev_result,
                                 RESULT_VERSION), is_default=True, cluster=False)
        merged = merge_results([prior, *merged_inputs])
    body["primaryResult"] = primary_result(merged_inputs)
    return merged, network_status(merged_inputs)


def _reassign_default_routes(results: list[Result], owner: int, gateways: list[str]) -> list[Result]:
    """R13 in the result: the owner's routes get a default route via each of its gateways; the others lose theirs."""
    import ipaddress

    out = []
    for i, result in enumerate(results):
        result = dict(result)
        routes = [r for r in result.get("routes") or [] if r.get("dst") not in ("0.0.0.0/0", "::/0")]
        if i == owner:
            for gw in gateways:
                dst = "::/0" if ipaddress.ip_address(gw).version == 6 else "0.0.0.0/0"
                routes.append({"dst": dst, "gw": gw})
        result["routes"] = routes
        out.append(result)
    return out


def _config_networks(conf: NetConf, cni_args: Mapping[str, str]) -> str | None:
    """Source 3: `args.cni.networks` of metaplug's config, else CNI_ARGS METAPLUG_NETWORKS."""
    args = conf.get("args")
    if isinstance(args, dict) and isinstance(args.get("cni"), dict):
        networks = args["cni"].get("networks")
        if isinstance(networks, str) and networks.strip():
            return networks
        if isinstance(networks, list):
            return jsontext.dumps(networks)
    return cni_args.get("METAPLUG_NETWORKS") or None


def _wait_for_readiness(path: str | None, timeout: float) -> None:
    """R25: wait (bounded) until the readiness indicator file exists."""
    if not path:
        return
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            raise CniError(TRY_AGAIN_LATER, "cluster network not ready",
                           f"readiness indicator file {path} did not appear within {timeout:g} s")
        time.sleep(0.1)


def _kube_context(cfg: MetaplugConfig, pod: PodRef, cni_args: Mapping[str, str]) -> KubeContext | None:
    """The Kubernetes side of this ADD, or None when no kubeconfig is configured or the runtime names no pod."""
    if not cfg.kubeconfig or not pod.name:
        return None
    from metaplug.k8s.source import KubeContext

    return KubeContext.create(cfg.kubeconfig, cfg.kube_deadline, pod)


def _rollback(key: journal.JournalKey, env: CniEnv, body: JournalRecord) -> list[str]:
    """R27: DEL every attachment made so far, the failed one included, in reverse order. The journal is rewritten
    first (only the started ones), but the delegate work never depends on it: on a full disk it goes on from memory,
    the record on disk (if any) lists a superset for the runtime's DEL, and the journal problem is reported."""
    started = [a for a in body["attachments"] if a["state"] != "planned"]
    body["attachments"] = started
    if not started:
        return []
    problems: list[str] = []
    try:
        journal.write(key, body)
    except CniError as err:
        problems.append(f"journal: {err}")
    left = _delete_attachments(key, env, body)
    return problems + left if left else []  # everything deleted: the journal problem no longer matters


# ---------------------------------------------------------------- DEL


def cmd_del(env: CniEnv, conf: NetConf, raw: bytes) -> None:
    settings = _journal_verb_setup(env, conf)
    key = journal.JournalKey(settings.state_dir, env.container_id, settings.meta_network, env.ifname)
    if _deleted_as_multus_did(env, conf, settings, key):
        return None
    failures: list[CniError] = []
    # The runtime's prevResult says an ADD succeeded: look even when nothing of it is left in stateDir.
    added = isinstance(conf.get("prevResult"), dict)
    # What ADD recorded for this container and ifname under an earlier `name` of the configuration goes too: one
    # netns cannot hold two live attachments of the same ifname, so that record is this container's.
    for target in [key, *journal.recorded_under_other_names(key)]:
        reason = "DEL"
        if target is not key:
            reason = f"DEL of what was recorded under network {target.meta_network!r}"
            log.warning("the configuration's name changed since ADD; deleting what was recorded under the old name",
                        extra={"recorded_meta_network": target.meta_network, "meta_network": key.meta_network})
        try:
            with journal.locked(target, create=added and target is key) as exists:
                if exists:
                    _delete_recorded(target, env, reason=reason,
                                     recompute=(lambda: _recomputed_body(env, conf)) if target is key else None)
        except CniError as err:
            failures.append(err)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise CniError(DEL_INCOMPLETE, "DEL: could not delete every attachment", "; ".join(map(str, failures)))
    return None


def _deleted_as_multus_did(env: CniEnv, conf: NetConf, settings: Settings, key: journal.JournalKey) -> bool:
    """Issue 10.4: a container Multus attached before this node switched to metaplug (an entry in Multus's cniDir,
    no journal of ours) is deleted from Multus's cache, as Multus's DEL would. Without an entry this costs one stat:
    the path (multus_cache.entry_path) is checked before that module is imported (~1.3 ms)."""
    if not settings.multus_cache_dir or not os.path.lexists(os.path.join(settings.multus_cache_dir,
                                                                         env.container_id)):
        return False
    from metaplug import multus_cache

    with journal.locked(key):  # cni.md 23; released before any fallback locks it again
        if journal.exists(key) or journal.recorded_under_other_names(key):
            return False  # ours: the journal decides
        return multus_cache.delete(env, conf, settings, _paths(settings.bin_dir, env))


def _delete_recorded(key: journal.JournalKey, env: CniEnv, *, reason: str, keep_lock: bool = False,
                     recompute: Callable[[], JournalRecord] | None = None) -> None:
    """DEL everything the journal records (caller holds the lock); remove the journal when all is gone.

    The record is the journal, else its previous version, else what can be read of either (`journal.recover`).
    When nothing is left although something was there (its directory, a damaged file, the runtime's prevResult),
    `recompute` gives the attachments from the current configuration instead (DEL only)."""
    found = journal.recover(key)
    if found.damage:
        log.error("corrupt journal (a damaged or missing file): deleting from what is left of it",
                  extra={"problems": found.damage})
    body = found.body
    if body is None and recompute is not None:
        log.error("journal lost: deleting the attachments the current configuration gives this container; "
                  "check for leftovers by hand", extra={"reason": reason, "problems": found.damage})
        try:
            body = recompute()
        except Exception as exc:  # a configuration that no longer plans, an API that is down: best effort
            log.error("cannot recompute the attachments of a lost journal", extra={"error": repr(exc)})
    if body is None:
        if found.found:
            log.error("nothing recoverable in the journal; inspect it by hand", extra={"problems": found.damage})
        journal.remove(key, keep_lock=keep_lock)
        return
    log.info("deleting recorded attachments", extra={"reason": reason, "count": len(body.get("attachments", []))})
    failures = _delete_attachments(key, env, body, keep_lock=keep_lock)
    if failures:
        raise CniError(DEL_INCOMPLETE, f"{reason}: could not delete every attachment", "; ".join(failures))


def _recomputed_body(env: CniEnv, conf: NetConf) -> JournalRecord:
    """Issue 9, defect 7, the last resort (as Multus does without its cache): a journal body for the attachments the
    current configuration and request give this container, each with its part of the runtime's prevResult. DEL of
    what was never made, or is gone already, succeeds (cni.md 11)."""
    from metaplug.config import load_config
    from metaplug.merge import interface_result

    cfg = load_config(conf)
    body = plan_add(env, conf, cfg, dry_run=True, for_del=True).body
    prev = conf.get("prevResult")
    for attachment in body["attachments"]:
        attachment["state"] = "recomputed"
        attachment["result"] = interface_result(prev, attachment["ifname"]) if isinstance(prev, dict) else None
    return body


def _delete_attachments(key: journal.JournalKey, env: CniEnv, body: JournalRecord, *,
                        keep_lock: bool = False, only: list[AttachmentRecord] | None = None) -> list[str]:
    """Reverse order, every attachment attempted (R27), whatever one of them raises. Entries leave the journal only
    once their DEL succeeded, except an entry whose ADD never completed: after one failed DEL attempt it is dropped,
    loudly. `only`: just these attachments (hot-plug's detach and rollback).

    The journal is rewritten once at the end (with what is left), not after every attachment: a crash in between
    leaves the whole record, and the runtime's next DEL deletes again what is already gone, which succeeds
    (cni.md 11). When the rewrite fails (a full disk) the older record stays, lists a superset, and the problem is
    reported. When the last entry goes, so do the journal and (unless `keep_lock`) its lock file."""
    from metaplug.cni.chain import del_network_list

    failures: list[str] = []
    # cni.md 11: CNI_NETNS is optional on DEL. A path that is no longer a network namespace holds nothing of ours, and
    # a delegate that opened it blindly could block (a FIFO) or fail; it gets none, as for a namespace that is gone.
    netns = env.netns if env.netns and ns.is_netns(env.netns) else ""
    paths = journal.delegate_paths(body) or list(env.path)  # a partly readable record may have lost its paths
    timeout = journal.delegate_timeout(body)
    for attachment in list(reversed(body["attachments"] if only is None else only)):
        try:
            del_network_list(attachment["conflist"].encode(), journal.runtime_conf(body, attachment, netns), paths,
                             prev_result=attachment.get("result"), timeout=timeout)
        except Exception as exc:  # one attachment's failure, whatever it is, never stops the others (R27)
            err = exc if isinstance(exc, CniError) else CniError(skel.INTERNAL_ERROR, "internal error",
                                                                 f"{type(exc).__name__}: {exc}")
            if attachment.get("state") not in ("added", "recomputed"):
                journal.warn_dropped(key, attachment, err)
            else:
                failures.append(f"{attachment.get('ifname')} ({attachment.get('network')}): {err}")
                continue
        body["attachments"].remove(attachment)
    try:
        if body["attachments"] and body["attachments"][0].get("state") != "recomputed":
            journal.write(key, body)
        elif not body["attachments"]:
            journal.remove(key, keep_lock=keep_lock)
    except (CniError, OSError) as exc:
        failures.append(f"journal: {exc}")
    return failures


def delete_journaled(key: journal.JournalKey, *, reason: str, only_if_netns_gone: bool = False) -> bool:
    """DEL what the journal of `key` records, as the runtime's DEL would, under the container's lock (GC, doctor).

    cni.md 14 lets GC assume the netns is gone; when it still exists, DEL runs inside it so nothing is left. With
    `only_if_netns_gone` (doctor --fix) nothing happens unless the journal, read under the lock, names a netns that no
    longer exists. True when a DEL ran.
    """
    with journal.locked(key, create=False) as exists:
        if not exists:
            return False
        found: Mapping[str, object] | None
        try:
            found, corrupt = journal.read(key), False
        except journal.CorruptJournal as bad:
            found, corrupt = bad.partial, True  # DEL sets it aside and deletes from what is left
            with contextlib.suppress(OSError, CniError, journal.CorruptJournal):
                found = journal.load(key.previous_path)  # the whole previous version knows the netns too
        if found is None and not corrupt:
            journal.remove(key)  # gone meanwhile: only the lock file this took is left
            return False
        recorded = str((found or {}).get("netns") or "")
        present = bool(recorded) and ns.is_netns(recorded)
        if only_if_netns_gone and (corrupt or present):
            return False
        env = CniEnv(command="DEL", container_id=key.container_id, netns=recorded if present else "",
                     ifname=key.ifname)
        _delete_recorded(key, env, reason=reason)
        return True


# ---------------------------------------------------------------- CHECK


def cmd_check(env: CniEnv, conf: NetConf, raw: bytes) -> None:
    from metaplug.cni.version import at_least

    if not at_least(conf["cniVersion"], "0.4.0"):
        raise CniError(INCOMPATIBLE_VERSION, "config version does not allow CHECK",
                       f"cniVersion {conf['cniVersion']} < 0.4.0 (cni.md 12)")
    settings = _journal_verb_setup(env, conf)
    _check_prev_result(conf)
    ns.require_netns(env.netns)
    key = journal.JournalKey(settings.state_dir, env.container_id, settings.meta_network, env.ifname)
    with journal.locked(key, create=False) as exists:
        try:
            body = journal.read(key) if exists else None
        except journal.CorruptJournal as bad:
            raise CniError(IO_FAILURE, "journal is corrupt", f"{bad.path}: {bad.reason}") from None
        if body is None:
            if exists:
                journal.remove(key)
            renamed = [k.meta_network for k in journal.recorded_under_other_names(key)]
            if renamed:
                raise CniError(UNKNOWN_CONTAINER, "attachments recorded under another network name",
                               f"container {env.container_id} ifname {env.ifname} was added as network "
                               f"{', '.join(map(repr, renamed))}; the configuration's name is now "
                               f"{settings.meta_network!r} (changed since ADD; DEL still removes it)")
            from metaplug import multus_cache

            if multus_cache.check(env, conf, settings, _paths(settings.bin_dir, env)):
                return None  # issue 10.4: a container Multus attached, checked from Multus's cache
            raise CniError(UNKNOWN_CONTAINER, "no attachments recorded for this container",
                           f"container {env.container_id} ifname {env.ifname} in {settings.state_dir}")
        from metaplug import netns
        from metaplug.cni.chain import check_network_list

        for attachment in body["attachments"]:
            try:
                check_network_list(attachment["conflist"].encode(),
                                   journal.runtime_conf(body, attachment, env.netns), journal.delegate_paths(body),
                                   prev_result=attachment.get("result"), timeout=journal.delegate_timeout(body))
            except CniError as err:
                raise CniError(err.code, f"CHECK failed for {attachment['ifname']} ({attachment['network']})",
                               f"{err.msg}: {err.details}" if err.details else err.msg) from None
        problems = netns.check_result(env.netns, body["result"])
        if problems:
            raise CniError(CHECK_MISMATCH, "container network does not match the recorded result",
                           "; ".join(problems))
    return None


# ---------------------------------------------------------------- STATUS


def cmd_status(env: CniEnv, conf: NetConf, raw: bytes) -> None:
    from metaplug.attach.resolve import LocalNadStore, Resolver
    from metaplug.cni.chain import status_network_list
    from metaplug.cni.invoke import find_plugin
    from metaplug.config import load_config

    cfg = load_config(conf)
    _setup(env, cfg.settings)
    if cfg.readiness_indicator_file and not os.path.exists(cfg.readiness_indicator_file):
        raise CniError(NOT_AVAILABLE, "cluster network not ready",
                       f"readiness indicator file {cfg.readiness_indicator_file} does not exist (R25)")
    resolver = Resolver(cfg.conf_dir, [LocalNadStore(cfg.conf_dir)])
    try:
        if cfg.cluster_network:
            cluster = resolver.cluster_network(cfg.cluster_network, cfg.network_namespace).conflist
        elif cfg.delegates:
            cluster = resolver.inline(cfg.delegates[0], 0).conflist
        else:
            raise CniError(NOT_AVAILABLE, "no cluster network configured")
        paths = _paths(cfg.bin_dir, env)
        for plugin in cluster["plugins"]:
            find_plugin(plugin["type"], paths)
        status_network_list(cluster, paths, timeout=cfg.delegate_timeout)
    except CniError as err:
        code = err.code if err.code in (NOT_AVAILABLE, NOT_AVAILABLE_DEGRADED) else NOT_AVAILABLE
        raise CniError(code, f"cluster network not available: {err.msg}", err.details) from None
    return None


# ---------------------------------------------------------------- GC


def cmd_gc(env: CniEnv, conf: NetConf, raw: bytes) -> None:
    from metaplug.cni.chain import gc_network_list, load_conflist

    settings = _journal_verb_setup(env, conf)
    valid = valid_attachments(conf)  # a malformed list: code 7
    if valid is None:
        # Without the list every attachment would look stale; deleting them all on a runtime's mistake is worse
        # than collecting nothing (the bundled delegates do the same).
        log.warning("GC without cni.dev/valid-attachments: nothing collected")
        return None
    errors: list[str] = []
    conflists: dict[str, tuple[NetConf, list[str]]] = {}  # every delegate conflist recorded, by its name
    delegate_valid: dict[str, list[dict[str, str]]] = {}
    for cid, path in journal.list_journals(settings.state_dir):
        try:
            body = journal.read_listed(path)
        except (OSError, CniError, journal.CorruptJournal) as exc:
            errors.append(f"{path}: {exc}")
            continue
        if body.get("network") != settings.meta_network:
            # Several meta networks may share a stateDir, and a journal under another name may be this network's
            # own from before its `name` changed: never collected here, and its attachments count as valid for the
            # delegates' GC, so a shared IPAM never frees their addresses.
            if (cid, body.get("ifname")) in valid:
                log.warning("GC: a valid attachment is recorded under another network name (the configuration's "
                            "name changed since ADD); DEL removes it", extra={"container": cid,
                            "ifname": body.get("ifname"), "recorded_meta_network": body.get("network")})
            _count_as_valid(delegate_valid, cid, body)
            continue
        for attachment in body.get("attachments") or []:
            try:
                conflist = load_conflist(attachment["conflist"].encode())
            except Exception:  # an unreadable record: its DEL below reports it (and a kept one is not GC's)
                continue
            conflists[conflist["name"]] = (conflist, journal.delegate_paths(body))
        if (cid, body.get("ifname")) in valid:
            _count_as_valid(delegate_valid, cid, body)
            continue
        try:  # one journal's failure, whatever it is, never stops the others (cni.md 14)
            delete_journaled(journal.JournalKey(settings.state_dir, cid, settings.meta_network, body["ifname"]),
                             reason="GC")
        except Exception as exc:
            errors.append(f"{cid}/{body.get('ifname')}: {exc if isinstance(exc, CniError) else repr(exc)}")
    from metaplug import multus_cache  # issue 10.4: the pods Multus attached, stale ones collected, the others kept

    errors += multus_cache.collect_stale(conf, settings, valid, _paths(settings.bin_dir, env))
    for name, valid_one in multus_cache.attached(settings.multus_cache_dir):
        delegate_valid.setdefault(name, []).append(valid_one)
    for name, (conflist, paths) in sorted(conflists.items()):
        try:
            gc_network_list(conflist, _paths(settings.bin_dir, env) if env.path else paths,
                            delegate_valid.get(name, []), timeout=settings.delegate_timeout)
        except CniError as err:
            errors.append(f"GC of conflist {name}: {err}")
    if errors:
        raise CniError(DEL_INCOMPLETE, "GC could not remove everything", "; ".join(errors))
    return None


def _count_as_valid(delegate_valid: dict[str, list[dict[str, str]]], cid: str, body: journal.JournalRecord) -> None:
    """GC: every attachment of this journal is valid for its delegate conflist (with its own ifname)."""
    for attachment in body.get("attachments") or []:
        try:
            name = jsontext.loads(attachment["conflist"])["name"]
        except Exception:  # an unreadable record (issue 9): the others still count
            continue
        delegate_valid.setdefault(name, []).append({"containerID": cid, "ifname": attachment["ifname"]})


HANDLERS: dict[str, skel.Handler] = {
    "ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "STATUS": cmd_status, "GC": cmd_gc,
}


def run(environ: Mapping[str, str], stdin: bytes | None) -> tuple[int, str, str]:
    """One CNI call, pure: (exit status, stdout, stderr). The process entry and a future daemon both call this."""
    return skel.dispatch(environ, stdin, HANDLERS, name="metaplug")

