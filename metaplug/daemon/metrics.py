"""The daemon's Prometheus metrics and its HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.

Calls by verb and outcome (with the CNI error code) and their latency, calls in flight and waiting, delegate calls by
plugin and verb with latency and errors (observed through cni.invoke's call hook, so no logic is forked), spool
replays, and the journal entries on disk (counted when scraped). With a kubeconfig: Kubernetes requests by verb,
resource and HTTP code (k8s.client's request hook, watches included), watch events and restarts, cache lookups and
the objects in each cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from metaplug import journal
from metaplug.cni.errors import CniError

log = logging.getLogger("metaplug.daemon.metrics")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _JournalEntries(Collector):
    def __init__(self, state_dirs: Callable[[], Iterable[str]]) -> None:
        self.state_dirs = state_dirs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("metaplug_journal_entries", "Journals (container attachments) on disk",
                                   labels=["state_dir"])
        for state_dir in sorted(self.state_dirs()):
            family.add_metric([state_dir], sum(1 for _ in journal.list_journals(state_dir)))
        yield family


class _CacheObjects(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("metaplug_kube_cache_objects", "Objects in the Kubernetes watch caches",
                                   labels=["resource"])
        for resource, size in sorted(self.metrics.kube_cache_sizes().items()):
            family.add_metric([resource], size)
        yield family


class Metrics:
    def __init__(self, state_dirs: Callable[[], Iterable[str]]) -> None:
        disable_created_metrics()  # no `_created` series beside every counter
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter("metaplug_calls", "CNI calls served, by verb, outcome and CNI error code",
                             ["verb", "outcome", "code"], registry=r)
        self.call_seconds = Histogram("metaplug_call_duration_seconds", "Time to answer a CNI call, waiting included",
                                      ["verb"], buckets=BUCKETS, registry=r)
        self.in_flight = Gauge("metaplug_calls_in_flight", "CNI calls running now", registry=r)
        self.waiting = Gauge("metaplug_calls_waiting",
                             "CNI calls waiting for their container or for a free slot (maxConcurrentCalls)",
                             registry=r)
        self.delegate_calls = Counter("metaplug_delegate_calls", "Delegate plugin calls by plugin, verb and outcome",
                                      ["plugin", "verb", "outcome", "code"], registry=r)
        self.delegate_seconds = Histogram("metaplug_delegate_call_duration_seconds", "Time of one delegate call",
                                          ["plugin", "verb"], buckets=BUCKETS, registry=r)
        self.spool_replays = Counter("metaplug_spool_replays", "Spooled DELs replayed, by outcome", ["outcome"],
                                     registry=r)
        self.spool_pending = Gauge("metaplug_spool_pending", "Spooled DELs not yet replayed", registry=r)
        self.ready = Gauge("metaplug_ready", "1 when /readyz answers 200", registry=r)
        r.register(_JournalEntries(state_dirs))
        self.kube_requests = Counter("metaplug_kube_requests", "Kubernetes API requests by verb, resource and HTTP "
                                     "code (code 'error': no answer)", ["verb", "resource", "code"], registry=r)
        self.kube_watch_events = Counter("metaplug_kube_watch_events", "Watch events received, by resource and type",
                                         ["resource", "type"], registry=r)
        self.kube_watch_restarts = Counter(
            "metaplug_kube_watch_restarts", "Watches started again, by resource and reason (closed: ended by the "
            "server; dropped: connection lost; gone: 410, relisted; error: request failed)", ["resource", "reason"],
            registry=r)
        self.kube_cache_lookups = Counter("metaplug_kube_cache_lookups", "ADD lookups in the watch caches (a miss "
                                          "is a GET)", ["resource", "result"], registry=r)
        self.kube_cache_sizes: Callable[[], Mapping[str, int]] = dict
        r.register(_CacheObjects(self))

    def observe_call(self, verb: str, code: int | None, seconds: float, outcome: str | None = None) -> None:
        outcome = outcome or ("success" if code is None else "error")
        self.calls.labels(verb, outcome, str(code or 0)).inc()
        self.call_seconds.labels(verb).observe(seconds)

    def observe_delegate(self, plugin: str, verb: str, seconds: float, error: CniError | None) -> None:
        self.delegate_calls.labels(plugin, verb, "success" if error is None else "error",
                                   str(error.code if error else 0)).inc()
        self.delegate_seconds.labels(plugin, verb).observe(seconds)

    def observe_kube_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
        self.kube_requests.labels(verb, resource, code).inc()

    def watch_event(self, resource: str, type: str) -> None:
        self.kube_watch_events.labels(resource, type).inc()

    def watch_restart(self, resource: str, reason: str) -> None:
        self.kube_watch_restarts.labels(resource, reason).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


Probe = Callable[[], tuple[bool, str]]


def serve_http(host: str, port: int, metrics: Metrics, healthy: Probe, ready: Probe) -> ThreadingHTTPServer:
    """Start the endpoint in a thread; the caller shuts it down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, metrics.text(), CONTENT_TYPE)
                return
            probe = {"/healthz": healthy, "/readyz": ready}.get(self.path.split("?")[0])
            if probe is None:
                self._answer(404, b"not found\n")
                return
            ok, why = probe()
            self._answer(200 if ok else 503, (why + "\n").encode())

        def _answer(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds are not worth a log line

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metaplug-metrics", daemon=True).start()
    return server
