"""`metaplug install` / `metaplug uninstall`: put metaplug on a node, and take it away again.

install (run by the DaemonSet's install container, or by hand), in one of two modes:
- daemon (the default, for Kubernetes): waits (bounded by --wait) until `metaplug daemon` answers /readyz, copies the
  static `metaplug-shim` into the host's CNI bin dir and names it in the conflist (`"type": "metaplug-shim"` with the
  daemon's socketPath and spoolDir), so no pod starts before the daemon can serve it;
- thin (`--mode thin`, hosts where `pip install` works: Podman, Nomad, plain libcni): copies a metaplug executable
  whose interpreter exists on the host (executable.py) and names it (`"type": "metaplug"`); metaplug's own console
  script is installed as the launcher of launcher.py instead (the same interpreter with -I -S and the same imports).
Either way install refuses (InstallError, exit 1, nothing written) to write a conflist whose executable it does not
install in the same run, or that could not run on the host (a script whose interpreter the host lacks, a dynamic ELF
in daemon mode). Then:
  1. copies the executable(s) into the host's CNI bin dir;
  2. writes a kubeconfig for metaplug from the pod's service-account credentials (token and CA inline, mode 0600);
  3. generates `00-metaplug.conflist` in the CNI conf dir, wrapping the alphabetically first other network
     configuration (the cluster network, R24) with the same cniVersion and the union of its plugins' capabilities and
     metaplug's own (cni.md duty 34), so the runtime, which uses the first file, calls metaplug.
Every file is written atomically (temp file + rename: the runtime watches the conf dir, a binary may be running), and
only when its content differs: a second run changes nothing. What install writes is recorded, before the first file
is written, in `<cni_conf_dir>/.metaplug-install.manifest` (JSON); uninstall removes exactly those files (unless
changed since) and the directories install created; a file that was there before install is kept aside as a hard
link (`.<name>.metaplug-orig`, which neither libcni nor a `type` lookup picks up) and put back by uninstall, so the
node is as it was before install.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from metaplug.cni import files
from metaplug.executable import host_problem

CONFLIST_NAME = "00-metaplug.conflist"
# Not .json/.conf/.conflist: libcni considers EVERY file with those extensions, hidden or not, and this name would sort
# first and break the runtime's network setup.
MANIFEST_NAME = ".metaplug-install.manifest"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
DEFAULT_KUBECONFIG = "/etc/cni/net.d/metaplug.d/metaplug.kubeconfig"
DEFAULT_SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONF_EXTENSIONS = (".conf", ".conflist", ".json")  # what libcni's ConfFiles considers
DEFAULT_NAME = "metaplug"
SHIM_NAME = "metaplug-shim"
# Never wrapped as the cluster network: metaplug itself, under any name it was installed as, its shim, and Multus (a
# meta-plugin inside a meta-plugin is never what an operator switching to metaplug means).
META_PLUGIN_TYPES = ("metaplug", SHIM_NAME, "multus")
BACKUP_SUFFIX = ".metaplug-orig"
IMAGE_SHIM = "/opt/metaplug/bin/metaplug-shim"  # where the Containerfile puts the static shim

# cni.md duty 34: the capabilities metaplug itself consumes (it passes them on to the right attachment, R30).
METAPLUG_CAPABILITIES = (
    "portMappings", "ipRanges", "bandwidth", "dns", "ips", "mac", "infinibandGUID", "deviceID", "aliases",
    "cgroupPath", "io.kubernetes.cri.pod-annotations",
)


class InstallError(Exception):
    """install cannot proceed; the message names what to fix."""


@dataclass
class _Planned:
    path: str
    content: bytes
    mode: int
    shown: str  # what a dry run prints about it


# -- the cluster network and the generated conflist --------------------------------------------------------------------
def _load_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except OSError as e:
        raise InstallError(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise InstallError(f"{path} is not valid JSON ({e}); fix or remove it") from None


def _plugins_of(conf: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    plugins = conf.get("plugins")
    if plugins is None:
        return [conf]  # a single-plugin .conf
    if not isinstance(plugins, list) or not all(isinstance(p, Mapping) for p in plugins):
        return []
    return plugins


def find_cluster_network(conf_dir: str, name: str = DEFAULT_NAME) -> str | None:
    """The path of the network configuration the runtime would use if metaplug were not there: the alphabetically
    first .conf/.conflist/.json file (hidden ones too, as libcni), skipping metaplug's own (by file name, and by plugin
    type: `name`, metaplug and multus)."""
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return None
    for name in names:
        path = os.path.join(conf_dir, name)
        if name == CONFLIST_NAME or not name.endswith(CONF_EXTENSIONS):
            continue
        if not os.path.isfile(path):
            continue
        conf = _load_json(path)
        if not isinstance(conf, Mapping):
            raise InstallError(f"{path} is not a JSON object; fix or remove it")
        if any(p.get("type") in (*META_PLUGIN_TYPES, name) for p in _plugins_of(conf)):
            continue  # never wrap ourselves
        return path
    return None


def generate_conflist(cluster_path: str, kubeconfig: str | None, name: str = DEFAULT_NAME,
                      extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metaplug conflist wrapping `cluster_path`: its cniVersion; capabilities = its plugins' + metaplug's;
    `"type": name` (the name the executable was installed under) and the `extra` keys (daemon mode: socketPath,
    spoolDir) in metaplug's entry."""
    conf = _load_json(cluster_path)
    plugins = _plugins_of(conf)
    if not plugins:
        raise InstallError(f"{cluster_path}: plugins must be a non-empty list of objects")
    caps: dict[str, bool] = {}
    for plugin in plugins:
        declared = plugin.get("capabilities")
        if isinstance(declared, Mapping):
            caps.update({k: True for k, v in declared.items() if v is True})
    caps.update({k: True for k in METAPLUG_CAPABILITIES})
    version = conf.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise InstallError(f"{cluster_path} has no cniVersion")
    own: dict[str, Any] = {"type": name, "capabilities": dict(sorted(caps.items())),
                           "clusterNetwork": cluster_path}
    if kubeconfig:
        own["kubeconfig"] = kubeconfig
    own.update(extra or {})
    return {"cniVersion": version, "name": "metaplug", "plugins": [own]}


def service_account_kubeconfig(sa_dir: str, env: Mapping[str, str], api_server: str | None = None
                               ) -> dict[str, Any] | None:
    """A kubeconfig (as a dict) from the service account in `sa_dir`, or None when there is no service account at all
    (not running in a pod). Half a service account (a token but no KUBERNETES_SERVICE_HOST, ...) is an error."""
    token_path, ca_path = os.path.join(sa_dir, "token"), os.path.join(sa_dir, "ca.crt")
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    present = [bool(api_server or (host and port)), os.path.exists(token_path), os.path.exists(ca_path)]
    if not any(present):
        return None
    if not all(present):
        raise InstallError(
            f"incomplete service-account credentials: need KUBERNETES_SERVICE_HOST/PORT (or --api-server), "
            f"{token_path} and {ca_path}")
    try:
        with open(token_path, encoding="utf-8") as f:
            token = f.read().strip()
        with open(ca_path, "rb") as f:
            ca = f.read()
    except OSError as e:
        raise InstallError(f"cannot read the service account: {e.filename}: {e.strerror}") from None
    if not token:
        raise InstallError(f"{token_path} is empty")
    if not api_server:
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        api_server = f"https://{host}:{port}"
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": api_server, "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": "metaplug", "user": {"token": token}}],
        "contexts": [{"name": "metaplug", "context": {"cluster": "local", "user": "metaplug"}}],
        "current-context": "metaplug",
    }


# -- files -------------------------------------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _current(path: str) -> tuple[bytes, int] | None:
    try:
        with open(path, "rb") as f:
            return f.read(), os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return None


def _write_atomic(path: str, content: bytes, mode: int) -> None:
    d, name = os.path.split(path)
    tmp = os.path.join(d, f".{name}.metaplug-tmp")  # hidden, and not a .conf*: the runtime never picks it up
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a binary being executed is replaced, never rewritten in place ("text file busy")
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _missing_dirs(path: str) -> list[str]:
    """The directories above `path` that do not exist yet, outermost first."""
    out: list[str] = []
    d = os.path.dirname(os.path.abspath(path))
    while d and not os.path.isdir(d):
        out.insert(0, d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    return out


def _read_manifest(conf_dir: str) -> dict[str, Any]:
    path = os.path.join(conf_dir, MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return {"files": [], "dirs": []}
    except (OSError, ValueError) as e:
        raise InstallError(f"unreadable install manifest {path}: {e}; remove it to start afresh") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise InstallError(f"unreadable install manifest {path}; remove it to start afresh")
    data.setdefault("dirs", [])
    return data


def _encode(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


# -- install / uninstall -----------------------------------------------------------------------------------------------
def install(*, cni_bin_dir: str, cni_conf_dir: str, source_bin: list[str], kubeconfig_out: str | None,
            sa_dir: str, dry_run: bool, kubernetes_env: Mapping[str, str] | None,
            api_server: str | None = None, name: str = DEFAULT_NAME, primary: str = DEFAULT_NAME,
            static_only: bool = False, host_root: str = "/", entry: Mapping[str, Any] | None = None) -> list[str]:
    """Install metaplug on this node (see the module docstring). Returns the actions, one line each.

    `name`: the file name in the bin dir of the source named `primary` (metaplug; metaplug-shim in daemon mode) and
    the `type` in the conflist (`multus` lets Multus configurations that say `"type": "multus"` call metaplug). Every
    one of `source_bin` must be able to run on the host seen at `host_root` (a static ELF when `static_only`).
    kubeconfig_out None: write no kubeconfig (metaplug will not talk to Kubernetes). Raises InstallError before
    writing anything.
    """
    if not name or "/" in name or name in (".", ".."):
        raise InstallError(f"--name {name!r} is not a file name")
    env = os.environ if kubernetes_env is None else kubernetes_env
    cluster = find_cluster_network(cni_conf_dir, name)
    if cluster is None:
        raise InstallError(f"no CNI network configuration in {cni_conf_dir} to wrap as the cluster network "
                           "(is the cluster network plugin installed yet?)")
    planned = _planned_executables(cni_bin_dir, source_bin, name, primary, static_only, host_root)
    actions: list[str] = []
    kubeconfig = None
    if kubeconfig_out:
        doc = service_account_kubeconfig(sa_dir, env, api_server)
        if doc is None:
            actions.append(f"no service-account credentials in {sa_dir}: no kubeconfig written")
        else:
            kubeconfig = kubeconfig_out
            server = doc["clusters"][0]["cluster"]["server"]
            planned.append(_Planned(kubeconfig_out, _encode(doc), 0o600,
                                    f"{kubeconfig_out} (server {server}, service-account token)"))
    # the conflist comes last: the runtime never sees it before the executable it names is in place
    conflist = _encode(generate_conflist(cluster, kubeconfig, name, entry))
    conf_path = os.path.join(cni_conf_dir, CONFLIST_NAME)
    planned.append(_Planned(conf_path, conflist, 0o644, f"{conf_path} wrapping {cluster}:\n{conflist.decode()}"))

    manifest = _read_manifest(cni_conf_dir)
    entries: dict[str, dict[str, Any]] = {e["path"]: e for e in manifest["files"] if isinstance(e, dict)}
    dirs: list[str] = list(manifest["dirs"])
    steps: list[tuple[_Planned, bool, dict[str, Any]]] = []
    for item in planned:
        dirs += [d for d in _missing_dirs(item.path) if d not in dirs]
        now = _current(item.path)
        entry = entries.setdefault(item.path, {"path": item.path, "preexisting": now is not None})
        changed = now != (item.content, item.mode)
        if changed and now is not None and entry["preexisting"] and not entry.get("backup"):
            entry["backup"] = _backup_path(item.path)
        entry["sha256"] = _sha256(item.content)
        steps.append((item, changed, entry))
    # The record first: install interrupted part-way leaves a manifest that uninstall can undo.
    actions += _record(os.path.join(cni_conf_dir, MANIFEST_NAME),
                       {"clusterNetwork": cluster, "files": list(entries.values()), "dirs": dirs}, dry_run)
    announced: set[str] = set()
    for item, changed, entry in steps:
        for d in _missing_dirs(item.path):
            if d in announced:
                continue
            announced.add(d)
            if dry_run:
                actions.append(f"would create directory {d}")
            else:
                files.make_dirs(d, 0o755)  # exactly 0755 (runtimes' conventional mode), whatever the umask
                actions.append(f"created directory {d}")
        if not changed:
            actions.append(f"unchanged {item.path}")
        elif dry_run:
            actions.append(f"would write {item.shown}")
        else:
            backup = entry.get("backup")
            if isinstance(backup, str) and not os.path.lexists(backup) and os.path.lexists(item.path):
                # the same inode beside it: content, mode, owner and times exactly as they were
                os.link(item.path, backup)
                actions.append(f"kept the original {item.path} as {backup}")
            _write_atomic(item.path, item.content, item.mode)
            actions.append(f"wrote {item.path}")
    return actions


def _record(manifest_path: str, manifest: Mapping[str, Any], dry_run: bool) -> list[str]:
    content = _encode(manifest)
    if _current(manifest_path) == (content, 0o644):
        return []
    if dry_run:
        return [f"would record the installed files in {manifest_path}"]
    _write_atomic(manifest_path, content, 0o644)
    return [f"recorded the installed files in {manifest_path}"]


def _planned_executables(cni_bin_dir: str, source_bin: list[str], name: str, primary: str, static_only: bool,
                         host_root: str) -> list[_Planned]:
    """The executables to copy (the one named `primary` as `name`), each checked to run on the host; the conflist's
    type `name` must be one of them (never a conflist naming an executable install did not put there)."""
    names = [name if os.path.basename(src) == primary else os.path.basename(src) for src in source_bin]
    if name not in names:
        shown = ", ".join(source_bin) or "none"
        raise InstallError(f"the conflist would name the executable {name!r}, but install is not installing one of "
                           f"that name (executables to install: {shown}); refusing to write a conflist the runtime "
                           "could not run")
    planned = []
    for src, installed_as in zip(source_bin, names, strict=True):
        dst = os.path.join(cni_bin_dir, installed_as)
        why = host_problem(src, host_root=host_root, static_only=static_only)
        if why is not None:
            raise InstallError(f"refusing to install {src} as {dst}: it could not run on the host: {why}")
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InstallError(f"cannot read {src}: {e.strerror or e}") from None
        launcher = None if static_only else _thin_launcher(src, data)
        if launcher is not None:
            planned.append(_Planned(dst, launcher, 0o755, f"{dst} (launcher of {src}, python -I -S)"))
            continue
        planned.append(_Planned(dst, data, 0o755, f"{dst} (copy of {src})"))
    return planned


def _thin_launcher(src: str, data: bytes) -> bytes | None:
    """metaplug's console script becomes the -I -S launcher (launcher.py: ~2.5 ms less per CNI call)."""
    from metaplug import launcher

    return launcher.for_console_script(src, data)


def _backup_path(path: str) -> str:
    """Where install keeps a file it replaces (uninstall puts it back): hidden, and no .conf/.conflist/.json."""
    d, name = os.path.split(path)
    return os.path.join(d, f".{name}{BACKUP_SUFFIX}")


def uninstall(*, cni_conf_dir: str, dry_run: bool = False) -> list[str]:
    """Remove exactly what install recorded in `<cni_conf_dir>/.metaplug-install.manifest`, newest first (the conflist
    before the binaries, so the runtime falls back to the cluster network first), and put back the files install
    replaced. A file changed since install is kept and reported. Returns the actions."""
    manifest_path = os.path.join(cni_conf_dir, MANIFEST_NAME)
    if not os.path.exists(manifest_path):
        return [f"nothing to uninstall: no {manifest_path}"]
    manifest = _read_manifest(cni_conf_dir)
    verb = "would remove" if dry_run else "removed"
    actions: list[str] = []
    for entry in reversed(manifest["files"]):
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            continue
        actions.append(_uninstall_file(entry, path, dry_run))
    for d in reversed(manifest["dirs"]):
        if not isinstance(d, str) or not os.path.isdir(d):
            continue
        if os.listdir(d):
            actions.append(f"kept directory {d}: not empty")
            continue
        if not dry_run:
            os.rmdir(d)
        actions.append(f"{verb} directory {d}")
    if not dry_run:
        os.unlink(manifest_path)
    actions.append(f"{verb} {manifest_path}")
    return actions


def remove_daemon_dirs(config_path: str, dry_run: bool = False) -> list[str]:
    """The daemon's own directories (spoolDir, the socket's directory, stateDir), removed when they hold nothing:
    a spooled DEL or a journal means a container still has attachments only metaplug can delete, so they stay and
    the action says so. Returns the actions."""
    from metaplug import journal
    from metaplug.config import DEFAULT_STATE_DIR
    from metaplug.daemon import config

    try:
        cfg = config.load(config_path)
    except config.ConfigError as e:
        raise InstallError(f"daemon config: {e}") from None
    state_dir = str(cfg.defaults.get("stateDir") or DEFAULT_STATE_DIR)
    actions = []
    journals = sum(1 for _ in journal.list_journals(state_dir))
    if journals:
        actions.append(f"warning: {journals} journals in {state_dir}: containers still have attachments that only "
                       "metaplug deletes (`metaplug state` lists them); delete those pods, then uninstall again")
    for d in (cfg.spool_dir, os.path.dirname(cfg.socket_path), state_dir):
        if not os.path.isdir(d):
            continue
        if os.listdir(d):
            actions.append(f"kept directory {d}: not empty ({', '.join(sorted(os.listdir(d))[:5])})")
            continue
        try:
            if not dry_run:
                os.rmdir(d)
        except OSError as e:  # EBUSY: a mount point where uninstall runs
            actions.append(f"kept directory {d}: {e.strerror}")
            continue
        actions.append(f"{'would remove' if dry_run else 'removed'} directory {d}")
    return actions


def _uninstall_file(entry: Mapping[str, Any], path: str, dry_run: bool) -> str:
    """Undo install for one recorded file; the action taken."""
    now = _current(path)
    backup = entry.get("backup")
    if isinstance(backup, str) and os.path.exists(backup):
        if now is not None and _sha256(now[0]) != entry.get("sha256"):
            return f"kept {path}: changed since metaplug installed it (the original is still in {backup})"
        if not dry_run:
            os.replace(backup, path)
        return f"{'would restore' if dry_run else 'restored'} the original {path}"
    if now is None:
        return f"already gone {path}"
    if entry.get("preexisting"):
        return f"kept {path}: it was there before install"  # with the same content: install never wrote it
    if _sha256(now[0]) != entry.get("sha256"):
        return f"kept {path}: changed since metaplug installed it"
    if not dry_run:
        os.unlink(path)
    return f"{'would remove' if dry_run else 'removed'} {path}"


# -- daemon mode: the daemon the shim forwards to ---------------------------------------------------------------------
class DaemonEndpoint(NamedTuple):
    """Where the shim reaches the daemon (written into the conflist) and where install asks it whether it is ready."""

    socket_path: str
    spool_dir: str
    readyz_url: str


def default_shim() -> str:
    """The shim beside this Python's scripts: `.venv/bin/metaplug-shim` (.ci/setup), IMAGE_SHIM in the image."""
    return os.path.join(os.path.dirname(sys.executable), SHIM_NAME)


def daemon_endpoint(config_path: str | None) -> DaemonEndpoint:
    """The socket, spool and readiness URL of the daemon configured by `config_path` (None: the defaults), read
    with the daemon's own config loader, so the two cannot disagree."""
    from metaplug.daemon import config

    try:
        cfg = config.load(config_path) if config_path else config.from_dict({})
    except config.ConfigError as e:
        raise InstallError(f"daemon config: {e}") from None
    host = f"[{cfg.metrics_host}]" if ":" in cfg.metrics_host else cfg.metrics_host
    return DaemonEndpoint(cfg.socket_path, cfg.spool_dir, f"http://{host}:{cfg.metrics_port}/readyz")


def daemon_readiness(url: str, timeout: float = 2.0) -> tuple[bool, str]:
    """(ready, why) from one GET of the daemon's /readyz."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the daemon is local: never via a proxy
    try:
        with opener.open(url, timeout=timeout) as reply:
            return reply.status == 200, reply.read(500).decode(errors="replace").strip()
    except urllib.error.HTTPError as e:
        return False, f"{e.code} {e.read(500).decode(errors='replace').strip()}"
    except (OSError, ValueError) as e:
        return False, str(getattr(e, "reason", None) or e)


def wait_daemon_ready(endpoint: DaemonEndpoint, deadline: float, interval: float = 0.5) -> None:
    """Poll /readyz until it answers 200; InstallError (nothing written yet) when `deadline` passes first."""
    while True:
        ready, why = daemon_readiness(endpoint.readyz_url)
        if ready:
            return
        if time.monotonic() >= deadline:
            raise InstallError(f"metaplug daemon not ready at {endpoint.readyz_url} ({why}); wrote nothing, so no "
                               "pod is sent to a daemon that cannot serve it (raise --wait, or see the daemon's log)")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


class Target(NamedTuple):
    """The executables install copies (the one named `primary` under --name) and what the conflist carries."""

    primary: str
    sources: list[str]
    static_only: bool
    entry: dict[str, Any]  # extra keys of metaplug's conflist entry


def daemon_target(shim: str, extra: list[str], endpoint: DaemonEndpoint) -> Target:
    if os.path.basename(shim) != SHIM_NAME:
        raise InstallError(f"--shim {shim}: the static shim must be named {SHIM_NAME}")
    return Target(SHIM_NAME, [shim, *extra], True,
                  {"socketPath": endpoint.socket_path, "spoolDir": endpoint.spool_dir})


def thin_target(sources: list[str]) -> Target:
    return Target(DEFAULT_NAME, sources, False, {})


# -- command line ------------------------------------------------------------------------------------------------------
def _default_sources() -> list[str]:
    import shutil

    found = shutil.which("metaplug")
    return [found] if found else []


def _add_install_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("daemon", "thin"), default="daemon",
                   help="daemon (default; Kubernetes, nodes without Python): install the static metaplug-shim, "
                        "which forwards to `metaplug daemon`; thin: install a metaplug executable that runs on the "
                        "host itself (hosts where `pip install metaplug` works)")
    p.add_argument("--cni-bin-dir", default=DEFAULT_BIN_DIR, help="the host's CNI bin dir (default %(default)s)")
    p.add_argument("--cni-conf-dir", default=DEFAULT_CONF_DIR, help="the host's CNI conf dir (default %(default)s)")
    p.add_argument("--shim", default=None, metavar="PATH",
                   help=f"daemon mode: the static {SHIM_NAME} to install (default: beside this Python, "
                        f"{IMAGE_SHIM} in the image)")
    p.add_argument("--daemon-config", default=None, metavar="FILE",
                   help="daemon mode: the daemon's config file (its socketPath and spoolDir go into the conflist, "
                        "its metricsAddress is where /readyz is polled); default: the daemon's defaults")
    p.add_argument("--source-bin", action="append", default=None, metavar="PATH",
                   help="thin mode: an executable to copy into the bin dir (repeatable; default: the metaplug on "
                        "PATH); daemon mode: extra executables besides the shim")
    p.add_argument("--host-root", default="/", metavar="DIR",
                   help="where the host's / is seen, to check that scripts' interpreters exist there "
                        "(default %(default)s: install runs on the host)")
    p.add_argument("--kubeconfig-out", default=DEFAULT_KUBECONFIG,
                   help="where to write metaplug's kubeconfig (default %(default)s)")
    p.add_argument("--no-kubeconfig", action="store_true", help="write no kubeconfig (no Kubernetes API access)")
    p.add_argument("--sa-dir", default=DEFAULT_SA_DIR, help="the service-account dir (default %(default)s)")
    p.add_argument("--api-server", default=None, metavar="URL",
                   help="API server URL for the kubeconfig (default https://$KUBERNETES_SERVICE_HOST:PORT)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for the cluster network's configuration to appear and (daemon mode) "
                        "for the daemon to answer /readyz; nothing is written before both")
    p.add_argument("--interval", type=float, default=0.0, metavar="SECONDS",
                   help="run again every SECONDS forever (refreshes a rotated token, follows the cluster network)")
    p.add_argument("--name", default=None,
                   help=f"install the executable (the shim in daemon mode) under this name and use it as the "
                        f"conflist's type (default {SHIM_NAME} in daemon mode, {DEFAULT_NAME} in thin mode; `multus` "
                        "makes configurations with \"type\": \"multus\" call metaplug)")
    p.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    p.set_defaults(handler=run_install)


def _add_uninstall_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cni-conf-dir", default=DEFAULT_CONF_DIR, help="the host's CNI conf dir (default %(default)s)")
    p.add_argument("--daemon-config", default=None, metavar="FILE",
                   help="also remove the daemon's spoolDir, socket directory and stateDir when they are empty "
                        "(kept, and reported, while they hold spooled DELs or journals)")
    p.add_argument("--dry-run", action="store_true", help="print what would be removed, remove nothing")
    p.set_defaults(handler=run_uninstall)


def add_arguments(parser: Any) -> None:
    """Register `install` and `uninstall` on a subparsers object (`parser.add_subparsers()`), or add the install
    options to a plain ArgumentParser."""
    if hasattr(parser, "add_parser"):
        _add_install_options(parser.add_parser("install", help="install metaplug on this node (DaemonSet init)"))
        _add_uninstall_options(parser.add_parser("uninstall", help="remove exactly what `metaplug install` wrote"))
    else:
        _add_install_options(parser)


def _install_once(args: argparse.Namespace) -> list[str]:
    deadline = time.monotonic() + args.wait
    while args.wait and find_cluster_network(args.cni_conf_dir, _name(args)) is None and time.monotonic() < deadline:
        time.sleep(1.0)
    actions: list[str] = []
    if args.mode == "daemon":
        endpoint = daemon_endpoint(args.daemon_config)
        if args.dry_run:
            ready, why = daemon_readiness(endpoint.readyz_url)
            actions.append(f"daemon {'ready' if ready else 'NOT ready'} at {endpoint.readyz_url}: {why}")
        else:
            wait_daemon_ready(endpoint, deadline)  # cni.md 13: no conflist before the daemon can serve ADD
        target = daemon_target(args.shim or default_shim(), args.source_bin or [], endpoint)
    else:
        target = thin_target(args.source_bin if args.source_bin is not None else _default_sources())
    return actions + install(
        cni_bin_dir=args.cni_bin_dir, cni_conf_dir=args.cni_conf_dir, source_bin=target.sources,
        kubeconfig_out=None if args.no_kubeconfig else args.kubeconfig_out, sa_dir=args.sa_dir,
        dry_run=args.dry_run, kubernetes_env=os.environ, api_server=args.api_server, name=_name(args),
        primary=target.primary, static_only=target.static_only, host_root=args.host_root, entry=target.entry)


def _name(args: argparse.Namespace) -> str:
    """--name, or the executable's own name in the chosen mode."""
    return str(args.name or (SHIM_NAME if args.mode == "daemon" else DEFAULT_NAME))


def run_install(args: argparse.Namespace) -> int:
    while True:
        try:
            for line in _install_once(args):
                print(line)
        except (InstallError, OSError) as e:
            print(f"metaplug install: {e}", file=sys.stderr)
            if not args.interval:
                return 1
        if not args.interval or args.dry_run:
            return 0
        sys.stdout.flush()
        time.sleep(args.interval)


def run_uninstall(args: argparse.Namespace) -> int:
    try:
        for line in uninstall(cni_conf_dir=args.cni_conf_dir, dry_run=args.dry_run):
            print(line)
        if args.daemon_config:
            for line in remove_daemon_dirs(args.daemon_config, args.dry_run):
                print(line)
    except (InstallError, OSError) as e:
        print(f"metaplug uninstall: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m metaplug.install install|uninstall [options]`."""
    parser = argparse.ArgumentParser(prog="metaplug")
    add_arguments(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
