"""`metaplug install` / `metaplug uninstall`: put metaplug on a node, and take it away again.

install (run by the DaemonSet's init container, or by hand):
  1. copies the metaplug executable(s) into the host's CNI bin dir;
  2. writes a kubeconfig for metaplug from the pod's service-account credentials (token and CA inline, mode 0600);
  3. generates `00-metaplug.conflist` in the CNI conf dir, wrapping the alphabetically first other network
     configuration (the cluster network, R24) with the same cniVersion and the union of its plugins' capabilities and
     metaplug's own (cni.md duty 34), so the runtime, which uses the first file, calls metaplug.
Every file is written atomically (temp file + rename: the runtime watches the conf dir, a binary may be running), and
only when its content differs: a second run changes nothing. What was written is recorded in
`<cni_conf_dir>/.metaplug-install.manifest` (JSON); uninstall removes exactly those files (unless changed since) and the
directories install created.
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
from typing import Any

from metaplug.cni import files

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
# Never wrapped as the cluster network: metaplug itself, under any name it was installed as, and Multus (a
# meta-plugin inside a meta-plugin is never what an operator switching to metaplug means).
META_PLUGIN_TYPES = ("metaplug", "multus")

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


def generate_conflist(cluster_path: str, kubeconfig: str | None, name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The metaplug conflist wrapping `cluster_path`: its cniVersion; capabilities = its plugins' + metaplug's;
    `"type": name` (the name the executable was installed under)."""
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
            api_server: str | None = None, name: str = DEFAULT_NAME) -> list[str]:
    """Install metaplug on this node (see the module docstring). Returns the actions, one line each.

    kubeconfig_out None: write no kubeconfig (metaplug will not talk to Kubernetes). `name`: the file name of the
    metaplug executable in the bin dir and the `type` in the conflist (`multus` lets Multus configurations that say
    `"type": "multus"` call metaplug). Raises InstallError.
    """
    if not name or "/" in name or name in (".", ".."):
        raise InstallError(f"--name {name!r} is not a file name")
    env = os.environ if kubernetes_env is None else kubernetes_env
    cluster = find_cluster_network(cni_conf_dir, name)
    if cluster is None:
        raise InstallError(f"no CNI network configuration in {cni_conf_dir} to wrap as the cluster network "
                           "(is the cluster network plugin installed yet?)")
    planned: list[_Planned] = []
    for src in source_bin:
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InstallError(f"cannot read {src}: {e.strerror or e}") from None
        base = os.path.basename(src)
        dst = os.path.join(cni_bin_dir, name if base == DEFAULT_NAME else base)
        planned.append(_Planned(dst, data, 0o755, f"{dst} (copy of {src})"))
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
    conflist = _encode(generate_conflist(cluster, kubeconfig, name))
    conf_path = os.path.join(cni_conf_dir, CONFLIST_NAME)
    planned.append(_Planned(conf_path, conflist, 0o644, f"{conf_path} wrapping {cluster}:\n{conflist.decode()}"))

    manifest = _read_manifest(cni_conf_dir)
    entries: dict[str, dict[str, Any]] = {e["path"]: e for e in manifest["files"] if isinstance(e, dict)}
    dirs: list[str] = list(manifest["dirs"])
    announced: set[str] = set()
    for item in planned:
        for d in _missing_dirs(item.path):
            if d not in dirs:
                dirs.append(d)
            if d in announced:
                continue
            announced.add(d)
            if dry_run:
                actions.append(f"would create directory {d}")
            else:
                files.make_dirs(d, 0o755)  # exactly 0755 (runtimes' conventional mode), whatever the umask
                actions.append(f"created directory {d}")
        now = _current(item.path)
        if now is not None and now == (item.content, item.mode):
            actions.append(f"unchanged {item.path}")
        elif dry_run:
            actions.append(f"would write {item.shown}")
        else:
            _write_atomic(item.path, item.content, item.mode)
            actions.append(f"wrote {item.path}")
        entry = entries.setdefault(item.path, {"path": item.path, "preexisting": now is not None})
        entry["sha256"] = _sha256(item.content)
    new_manifest = {"clusterNetwork": cluster, "files": list(entries.values()), "dirs": dirs}
    manifest_path = os.path.join(cni_conf_dir, MANIFEST_NAME)
    content = _encode(new_manifest)
    if _current(manifest_path) != (content, 0o644):
        if dry_run:
            actions.append(f"would record the installed files in {manifest_path}")
        else:
            _write_atomic(manifest_path, content, 0o644)
            actions.append(f"recorded the installed files in {manifest_path}")
    return actions


def uninstall(*, cni_conf_dir: str, dry_run: bool = False) -> list[str]:
    """Remove exactly what install recorded in `<cni_conf_dir>/.metaplug-install.manifest`, newest first (the conflist
    before the binaries, so the runtime falls back to the cluster network first). A file changed since install is
    kept and reported. Returns the actions."""
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
        now = _current(path)
        if now is None:
            actions.append(f"already gone {path}")
        elif _sha256(now[0]) != entry.get("sha256"):
            actions.append(f"kept {path}: changed since metaplug installed it")
        else:
            if not dry_run:
                os.unlink(path)
            actions.append(f"{verb} {path}")
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


# -- command line ------------------------------------------------------------------------------------------------------
def _default_sources() -> list[str]:
    import shutil

    found = shutil.which("metaplug")
    return [found] if found else []


def _add_install_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cni-bin-dir", default=DEFAULT_BIN_DIR, help="the host's CNI bin dir (default %(default)s)")
    p.add_argument("--cni-conf-dir", default=DEFAULT_CONF_DIR, help="the host's CNI conf dir (default %(default)s)")
    p.add_argument("--source-bin", action="append", default=None, metavar="PATH",
                   help="an executable to copy into the bin dir (repeatable; default: the metaplug on PATH)")
    p.add_argument("--kubeconfig-out", default=DEFAULT_KUBECONFIG,
                   help="where to write metaplug's kubeconfig (default %(default)s)")
    p.add_argument("--no-kubeconfig", action="store_true", help="write no kubeconfig (no Kubernetes API access)")
    p.add_argument("--sa-dir", default=DEFAULT_SA_DIR, help="the service-account dir (default %(default)s)")
    p.add_argument("--api-server", default=None, metavar="URL",
                   help="API server URL for the kubeconfig (default https://$KUBERNETES_SERVICE_HOST:PORT)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to this long for the cluster network's configuration to appear")
    p.add_argument("--interval", type=float, default=0.0, metavar="SECONDS",
                   help="run again every SECONDS forever (refreshes a rotated token, follows the cluster network)")
    p.add_argument("--name", default=DEFAULT_NAME,
                   help="install the executable under this name and use it as the conflist's type (default "
                        "%(default)s; `multus` makes configurations with \"type\": \"multus\" call metaplug)")
    p.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    p.set_defaults(handler=run_install)


def _add_uninstall_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cni-conf-dir", default=DEFAULT_CONF_DIR, help="the host's CNI conf dir (default %(default)s)")
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
    while args.wait and find_cluster_network(args.cni_conf_dir, args.name) is None and time.monotonic() < deadline:
        time.sleep(1.0)
    return install(cni_bin_dir=args.cni_bin_dir, cni_conf_dir=args.cni_conf_dir,
                   source_bin=args.source_bin if args.source_bin is not None else _default_sources(),
                   kubeconfig_out=None if args.no_kubeconfig else args.kubeconfig_out, sa_dir=args.sa_dir,
                   dry_run=args.dry_run, kubernetes_env=os.environ, api_server=args.api_server, name=args.name)


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
