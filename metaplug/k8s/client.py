"""A small Kubernetes REST client for one CNI call: get a pod, get a NetworkAttachmentDefinition, publish the pod's
network-status annotation (R17..R23), post events.

One KubeClient serves one CNI call and has ONE overall deadline (from construction, or from reset_deadline()): every
attempt's timeout is what is left of it, and retries stop when it would pass, so a dead API server gives a clear
CNI error instead of a hang.

Failures are CniError:
- transient (connection refused/reset/dropped, timeout, 429, 500/502/503/504) are retried with jittered exponential
  backoff (429/503 Retry-After honoured) until the deadline; then code 11 "try again later" naming the server and the
  last answer;
- permanent (400, 401, 403, 404 of a pod, 422, TLS verification) are never retried: code 110 (KUBERNETES_API) with the
  API's Status message.
The bearer token and the client key never appear in a log line or an error.

The bytes move through a transport (transport.py): a KubeClient of its own (thin mode: one per CNI call) uses the
standard library's HTTP/1.1 client (http11.py) and imports no httpx at all, unless the kubeconfig names a proxy; a
KubeClient given a long-lived httpx.Client (the daemon) goes through it. The retries, statuses and Status objects are
this module's, whatever the transport. The retry loop is written out here rather than with tenacity: importing
tenacity cost another 8-17 ms per ADD (issue 10.7).
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time

from metaplug.cni import jsontext
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, KUBERNETES_API, TRY_AGAIN_LATER, CniError
from metaplug.cni.lazylog import LazyLogger
from metaplug.cni.runtime_typing import TYPE_CHECKING
from metaplug.k8s.kubeconfig import Credentials
from metaplug.k8s.transport import Answer, Transport, TransportError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from typing import Any, TypeAlias

    import httpx

log = LazyLogger("metaplug.k8s")

NETWORK_STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
NAD_GROUP = "k8s.cni.cncf.io"
NAD_RESOURCE = "network-attachment-definitions"

# Every (apiGroup, resource, verb) this client may use; configs/kubernetes/rbac.yaml must grant each (tested).
API_CALLS: tuple[tuple[str, str, str], ...] = (
    ("", "pods", "get"),
    ("", "pods/status", "patch"),
    ("", "pods/status", "update"),  # the GET + PUT fallback when merge patch is refused
    (NAD_GROUP, NAD_RESOURCE, "get"),
    ("", "events", "create"),
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PATCH_UNSUPPORTED = frozenset({405, 415})  # merge patch not accepted: fall back to GET + PUT
MAX_RETRY_AFTER = 30.0  # never believe a Retry-After longer than this (it is capped by the deadline anyway)
MIN_ATTEMPT = 0.02  # do not start an attempt with less time than this left
BACKOFF_FIRST = 0.1  # full-jitter exponential backoff: uniform(0, min(BACKOFF_FIRST * 2**(n-1), BACKOFF_MAX))
BACKOFF_MAX = 1.0
MAX_CONFLICTS = 10  # GET + PUT rounds on 409 before giving up (the deadline also bounds them)
EVENT_TIMEOUT = 1.0  # an event is best effort: one attempt, at most this long


class _Transient(Exception):
    """An attempt that may succeed if repeated; `last` describes it for the final error (no secrets)."""

    def __init__(self, last: str, retry_after: float | None = None) -> None:
        super().__init__(last)
        self.last = last
        self.retry_after = retry_after


# Characters a path segment keeps as they are (RFC 3986 unreserved); urllib.parse would cost ~1 ms per ADD to import.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def path_segment(text: str) -> str:
    """`text` percent-encoded as one URL path segment (what urllib.parse.quote(text, safe="") gives)."""
    if all(c in _UNRESERVED for c in text):
        return text
    return "".join(c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def _jitter(upper: float) -> float:
    """Uniform in [0, upper) from os.urandom (importing random costs ~1 ms per ADD; this needs no quality)."""
    return upper * int.from_bytes(os.urandom(4), "big") / 2**32


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER))
    except ValueError:
        pass
    import email.utils  # rare: only for an HTTP-date Retry-After

    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    try:
        when = email.utils.mktime_tz(parsed)  # a date without a zone counts as UTC
    except (OverflowError, ValueError):
        return None
    return max(0.0, min(when - time.time(), MAX_RETRY_AFTER))


def _status_message(resp: Answer) -> str:
    """The message of a Kubernetes Status object in `resp`, or a short excerpt of the body."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    text = resp.text.strip()
    return text[:200] if text else resp.reason_phrase


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS failure behind a transport error, when it is one that repeating cannot fix."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        if isinstance(seen, ssl.SSLError) and not isinstance(seen, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def _materialized(data: bytes | None, path: str | None) -> Iterator[str | None]:
    """A path holding `data` (a 0600 temp file, deleted on exit), or `path` when there is no data."""
    if data is None:
        yield path
        return
    import tempfile  # only for inline client certificates

    fd, tmp = tempfile.mkstemp(prefix="metaplug-", suffix=".pem")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def ssl_context(creds: Credentials) -> ssl.SSLContext:
    """The TLS client context for `creds`: its CA only (or the system CAs when it names none), its client certificate.

    Raises CniError code 7 naming the kubeconfig when the CA or the certificate cannot be loaded (never with key
    material in the message).
    """
    if creds.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif creds.ca_file or creds.ca_data:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED, check_hostname True
        try:
            if creds.ca_data:
                ctx.load_verify_locations(cadata=creds.ca_data.decode("ascii", errors="replace"))
            if creds.ca_file:
                ctx.load_verify_locations(cafile=creds.ca_file)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise CniError(INVALID_NETWORK_CONFIG, "unusable certificate authority",
                           f"{creds.source}: {creds.ca_file or 'certificate-authority-data'}: {e}") from None
    else:
        ctx = ssl.create_default_context()
    if creds.client_cert_file or creds.client_cert_data:
        try:
            with _materialized(creds.client_cert_data, creds.client_cert_file) as cert, \
                    _materialized(creds.client_key_data, creds.client_key_file) as key:
                assert cert is not None
                ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as e:
            what = f"{e.strerror} ({e.filename})" if isinstance(e, OSError) and e.strerror else type(e).__name__
            raise CniError(INVALID_NETWORK_CONFIG, "unusable client certificate or key",
                           f"{creds.source}: {what}") from None
    return ctx


def new_http_client(creds: Credentials, *, user_agent: str = "metaplug") -> httpx.Client:
    """The HTTP client for `creds`' API server: its TLS context, no proxy from the environment, no redirects."""
    import httpx

    options: dict[str, Any] = {"proxy": creds.proxy_url} if creds.proxy_url else {}  # (httpx >= 0.26)
    return httpx.Client(
        base_url=creds.server,
        verify=ssl_context(creds) if creds.server.startswith("https://") else False,
        trust_env=False,  # a runtime's HTTPS_PROXY (for image pulls) must not capture API traffic
        headers={"User-Agent": user_agent, "Accept": "application/json"},
        follow_redirects=False,
        **options,
    )


def open_transport(creds: Credentials, user_agent: str = "metaplug") -> Transport:
    """The transport of a KubeClient that owns its connection (thin mode): the standard library's HTTP/1.1 client;
    httpx only for what that one cannot do (a proxy-url)."""
    if creds.proxy_url:
        from metaplug.k8s.transport import HttpxTransport

        return HttpxTransport(new_http_client(creds, user_agent=user_agent), creds.tls_server_name, owned=True)
    from metaplug.k8s.http11 import Http11Transport

    https = creds.server.startswith("https://")
    context = ssl_context(creds) if https else None
    try:
        return Http11Transport(creds.server, context, tls_server_name=creds.tls_server_name,
                               default_headers={"User-Agent": user_agent, "Accept": "application/json"})
    except ValueError as e:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid kubeconfig", f"{creds.source}: {e}") from None


def request_extensions(creds: Credentials) -> dict[str, Any]:
    """httpx request extensions every request to this server needs (tls-server-name)."""
    return {"sni_hostname": creds.tls_server_name} if creds.tls_server_name else {}


def auth_headers(creds: Credentials) -> dict[str, str]:
    """The Authorization header to send now (a token file is re-read: projected tokens rotate)."""
    token = creds.bearer_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


# Observers of every request: (verb, resource, code, seconds), code being the HTTP status or "error" when no answer
# came. The daemon's metrics register here (Kubernetes requests by verb and code); thin mode registers none.
RequestObserver: TypeAlias = "Callable[[str, str, str, float], None]"
request_observers: list[RequestObserver] = []
_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "POST": "create", "DELETE": "delete"}


def request_resource(path: str) -> tuple[str, bool]:
    """(resource, names one object?) of an API path: `pods`, `pods/status`, `network-attachment-definitions`, ..."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    at = parts.index("namespaces") + 2 if "namespaces" in parts else (2 if parts[:1] == ["api"] else 3)
    resource = parts[at] if at < len(parts) else ""
    if len(parts) > at + 2:
        resource += "/" + parts[at + 2]
    return resource, len(parts) > at + 1


def observe_request(verb: str, resource: str, code: str, seconds: float) -> None:
    for observer in request_observers:
        observer(verb, resource, code, seconds)


def _observed_verb(method: str, path: str) -> tuple[str, str]:
    resource, named = request_resource(path)
    verb = _VERBS.get(method, method.lower())
    return ("list" if verb == "get" and not named else verb), resource


class KubeClient:
    """The Kubernetes calls of one CNI call, all bound by one deadline (seconds)."""

    def __init__(self, creds: Credentials, *, deadline: float = 5.0, user_agent: str = "metaplug",
                 http: httpx.Client | None = None, transport: Transport | None = None) -> None:
        """`http`: a long-lived httpx client (new_http_client) to borrow, as the daemon does for every call; close()
        then leaves it open. `transport`: one to use (and close). Without either the KubeClient opens its own
        (open_transport)."""
        self.creds = creds
        self.server = creds.server
        self.deadline = deadline
        self._expires = time.monotonic() + deadline
        self._secrets: set[str] = set()
        if transport is None:
            if http is not None:
                from metaplug.k8s.transport import HttpxTransport

                transport = HttpxTransport(http, creds.tls_server_name)
            else:
                transport = open_transport(creds, user_agent)
        self.transport = transport

    # -- life cycle -------------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> KubeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset_deadline(self, deadline: float | None = None) -> None:
        """Start a new overall deadline now (e.g. before publishing the status after the delegates ran)."""
        if deadline is not None:
            self.deadline = deadline
        self._expires = time.monotonic() + self.deadline

    @property
    def remaining(self) -> float:
        """Seconds left of the deadline (may be negative)."""
        return self._expires - time.monotonic()

    # -- the calls --------------------------------------------------------------------------------------------------
    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """The pod object. A missing pod is code 110 "pod NS/NAME not found"."""
        what = f"get pod {namespace}/{name}"
        resp = self._call("GET", self._pod_path(namespace, name), what=what)
        if resp.status_code == 404:
            raise self._pod_not_found(namespace, name, resp)
        return self._object(resp, what)

    def get_nad(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The NetworkAttachmentDefinition object, or None when it does not exist.

        A 404 for the resource type itself (the CRD is not installed) is an error (code 110), not None.
        """
        what = f"get NetworkAttachmentDefinition {namespace}/{name}"
        path = f"/apis/{NAD_GROUP}/v1/namespaces/{path_segment(namespace)}/{NAD_RESOURCE}/{path_segment(name)}"
        resp = self._call("GET", path, what=what)
        if resp.status_code == 404:
            if self._is_missing_resource_type(resp):
                raise CniError(KUBERNETES_API, "the NetworkAttachmentDefinition CRD is not installed",
                               f"{self.server}: {_status_message(resp)} (apply configs/kubernetes/crd.yaml)")
            return None
        return self._object(resp, what)

    def publish_network_status(self, namespace: str, name: str, status: Sequence[Mapping[str, object]]) -> None:
        """Set the pod's `k8s.v1.cni.cncf.io/network-status` annotation (R17..R23) through the pods/status subresource.

        A JSON merge patch; when the server refuses merge patches (405/415), GET + PUT with the resourceVersion,
        repeated on 409 Conflict.
        """
        value = jsontext.dumps(status, indent=4)  # indented like Multus: people read it with kubectl describe
        what = f"publish network-status of pod {namespace}/{name}"
        patch = {"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: value}}}
        resp = self._call("PATCH", self._pod_path(namespace, name) + "/status", what=what,
                          body=jsontext.dumps(patch).encode(), content_type="application/merge-patch+json")
        if resp.is_success:
            return
        if resp.status_code == 404:
            raise self._pod_not_found(namespace, name, resp)
        if resp.status_code not in PATCH_UNSUPPORTED:
            raise self._permanent(resp, what)
        log.debug("merge patch refused (%s), falling back to GET + PUT", resp.status_code)
        self._put_annotation(namespace, name, NETWORK_STATUS_ANNOTATION, value, what)

    def post_event(self, namespace: str, pod_name: str, reason: str, message: str, type: str = "Normal",
                   *, uid: str | None = None) -> None:
        """Record an event on the pod (e.g. AddedInterface, NoNetworkFound). Best effort: one short attempt, never
        raises, skipped when the deadline is spent."""
        budget = min(self.remaining, EVENT_TIMEOUT)
        if budget < MIN_ATTEMPT:
            log.debug("event %s on %s/%s skipped: no time left", reason, namespace, pod_name)
            return
        try:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            host = socket.gethostname()
            involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": pod_name}
            if uid:
                involved["uid"] = uid
            event = {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{pod_name}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": involved, "reason": reason, "message": message[:1024], "type": type,
                "source": {"component": "metaplug", "host": host},
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
                "reportingComponent": "metaplug", "reportingInstance": host,
            }
            resp = self._send("POST", f"/api/v1/namespaces/{path_segment(namespace)}/events",
                              jsontext.dumps(event).encode(), "application/json", timeout=budget)
            if not resp.is_success:
                log.debug("event %s on %s/%s not recorded: %s %s", reason, namespace, pod_name, resp.status_code,
                          self._scrub(_status_message(resp)))
        except Exception as e:  # best effort by contract: an event must never fail a CNI call
            log.debug("event %s on %s/%s not recorded: %s", reason, namespace, pod_name, self._scrub(str(e)))

    # -- internals --------------------------------------------------------------------------------------------------
    @staticmethod
    def _pod_path(namespace: str, name: str) -> str:
        return f"/api/v1/namespaces/{path_segment(namespace)}/pods/{path_segment(name)}"

    def _put_annotation(self, namespace: str, name: str, key: str, value: str, what: str) -> None:
        path = self._pod_path(namespace, name)
        for _ in range(MAX_CONFLICTS):
            resp = self._call("GET", path, what=what)
            if resp.status_code == 404:
                raise self._pod_not_found(namespace, name, resp)
            pod = self._object(resp, what)
            meta = pod.setdefault("metadata", {})
            annotations = meta.get("annotations") or {}
            annotations[key] = value
            meta["annotations"] = annotations
            resp = self._call("PUT", path + "/status", what=what, body=jsontext.dumps(pod).encode(),
                              content_type="application/json")
            if resp.is_success:
                return
            if resp.status_code == 404:
                raise self._pod_not_found(namespace, name, resp)
            if resp.status_code != 409:
                raise self._permanent(resp, what)
            log.debug("%s: conflict on resourceVersion %s, retrying", what, meta.get("resourceVersion"))
            if self.remaining < MIN_ATTEMPT:
                break
        raise CniError(TRY_AGAIN_LATER, f"Kubernetes API server {self.server}: conflicting updates, try again later",
                       f"{what}: 409 Conflict on every attempt")

    def _call(self, method: str, path: str, *, what: str, body: bytes | None = None,
              content_type: str | None = None) -> Answer:
        """Send with retries of transient failures until the deadline. Returns a 2xx or a permanent 4xx answer.

        Between attempts: the server's Retry-After when it sent one, else full-jitter exponential backoff. No retry
        is started that could not begin MIN_ATTEMPT before the deadline."""
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                return self._attempt(method, path, body, content_type)
            except _Transient as e:
                pause = e.retry_after if e.retry_after is not None else _jitter(
                    min(BACKOFF_FIRST * 2.0 ** min(attempts - 1, 16), BACKOFF_MAX))
                if time.monotonic() + pause + MIN_ATTEMPT >= self._expires:
                    raise CniError(
                        TRY_AGAIN_LATER, f"Kubernetes API server {self.server} unavailable, try again later",
                        f"{what}: {e.last}; {attempts} attempt(s) in {time.monotonic() - started:.2f}s "
                        f"(deadline {self.deadline:g}s)") from None
                log.info("%s %s: %s; retry %d in %.2fs", method, path, e, attempts, pause)
                time.sleep(pause)

    def _attempt(self, method: str, path: str, body: bytes | None, content_type: str | None) -> Answer:
        left = self.remaining
        if left < MIN_ATTEMPT:
            raise _Transient("deadline reached")
        started = time.monotonic()
        try:
            resp = self._send(method, path, body, content_type, timeout=left)
        except TransportError as e:
            bad_tls = _ssl_cause(e)
            if bad_tls is not None:
                raise CniError(KUBERNETES_API, f"TLS failure talking to the Kubernetes API server {self.server}",
                               f"{bad_tls} (check the certificate authority in {self.creds.source})") from None
            raise _Transient(self._scrub(str(e))) from None
        log.debug("%s %s -> %d in %.0fms", method, path, resp.status_code, 1000 * (time.monotonic() - started))
        if resp.status_code in RETRY_STATUSES:
            raise _Transient(f"{resp.status_code} {resp.reason_phrase}: {self._scrub(_status_message(resp))}",
                             _retry_after(resp.header("Retry-After")))
        return resp

    def _send(self, method: str, path: str, body: bytes | None, content_type: str | None, *,
              timeout: float) -> Answer:
        headers = auth_headers(self.creds)
        if headers:
            self._secrets.add(headers["Authorization"].removeprefix("Bearer "))
        if content_type:
            headers["Content-Type"] = content_type
        if not request_observers:
            return self.transport.request(method, path, body, headers, timeout=timeout)
        started = time.monotonic()
        code = "error"
        try:
            resp = self.transport.request(method, path, body, headers, timeout=timeout)
            code = str(resp.status_code)
            return resp
        finally:
            observe_request(*_observed_verb(method, path), code, time.monotonic() - started)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def _object(self, resp: Answer, what: str) -> dict[str, Any]:
        if not resp.is_success:
            raise self._permanent(resp, what)
        try:
            obj = resp.json()
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            raise CniError(KUBERNETES_API, f"unexpected answer from the Kubernetes API server {self.server}",
                           f"{what}: {resp.status_code} without a JSON object")
        return obj

    def _permanent(self, resp: Answer, what: str) -> CniError:
        hint = {401: f" (check the credentials in {self.creds.source or 'the kubeconfig'})",
                403: " (check metaplug's RBAC: configs/kubernetes/rbac.yaml)"}.get(resp.status_code, "")
        return CniError(KUBERNETES_API, f"Kubernetes API server {self.server} refused to {what}",
                        f"{resp.status_code} {resp.reason_phrase}: {self._scrub(_status_message(resp))}{hint}")

    def _pod_not_found(self, namespace: str, name: str, resp: Answer) -> CniError:
        return CniError(KUBERNETES_API, f"pod {namespace}/{name} not found",
                        f"{self.server}: {self._scrub(_status_message(resp))}")

    @staticmethod
    def _is_missing_resource_type(resp: Answer) -> bool:
        """A 404 Status without details.name: the API does not serve the resource at all (CRD not installed)."""
        try:
            body = resp.json()
        except ValueError:
            return False
        if not isinstance(body, dict) or body.get("kind") != "Status":
            return False
        details = body.get("details")
        return not (isinstance(details, dict) and details.get("name"))
