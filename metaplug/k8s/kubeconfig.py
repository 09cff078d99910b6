"""Where the Kubernetes API is and how to authenticate to it: a kubeconfig file or the pod's service account.

Only what metaplug needs from a kubeconfig: the server, its CA (file or data), insecure-skip-tls-verify,
tls-server-name, proxy-url, and a bearer token (inline or tokenFile) or a client certificate and key (file or data).
Relative paths are relative to the kubeconfig's directory, as kubectl does. Exec and auth-provider plugins are not
supported.

Secrets (the token, the client key) never appear in a repr, a log line or an error message.
The file is read as JSON first (what `metaplug install` writes, and valid YAML); anything else is parsed with PyYAML,
imported only then.
"""

from __future__ import annotations

import base64
import binascii
import os

from metaplug.cni import files, jsonload
from metaplug.cni.errors import INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, IO_FAILURE, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class Credentials(NamedTuple):
    """How to reach and authenticate to one API server. Build with load_kubeconfig or in_cluster_credentials.

    A NamedTuple, not a dataclass: importing dataclasses (and inspect) cost ~3-5 ms of every ADD with a kubeconfig.
    """

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    insecure: bool = False
    token: str | None = None
    token_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = None
    client_key_data: bytes | None = None
    tls_server_name: str | None = None
    proxy_url: str | None = None
    namespace: str | None = None  # the context's namespace (informational)
    source: str = ""  # where these came from: a kubeconfig path or "in-cluster"

    def auth_kind(self) -> str:
        """A secret-free description of the authentication in use."""
        kinds = []
        if self.token_file:
            kinds.append(f"tokenFile {self.token_file}")
        elif self.token:
            kinds.append("token")
        if self.client_cert_file or self.client_cert_data:
            kinds.append("client certificate")
        return " + ".join(kinds) or "anonymous"

    def bearer_token(self) -> str | None:
        """The bearer token to send now. A token file is re-read on every call: projected tokens rotate."""
        if self.token_file:
            try:
                token = files.read_file(self.token_file).decode().strip()  # never blocks on a FIFO (issue 9)
            except (OSError, UnicodeDecodeError) as e:
                raise CniError(IO_FAILURE, "cannot read the Kubernetes token file",
                               f"{self.token_file}: {getattr(e, 'strerror', None) or e}") from None
            if not token:
                raise CniError(IO_FAILURE, "the Kubernetes token file is empty", self.token_file)
            return token
        return self.token or None

    def __repr__(self) -> str:
        ca = "insecure" if self.insecure else (self.ca_file or ("<ca data>" if self.ca_data else "system CAs"))
        return f"Credentials(server={self.server!r}, ca={ca!r}, auth={self.auth_kind()!r}, source={self.source!r})"

    def __str__(self) -> str:
        return self.__repr__()


def _bad(path: str, details: str) -> CniError:
    return CniError(INVALID_NETWORK_CONFIG, "invalid kubeconfig", f"{path}: {details}")


def _parse(path: str, text: str) -> Any:
    try:
        return jsonload.loads(text)
    except jsonload.TooDeep as e:
        raise _bad(path, str(e)) from None
    except ValueError:
        pass
    try:
        import yaml  # lazily: only for kubeconfigs that are not plain JSON
    except ImportError:
        raise _bad(path, "not JSON, and PyYAML is not installed to read YAML") from None
    try:
        # libyaml's loader when PyYAML was built with it: the same safe subset, several times faster to parse.
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except RecursionError:
        raise _bad(path, "nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise _bad(path, f"not valid YAML{where}") from None


def _named(doc: Mapping[str, Any], section: str, key: str, name: str, path: str) -> Mapping[str, Any]:
    """`doc[section]` is a list of {name, <key>: {...}}; return the <key> mapping of the entry called `name`."""
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise _bad(path, f"{section} must be a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key) or {}
            if not isinstance(value, dict):
                raise _bad(path, f"{section} entry {name!r}: {key} must be a mapping")
            return value
    raise _bad(path, f"no {key} named {name!r} in {section}")


def _str(m: Mapping[str, Any], key: str, path: str) -> str | None:
    value = m.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(path, f"{key} must be a string")
    return value


def _file(m: Mapping[str, Any], key: str, path: str) -> str | None:
    value = _str(m, key, path)
    if value is None:
        return None
    return value if os.path.isabs(value) else os.path.join(os.path.dirname(os.path.abspath(path)), value)


def _data(m: Mapping[str, Any], key: str, path: str) -> bytes | None:
    value = _str(m, key, path)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(path, f"{key} is not valid base64") from None  # never echo the value: it may be a key


def load_kubeconfig(path: str, context: str | None = None) -> Credentials:
    """Credentials of `context` (default: current-context; or the only context) in the kubeconfig at `path`.

    Raises CniError code 7 (naming the file and the key) for anything unusable, code 5 when it cannot be read.
    """
    try:
        text = files.read_file(path).decode()  # never blocks on a FIFO (issue 9)
    except (OSError, UnicodeDecodeError) as e:
        raise CniError(IO_FAILURE, "cannot read kubeconfig", f"{path}: {getattr(e, 'strerror', None) or e}") from None
    doc = _parse(path, text)
    if not isinstance(doc, dict):
        raise _bad(path, "not a kubeconfig (expected a mapping with clusters, users and contexts)")

    name = context or doc.get("current-context") or ""
    if not name:
        contexts = doc.get("contexts") or []
        if isinstance(contexts, list) and len(contexts) == 1 and isinstance(contexts[0], dict):
            name = contexts[0].get("name") or ""
        if not name:
            raise _bad(path, "no current-context, and no context was given")
    ctx = _named(doc, "contexts", "context", name, path)
    cluster_name = _str(ctx, "cluster", path)
    if not cluster_name:
        raise _bad(path, f"context {name!r} names no cluster")
    cluster = _named(doc, "clusters", "cluster", cluster_name, path)
    user_name = _str(ctx, "user", path)
    user: Mapping[str, Any] = _named(doc, "users", "user", user_name, path) if user_name else {}

    server = _str(cluster, "server", path)
    if not server:
        raise _bad(path, f"cluster {cluster_name!r} has no server")
    if not server.startswith(("https://", "http://")):
        raise _bad(path, f"cluster {cluster_name!r}: server {server!r} is not an http(s) URL")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise _bad(path, "insecure-skip-tls-verify must be true or false")

    creds = Credentials(
        server=server.rstrip("/"),
        ca_file=_file(cluster, "certificate-authority", path),
        ca_data=_data(cluster, "certificate-authority-data", path),
        insecure=insecure,
        token=_str(user, "token", path),
        token_file=_file(user, "tokenFile", path),
        client_cert_file=_file(user, "client-certificate", path),
        client_key_file=_file(user, "client-key", path),
        client_cert_data=_data(user, "client-certificate-data", path),
        client_key_data=_data(user, "client-key-data", path),
        tls_server_name=_str(cluster, "tls-server-name", path),
        proxy_url=_str(cluster, "proxy-url", path),
        namespace=_str(ctx, "namespace", path),
        source=path,
    )
    has_cert = bool(creds.client_cert_file or creds.client_cert_data)
    has_key = bool(creds.client_key_file or creds.client_key_data)
    if has_cert != has_key:
        raise _bad(path, f"user {user_name!r}: a client certificate needs a client key and the other way round")
    if not (creds.token or creds.token_file or has_cert) and ("exec" in user or "auth-provider" in user):
        raise _bad(path, f"user {user_name!r}: exec and auth-provider credential plugins are not supported; "
                         "use a token, tokenFile or a client certificate")
    return creds


def in_cluster_credentials(environ: Mapping[str, str] | None = None, *,
                           sa_dir: str = SERVICE_ACCOUNT_DIR) -> Credentials:
    """The pod's own service account: KUBERNETES_SERVICE_HOST/PORT, `<sa_dir>/token` (re-read on every request,
    it rotates) and `<sa_dir>/ca.crt`. Raises CniError code 4 when not running in a pod."""
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise CniError(INVALID_ENVIRONMENT, "not running in a Kubernetes pod",
                       "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set for in-cluster credentials")
    token_file = os.path.join(sa_dir, "token")
    ca_file = os.path.join(sa_dir, "ca.crt")
    for needed in (token_file, ca_file):
        if not os.path.isfile(needed):
            raise CniError(INVALID_ENVIRONMENT, "no service-account credentials", f"{needed} does not exist")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 service address
    return Credentials(server=f"https://{host}:{port}", ca_file=ca_file, token_file=token_file, source="in-cluster")
