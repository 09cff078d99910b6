"""The seam under KubeClient: one HTTP request in, one Answer out, or a TransportError.

KubeClient (client.py) keeps every rule about retries, statuses and Kubernetes Status objects; a transport only moves
bytes. Two implement it:
- http11.Http11Transport: a minimal HTTP/1.1 client over the standard library's `socket` and `ssl`, for thin-mode CNI
  calls (one process per call: importing httpx and httpcore cost ~30-130 ms of every ADD, issue 10.7);
- HttpxTransport (here): an httpx.Client, for the daemon (long-lived, shared with the watches) and for what the small
  one cannot do (a kubeconfig `proxy-url`).
"""

from __future__ import annotations

from metaplug.cni import jsontext
from metaplug.cni.runtime_typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    import httpx


class Answer:
    """An HTTP answer, read completely: status, reason, headers (names in lower case), body."""

    __slots__ = ("content", "headers", "reason_phrase", "status_code")

    def __init__(self, status_code: int, reason_phrase: str, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self.content = content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return jsontext.loads(self.content)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class TransportError(Exception):
    """No answer: the connection failed, timed out or broke. `kind` names what happened as httpx does (ConnectError,
    ConnectTimeout, ReadTimeout, WriteTimeout, RemoteProtocolError, ...); the cause (e.g. an ssl.SSLError) is
    chained. str(): "kind: detail", never a secret."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class Transport(Protocol):
    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], *,
                timeout: float) -> Answer:
        """Send one request (path relative to the server) and read the whole answer within `timeout` seconds."""
        ...

    def close(self) -> None: ...


class HttpxTransport:
    """Requests through an httpx.Client (closed by close() only when `owned`)."""

    def __init__(self, client: httpx.Client, tls_server_name: str | None = None, *, owned: bool = False) -> None:
        import httpx

        self._httpx = httpx
        self.client = client
        self.owned = owned
        self._extensions: dict[str, Any] = {"sni_hostname": tls_server_name} if tls_server_name else {}

    def request(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str], *,
                timeout: float) -> Answer:
        try:
            resp = self.client.request(method, path, content=body, headers=dict(headers),
                                       timeout=self._httpx.Timeout(timeout), extensions=self._extensions)
        except self._httpx.TransportError as e:
            raise TransportError(type(e).__name__, str(e)) from e
        return Answer(resp.status_code, resp.reason_phrase, {k.lower(): v for k, v in resp.headers.items()},
                      resp.content)

    def close(self) -> None:
        if self.owned:
            self.client.close()
